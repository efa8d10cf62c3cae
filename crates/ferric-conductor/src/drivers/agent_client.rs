//! The client of ironic-python-agent's REST API (Ironic's
//! `drivers/modules/agent_client.py`; IPA's `api/app.py`).
//!
//! The agent listens on the callback URL it sent in its last heartbeat
//! (`driver_internal_info.agent_url`). A command is
//! `POST {agent_url}/v1/commands/?wait=true|false&agent_token=…` with
//! `{"name": "<extension>.<command>", "params": {…}}`; the answer is the
//! command's status (`command_status` RUNNING / SUCCEEDED / FAILED,
//! `command_result`, `command_error`). `GET {agent_url}/v1/commands/` lists
//! every command the agent ran since it started, the newest last. The
//! agent's token is on every request; the agent refuses any other.
//!
//! Failures:
//! * a connection failure or a timeout is retried (`max_command_attempts`
//!   in all), but first the agent's command list is read: when its newest
//!   command is this one and still running, the command did arrive and its
//!   answer was lost, and that is success (Ironic's rule);
//! * 409, or a fault saying the agent is busy: the agent runs another
//!   command ([`AgentError::Busy`], transient);
//! * any other 4xx/5xx: [`AgentError::Api`] with the agent's fault string.
//!
//! TLS: the agent's certificate is checked as `agent_verify_ca` says — the
//! value the agent heartbeated (its generated certificate, with automatic
//! TLS), else the node's `driver_info.agent_verify_ca`, else the config.
//! The token is never logged.

use super::tls::{Clients, Timeouts, Verify};
use super::DriverError;
use ferric_core::Node;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use tracing::{debug, warn};

/// `driver_internal_info` key of the agent's token.
pub const TOKEN_KEY: &str = "agent_secret_token";
/// `driver_internal_info` key of the agent's callback URL.
pub const URL_KEY: &str = "agent_url";

/// `[agent]`: how ferric talks to the ramdisk agent and which of its steps
/// run by default (Ironic's `[agent]` and `[deploy]` options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Timeout of one request to the agent (Ironic's `command_timeout`).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Attempts of a request that could not reach the agent.
    pub max_command_attempts: u32,
    /// Default `agent_verify_ca`: "true", "false" or a CA bundle path.
    pub verify_ca: String,
    /// Let the agent write raw images straight to the disk.
    pub stream_raw_images: bool,
    /// Priority of the agent's `erase_devices` clean step in automated
    /// cleaning (0: off, Ironic's recommended setting; it overwrites every
    /// disk and takes hours).
    pub erase_devices_priority: i64,
    /// Priority of `erase_devices_metadata` (the agent's own default, 99:
    /// on). It wipes partition tables and filesystem signatures.
    pub erase_devices_metadata_priority: i64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            command_timeout: Duration::from_secs(60),
            max_command_attempts: 3,
            verify_ca: "true".into(),
            stream_raw_images: true,
            erase_devices_priority: 0,
            erase_devices_metadata_priority: 99,
        }
    }
}

impl AgentConfig {
    /// Every problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.command_timeout.is_zero() {
            p.push("agent.command_timeout must be longer than 0s".to_string());
        }
        if self.max_command_attempts == 0 || self.max_command_attempts > 20 {
            p.push(format!(
                "agent.max_command_attempts ({}) must be between 1 and 20",
                self.max_command_attempts
            ));
        }
        if let Err(e) = Verify::parse(
            Some(&Value::String(self.verify_ca.clone())),
            "agent.verify_ca",
        ) {
            p.push(e);
        }
        for (key, v) in [
            ("agent.erase_devices_priority", self.erase_devices_priority),
            (
                "agent.erase_devices_metadata_priority",
                self.erase_devices_metadata_priority,
            ),
        ] {
            if v < 0 {
                p.push(format!("{key} ({v}) must be 0 (off) or more"));
            }
        }
        p
    }
}

/// Why a request to the agent failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The agent could not be reached (after every attempt).
    #[error("{0}")]
    Connection(String),
    /// The agent runs another command.
    #[error("Agent is busy running another command for node {node}: {message}")]
    Busy { node: String, message: String },
    /// The agent refused the request.
    #[error("Agent API for node {node} returned HTTP status code {status} with error: {message}")]
    Api {
        node: String,
        status: u16,
        message: String,
    },
    /// The node lacks what a request needs, or the answer is not the agent's.
    #[error("{0}")]
    Invalid(String),
}

