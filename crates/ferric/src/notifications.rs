//! `[notifications]`: where provision notifications go (Ironic's
//! `baremetal.node.provision_set.<status>`).
//!
//! ```toml
//! [notifications]
//! sink = "log"          # "log" (default) | "webhook" | "amqp"
//! webhook_url = "https://hooks.example/ferric"
//! amqp_url = "amqp://user:password@rabbit:5672/%2f"   # a secret: masked in output
//! webhook_timeout = "5s"   # one webhook attempt, at most
//! flush_timeout = "10s"    # a graceful stop delivers what is queued, this long at most
//! ```
//!
//! Durations are humantime strings like every duration of the config. The
//! integer keys of earlier versions (`webhook_timeout_secs = 5`,
//! `flush_timeout_secs = 10`) are still read, with a deprecation warning
//! ([`NotificationsConfig::apply_deprecated`]).
//!
//! Webhook and AMQP deliveries go through a bounded queue and a background
//! sender (`ferric_conductor::notify::QueuedSink`): emitting never blocks a
//! task, and a full queue drops (and counts) instead.

use crate::config::mask_url;
#[cfg(feature = "amqp")]
use ferric_conductor::notify::AmqpTransport;
use ferric_conductor::notify::{
    QueueOptions, QueuedSink, Transport, WebhookTransport, AMQP_EXCHANGE,
};
use ferric_conductor::{LogSink, NotificationSink};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The problem of `sink = "amqp"` in a ferric built without the `amqp` feature.
#[cfg(not(feature = "amqp"))]
const AMQP_NOT_BUILT: &str =
    "notifications.sink = \"amqp\": this ferric was built without the `amqp` feature";

/// Default `notifications.webhook_timeout`.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `notifications.flush_timeout`.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// `notifications.sink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// One log line per notification.
    #[default]
    Log,
    /// HTTP POST of the JSON message to `webhook_url`.
    Webhook,
    /// Publish to RabbitMQ at `amqp_url` like Ironic's notifier.
    Amqp,
}

/// `[notifications]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// `log`, `webhook` or `amqp`.
    pub sink: SinkKind,
    /// Where the webhook sink POSTs (http or https).
    pub webhook_url: String,
    /// How long one webhook attempt may take (e.g. "5s").
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Deprecated integer spelling of `webhook_timeout` (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_timeout_secs: Option<u64>,
    /// The broker of the AMQP sink; its password is a secret, masked in output.
    pub amqp_url: String,
    /// The topic exchange (Ironic's `control_exchange`, `ironic`).
    pub amqp_exchange: String,
    /// Notifications that may wait for the sender; more are dropped and counted.
    pub queue_capacity: usize,
    /// Delivery attempts per notification (first try included).
    pub max_attempts: usize,
    /// How long a graceful stop waits for queued notifications to be delivered.
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// Deprecated integer spelling of `flush_timeout` (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_timeout_secs: Option<u64>,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            sink: SinkKind::Log,
            webhook_url: String::new(),
            webhook_timeout: DEFAULT_WEBHOOK_TIMEOUT,
            webhook_timeout_secs: None,
            amqp_url: String::new(),
            amqp_exchange: AMQP_EXCHANGE.to_string(),
            queue_capacity: 1024,
            max_attempts: 5,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            flush_timeout_secs: None,
        }
    }
}

impl std::fmt::Debug for NotificationsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationsConfig")
            .field("sink", &self.sink)
            .field("webhook_url", &mask_url(&self.webhook_url))
            .field("webhook_timeout", &self.webhook_timeout)
            .field("amqp_url", &mask_url(&self.amqp_url))
            .field("amqp_exchange", &self.amqp_exchange)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_attempts", &self.max_attempts)
            .field("flush_timeout", &self.flush_timeout)
            .finish()
    }
}

/// The sink `serve` installs, and its delivery counters when queued.
pub struct BuiltSink {
    pub sink: Arc<dyn NotificationSink>,
    pub queued: Option<Arc<QueuedSink>>,
}

