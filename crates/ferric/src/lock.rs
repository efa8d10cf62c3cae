//! `ferric lock list|release|audit`: the 3 a.m. tooling (SPEC §1, §7).
//!
//! Releasing is safe by construction: it takes the lock away with a
//! conditional statement on the holder's exact (holder, task, epoch), so the
//! old holder's later writes fail with LockLost; a node left in a transient
//! state is moved to its failure state; every release is audited.
//!
//! Like `ferric conductor list`, these commands open the database with
//! [`open_existing_store`]: they never create or migrate one.

use crate::cli::{format_age_ms, render_table, DbArgs};
use crate::config::Config;
use anyhow::{anyhow, bail, Context as _};
use clap::Subcommand;
use ferric_conductor::cluster::{recover_lock, Cause};
use ferric_conductor::TaskManager;
use ferric_store::{LockView, NodeIdent, SqlStore, Store as _, StoreError, StoreOptions};
use std::sync::Arc;

/// `ferric lock ...`.
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Every held lock and non-empty wait queue: holder, whether it is alive,
    /// purpose, how long held, epoch, waiters.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Release the lock of NODE (UUID or name). Refused while the holder is
    /// alive unless --force is given with a --reason.
    ///
    /// With --url (or FERRIC_URL) a running conductor performs it through
    /// its API (POST /v1/nodes/NODE/lock/release, with the API's
    /// credentials), so the node's failure notification goes to that
    /// server's sinks and its /metrics counts the recovery. Without an API
    /// URL it is done here only when no conductor is alive (the configured
    /// notification sink is used); while one is, it is refused with the
    /// names of the running conductors.
    Release {
        /// The node, by UUID or name.
        node: String,
        /// Take the lock from a live holder; its later writes fail (fencing).
        #[arg(long, requires = "reason")]
        force: bool,
        /// Why; recorded in the audit trail.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Operator overrides, oldest first.
    Audit {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// At most this many records (the newest).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// Where a running conductor's API is, for `lock release`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// API base URL of a running conductor (e.g. http://127.0.0.1:6385).
    #[arg(long, env = "FERRIC_URL", value_name = "URL")]
    pub url: Option<String>,
    #[command(flatten)]
    pub credentials: crate::client::Credentials,
}

impl LockCommand {
    /// The database flags of the command.
    pub fn db(&self) -> &DbArgs {
        match self {
            LockCommand::List { db, .. }
            | LockCommand::Release { db, .. }
            | LockCommand::Audit { db, .. } => db,
        }
    }
}

/// Who is at the keyboard, for the audit trail.
fn actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_string());
    format!("{user}@{}", ferric_conductor::config::default_host())
}

