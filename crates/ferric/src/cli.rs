//! The command line (SPEC §9): clap definitions and what each command does.
//!
//! Command output goes to stdout; logs and errors go to stderr. Exit codes:
//! 0 success, 1 runtime failure, 2 bad usage or bad configuration (nothing
//! was started or changed).

use crate::config::{Config, ConfigError, Sources};
use crate::serve;
use crate::telemetry::{self, LogFormat};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use ferric_store::{ConductorRow, Store as _};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use tracing::info;

/// Exit code for bad usage or bad configuration (clap uses it for usage errors too).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for any other failure.
pub const EXIT_FAILURE: u8 = 1;

/// ferric: bare-metal provisioning conductor (an OpenStack Ironic-compatible subset).
///
/// Configuration layers, lowest first: built-in defaults, the TOML file
/// (--config or FERRIC_CONFIG), environment variables FERRIC_<SECTION>__<KEY>
/// (e.g. FERRIC_DATABASE__URL, FERRIC_CONDUCTOR__HEARTBEAT_INTERVAL=5s), flags.
#[derive(Debug, Parser)]
#[command(name = "ferric", version)]
pub struct Cli {
    /// TOML config file; must exist when given.
    #[arg(long, global = true, env = "FERRIC_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log line format. Logs go to stderr; the filter comes from FERRIC_LOG,
    /// then RUST_LOG (default: info for serve, warn otherwise).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "FERRIC_LOG_FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API and the conductor in one process (default: embedded SQLite).
    Serve(ServeArgs),
    /// Database administration.
    #[command(subcommand)]
    Db(DbCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Conductors of the cluster.
    #[command(subcommand)]
    Conductor(ConductorCommand),
    /// Nodes, through the REST API (--url, --token): list, show, create,
    /// provision verbs (with --wait), power, maintenance.
    #[command(subcommand)]
    Node(crate::client::NodeCommand),
    /// Node locks: list, release stale ones, audit trail.
    #[command(subcommand)]
    Lock(crate::lock::LockCommand),
    /// Benchmarks; each prints one JSON object.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

/// Flags of commands that open the database.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Database URL (database.url): sqlite://PATH or postgres://USER@HOST/DB.
    /// Prefer FERRIC_DATABASE__URL for URLs with a password: flags show in `ps`.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// `ferric serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// This conductor's name (conductor.host): the lock holder tag and its
    /// registration. Default: the machine's hostname.
    #[arg(long, value_name = "HOSTNAME")]
    pub host: Option<String>,
    /// API listen address (api.host). Loopback by default.
    #[arg(long, value_name = "ADDRESS")]
    pub api_host: Option<String>,
    /// API port (api.port), default 6385; 0 picks a free port.
    #[arg(long, value_name = "PORT")]
    pub api_port: Option<String>,
    /// Serve the API without authentication on a non-loopback address.
    #[arg(long)]
    pub insecure_no_auth: bool,
}

/// `ferric db ...`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the database if needed (SQLite: the file; PostgreSQL: the
    /// database the URL names, when the user may create databases — else
    /// the error says what to run) and apply pending migrations.
    Migrate(DbArgs),
}

/// `ferric config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets masked. Exits 2
    /// (after printing) when the configuration has problems.
    Show,
}

/// `ferric conductor ...`.
#[derive(Debug, Subcommand)]
pub enum ConductorCommand {
    /// List registered conductors with liveness judged by the database clock.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

impl Cli {
    /// True for the long-running command, whose failures are logged rather
    /// than printed.
    pub fn is_service(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

/// The exit code for a failed command.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.chain().any(|e| e.is::<ConfigError>()) {
        EXIT_CONFIG
    } else {
        EXIT_FAILURE
    }
}

/// Run a parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // One-shot commands keep stderr quiet unless something is wrong.
    let default_filter = if cli.is_service() { "info" } else { "warn" };
    telemetry::init(cli.log_format, default_filter)?;
    let sources = Sources::from_process(cli.config.clone());
    match cli.command {
        Command::Serve(args) => {
            let sources = with_db_flag(sources, &args.db)
                .flag("conductor.host", "--host", args.host.as_deref())
                .flag("api.host", "--api-host", args.api_host.as_deref())
                .flag_parsed("api.port", "--api-port", args.api_port.as_deref())
                .flag(
                    "api.insecure_no_auth",
                    "--insecure-no-auth",
                    args.insecure_no_auth.then_some("true"),
                );
            let config = Config::load(&sources)?;
            // Handlers go in before anything registers, so a signal that
            // arrives early still stops ferric gracefully.
            let shutdown = shutdown_signal()?;
            serve::run(config, shutdown).await
        }
        Command::Db(DbCommand::Migrate(db)) => {
            let config = Config::load(&with_db_flag(sources, &db))?;
            migrate(&config).await
        }
        Command::Config(ConfigCommand::Show) => {
            let config = Config::extract(&sources)?;
            let text = config
                .to_toml_masked()
                .context("rendering the configuration as TOML")?;
            print!("{text}");
            config.validate()?;
            Ok(())
        }
        Command::Conductor(ConductorCommand::List { json, db }) => {
            let config = Config::load(&with_db_flag(sources, &db))?;
            list_conductors(&config, json).await
        }
        Command::Lock(cmd) => {
            let config = Config::load(&with_db_flag(sources, cmd.db()))?;
            crate::lock::run(&config, cmd).await
        }
        Command::Bench(cmd) => crate::bench::run(cmd).await,
        Command::Node(cmd) => crate::client::run(cmd).await,
    }
}