impl NotificationsConfig {
    /// Every problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match self.sink {
            SinkKind::Log => {}
            SinkKind::Webhook => {
                if let Err(e) = WebhookTransport::new(&self.webhook_url, Duration::from_secs(1)) {
                    p.push(format!(
                        "notifications.webhook_url {:?} (sink = \"webhook\"): {e}",
                        mask_url(&self.webhook_url)
                    ));
                }
            }
            SinkKind::Amqp => {
                #[cfg(not(feature = "amqp"))]
                p.push(AMQP_NOT_BUILT.to_string());
                #[cfg(feature = "amqp")]
                if let Err(e) = AmqpTransport::new(&self.amqp_url, &self.amqp_exchange) {
                    p.push(format!(
                        "notifications.amqp_url {:?} (sink = \"amqp\"): {e}",
                        mask_url(&self.amqp_url)
                    ));
                }
                if self.amqp_exchange.is_empty() || self.amqp_exchange.len() > 255 {
                    p.push("notifications.amqp_exchange must be 1 to 255 characters".to_string());
                }
            }
        }
        if self.queue_capacity == 0 || self.queue_capacity > 1_000_000 {
            p.push(format!(
                "notifications.queue_capacity ({}) must be between 1 and 1000000",
                self.queue_capacity
            ));
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            p.push(format!(
                "notifications.max_attempts ({}) must be between 1 and 100",
                self.max_attempts
            ));
        }
        if self.flush_timeout > Duration::from_secs(3600) {
            p.push(format!(
                "notifications.flush_timeout ({}) must be at most 1h",
                humantime::format_duration(self.flush_timeout)
            ));
        }
        if self.webhook_timeout < Duration::from_secs(1)
            || self.webhook_timeout > Duration::from_secs(600)
        {
            p.push(format!(
                "notifications.webhook_timeout ({}) must be between 1s and 10m",
                humantime::format_duration(self.webhook_timeout)
            ));
        }
        p
    }

    /// Fold the deprecated integer keys into their duration keys. Returns
    /// one warning per deprecated key used (the caller logs them), or a
    /// problem when a key is given both ways with different values.
    pub fn apply_deprecated(&mut self) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        for (old, new, secs, value, default) in [
            (
                "webhook_timeout_secs",
                "webhook_timeout",
                self.webhook_timeout_secs.take(),
                &mut self.webhook_timeout,
                DEFAULT_WEBHOOK_TIMEOUT,
            ),
            (
                "flush_timeout_secs",
                "flush_timeout",
                self.flush_timeout_secs.take(),
                &mut self.flush_timeout,
                DEFAULT_FLUSH_TIMEOUT,
            ),
        ] {
            let Some(secs) = secs else { continue };
            let from_old = Duration::from_secs(secs);
            if *value != default && *value != from_old {
                return Err(format!(
                    "notifications.{old} = {secs} (deprecated) and notifications.{new} = \"{}\" disagree; \
                     keep only {new}",
                    humantime::format_duration(*value)
                ));
            }
            *value = from_old;
            warnings.push(format!(
                "notifications.{old} is deprecated: write notifications.{new} = \"{secs}s\" instead"
            ));
        }
        Ok(warnings)
    }

    /// A copy safe to print.
    pub fn masked(&self) -> NotificationsConfig {
        NotificationsConfig {
            webhook_url: mask_url(&self.webhook_url),
            amqp_url: mask_url(&self.amqp_url),
            ..self.clone()
        }
    }

    /// Build the sink (starting its sender on the current runtime).
    pub fn build(&self) -> anyhow::Result<BuiltSink> {
        let transport: Arc<dyn Transport> = match self.sink {
            SinkKind::Log => {
                return Ok(BuiltSink {
                    sink: Arc::new(LogSink),
                    queued: None,
                })
            }
            SinkKind::Webhook => Arc::new(
                WebhookTransport::new(&self.webhook_url, self.webhook_timeout)
                    .map_err(|e| anyhow::anyhow!("notifications.webhook_url: {e}"))?,
            ),
            #[cfg(not(feature = "amqp"))]
            SinkKind::Amqp => anyhow::bail!(AMQP_NOT_BUILT),
            #[cfg(feature = "amqp")]
            SinkKind::Amqp => Arc::new(
                AmqpTransport::new(&self.amqp_url, &self.amqp_exchange)
                    .map_err(|e| anyhow::anyhow!("notifications.amqp_url: {e}"))?,
            ),
        };
        let queued = QueuedSink::start(
            transport,
            QueueOptions {
                capacity: self.queue_capacity,
                attempts: self.max_attempts,
                ..Default::default()
            },
        );
        Ok(BuiltSink {
            sink: queued.clone(),
            queued: Some(queued),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_urls_checked() {
        let c = NotificationsConfig {
            sink: SinkKind::Amqp,
            amqp_url: "amqp://guest:s3cret@rabbit:5672/%2f".into(),
            ..Default::default()
        };
        #[cfg(feature = "amqp")]
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        // A ferric built without the sink says so, as one problem.
        #[cfg(not(feature = "amqp"))]
        assert_eq!(c.problems(), [AMQP_NOT_BUILT]);
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!c.masked().amqp_url.contains("s3cret"));
        let bad = NotificationsConfig {
            sink: SinkKind::Webhook,
            webhook_url: "ftp://x".into(),
            ..Default::default()
        };
        assert!(bad.problems()[0].starts_with("notifications.webhook_url"));
        let missing = NotificationsConfig {
            sink: SinkKind::Amqp,
            ..Default::default()
        };
        assert_eq!(missing.problems().len(), 1);
    }
}