impl From<AgentError> for DriverError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Connection(_) | AgentError::Busy { .. } => {
                DriverError::transient(e.to_string())
            }
            _ => DriverError::permanent(e.to_string()),
        }
    }
}

/// Where and how to reach a node's agent.
struct Target {
    commands_url: String,
    token: Option<String>,
    verify: Verify,
}

/// The agent's error of a finished command, as Ironic words it
/// (`get_command_error`).
pub fn command_error(command: &Value) -> String {
    match command.get("command_error") {
        None | Some(Value::Null) => "unknown error".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(m)) => m
            .get("details")
            .or_else(|| m.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| Value::Object(m.clone()).to_string()),
        Some(other) => other.to_string(),
    }
}

/// The commands URL with its query (the token travels in it, as IPA
/// expects; the URL is never logged).
fn command_url(base: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, AgentError> {
    reqwest::Url::parse_with_params(base, query)
        .map_err(|e| AgentError::Invalid(format!("invalid agent_url: {e}")))
}

/// The REST client of the ramdisk agent.
#[derive(Debug)]
pub struct AgentClient {
    config: AgentConfig,
    clients: Clients,
}

impl Default for AgentClient {
    fn default() -> Self {
        Self::new(AgentConfig::default())
    }
}

impl AgentClient {
    /// A client with these settings.
    pub fn new(config: AgentConfig) -> Self {
        let clients = Clients::new(
            "agent",
            Timeouts {
                request: config.command_timeout,
                connect: config.command_timeout.min(Duration::from_secs(10)),
            },
        );
        AgentClient { config, clients }
    }

    /// The settings.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    fn target(&self, node: &Node) -> Result<Target, AgentError> {
        let dii = &node.driver_internal_info;
        let url = match dii.get(URL_KEY) {
            Some(Value::String(u)) if !u.trim().is_empty() => u.trim().trim_end_matches('/'),
            _ => {
                return Err(AgentError::Connection(
                    "Agent driver requires agent_url in driver_internal_info".into(),
                ))
            }
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(AgentError::Invalid(format!(
                "agent_url {url:?} of node {} is not an http(s) URL",
                node.uuid
            )));
        }
        let configured = Value::String(self.config.verify_ca.clone());
        let verify_value = dii
            .get("agent_verify_ca")
            .or_else(|| node.driver_info.get("agent_verify_ca"))
            .unwrap_or(&configured);
        let verify =
            Verify::parse(Some(verify_value), "agent_verify_ca").map_err(AgentError::Invalid)?;
        Ok(Target {
            commands_url: format!("{url}/v1/commands/"),
            token: dii
                .get(TOKEN_KEY)
                .and_then(Value::as_str)
                .map(str::to_string),
            verify,
        })
    }

    /// Run `method` on the node's agent. `wait`: the agent answers when the
    /// command has finished (short commands only); otherwise it answers at
    /// once with the command RUNNING and the caller polls
    /// [`AgentClient::commands_status`].
    pub async fn command(
        &self,
        node: &Node,
        method: &str,
        params: Value,
        wait: bool,
    ) -> Result<Value, AgentError> {
        let t = self.target(node)?;
        let client = self
            .clients
            .get(&t.verify)
            .map_err(|e| AgentError::Invalid(e.message))?;
        let body = json!({"name": method, "params": params});
        let mut query: Vec<(&str, &str)> = vec![("wait", if wait { "true" } else { "false" })];
        if let Some(tok) = t.token.as_deref() {
            query.push(("agent_token", tok));
        }
        let url = command_url(&t.commands_url, &query)?;
        let attempts = self.config.max_command_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            debug!(node_uuid = %node.uuid, method, attempt, "agent command");
            let sent = client.post(url.clone()).json(&body).send().await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = e.without_url().to_string();
                    // The command may have arrived and only its answer been
                    // lost: the agent's list tells.
                    if let Ok(Some(c)) = self.running_last(node, method).await {
                        return Ok(c);
                    }
                    warn!(node_uuid = %node.uuid, method, attempt, error.message = %last, "cannot reach the agent");
                    if attempt < attempts {
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    }
                    continue;
                }
            };
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let result: Value = serde_json::from_str(&text).map_err(|_| {
                AgentError::Invalid(format!(
                    "Unable to decode response as JSON. Request URL: {}, response status code: {}, response: {:?}",
                    t.commands_url,
                    status.as_u16(),
                    text.chars().take(500).collect::<String>()
                ))
            })?;
            if status.is_client_error() || status.is_server_error() {
                let fault = result
                    .get("faultstring")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if status == reqwest::StatusCode::CONFLICT
                    || fault.to_ascii_lowercase().contains("agent is busy")
                {
                    return Err(AgentError::Busy {
                        node: node.uuid.to_string(),
                        message: fault,
                    });
                }
                return Err(AgentError::Api {
                    node: node.uuid.to_string(),
                    status: status.as_u16(),
                    message: fault,
                });
            }
            if let Some(Value::Object(err)) = result.get("command_error") {
                if err.get("type").and_then(Value::as_str) == Some("TypeError") {
                    return Err(AgentError::Api {
                        node: node.uuid.to_string(),
                        status: err.get("code").and_then(Value::as_u64).unwrap_or(500) as u16,
                        message: command_error(&result),
                    });
                }
            }
            return Ok(result);
        }
        Err(AgentError::Connection(format!(
            "Failed to connect to the agent running on node {} for invoking command {method}. Error: {last}",
            node.uuid
        )))
    }

    /// Every command the agent ran since it started, the newest last.
    pub async fn commands_status(&self, node: &Node) -> Result<Vec<Value>, AgentError> {
        self.list_commands(node, self.config.max_command_attempts.max(1))
            .await
    }

    /// [`AgentClient::commands_status`] with at most `attempts` requests.
    async fn list_commands(&self, node: &Node, attempts: u32) -> Result<Vec<Value>, AgentError> {
        let t = self.target(node)?;
        let client = self
            .clients
            .get(&t.verify)
            .map_err(|e| AgentError::Invalid(e.message))?;
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(tok) = t.token.as_deref() {
            query.push(("agent_token", tok));
        }
        let url = command_url(&t.commands_url, &query)?;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match client.get(url.clone()).send().await {
                Ok(r) => {
                    let status = r.status();
                    let v: Value = r.json().await.map_err(|e| {
                        AgentError::Invalid(format!(
                            "the agent of node {} answered the command list with no JSON: {}",
                            node.uuid,
                            e.without_url()
                        ))
                    })?;
                    if !status.is_success() {
                        return Err(AgentError::Api {
                            node: node.uuid.to_string(),
                            status: status.as_u16(),
                            message: v
                                .get("faultstring")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                        });
                    }
                    return match v.get("commands") {
                        Some(Value::Array(c)) => Ok(c.clone()),
                        _ => Err(AgentError::Invalid(format!(
                            "the agent of node {} answered the command list without \"commands\"",
                            node.uuid
                        ))),
                    };
                }
                Err(e) => {
                    last = e.without_url().to_string();
                    if attempt < attempts {
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    }
                }
            }
        }
        Err(AgentError::Connection(format!(
            "Failed to connect to the agent running on node {} to collect commands status. Error: {last}",
            node.uuid
        )))
    }

    /// The agent's newest command, when it is `method` and still running.
    /// One request: the caller's loop is the retry (no attempts² requests
    /// under the node's lock while the agent is down).
    async fn running_last(&self, node: &Node, method: &str) -> Result<Option<Value>, AgentError> {
        let name = method.split_once('.').map_or(method, |(_, n)| n);
        let commands = self.list_commands(node, 1).await?;
        Ok(commands.last().and_then(|c| {
            (c.get("command_name").and_then(Value::as_str) == Some(name)
                && c.get("command_status").and_then(Value::as_str) == Some("RUNNING"))
            .then(|| c.clone())
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn command_errors_read_like_ironic() {
        assert_eq!(
            command_error(
                &json!({"command_error": {"type": "ImageChecksumError", "details": "bad sum"}})
            ),
            "bad sum"
        );
        assert_eq!(command_error(&json!({"command_error": "boom"})), "boom");
        assert_eq!(command_error(&json!({})), "unknown error");
    }

    #[test]
    fn config_problems_name_their_keys() {
        assert!(AgentConfig::default().problems().is_empty());
        let bad = AgentConfig {
            command_timeout: Duration::ZERO,
            max_command_attempts: 0,
            verify_ca: "true".into(),
            stream_raw_images: true,
            erase_devices_priority: -1,
            erase_devices_metadata_priority: 99,
        };
        let p = bad.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("agent.command_timeout"));
        assert!(p[1].starts_with("agent.max_command_attempts"));
        assert!(p[2].starts_with("agent.erase_devices_priority"));
    }

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Requests a [`LossyAgent`] saw, by method.
    #[derive(Default)]
    struct Seen {
        posts: AtomicUsize,
        gets: AtomicUsize,
    }

    /// A raw-TCP agent whose every command POST arrives and whose answer is
    /// lost (the connection closes before any response), and whose command
    /// list says `newest` (`None`: that answer is lost too).
    async fn lossy_agent(
        newest: Option<Value>,
    ) -> (String, Arc<Seen>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                let newest = newest.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Read the head and the declared body, then act.
                    loop {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            continue;
                        }
                        if text.starts_with("POST ") {
                            s.posts.fetch_add(1, Ordering::SeqCst);
                            return; // the answer is lost
                        }
                        s.gets.fetch_add(1, Ordering::SeqCst);
                        let Some(newest) = newest else { return };
                        let body = json!({"commands": [
                            {"command_name": "get_deploy_steps", "command_status": "SUCCEEDED"},
                            newest,
                        ]})
                        .to_string();
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                        return;
                    }
                });
            }
        });
        (url, seen, task)
    }

    fn agent_node(url: &str) -> Node {
        serde_json::from_value(json!({
            "uuid": "8a4b5c1e-2f3d-4e5f-9a8b-7c6d5e4f3a2b",
            "name": null, "driver": "redfish", "driver_info": {}, "properties": {},
            "extra": {}, "instance_info": {}, "instance_uuid": null, "interfaces": {},
            "driver_internal_info": {"agent_url": url, "agent_secret_token": "tok"},
            "provision_state": "wait call-back", "target_provision_state": "active",
            "power_state": null, "target_power_state": null, "maintenance": false,
            "maintenance_reason": null, "last_error": null, "conductor_group": "",
            "conductor_affinity": null, "reservation": null, "lock_epoch": 0,
            "lock_waiters": 0, "revision": 0, "created_at": 0, "updated_at": null,
            "provision_updated_at": null
        }))
        .unwrap()
    }

    fn client(attempts: u32) -> AgentClient {
        AgentClient::new(AgentConfig {
            command_timeout: Duration::from_secs(5),
            max_command_attempts: attempts,
            ..AgentConfig::default()
        })
    }

    #[tokio::test]
    async fn a_command_whose_answer_was_lost_counts_as_sent_once() {
        let running = json!({"command_name": "execute_deploy_step", "command_status": "RUNNING"});
        let (url, seen, task) = lossy_agent(Some(running.clone())).await;
        let got = client(3)
            .command(
                &agent_node(&url),
                "deploy.execute_deploy_step",
                json!({}),
                false,
            )
            .await
            .unwrap();
        assert_eq!(got, running);
        assert_eq!(seen.posts.load(Ordering::SeqCst), 1, "never sent twice");
        assert_eq!(seen.gets.load(Ordering::SeqCst), 1, "one look at the list");
        task.abort();
    }

    #[tokio::test]
    async fn an_unreached_agent_costs_one_list_request_per_attempt() {
        // The newest command is another one: the POST did not take. And
        // with every answer lost.
        let other = json!({"command_name": "sync", "command_status": "SUCCEEDED"});
        for newest in [Some(other), None] {
            an_unreached_agent_case(newest).await;
        }
    }

    async fn an_unreached_agent_case(newest: Option<Value>) {
        let (url, seen, task) = lossy_agent(newest).await;
        let err = client(3)
            .command(
                &agent_node(&url),
                "deploy.execute_deploy_step",
                json!({}),
                false,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::Connection(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("execute_deploy_step"), "{text}");
        assert!(!text.contains("tok"), "the token is never shown: {text}");
        assert_eq!(seen.posts.load(Ordering::SeqCst), 3, "max_command_attempts");
        assert_eq!(
            seen.gets.load(Ordering::SeqCst),
            3,
            "one list request per failed attempt, not attempts²"
        );
        task.abort();
    }
}