pub(crate) fn with_db_flag(sources: Sources, db: &DbArgs) -> Sources {
    sources.flag("database.url", "--database-url", db.database_url.as_deref())
}

/// Resolves on the first SIGINT or SIGTERM.
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutdown requested");
    })
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let existed = config.database.sqlite_path().map(|p| p.exists());
    let created = if config.database.is_sqlite() {
        None
    } else {
        ensure_pg_database(config).await?
    };
    let mut options = ferric_store::StoreOptions::new(config.database.url.clone());
    options.max_connections = config.database.max_connections;
    options.heartbeat_timeout = config.conductor.heartbeat_timeout;
    options.pg_session = config.database.pg_session();
    options.connect_timeout = crate::lock::ADMIN_CONNECT_TIMEOUT;
    let store = ferric_store::SqlStore::open(options)
        .await
        .map_err(|e| crate::lock::admin_open_error(config, e))?;
    let what = match (existed, &created) {
        (Some(false), _) => "created the SQLite database and applied every migration".to_string(),
        (Some(true), _) => {
            "opened the existing SQLite database and applied any pending migrations".to_string()
        }
        (None, Some(name)) => {
            format!("created the PostgreSQL database \"{name}\" and applied every migration")
        }
        (None, None) => "applied any pending migrations".to_string(),
    };
    println!(
        "database {} ({}): {what}; schema is up to date",
        config.database.masked_url(),
        format!("{:?}", store.backend()).to_lowercase()
    );
    store.close().await;
    Ok(())
}

/// `db migrate` on PostgreSQL: create the database the URL names when it
/// does not exist (connected to the maintenance database `postgres` as the
/// same user). Returns its name when it was created. When it cannot be
/// created, the error says exactly what to run instead.
async fn ensure_pg_database(config: &Config) -> anyhow::Result<Option<String>> {
    use sqlx::postgres::PgConnectOptions;
    use sqlx::{ConnectOptions as _, Connection as _};
    use std::str::FromStr as _;
    let masked = config.database.masked_url();
    let within = crate::lock::ADMIN_CONNECT_TIMEOUT;
    let options = PgConnectOptions::from_str(&config.database.url)
        .map_err(|e| anyhow::anyhow!("database.url {masked} is not a PostgreSQL URL: {e}"))?;
    let unreachable = || {
        anyhow::anyhow!(
            "cannot reach database {masked} within {}s: check that the server runs and that \
             database.url (or --database-url) names the right host and port",
            within.as_secs()
        )
    };
    let code = |e: &sqlx::Error| {
        e.as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
            .unwrap_or_default()
    };
    match tokio::time::timeout(within, options.connect()).await {
        Err(_) => return Err(unreachable()),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            return Ok(None);
        }
        // 3D000: invalid_catalog_name, the database does not exist.
        Ok(Err(e)) if code(&e) == "3D000" => {}
        Ok(Err(e)) => {
            return Err(crate::lock::admin_open_error(
                config,
                ferric_store::StoreError::Database(e),
            ))
        }
    }
    // No database in the URL: PostgreSQL's default, the user's name.
    let user = options.get_username().to_string();
    let name = options.get_database().unwrap_or(&user).to_string();
    let (host, port) = (options.get_host().to_string(), options.get_port());
    let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let instead = format!(
        "create it as a user allowed to, e.g. `createdb -h {host} -p {port} -O {user} {name}` \
         or in psql `CREATE DATABASE {} OWNER {};`, then run `ferric db migrate` again",
        quoted(&name),
        quoted(&user)
    );
    let admin = options.clone().database("postgres");
    let mut conn = match tokio::time::timeout(within, admin.connect()).await {
        Err(_) => return Err(unreachable()),
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => anyhow::bail!(
            "database \"{name}\" does not exist on {host}:{port}, and ferric could not connect \
             to the maintenance database \"postgres\" as {user} to create it ({e}); {instead}"
        ),
    };
    let created = sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        quoted(&name)
    )))
    .execute(&mut conn)
    .await;
    let _ = conn.close().await;
    match created {
        Ok(_) => Ok(Some(name)),
        // 42P04: duplicate_database (someone created it meanwhile).
        Err(e) if code(&e) == "42P04" => Ok(None),
        Err(e) => anyhow::bail!(
            "database \"{name}\" does not exist on {host}:{port}, and user {user} may not \
             create it ({e}); {instead}"
        ),
    }
}

