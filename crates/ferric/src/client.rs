//! `ferric node ...`: client commands talking to a ferric (or Ironic) REST
//! API (SPEC §9).
//!
//! Every command takes `--url` (default `http://127.0.0.1:6385`, or
//! `FERRIC_URL`) and either `--token` (or `FERRIC_TOKEN`, sent as a bearer
//! token) or `--user` / `FERRIC_USER` with `FERRIC_PASSWORD` (HTTP basic).
//! Provision verbs take `--wait`: after the 202 they poll
//! `GET /v1/nodes/{id}`, print each state transition on stderr as it is seen,
//! and end at the verb's stable state (exit 0), at a failure state (`error`
//! or `... failed`: exit 1 with the node's `last_error`), at any other
//! stable state (exit 1), or after `--timeout` (exit 1).
//!
//! API errors are printed with Ironic's message (`faultstring`) and the HTTP
//! status; they exit 1.

use crate::cli::render_table;
use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

/// Default API endpoint.
pub const DEFAULT_URL: &str = "http://127.0.0.1:6385";
/// The microversion the client speaks (every field it reads exists there).
pub const API_VERSION: &str = "1.80";
/// Default bound of `--wait`.
pub const DEFAULT_WAIT_TIMEOUT: &str = "30m";
/// How often `--wait` polls the node.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Bound of one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the API is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct Endpoint {
    /// API base URL.
    #[arg(long, env = "FERRIC_URL", default_value = DEFAULT_URL, value_name = "URL")]
    pub url: String,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// How to authenticate to the API (every command that talks to it).
#[derive(Debug, Clone, Default, Args)]
pub struct Credentials {
    /// Bearer token (api.auth = "token"); prefer FERRIC_TOKEN: flags show in `ps`.
    #[arg(
        long,
        env = "FERRIC_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// HTTP basic user (api.auth = "basic"); the password comes from
    /// FERRIC_PASSWORD.
    #[arg(
        long,
        env = "FERRIC_USER",
        value_name = "USER",
        conflicts_with = "token"
    )]
    pub user: Option<String>,
    /// HTTP basic password; prefer FERRIC_PASSWORD.
    #[arg(
        long,
        env = "FERRIC_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub password: Option<String>,
}

/// `--wait` and `--timeout`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Wait until the node reaches the verb's stable state, showing the
    /// transitions on stderr; exit 1 on a failure state.
    #[arg(long)]
    pub wait: bool,
    /// Bound of --wait, e.g. 90s, 10m.
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_WAIT_TIMEOUT, value_name = "DURATION")]
    pub timeout: Duration,
}

/// A provision verb's arguments.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Node UUID or name.
    pub node: String,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

