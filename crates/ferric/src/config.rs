//! The one configuration tree of `ferric`, loaded in layers.
//!
//! Layers, lowest first:
//!
//! 1. built-in defaults ([`defaults`] here, `ferric_conductor::config::defaults`
//!    for `[conductor]`);
//! 2. a TOML file named by `--config PATH` or `FERRIC_CONFIG` (it must exist
//!    when named; no file is read otherwise);
//! 3. environment variables `FERRIC_<SECTION>__<KEY>`, for example
//!    `FERRIC_CONDUCTOR__HEARTBEAT_INTERVAL=5s` or `FERRIC_DATABASE__URL=...`;
//!    variables without `__` (`FERRIC_CONFIG`, `FERRIC_LOG`, ...) are not
//!    config keys and are ignored here;
//! 4. command-line flags, where a command offers them (`serve --database-url`).
//!
//! Every key is checked: unknown keys (typos) and values of the wrong type are
//! reported with the key and the layer that set it, and [`Config::problems`]
//! lists every semantic problem at once. All of them come back together as
//! one [`ConfigError`], which `main` turns into exit code 2 before anything
//! starts.
//!
//! Secrets: the password in `database.url` (masked by [`mask_url`]) and
//! `api.token` are masked in `Debug`, in logs and in `ferric config show`.

use ferric_conductor::drivers::agent_client::AgentConfig;
use ferric_conductor::drivers::ipmi::IpmiConfig;
use ferric_conductor::drivers::{Drivers, HardwareConfig};
use ferric_conductor::netboot::PxeConfig;
use ferric_conductor::ConductorConfig;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Named defaults and limits, one place.
pub mod defaults {
    /// Embedded SQLite file in the working directory: the all-in-one default.
    pub const DATABASE_URL: &str = "sqlite://./ferric.db";
    /// Connection pool size.
    pub const DATABASE_MAX_CONNECTIONS: u32 = 8;
    /// Upper bound for `database.max_connections`.
    pub const DATABASE_MAX_CONNECTIONS_LIMIT: u32 = 1_000;
    /// The API listens on loopback only unless told otherwise.
    pub const API_HOST: &str = "127.0.0.1";
    /// Ironic's API port.
    pub const API_PORT: u16 = 6385;
    /// Prefix of environment variables that set config keys.
    pub const ENV_PREFIX: &str = "FERRIC_";
    /// Separator between section and key in environment variable names.
    pub const ENV_SEPARATOR: &str = "__";
}

/// The sections of [`Config`], as written in TOML.
pub const SECTIONS: [&str; 8] = [
    "database",
    "conductor",
    "api",
    "notifications",
    "hardware",
    "ipmi",
    "agent",
    "pxe",
];

/// Everything `ferric` can be configured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[database]`: where state lives.
    pub database: DatabaseConfig,
    /// `[conductor]`: membership, locking and worker settings.
    pub conductor: ConductorConfig,
    /// `[api]`: the REST API listener.
    pub api: ApiConfig,
    /// `[notifications]`: where provision notifications go.
    pub notifications: crate::notifications::NotificationsConfig,
    /// `[hardware]`: enabled hardware types and interfaces (Ironic's
    /// `enabled_*` / `default_*` options).
    pub hardware: HardwareConfig,
    /// `[ipmi]`: the ipmi hardware type's ipmitool settings (Ironic's
    /// `[ipmi]` options).
    pub ipmi: IpmiConfig,
    /// `[agent]`: the ramdisk agent's client and its default steps
    /// (Ironic's `[agent]` and `[deploy]` options).
    pub agent: AgentConfig,
    /// `[pxe]`: network boot of the ramdisk (scripts, image cache, dnsmasq).
    pub pxe: PxeConfig,
}