async fn list_conductors(config: &Config, json: bool) -> anyhow::Result<()> {
    let store = crate::lock::open_existing_store(config, true).await?;
    let rows = store.list_conductors().await.context("listing conductors");
    // Which conductor currently serves how many nodes (conductor_affinity,
    // set by takeover after every ring change).
    let nodes = store
        .list_nodes(&ferric_store::NodeQuery::default())
        .await
        .context("listing nodes");
    store.close().await;
    let (rows, nodes) = (rows?, nodes?);
    let mut owned: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for n in &nodes.nodes {
        if let Some(a) = &n.conductor_affinity {
            *owned.entry(a.clone()).or_default() += 1;
        }
    }
    let counted: Vec<(ConductorRow, usize)> = rows
        .into_iter()
        .map(|r| {
            let n = owned.get(&r.hostname).copied().unwrap_or(0);
            (r, n)
        })
        .collect();
    if json {
        let out: Vec<serde_json::Value> = counted
            .iter()
            .map(|(r, n)| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("nodes".into(), serde_json::json!(n));
                }
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("rendering conductors as JSON")?
        );
    } else {
        print!("{}", conductor_table(&counted));
    }
    Ok(())
}

/// Conductors as an aligned text table, one row each, with a header; the
/// count is the nodes each currently serves (conductor_affinity).
pub fn conductor_table(rows: &[(ConductorRow, usize)]) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let body = rows
        .iter()
        .map(|(r, n)| {
            vec![
                r.hostname.clone(),
                if r.conductor_group.is_empty() {
                    "-".to_string()
                } else {
                    r.conductor_group.clone()
                },
                yes_no(r.alive),
                yes_no(r.online),
                format_age_ms(r.heartbeat_age_ms),
                n.to_string(),
                r.drivers.join(","),
            ]
        })
        .collect();
    render_table(
        &[
            "HOSTNAME",
            "GROUP",
            "ALIVE",
            "ONLINE",
            "HEARTBEAT AGE",
            "NODES",
            "DRIVERS",
        ],
        body,
    )
}

/// Rows as an aligned text table under `header`; trailing blanks trimmed.
pub fn render_table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    table.extend(rows);
    let mut widths = vec![0usize; header.len()];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A duration in milliseconds for people: `4.2s`, or `3m 20s` past a minute.
pub fn format_age_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        let tenths = (ms + 50) / 100;
        format!("{}.{}s", tenths / 10, tenths % 10)
    } else {
        let secs = u64::try_from(ms / 1000).unwrap_or_default();
        humantime::format_duration(Duration::from_secs(secs)).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_core::DbTime;

    #[test]
    fn conductor_table_aligns_columns() {
        let row = |h: &str, alive, age| ConductorRow {
            hostname: h.into(),
            conductor_group: String::new(),
            drivers: vec!["fake-hardware".into()],
            online: alive,
            alive,
            started_at: DbTime(0),
            heartbeat_at: DbTime(0),
            heartbeat_age_ms: age,
        };
        let t = conductor_table(&[
            (row("a", true, 850), 3),
            (row("long-name", false, 125_000), 0),
        ]);
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("HOSTNAME   GROUP  ALIVE"), "{t}");
        assert!(lines[1].contains("yes") && lines[1].contains("0.9s"), "{t}");
        assert!(lines[2].contains("no") && lines[2].contains("2m 5s"), "{t}");
    }

    #[test]
    fn config_errors_exit_2_others_1() {
        let config = anyhow::Error::new(ConfigError::one("x")).context("loading");
        assert_eq!(exit_code(&config), EXIT_CONFIG);
        assert_eq!(exit_code(&anyhow::anyhow!("db down")), EXIT_FAILURE);
    }

    #[test]
    fn bench_database_flag_is_database_url_and_url_is_a_hidden_alias() {
        use crate::bench::BenchCommand;
        use clap::CommandFactory as _;
        for flag in ["--database-url", "--url"] {
            for bench in ["locks", "scale", "ports"] {
                let cli = Cli::try_parse_from(["ferric", "bench", bench, flag, "sqlite://x.db"])
                    .unwrap_or_else(|e| panic!("{bench} {flag}: {e}"));
                let url = match cli.command {
                    Command::Bench(
                        BenchCommand::Locks { url, .. }
                        | BenchCommand::Scale { url, .. }
                        | BenchCommand::Ports { url, .. },
                    ) => url,
                    other => panic!("{other:?}"),
                };
                assert_eq!(url.as_deref(), Some("sqlite://x.db"));
            }
        }
        // --help shows the consistent name only.
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("bench")
            .and_then(|b| b.find_subcommand_mut("locks"))
            .map(|l| l.render_long_help().to_string())
            .unwrap_or_default();
        assert!(help.contains("--database-url"), "{help}");
        assert!(
            !help.contains("  --url ") && !help.contains("aliases"),
            "{help}"
        );
    }

    #[test]
    fn lock_release_takes_the_api_url() {
        let cli = Cli::try_parse_from([
            "ferric",
            "lock",
            "release",
            "n1",
            "--force",
            "--reason",
            "r",
            "--url",
            "http://127.0.0.1:6385",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Lock(crate::lock::LockCommand::Release { api, force, .. }) => {
                assert!(force);
                assert_eq!(api.url.as_deref(), Some("http://127.0.0.1:6385"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