/// A node and an endpoint.
#[derive(Debug, Args)]
pub struct NodeArg {
    /// Node UUID or name.
    pub node: String,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

/// `ferric node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes (UUID, name, provision/power state, maintenance).
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Show one node.
    Show {
        /// Node UUID or name.
        node: String,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Enroll a node.
    Create(CreateArgs),
    /// Delete a node (not while it is deployed).
    Delete(NodeArg),
    /// enroll → manageable (verifies the BMC).
    Manage(ProvisionArgs),
    /// manageable → available (cleaning).
    Provide(ProvisionArgs),
    /// available → active.
    Deploy(ProvisionArgs),
    /// active → available (tear down, cleaning).
    Undeploy(ProvisionArgs),
    /// Power the node on or off.
    #[command(subcommand)]
    Power(PowerCommand),
    /// Put the node in or out of maintenance.
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
}

/// `ferric node create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Hardware driver.
    #[arg(long, default_value = "fake-hardware")]
    pub driver: String,
    /// Unique node name.
    #[arg(long)]
    pub name: Option<String>,
    /// driver_info KEY=VALUE (repeatable; VALUE parsed as JSON when it is JSON).
    #[arg(long = "driver-info", value_name = "KEY=VALUE")]
    pub driver_info: Vec<String>,
    /// properties KEY=VALUE (repeatable).
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// extra KEY=VALUE (repeatable).
    #[arg(long = "extra", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

/// `ferric node power ...`.
#[derive(Debug, Subcommand)]
pub enum PowerCommand {
    /// Power on.
    On(PowerArgs),
    /// Power off.
    Off(PowerArgs),
}

/// A power verb's arguments.
#[derive(Debug, Args)]
pub struct PowerArgs {
    /// Node UUID or name.
    pub node: String,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

/// `ferric node maintenance ...`.
#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Set maintenance mode.
    Set {
        /// Node UUID or name.
        node: String,
        /// Why (shown as maintenance_reason).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Clear maintenance mode.
    Unset(NodeArg),
}

/// A provision verb: what is sent and where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verb {
    /// The command's name.
    pub name: &'static str,
    /// `target` of `PUT /v1/nodes/{id}/states/provision`.
    pub target: &'static str,
    /// The stable state it ends in.
    pub expected: &'static str,
}

/// The provision verbs the client offers.
pub const MANAGE: Verb = Verb {
    name: "manage",
    target: "manage",
    expected: "manageable",
};
/// `provide`.
pub const PROVIDE: Verb = Verb {
    name: "provide",
    target: "provide",
    expected: "available",
};
/// `deploy`.
pub const DEPLOY: Verb = Verb {
    name: "deploy",
    target: "active",
    expected: "active",
};
/// `undeploy`.
pub const UNDEPLOY: Verb = Verb {
    name: "undeploy",
    target: "deleted",
    expected: "available",
};

/// An error answered by the API.
#[derive(Debug, thiserror::Error)]
#[error("{message} (HTTP {status} from {request})")]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// Ironic's message.
    pub message: String,
    /// `METHOD URL`.
    pub request: String,
}

/// A thin client of the Ironic v1 API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    basic: Option<(String, Option<String>)>,
}

impl Client {
    /// A client of the API at `endpoint.url`.
    pub fn new(endpoint: &Endpoint) -> anyhow::Result<Client> {
        let base = endpoint.url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base).to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!(
                "--url {:?} must start with http:// or https://",
                endpoint.url
            );
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("ferric/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            base,
            token: endpoint.credentials.token.clone().filter(|t| !t.is_empty()),
            basic: endpoint
                .credentials
                .user
                .clone()
                .filter(|u| !u.is_empty())
                .map(|u| (u, endpoint.credentials.password.clone())),
        })
    }

    /// Send a request; a JSON body back (Null when empty), or the API's error.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("X-OpenStack-Ironic-API-Version", API_VERSION)
            .header("Accept", "application/json");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        } else if let Some((user, password)) = &self.basic {
            req = req.basic_auth(user, password.as_deref());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        if !status.is_success() {
            return Err(ApiFailure {
                status: status.as_u16(),
                message: error_message(&text),
                request: format!("{method} {url}"),
            }
            .into());
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {url}: the answer is not JSON"))
    }

    /// `GET /v1/nodes/{ident}`.
    pub async fn node(&self, ident: &str) -> anyhow::Result<Value> {
        self.request(reqwest::Method::GET, &node_path(ident, ""), None)
            .await
    }
}

/// `/v1/nodes/{ident}{rest}` with the ident percent-encoded.
pub(crate) fn node_path(ident: &str, rest: &str) -> String {
    let mut enc = String::new();
    for b in ident.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("/v1/nodes/{enc}{rest}")
}

/// The message of an Ironic error body (`error_message` holding a JSON
/// string with `faultstring` or `description`), else the body itself.
pub fn error_message(body: &str) -> String {
    let outer: Option<Value> = serde_json::from_str(body).ok();
    let inner = outer
        .as_ref()
        .and_then(|v| v.get("error_message"))
        .and_then(|m| match m {
            Value::String(s) => serde_json::from_str::<Value>(s).ok().or(Some(m.clone())),
            other => Some(other.clone()),
        });
    if let Some(inner) = inner {
        for key in ["faultstring", "description"] {
            if let Some(s) = inner.get(key).and_then(Value::as_str) {
                return s.to_string();
            }
        }
        if let Some(s) = inner.as_str() {
            return s.to_string();
        }
    }
    let body = body.trim();
    if body.is_empty() {
        "no details".to_string()
    } else {
        body.chars().take(500).collect()
    }
}