/// `[database]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (embedded, created if missing) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`. The password is a
    /// secret: it is masked wherever the URL is shown.
    pub url: String,
    /// Connection pool size (1 to 1000).
    pub max_connections: u32,
    /// PostgreSQL: the server ends a session idle inside a transaction this
    /// long (a frozen conductor), releasing its row locks ("0s": off).
    #[serde(with = "humantime_serde")]
    pub idle_in_transaction_timeout: std::time::Duration,
    /// PostgreSQL: the longest a statement waits for a row lock ("0s": off).
    #[serde(with = "humantime_serde")]
    pub lock_timeout: std::time::Duration,
    /// PostgreSQL: the longest a statement runs ("0s": off).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: std::time::Duration,
    /// PostgreSQL: TCP keepalive idle time and user timeout of the server's
    /// side of each connection, so it ends the session of a vanished
    /// conductor ("0s": the server's defaults).
    #[serde(with = "humantime_serde")]
    pub tcp_keepalive: std::time::Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: defaults::DATABASE_URL.to_string(),
            max_connections: defaults::DATABASE_MAX_CONNECTIONS,
            idle_in_transaction_timeout: ferric_store::PgSession::default()
                .idle_in_transaction_timeout,
            lock_timeout: ferric_store::PgSession::default().lock_timeout,
            statement_timeout: ferric_store::PgSession::default().statement_timeout,
            tcp_keepalive: ferric_store::PgSession::default().tcp_keepalive,
        }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &mask_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
            )
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .finish()
    }
}

impl DatabaseConfig {
    /// The PostgreSQL session bounds these keys set.
    pub fn pg_session(&self) -> ferric_store::PgSession {
        ferric_store::PgSession {
            idle_in_transaction_timeout: self.idle_in_transaction_timeout,
            lock_timeout: self.lock_timeout,
            statement_timeout: self.statement_timeout,
            tcp_keepalive: self.tcp_keepalive,
        }
    }

    /// The URL with its password masked, for display.
    pub fn masked_url(&self) -> String {
        mask_url(&self.url)
    }

    /// True for `sqlite:` URLs.
    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    /// The file path of a `sqlite:` URL (without query), if it names a file.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self.url.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }
}

/// `[api] auth`: how API clients authenticate (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication: only on loopback, unless `insecure_no_auth`.
    #[default]
    None,
    /// HTTP basic against `htpasswd_file` (bcrypt entries, `htpasswd -B`).
    Basic,
    /// Bearer tokens (`Authorization: Bearer T` or `X-Auth-Token: T`) from
    /// `token` and/or `token_file`.
    Token,
}

/// `[api]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address or host name to listen on. Loopback by default.
    pub host: String,
    /// TCP port; 0 picks a free port (tests).
    pub port: u16,
    /// Serve without authentication on a non-loopback address:
    /// a non-loopback `host` with `auth = "none"` is refused unless this is set.
    pub insecure_no_auth: bool,
    /// `none`, `basic` or `token`.
    pub auth: AuthMode,
    /// htpasswd file of `user:bcrypt-hash` lines (`auth = "basic"`).
    pub htpasswd_file: String,
    /// File of accepted bearer tokens, one per line (`auth = "token"`).
    pub token_file: String,
    /// An accepted bearer token (`auth = "token"`); a secret, masked in
    /// output. Prefer `FERRIC_API__TOKEN` or `token_file` to a config file.
    pub token: String,
    /// Time a client has to send a complete request head, from the
    /// connection's start or the end of the previous response: also the idle
    /// keep-alive timeout. Like `"20s"`.
    #[serde(with = "humantime_serde")]
    pub header_timeout: std::time::Duration,
    /// Time a client has to send a whole request body, from its head (408
    /// after it). Like `"30s"`.
    #[serde(with = "humantime_serde")]
    pub body_timeout: std::time::Duration,
    /// Connections served at once. `ferric serve` lowers it below the
    /// process's open-file limit (raised to the hard limit at start), keeping
    /// room for the database pool and outgoing connections.
    pub max_connections: usize,
    /// The `heartbeat_timeout` told to ramdisk agents at lookup (Ironic's
    /// option of the same name; agents heartbeat every 30-60 % of it).
    #[serde(with = "humantime_serde")]
    pub ramdisk_heartbeat_timeout: std::time::Duration,
    /// The base URL of the links the API writes (`links`, `next`,
    /// `Location`), as Ironic's `[api] public_endpoint`: an http(s) URL
    /// without query or fragment, like `"https://ironic.example.com:6385"`
    /// (the address clients reach, e.g. a proxy's). Empty: the address the
    /// request's connection arrived on; never the request's `Host` header.
    pub public_endpoint: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            host: defaults::API_HOST.to_string(),
            port: defaults::API_PORT,
            insecure_no_auth: false,
            auth: AuthMode::None,
            htpasswd_file: String::new(),
            token_file: String::new(),
            token: String::new(),
            header_timeout: ferric_api::server::DEFAULT_HEADER_TIMEOUT,
            body_timeout: ferric_api::server::DEFAULT_BODY_TIMEOUT,
            max_connections: ferric_api::server::DEFAULT_MAX_CONNECTIONS,
            ramdisk_heartbeat_timeout: ferric_api::DEFAULT_RAMDISK_HEARTBEAT_TIMEOUT,
            public_endpoint: String::new(),
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("insecure_no_auth", &self.insecure_no_auth)
            .field("auth", &self.auth)
            .field("htpasswd_file", &self.htpasswd_file)
            .field("token_file", &self.token_file)
            .field("token", &mask_secret(&self.token))
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("max_connections", &self.max_connections)
            .field("ramdisk_heartbeat_timeout", &self.ramdisk_heartbeat_timeout)
            .field("public_endpoint", &self.public_endpoint)
            .finish()
    }
}