/// Locks as a table.
pub fn lock_table(views: &[LockView]) -> String {
    let rows = views
        .iter()
        .map(|v| {
            vec![
                v.node.to_string(),
                v.node_name.clone().unwrap_or_else(|| "-".into()),
                v.provision_state.clone(),
                v.holder.clone().unwrap_or_else(|| "-".into()),
                match v.holder_online {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
                v.purpose.clone().unwrap_or_else(|| "-".into()),
                v.held_ms.map(format_age_ms).unwrap_or_else(|| "-".into()),
                v.epoch.to_string(),
                v.waiters.len().to_string(),
            ]
        })
        .collect();
    render_table(
        &[
            "NODE", "NAME", "STATE", "HOLDER", "ALIVE", "PURPOSE", "HELD", "EPOCH", "WAITERS",
        ],
        rows,
    )
}

/// Open the configured database for an admin command (`ferric lock ...`,
/// `ferric conductor list`): it must exist with every migration applied, and
/// nothing is created or migrated; SQLite is opened read-only unless the
/// command writes (`read_only = false`). Otherwise the error is one line
/// that says what to run first.
pub async fn open_existing_store(config: &Config, read_only: bool) -> anyhow::Result<SqlStore> {
    let mut options = StoreOptions::new(config.database.url.clone());
    options.max_connections = config.database.max_connections;
    options.heartbeat_timeout = config.conductor.heartbeat_timeout;
    options.pg_session = config.database.pg_session();
    options.connect_timeout = ADMIN_CONNECT_TIMEOUT;
    match SqlStore::open_existing(options, read_only).await {
        Ok(store) => Ok(store),
        Err(StoreError::NotReady(what)) => Err(anyhow!(
            "database {} {what}; run `ferric serve` or `ferric db migrate` first",
            config.database.masked_url()
        )),
        Err(e) => Err(admin_open_error(config, e)),
    }
}

/// How long an admin command (`lock ...`, `conductor list`, `db migrate`)
/// waits for a database connection before giving up.
pub const ADMIN_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An admin command's failure to open the database: one line, and for an
/// unreachable server one that says so (not a pool's "timed out").
pub fn admin_open_error(config: &Config, e: StoreError) -> anyhow::Error {
    if e.is_unavailable() {
        anyhow!(
            "cannot reach database {} within {}s ({e}): check that the server runs and that \
             database.url (or --database-url) names the right host and port",
            config.database.masked_url(),
            ADMIN_CONNECT_TIMEOUT.as_secs()
        )
    } else {
        anyhow!("opening database {}: {e}", config.database.masked_url())
    }
}

/// Run a lock command.
pub async fn run(config: &Config, cmd: LockCommand) -> anyhow::Result<()> {
    if let LockCommand::Release {
        node,
        force,
        reason,
        api: ApiArgs {
            url: Some(url),
            credentials,
        },
        ..
    } = &cmd
    {
        let endpoint = crate::client::Endpoint {
            url: url.clone(),
            credentials: credentials.clone(),
        };
        return release_through_api(&endpoint, node, *force, reason.clone()).await;
    }
    let read_only = !matches!(cmd, LockCommand::Release { .. });
    let store = Arc::new(open_existing_store(config, read_only).await?);
    let result = run_on(config, store.clone(), cmd).await;
    store.close().await;
    result
}

async fn run_on(
    config: &Config,
    store: Arc<ferric_store::SqlStore>,
    cmd: LockCommand,
) -> anyhow::Result<()> {
    match cmd {
        LockCommand::List { json, .. } => {
            let views = store.list_locks().await.context("listing locks")?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&views).context("rendering locks")?
                );
            } else {
                print!("{}", lock_table(&views));
            }
            Ok(())
        }
        LockCommand::Audit { json, limit, .. } => {
            let records = store
                .list_audit(limit)
                .await
                .context("reading the audit trail")?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&records).context("rendering audit")?
                );
            } else {
                let rows = records
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            r.node.to_string(),
                            r.action.clone(),
                            r.actor.clone(),
                            r.previous_holder.clone().unwrap_or_else(|| "-".into()),
                            r.previous_epoch.to_string(),
                            r.reason.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    render_table(
                        &[
                            "ID",
                            "NODE",
                            "ACTION",
                            "ACTOR",
                            "PREVIOUS HOLDER",
                            "EPOCH",
                            "REASON"
                        ],
                        rows
                    )
                );
            }
            Ok(())
        }
        LockCommand::Release {
            node,
            force,
            reason,
            ..
        } => {
            let n = store
                .get_node(&NodeIdent::parse(&node))
                .await
                .with_context(|| format!("looking up node {node}"))?;
            let view = store.lock_view(n.uuid).await.context("reading the lock")?;
            let Some(holder) = view.holder.clone() else {
                bail!("node {node} is not locked; nothing to release");
            };
            let alive = view.holder_online == Some(true);
            if alive && !force {
                bail!(
                    "refusing to release the lock of node {node}: its holder {holder} is alive \
                     (purpose: {}, held {}). It releases the lock itself when its work ends. To \
                     take it anyway use --force --reason TEXT; the holder's later writes will \
                     then fail.",
                    view.purpose.as_deref().unwrap_or("unspecified"),
                    view.held_ms.map(format_age_ms).unwrap_or_default()
                );
            }
            // A running conductor must do it (its sinks, its /metrics).
            let running: Vec<String> = store
                .list_conductors()
                .await
                .context("listing conductors")?
                .into_iter()
                .filter(|c| c.alive)
                .map(|c| c.hostname)
                .collect();
            if !running.is_empty() {
                bail!(
                    "conductor(s) {} are running: release the lock through one of them so that \
                     its notification sinks and /metrics see it: add --url http://THEIR_API \
                     (or set FERRIC_URL), with --token/--user as the API requires",
                    running.join(", ")
                );
            }
            let actor = actor();
            let reason = reason.unwrap_or_else(|| format!("holder {holder} is offline"));
            let mut conductor = config.conductor.clone();
            conductor.host = format!("ferric-cli/{actor}");
            // No conductor runs: the configured sink, here, delivers the
            // node's failure notification (flushed before exiting).
            let sinks = config.notifications.build()?;
            let tm = TaskManager::new(store.clone(), conductor, sinks.sink.clone());
            let cause = Cause::Operator {
                actor: actor.clone(),
                reason: reason.clone(),
                forced: alive,
            };
            if !recover_lock(&tm, &view, cause)
                .await
                .context("releasing the lock")?
            {
                bail!("the lock of node {node} changed while releasing it; look again with `ferric lock list`");
            }
            if let Some(queued) = &sinks.queued {
                if !queued.flush(config.notifications.flush_timeout).await {
                    eprintln!(
                        "warning: the {} notification sink did not deliver everything within {}",
                        queued.kind(),
                        humantime::format_duration(config.notifications.flush_timeout)
                    );
                }
            }
            let after = store
                .get_node(&n.uuid.into())
                .await
                .context("re-reading the node")?;
            println!(
                "released the lock of node {node} held by {holder} (epoch {}); node is now \"{}\"{}",
                view.epoch,
                after.provision_state,
                after
                    .reservation
                    .map(|r| format!(", handed to the next waiter {}", r.holder))
                    .unwrap_or_default()
            );
            Ok(())
        }
    }
}

/// `lock release --url`: the running conductor behind `endpoint` releases
/// the lock (POST /v1/nodes/NODE/lock/release).
async fn release_through_api(
    endpoint: &crate::client::Endpoint,
    node: &str,
    force: bool,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let client = crate::client::Client::new(endpoint)?;
    let body = serde_json::json!({"force": force, "reason": reason, "actor": actor()});
    let out = client
        .request(
            reqwest::Method::POST,
            &crate::client::node_path(node, "/lock/release"),
            Some(&body),
        )
        .await
        .with_context(|| format!("releasing the lock of node {node} through the API"))?;
    let text = |k: &str| {
        out.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .to_string()
    };
    println!(
        "{} released the lock of node {node} held by {} (epoch {}{}); node is now \"{}\"{}",
        text("released_by"),
        text("previous_holder"),
        out.get("previous_epoch").cloned().unwrap_or_default(),
        if out.get("forced").and_then(|v| v.as_bool()) == Some(true) {
            ", taken from a live holder"
        } else {
            ""
        },
        text("provision_state"),
        out.get("reservation")
            .and_then(|v| v.as_str())
            .map(|r| format!(", handed to the next waiter {r}"))
            .unwrap_or_default()
    );
    Ok(())
}