/// Parse `KEY=VALUE` pairs; VALUE is JSON when it parses as JSON (`4`,
/// `true`, `{"a":1}`), a string otherwise.
pub fn parse_pairs(flag: &str, pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--{flag} {p:?}: expected KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--{flag} {p:?}: empty key");
        }
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        map.insert(k.to_string(), value);
    }
    Ok(map)
}

/// A JSON value in a table cell: strings bare, null as `-`.
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Nodes as a table.
pub fn node_table(nodes: &[Value]) -> String {
    let rows = nodes
        .iter()
        .map(|n| {
            vec![
                cell(n.get("uuid")),
                cell(n.get("name")),
                cell(n.get("provision_state")),
                cell(n.get("power_state")),
                cell(n.get("maintenance")),
                cell(n.get("instance_uuid")),
            ]
        })
        .collect();
    render_table(
        &[
            "UUID",
            "NAME",
            "PROVISION STATE",
            "POWER STATE",
            "MAINTENANCE",
            "INSTANCE UUID",
        ],
        rows,
    )
}

/// One node as a FIELD / VALUE table, fields sorted, links left out.
pub fn node_fields(node: &Value) -> String {
    let mut rows: Vec<Vec<String>> = node
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "links" | "ports" | "portgroups" | "states" | "volume"
                    )
                })
                .map(|(k, v)| vec![k.clone(), cell(Some(v))])
                .collect()
        })
        .unwrap_or_default();
    rows.sort();
    render_table(&["FIELD", "VALUE"], rows)
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).context("rendering JSON")?
    );
    Ok(())
}