impl ApiConfig {
    /// `public_endpoint`, parsed; `None` when empty. The error names the key.
    pub fn public_endpoint(&self) -> Result<Option<ferric_api::extract::PublicEndpoint>, String> {
        if self.public_endpoint.is_empty() {
            return Ok(None);
        }
        ferric_api::extract::PublicEndpoint::parse(&self.public_endpoint)
            .map(Some)
            .map_err(|e| format!("api.public_endpoint {e}"))
    }

    /// The API's credentials checker, reading `htpasswd_file` / `token_file`.
    /// Errors name the key and the file.
    pub fn build_auth(&self) -> Result<ferric_api::auth::Auth, ConfigError> {
        use ferric_api::auth::{Auth, Htpasswd};
        match self.auth {
            AuthMode::None => Ok(Auth::none()),
            AuthMode::Basic => {
                let path = &self.htpasswd_file;
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::one(format!("api.htpasswd_file {path:?}: cannot read: {e}"))
                })?;
                let htpasswd = Htpasswd::parse(&text)
                    .map_err(|e| ConfigError::one(format!("api.htpasswd_file {path:?}: {e}")))?;
                Ok(Auth::none().with_htpasswd(htpasswd))
            }
            AuthMode::Token => {
                let mut tokens = Vec::new();
                if !self.token.trim().is_empty() {
                    tokens.push(self.token.trim().to_string());
                }
                if !self.token_file.is_empty() {
                    let path = &self.token_file;
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        ConfigError::one(format!("api.token_file {path:?}: cannot read: {e}"))
                    })?;
                    tokens.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_string),
                    );
                }
                if tokens.is_empty() {
                    return Err(ConfigError::one(
                        "api.auth = \"token\" but no token is configured: set api.token \
                         (FERRIC_API__TOKEN) or api.token_file (a file with one token per line)",
                    ));
                }
                Ok(Auth::none().with_tokens(tokens))
            }
        }
    }
}

/// `****` for a non-empty secret, empty otherwise.
fn mask_secret(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        "****"
    }
}

/// A configuration that cannot be used: every problem found, one per entry,
/// each naming the key (and, for load errors, the layer that set it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl ConfigError {
    /// One problem.
    pub fn one(problem: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![problem.into()],
        }
    }
}

/// A value given by a command-line flag.
#[derive(Clone)]
pub struct FlagValue {
    /// Config key path, e.g. `database.url`.
    pub key: String,
    /// The flag as typed, e.g. `--database-url`, for error messages.
    pub flag: String,
    pub value: Value,
}

/// Where the layers come from. `main` fills it from the process
/// ([`Sources::from_process`]); tests fill it by hand, so they never touch the
/// process environment.
#[derive(Clone, Default)]
pub struct Sources {
    /// The TOML file (`--config` / `FERRIC_CONFIG`); it must exist.
    pub file: Option<PathBuf>,
    /// Environment variables, as (name, value). Only
    /// `FERRIC_<SECTION>__<KEY>` names are read.
    pub env: Vec<(String, String)>,
    /// Flag values, applied last, in order.
    pub flags: Vec<FlagValue>,
}

