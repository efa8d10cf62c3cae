//! Logging: the process's one `tracing` subscriber, built here and nowhere
//! else. Logs go to stderr (stdout is for command output); the filter comes
//! from `FERRIC_LOG`, falling back to `RUST_LOG`, then to a per-command
//! default; `--log-format text|json` picks the line format.

use crate::config::ConfigError;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// The environment variable holding the log filter (`info`, `ferric=debug,sqlx=warn`, ...).
pub const LOG_ENV: &str = "FERRIC_LOG";
/// Read when [`LOG_ENV`] is unset.
pub const LOG_ENV_FALLBACK: &str = "RUST_LOG";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Install the global subscriber. `default_directives` applies when neither
/// variable is set. A filter that does not parse is a config error naming the
/// variable. Installing twice (tests) keeps the first subscriber.
pub fn init(format: LogFormat, default_directives: &str) -> Result<(), ConfigError> {
    let from_env = |name: &'static str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (name, v))
    };
    let (source, directives) = from_env(LOG_ENV)
        .or_else(|| from_env(LOG_ENV_FALLBACK))
        .unwrap_or(("the default log filter", default_directives.to_string()));
    let filter = EnvFilter::try_new(&directives).map_err(|e| {
        ConfigError::one(format!(
            "{source} {directives:?} is not a valid log filter: {e}"
        ))
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Err only when a subscriber is already installed: keep that one.
    let _already_installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

/// The `source()` chain below `error`, joined with `: ` (the
/// `error.cause_chain` log field). Empty when there is no cause.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut messages = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        messages.push(e.to_string());
        next = e.source();
    }
    dedup_chain(messages).split_off(1).join(": ")
}

/// The `error.cause_chain` of an `anyhow::Error`: every cause below the top.
pub fn anyhow_cause_chain(error: &anyhow::Error) -> String {
    anyhow_chain(error).split_off(1).join(": ")
}

/// The messages of `error` and its causes, top first, without causes that
/// only repeat the end of the message above them (error types that print
/// their source in their own message).
pub fn anyhow_chain(error: &anyhow::Error) -> Vec<String> {
    dedup_chain(error.chain().map(|e| e.to_string()).collect())
}

fn dedup_chain(messages: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(messages.len());
    for m in messages {
        if out.last().is_some_and(|prev| prev.ends_with(&m)) {
            continue;
        }
        out.push(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_causes_are_dropped() {
        let e = anyhow::anyhow!("pool timed out")
            .context("database error: pool timed out")
            .context("opening database x");
        assert_eq!(
            anyhow_chain(&e),
            vec!["opening database x", "database error: pool timed out"]
        );
        assert_eq!(anyhow_cause_chain(&e), "database error: pool timed out");
    }
}