/// Run a `ferric node` command.
pub async fn run(cmd: NodeCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match cmd {
        NodeCommand::List { json, endpoint } => {
            let c = Client::new(&endpoint)?;
            let mut nodes = Vec::new();
            let mut path = "/v1/nodes/detail?limit=1000".to_string();
            loop {
                let page = c.request(Method::GET, &path, None).await?;
                let batch = page
                    .get("nodes")
                    .and_then(Value::as_array)
                    .cloned()
                    .ok_or_else(|| anyhow!("GET {path}: no \"nodes\" in the answer"))?;
                let last = batch
                    .last()
                    .and_then(|n| n.get("uuid"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                nodes.extend(batch);
                match (page.get("next").and_then(Value::as_str), last) {
                    (Some(_), Some(marker)) => {
                        path = format!("/v1/nodes/detail?limit=1000&marker={marker}");
                    }
                    _ => break,
                }
            }
            if json {
                print_json(&json!({ "nodes": nodes }))
            } else {
                print!("{}", node_table(&nodes));
                Ok(())
            }
        }
        NodeCommand::Show {
            node,
            json,
            endpoint,
        } => {
            let n = Client::new(&endpoint)?.node(&node).await?;
            if json {
                print_json(&n)
            } else {
                print!("{}", node_fields(&n));
                Ok(())
            }
        }
        NodeCommand::Create(a) => {
            let mut body = Map::new();
            body.insert("driver".into(), json!(a.driver));
            if let Some(name) = &a.name {
                body.insert("name".into(), json!(name));
            }
            for (key, flag, pairs) in [
                ("driver_info", "driver-info", &a.driver_info),
                ("properties", "property", &a.properties),
                ("extra", "extra", &a.extra),
            ] {
                if !pairs.is_empty() {
                    body.insert(key.into(), Value::Object(parse_pairs(flag, pairs)?));
                }
            }
            let c = Client::new(&a.endpoint)?;
            let n = c
                .request(Method::POST, "/v1/nodes", Some(&Value::Object(body)))
                .await?;
            if a.json {
                print_json(&n)
            } else {
                print!("{}", node_fields(&n));
                Ok(())
            }
        }
        NodeCommand::Delete(a) => {
            let c = Client::new(&a.endpoint)?;
            c.request(Method::DELETE, &node_path(&a.node, ""), None)
                .await?;
            eprintln!("node {}: deleted", a.node);
            Ok(())
        }
        NodeCommand::Manage(a) => provision(a, MANAGE).await,
        NodeCommand::Provide(a) => provision(a, PROVIDE).await,
        NodeCommand::Deploy(a) => provision(a, DEPLOY).await,
        NodeCommand::Undeploy(a) => provision(a, UNDEPLOY).await,
        NodeCommand::Power(PowerCommand::On(a)) => power(a, "power on").await,
        NodeCommand::Power(PowerCommand::Off(a)) => power(a, "power off").await,
        NodeCommand::Maintenance(MaintenanceCommand::Set {
            node,
            reason,
            endpoint,
        }) => {
            let c = Client::new(&endpoint)?;
            c.request(
                Method::PUT,
                &node_path(&node, "/maintenance"),
                Some(&json!({ "reason": reason })),
            )
            .await?;
            eprintln!("node {node}: maintenance set");
            Ok(())
        }
        NodeCommand::Maintenance(MaintenanceCommand::Unset(a)) => {
            let c = Client::new(&a.endpoint)?;
            c.request(Method::DELETE, &node_path(&a.node, "/maintenance"), None)
                .await?;
            eprintln!("node {}: maintenance unset", a.node);
            Ok(())
        }
    }
}

async fn provision(a: ProvisionArgs, verb: Verb) -> anyhow::Result<()> {
    let c = Client::new(&a.endpoint)?;
    c.request(
        reqwest::Method::PUT,
        &node_path(&a.node, "/states/provision"),
        Some(&json!({ "target": verb.target })),
    )
    .await?;
    eprintln!("node {}: {} requested", a.node, verb.name);
    if a.wait.wait {
        wait_provision(&c, &a.node, verb, a.wait.timeout).await?;
    }
    Ok(())
}

/// What one poll of a provision wait concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still moving.
    Pending,
    /// Reached the expected state.
    Done,
    /// A failure or an unexpected stable state; the message says which.
    Failed(String),
}

/// Judge a node document during a wait for `verb` (the rules of
/// python-ironicclient's `--wait`).
pub fn judge(node: &Value, verb: Verb) -> Progress {
    let state = node
        .get("provision_state")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let target = node.get("target_provision_state").and_then(Value::as_str);
    if state == verb.expected && target.is_none() {
        return Progress::Done;
    }
    if state == "error" || state.ends_with(" failed") {
        let err = node
            .get("last_error")
            .and_then(Value::as_str)
            .unwrap_or("no last_error recorded");
        return Progress::Failed(format!(
            "{} failed: node is in \"{state}\": {err}",
            verb.name
        ));
    }
    if target.is_none() && state != verb.expected {
        return Progress::Failed(format!(
            "{} did not reach \"{}\": the node is in the stable state \"{state}\"",
            verb.name, verb.expected
        ));
    }
    Progress::Pending
}

async fn wait_provision(
    c: &Client,
    ident: &str,
    verb: Verb,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last: Option<(String, String)> = None;
    loop {
        let n = c.node(ident).await?;
        let state = cell(n.get("provision_state"));
        let target = cell(n.get("target_provision_state"));
        if last.as_ref() != Some(&(state.clone(), target.clone())) {
            let secs = started.elapsed().as_secs_f64();
            if target == "-" {
                eprintln!("node {ident}: {state} (+{secs:.1}s)");
            } else {
                eprintln!("node {ident}: {state} → {target} (+{secs:.1}s)");
            }
            last = Some((state, target));
        }
        match judge(&n, verb) {
            Progress::Done => return Ok(()),
            Progress::Failed(msg) => bail!("node {ident}: {msg}"),
            Progress::Pending => {}
        }
        if started.elapsed() >= timeout {
            bail!(
                "node {ident}: timed out after {} waiting for \"{}\"",
                humantime::format_duration(timeout),
                verb.expected
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn power(a: PowerArgs, target: &str) -> anyhow::Result<()> {
    let c = Client::new(&a.endpoint)?;
    c.request(
        reqwest::Method::PUT,
        &node_path(&a.node, "/states/power"),
        Some(&json!({ "target": target })),
    )
    .await?;
    eprintln!("node {}: {target} requested", a.node);
    if !a.wait.wait {
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let n = c.node(&a.node).await?;
        let state = n.get("power_state").and_then(Value::as_str);
        let pending = n.get("target_power_state").and_then(Value::as_str);
        if pending.is_none() {
            if state == Some(target) {
                eprintln!(
                    "node {}: {target} (+{:.1}s)",
                    a.node,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            let err = n.get("last_error").and_then(Value::as_str).unwrap_or("");
            bail!(
                "node {}: power state is {:?}, not \"{target}\" {err}",
                a.node,
                state.unwrap_or("unknown")
            );
        }
        if started.elapsed() >= a.wait.timeout {
            bail!(
                "node {}: timed out after {} waiting for \"{target}\"",
                a.node,
                humantime::format_duration(a.wait.timeout)
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ironic_error_bodies_are_unwrapped() {
        let body = r#"{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"Node nope could not be found.\", \"debuginfo\": null}"}"#;
        assert_eq!(error_message(body), "Node nope could not be found.");
        let body = r#"{"error_message": "{\"code\": 406, \"title\": \"Not Acceptable\", \"description\": \"Version 1.200 was requested\"}"}"#;
        assert_eq!(error_message(body), "Version 1.200 was requested");
        assert_eq!(error_message("plain"), "plain");
        assert_eq!(error_message(""), "no details");
    }

    #[test]
    fn pairs_are_json_when_they_can_be() {
        let m = parse_pairs(
            "extra",
            &["a=1".into(), "b=x".into(), "c={\"d\":true}".into()],
        )
        .unwrap_or_default();
        assert_eq!(
            Value::Object(m),
            json!({"a": 1, "b": "x", "c": {"d": true}})
        );
        assert!(parse_pairs("extra", &["novalue".into()]).is_err());
        assert!(parse_pairs("extra", &["=v".into()]).is_err());
    }

    #[test]
    fn waits_end_at_the_expected_state_or_a_failure() {
        let n = |s: &str, t: Option<&str>| json!({"provision_state": s, "target_provision_state": t, "last_error": "boom"});
        assert_eq!(
            judge(&n("deploying", Some("active")), DEPLOY),
            Progress::Pending
        );
        assert_eq!(
            judge(&n("wait call-back", Some("active")), DEPLOY),
            Progress::Pending
        );
        assert_eq!(judge(&n("active", None), DEPLOY), Progress::Done);
        assert!(
            matches!(judge(&n("deploy failed", Some("active")), DEPLOY), Progress::Failed(m) if m.contains("boom"))
        );
        assert!(matches!(
            judge(&n("error", None), UNDEPLOY),
            Progress::Failed(_)
        ));
        assert!(
            matches!(judge(&n("enroll", None), MANAGE), Progress::Failed(m) if m.contains("stable state"))
        );
        // The verb's own transient state with the right target is progress.
        assert_eq!(
            judge(&n("available", Some("active")), DEPLOY),
            Progress::Pending
        );
    }

    #[test]
    fn node_paths_are_encoded() {
        assert_eq!(node_path("n1", "/states"), "/v1/nodes/n1/states");
        assert_eq!(node_path("a b/c", ""), "/v1/nodes/a%20b%2Fc");
    }
}