impl Sources {
    /// The file given, and this process's environment.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        let env = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .filter(|(k, _)| k.starts_with(defaults::ENV_PREFIX))
            .collect();
        Sources {
            file,
            env,
            flags: Vec::new(),
        }
    }

    /// Add a flag whose value is parsed like an environment variable's
    /// (`5` a number, `true` a bool, anything else a string), for keys that
    /// are not strings (`--api-port 0`).
    pub fn flag_parsed(mut self, key: &str, flag: &str, value: Option<&str>) -> Self {
        if let Some(v) = value {
            let Ok(value) = v.parse::<Value>();
            self.flags.push(FlagValue {
                key: key.to_string(),
                flag: flag.to_string(),
                value,
            });
        }
        self
    }

    /// Add a string-valued flag (`None`: the flag was not given).
    pub fn flag(mut self, key: &str, flag: &str, value: Option<&str>) -> Self {
        if let Some(v) = value {
            self.flags.push(FlagValue {
                key: key.to_string(),
                flag: flag.to_string(),
                value: Value::from(v.to_string()),
            });
        }
        self
    }
}

/// One layer and where it came from.
struct Layer {
    origin: String,
    figment: Figment,
}

/// The config key an environment variable sets, if it is one of ours:
/// `FERRIC_CONDUCTOR__HEARTBEAT_INTERVAL` → `conductor.heartbeat_interval`.
pub fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(defaults::ENV_PREFIX)?;
    if !rest.contains(defaults::ENV_SEPARATOR) {
        return None;
    }
    Some(
        rest.to_ascii_lowercase()
            .split(defaults::ENV_SEPARATOR)
            .collect::<Vec<_>>()
            .join("."),
    )
}

impl Config {
    /// Load every layer and check it: [`Config::extract`] then
    /// [`Config::validate`].
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let config = Config::extract(sources)?;
        config.validate()?;
        Ok(config)
    }

    /// Load every layer and decode it, without the semantic checks of
    /// [`Config::problems`] (`config show` prints a config that has problems).
    /// Unknown keys and values of the wrong type are errors naming the key and
    /// the layer that set it; one per section at most, all sections at once.
    pub fn extract(sources: &Sources) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let layers = layers(sources, &mut problems);
        let mut merged = Figment::new();
        for layer in &layers {
            merged = merged.merge(layer.figment.clone());
        }

        let top: Dict = match merged.extract() {
            Ok(top) => top,
            Err(e) => {
                problems.extend(describe(e, &layers, None));
                return Err(ConfigError { problems });
            }
        };
        for key in top.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
            problems.push(format!(
                "{key}{}: unknown section; expected one of: {}",
                origin_suffix(&layers, key),
                SECTIONS.join(", ")
            ));
        }

        let database = section::<DatabaseConfig>(&merged, "database", &layers, &mut problems);
        let conductor = section::<ConductorConfig>(&merged, "conductor", &layers, &mut problems);
        let api = section::<ApiConfig>(&merged, "api", &layers, &mut problems);
        let mut notifications = section::<crate::notifications::NotificationsConfig>(
            &merged,
            "notifications",
            &layers,
            &mut problems,
        );
        // Deprecated integer keys (e.g. webhook_timeout_secs): still read,
        // with a warning, so operators' files keep working.
        if let Some(n) = notifications.as_mut() {
            match n.apply_deprecated() {
                Ok(warnings) => {
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                }
                Err(problem) => problems.push(problem),
            }
        }
        let hardware = section::<HardwareConfig>(&merged, "hardware", &layers, &mut problems);
        let ipmi = section::<IpmiConfig>(&merged, "ipmi", &layers, &mut problems);
        let agent = section::<AgentConfig>(&merged, "agent", &layers, &mut problems);
        let pxe = section::<PxeConfig>(&merged, "pxe", &layers, &mut problems);
        match (
            database,
            conductor,
            api,
            notifications,
            hardware,
            ipmi,
            agent,
            pxe,
        ) {
            (
                Some(database),
                Some(conductor),
                Some(api),
                Some(notifications),
                Some(hardware),
                Some(ipmi),
                Some(agent),
                Some(pxe),
            ) if problems.is_empty() => Ok(Config {
                database,
                conductor,
                api,
                notifications,
                hardware,
                ipmi,
                agent,
                pxe,
            }),
            _ => Err(ConfigError { problems }),
        }
    }

    /// Every semantic problem at once, one per entry, each naming its key;
    /// empty when the config is usable. Includes the conductor's own checks.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let db = &self.database;
        let url_ok = if let Some(rest) = db.url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            !path.split('?').next().unwrap_or_default().is_empty()
        } else if let Some(rest) = db
            .url
            .strip_prefix("postgres://")
            .or_else(|| db.url.strip_prefix("postgresql://"))
        {
            !rest.is_empty()
        } else {
            false
        };
        if !url_ok {
            p.push(format!(
                "database.url {:?} must be sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                db.masked_url()
            ));
        }
        if db.max_connections == 0 || db.max_connections > defaults::DATABASE_MAX_CONNECTIONS_LIMIT
        {
            p.push(format!(
                "database.max_connections ({}) must be between 1 and {}",
                db.max_connections,
                defaults::DATABASE_MAX_CONNECTIONS_LIMIT
            ));
        }
        p.extend(self.conductor.problems());
        p.extend(self.notifications.problems());
        p.extend(Drivers::new().problems(&self.hardware));
        p.extend(self.ipmi.problems());
        p.extend(self.agent.problems());
        p.extend(self.pxe.problems());
        if self.api.host.parse::<IpAddr>().is_err() && !is_hostname(&self.api.host) {
            p.push(format!(
                "api.host {:?} must be an IP address or a host name",
                self.api.host
            ));
        } else if !is_loopback(&self.api.host)
            && self.api.auth == AuthMode::None
            && !self.api.insecure_no_auth
        {
            p.push(format!(
                "api.host {:?} is not a loopback address and the API has no authentication \
                 configured; bind to 127.0.0.1, configure api.auth = \"basic\" (with \
                 api.htpasswd_file) or \"token\" (with api.token or api.token_file), or set \
                 api.insecure_no_auth = true (--insecure-no-auth) to serve unauthenticated",
                self.api.host
            ));
        }
        if let Err(e) = self.api.public_endpoint() {
            p.push(e);
        }
        if self.api.ramdisk_heartbeat_timeout.as_secs() < 1 {
            p.push(format!(
                "api.ramdisk_heartbeat_timeout ({}) must be at least 1s (agents are told whole seconds)",
                humantime::format_duration(self.api.ramdisk_heartbeat_timeout)
            ));
        }
        match self.api.auth {
            AuthMode::Basic if self.api.htpasswd_file.is_empty() => p.push(
                "api.auth = \"basic\" needs api.htpasswd_file (user:bcrypt-hash lines, htpasswd -B)"
                    .to_string(),
            ),
            AuthMode::Token if self.api.token.trim().is_empty() && self.api.token_file.is_empty() => {
                p.push(
                    "api.auth = \"token\" needs api.token (FERRIC_API__TOKEN) or api.token_file"
                        .to_string(),
                )
            }
            _ => {}
        }
        for (key, value) in [
            ("api.header_timeout", self.api.header_timeout),
            ("api.body_timeout", self.api.body_timeout),
        ] {
            if value.is_zero() {
                p.push(format!("{key} must be greater than 0 (like \"20s\")"));
            }
        }
        if self.api.max_connections == 0 {
            p.push("api.max_connections must be at least 1".to_string());
        }
        p
    }

    /// `Ok` when [`Config::problems`] finds nothing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// A copy safe to print: secrets masked.
    pub fn masked(&self) -> Config {
        let mut c = self.clone();
        c.database.url = mask_url(&c.database.url);
        c.notifications = c.notifications.masked();
        c.api.token = mask_secret(&c.api.token).to_string();
        c
    }

    /// The effective config as TOML, secrets masked (`ferric config show`).
    pub fn to_toml_masked(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(&self.masked())
    }
}

/// Build the layers, lowest first. Problems reading the file or naming keys
/// go to `problems`.
fn layers(sources: &Sources, problems: &mut Vec<String>) -> Vec<Layer> {
    let mut layers = vec![Layer {
        origin: "built-in defaults".to_string(),
        figment: Figment::from(Serialized::defaults(Config::default())),
    }];
    if let Some(path) = &sources.file {
        match read_toml(path) {
            Ok(figment) => layers.push(Layer {
                origin: format!("config file {}", path.display()),
                figment,
            }),
            Err(p) => problems.push(p),
        }
    }
    let mut env: Vec<_> = sources
        .env
        .iter()
        .filter_map(|(name, value)| env_key(name).map(|key| (name, key, value)))
        .collect();
    env.sort();
    for (name, key, value) in env {
        if key.split('.').any(str::is_empty) {
            problems.push(format!(
                "environment variable {name} does not name a config key \
                 (expected FERRIC_<SECTION>__<KEY>)"
            ));
            continue;
        }
        let value = env_value(&key, value);
        layers.push(Layer {
            origin: format!("environment variable {name}"),
            figment: Figment::from(Serialized::default(&key, value)),
        });
    }
    for flag in &sources.flags {
        layers.push(Layer {
            origin: format!("flag {}", flag.flag),
            figment: Figment::from(Serialized::default(&flag.key, flag.value.clone())),
        });
    }
    layers
}

/// The value of an environment variable for `key`. Parsed like figment's
/// `Env` (`5` is a number, `true` a bool, `5s` a string), except for keys
/// whose values are strings: those take the text as it is, so a digits-only
/// API token or host name is not turned into a number (and then refused).
fn env_value(key: &str, text: &str) -> Value {
    let defaults = Figment::from(Serialized::defaults(Config::default()));
    match defaults.find_value(key) {
        Ok(Value::String(..)) => Value::from(text.to_string()),
        _ => {
            let Ok(value) = text.parse::<Value>();
            value
        }
    }
}

/// Keys whose values may hold a secret: errors about them never show the
/// value.
const SECRET_KEYS: &[&str] = &[
    "database.url",
    "api.token",
    "notifications.amqp_url",
    "notifications.webhook_url",
];

fn read_toml(path: &Path) -> Result<Figment, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: cannot read: {e}", path.display()))?;
    let figment = Figment::from(Toml::string(&text));
    // Parse now, so a syntax error is reported as the file's, with its line.
    if let Err(e) = figment.extract::<Dict>() {
        let detail = e.kind.to_string();
        return Err(format!(
            "config file {}: not valid TOML: {}",
            path.display(),
            detail.trim()
        ));
    }
    Ok(figment)
}

fn section<T: serde::de::DeserializeOwned>(
    merged: &Figment,
    name: &str,
    layers: &[Layer],
    problems: &mut Vec<String>,
) -> Option<T> {
    match merged.extract_inner::<T>(name) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.extend(describe(e, layers, Some(name)));
            None
        }
    }
}

/// One line per figment error: `key (from origin): what is wrong`.
/// `section` is the key `extract_inner` was called with: figment appends it
/// to the end of the error path, so it is moved to the front here.
fn describe(error: figment::Error, layers: &[Layer], section: Option<&str>) -> Vec<String> {
    error
        .into_iter()
        .map(|e| {
            let mut path = e.path.clone();
            if let Some(section) = section {
                if path.last().map(String::as_str) == Some(section) {
                    path.pop();
                }
                path.insert(0, section.to_string());
            }
            use figment::error::Kind;
            let what = match &e.kind {
                Kind::UnknownField(field, expected) => {
                    if path.last() != Some(field) {
                        path.push(field.clone());
                    }
                    format!("unknown key; expected one of: {}", expected.join(", "))
                }
                kind if SECRET_KEYS.contains(&path.join(".").as_str()) => match kind {
                    Kind::InvalidType(_, expected) => format!(
                        "invalid type: expected {expected} (the value is not shown: it may be a secret)"
                    ),
                    _ => "invalid value (not shown: it may be a secret)".to_string(),
                },
                kind => kind.to_string(),
            };
            let key = path.join(".");
            let key = if key.is_empty() {
                "(top level)".to_string()
            } else {
                key
            };
            format!("{key}{}: {what}", origin_suffix(layers, &key))
        })
        .collect()
}

/// ` (origin)` of the highest layer that sets `key`, or nothing.
fn origin_suffix(layers: &[Layer], key: &str) -> String {
    layers
        .iter()
        .rev()
        .find(|l| l.figment.find_value(key).is_ok())
        .map(|l| format!(" (from {})", l.origin))
        .unwrap_or_default()
}

/// Loopback: 127.0.0.0/8, ::1, or `localhost`.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The URL with any password replaced by `****`: the password of the user
/// info (`postgres://root:****@host/db`) and `password=` / `sslpassword=`
/// query parameters. When unsure where the user info ends it masks more, not
/// less.
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return mask_query(url);
    };
    let head = &url[..scheme_end + 3];
    let rest = &url[scheme_end + 3..];
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    // The user info ends at the last '@': a password may hold '/', '?' or '@'
    // when not percent-encoded, and a leak is worse than over-masking.
    let after = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":****");
                }
                None => out.push_str(userinfo),
            }
            &rest[at..]
        }
        None => rest,
    };
    out.push_str(&mask_query(after));
    out
}

fn mask_query(s: &str) -> String {
    let Some(q) = s.find('?') else {
        return s.to_string();
    };
    let (base, query) = (&s[..q], &s[q + 1..]);
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((k, _))
                if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword") =>
            {
                format!("{k}=****")
            }
            _ => param.to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_in_urls() {
        let cases = [
            (
                "postgres://root:hunter2@db.example/ferric",
                "postgres://root:****@db.example/ferric",
            ),
            (
                "postgresql://u:p%40ss@h:5432/d?sslmode=require",
                "postgresql://u:****@h:5432/d?sslmode=require",
            ),
            (
                "postgres://root@127.0.0.1:5432/test",
                "postgres://root@127.0.0.1:5432/test",
            ),
            ("postgres://u:pa/ss@h/db", "postgres://u:****@h/db"),
            ("postgres://u:a@b@h/db", "postgres://u:****@h/db"),
            (
                "postgres://h/db?user=u&password=secret&x=1",
                "postgres://h/db?user=u&password=****&x=1",
            ),
            ("sqlite://./ferric.db", "sqlite://./ferric.db"),
            ("sqlite:ferric.db?mode=rwc", "sqlite:ferric.db?mode=rwc"),
        ];
        for (url, want) in cases {
            assert_eq!(mask_url(url), want, "{url}");
        }
    }

    #[test]
    fn debug_of_database_config_masks_the_password() {
        let db = DatabaseConfig {
            url: "postgres://root:hunter2@h/db".into(),
            max_connections: 4,
            ..DatabaseConfig::default()
        };
        let shown = format!(
            "{:?}",
            Config {
                database: db,
                ..Config::default()
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("root:****@h/db"), "{shown}");
    }

    #[test]
    fn ramdisk_heartbeat_timeout_is_ironics_and_whole_seconds() {
        let mut c = Config::default();
        assert_eq!(
            c.api.ramdisk_heartbeat_timeout,
            std::time::Duration::from_secs(300)
        );
        c.api.ramdisk_heartbeat_timeout = std::time::Duration::from_millis(500);
        let problems = c.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("api.ramdisk_heartbeat_timeout")),
            "{problems:?}"
        );
        c.api.ramdisk_heartbeat_timeout = std::time::Duration::from_secs(10);
        assert_eq!(c.problems(), Vec::<String>::new());
    }

    #[test]
    fn a_configured_auth_lifts_the_loopback_rule() {
        let has = |c: &Config, what: &str| c.problems().iter().any(|p| p.contains(what));
        let mut c = Config::default();
        c.api.host = "0.0.0.0".into();
        assert!(has(&c, "not a loopback address"), "{:?}", c.problems());
        c.api.auth = AuthMode::Token;
        assert!(!has(&c, "not a loopback address"));
        assert!(has(&c, "needs api.token"), "{:?}", c.problems());
        c.api.token = "t".into();
        assert_eq!(c.problems(), Vec::<String>::new());
        c.api.auth = AuthMode::Basic;
        assert!(has(&c, "needs api.htpasswd_file"), "{:?}", c.problems());
        c.api.auth = AuthMode::None;
        c.api.insecure_no_auth = true;
        assert_eq!(c.problems(), Vec::<String>::new());
    }

    #[test]
    fn credential_files_are_read_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "# ops\nfirst\n\n  second  \n").unwrap_or_else(|e| panic!("{e}"));
        let mut api = ApiConfig {
            auth: AuthMode::Token,
            token_file: tokens.display().to_string(),
            ..ApiConfig::default()
        };
        assert!(api.build_auth().is_ok_and(|a| a.is_required()));
        api.token_file = dir.path().join("missing").display().to_string();
        let err = api
            .build_auth()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("api.token_file") && err.contains("cannot read"),
            "{err}"
        );

        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, "admin:{SHA}x\n").unwrap_or_else(|e| panic!("{e}"));
        let api = ApiConfig {
            auth: AuthMode::Basic,
            htpasswd_file: htpasswd.display().to_string(),
            ..ApiConfig::default()
        };
        let err = api
            .build_auth()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("api.htpasswd_file") && err.contains("bcrypt"),
            "{err}"
        );
        assert!(ApiConfig::default()
            .build_auth()
            .is_ok_and(|a| !a.is_required()));
    }

    #[test]
    fn the_api_token_is_masked() {
        let mut c = Config::default();
        c.api.auth = AuthMode::Token;
        c.api.token = "hunter2".into();
        assert!(!format!("{c:?}").contains("hunter2"));
        let shown = c.to_toml_masked().unwrap_or_default();
        assert!(
            !shown.contains("hunter2") && shown.contains("token = \"****\""),
            "{shown}"
        );
    }

    #[test]
    fn env_names_map_to_keys() {
        assert_eq!(
            env_key("FERRIC_CONDUCTOR__HEARTBEAT_INTERVAL").as_deref(),
            Some("conductor.heartbeat_interval")
        );
        assert_eq!(
            env_key("FERRIC_DATABASE__URL").as_deref(),
            Some("database.url")
        );
        assert_eq!(env_key("FERRIC_CONFIG"), None);
        assert_eq!(env_key("FERRIC_TEST_PG_URL"), None);
        assert_eq!(env_key("OTHER__X"), None);
    }

    #[test]
    fn the_agent_section_is_read_and_checked() {
        let env = |pairs: &[(&str, &str)]| Sources {
            file: None,
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: Vec::new(),
        };
        let c = Config::load(&env(&[
            ("FERRIC_AGENT__COMMAND_TIMEOUT", "30s"),
            ("FERRIC_AGENT__ERASE_DEVICES_PRIORITY", "10"),
        ]))
        .unwrap();
        assert_eq!(c.agent.command_timeout, std::time::Duration::from_secs(30));
        assert_eq!(c.agent.erase_devices_priority, 10);
        assert_eq!(c.agent.erase_devices_metadata_priority, 99);
        let e = Config::load(&env(&[("FERRIC_AGENT__MAX_COMMAND_ATTEMPTS", "0")])).unwrap_err();
        assert!(e.to_string().contains("agent.max_command_attempts"), "{e}");
        let e = Config::load(&env(&[("FERRIC_AGENT__BOGUS", "1")])).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn the_pxe_section_is_read_and_checked() {
        let env = |pairs: &[(&str, &str)]| Sources {
            file: None,
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: Vec::new(),
        };
        let c = Config::load(&env(&[
            ("FERRIC_PXE__HTTP_URL", "http://10.0.0.1:6385"),
            ("FERRIC_PXE__MANAGE_DHCP", "false"),
            ("FERRIC_PXE__STATE_DIR", "/srv/ferric"),
        ]))
        .unwrap();
        assert_eq!(c.pxe.http_url, "http://10.0.0.1:6385");
        assert!(!c.pxe.manage_dhcp);
        assert_eq!(
            c.pxe.cache_dir(),
            std::path::PathBuf::from("/srv/ferric/netboot/cache")
        );
        let e = Config::load(&env(&[("FERRIC_PXE__HTTP_URL", "tftp://x")])).unwrap_err();
        assert!(e.to_string().contains("pxe.http_url"), "{e}");
        let e = Config::load(&env(&[("FERRIC_PXE__BOGUS", "1")])).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn hostnames() {
        assert!(is_hostname("localhost"));
        assert!(is_hostname("api-1.example.org"));
        assert!(!is_hostname(""));
        assert!(!is_hostname("bad host"));
        assert!(!is_hostname("-x"));
    }

    #[test]
    fn sqlite_paths() {
        let db = |url: &str| DatabaseConfig {
            url: url.into(),
            max_connections: 1,
            ..DatabaseConfig::default()
        };
        assert_eq!(
            db("sqlite://./f.db").sqlite_path(),
            Some(PathBuf::from("./f.db"))
        );
        assert_eq!(
            db("sqlite:/tmp/f.db?mode=rwc").sqlite_path(),
            Some(PathBuf::from("/tmp/f.db"))
        );
        assert_eq!(db("postgres://h/d").sqlite_path(), None);
    }
}
