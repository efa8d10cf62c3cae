//! Where provision notifications go. The sink is pluggable; the default logs.
//!
//! * [`LogSink`]: one log line per notification (the default).
//! * [`MemorySink`]: kept in memory (tests, the simulator).
//! * [`QueuedSink`] over a [`Transport`]: [`WebhookTransport`] (HTTP POST of
//!   JSON) or `AmqpTransport` (cargo feature `amqp`: RabbitMQ, published the
//!   way Ironic's oslo.messaging notifier does: topic exchange `ironic`,
//!   routing key `ironic_versioned_notifications.info` / `.error`).
//!
//! Invariant: emitting never blocks a task. [`QueuedSink::emit`] only does a
//! `try_send` into a bounded channel; a background sender delivers with
//! bounded retries and exponential backoff. When the channel is full the
//! notification is dropped and counted (`ferric_notifications_dropped_total`).
//! At shutdown [`QueuedSink::flush`] closes the queue and delivers what is in
//! it, within a deadline, so a graceful stop loses no notification.
//!
//! The message is Ironic's versioned notification: an envelope (`event_type`
//! `baremetal.node.provision_set.<status>`, `priority`, `publisher_id`,
//! `timestamp`, `message_id`) around a `NodeSetProvisionStatePayload`
//! (reference §2.8): the node's fields plus `previous_provision_state`,
//! `previous_target_provision_state` and `event`.

use crate::metrics::NotifyCounters;
use async_trait::async_trait;
use ferric_core::notify::{NotifyLevel, ProvisionNotification};
use ferric_core::{DbTime, Node};
use prometheus_client::registry::Registry;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Receives provision-state notifications. Must not block.
pub trait NotificationSink: Send + Sync + 'static {
    fn emit(&self, notification: ProvisionNotification);

    /// Like [`NotificationSink::emit`] with the node as saved, so a sink can
    /// send Ironic's full node payload. Default: `emit`.
    fn emit_with_node(&self, notification: ProvisionNotification, node: &Node) {
        let _ = node;
        self.emit(notification);
    }
}

/// Logs each notification (the default sink).
#[derive(Debug, Default)]
pub struct LogSink;

impl NotificationSink for LogSink {
    fn emit(&self, n: ProvisionNotification) {
        match n.level {
            NotifyLevel::Error => tracing::error!(
                event_type = %n.event_type(), node_uuid = %n.node_uuid, event = %n.event,
                previous = %n.previous_provision_state, state = %n.provision_state,
                "provision notification"
            ),
            NotifyLevel::Info => tracing::info!(
                event_type = %n.event_type(), node_uuid = %n.node_uuid, event = %n.event,
                previous = %n.previous_provision_state, state = %n.provision_state,
                "provision notification"
            ),
        }
    }
}

/// Keeps notifications in memory (tests, the simulator).
#[derive(Debug, Default)]
pub struct MemorySink {
    seen: Mutex<Vec<ProvisionNotification>>,
}

impl MemorySink {
    /// Everything emitted so far.
    pub fn take(&self) -> Vec<ProvisionNotification> {
        match self.seen.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

impl NotificationSink for MemorySink {
    fn emit(&self, n: ProvisionNotification) {
        match self.seen.lock() {
            Ok(mut v) => v.push(n),
            Err(poisoned) => poisoned.into_inner().push(n),
        }
    }
}

// ----- Ironic's message ------------------------------------------------------

/// Version of Ironic's `NodeSetProvisionStatePayload` whose fields we send.
pub const PAYLOAD_VERSION: &str = "1.17";

fn iso(t: Option<DbTime>) -> Value {
    t.and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp_micros(t.0))
        .map_or(Value::Null, |d| {
            Value::String(d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        })
}

fn opt_str<T: ToString>(v: Option<T>) -> Value {
    v.map_or(Value::Null, |s| Value::String(s.to_string()))
}

/// The versioned notification Ironic would send for `n` (the envelope
/// oslo.messaging's notifier builds, with the payload as an Ironic object).
/// `node` adds the node's fields; without it only the state fields are set.
pub fn ironic_message(n: &ProvisionNotification, node: Option<&Node>) -> Value {
    let mut data = Map::new();
    if let Some(node) = node {
        for i in ferric_core::node::INTERFACES {
            let key = format!("{i}_interface");
            data.insert(key.clone(), opt_str(node.interfaces.get(&key)));
        }
        data.insert("clean_step".into(), json!({}));
        data.insert("conductor_group".into(), json!(node.conductor_group));
        data.insert("console_enabled".into(), json!(node.attrs.console_enabled));
        data.insert("created_at".into(), iso(Some(node.created_at)));
        data.insert("deploy_step".into(), json!({}));
        data.insert("driver".into(), json!(node.driver));
        data.insert("extra".into(), Value::Object(node.extra.clone()));
        data.insert("fault".into(), opt_str(node.attrs.fault.as_ref()));
        data.insert(
            "instance_info".into(),
            // Secrets masked as Ironic's mask_secrets does.
            Value::Object(ferric_core::mask::instance_info(&node.instance_info)),
        );
        data.insert("instance_uuid".into(), opt_str(node.instance_uuid));
        data.insert("last_error".into(), opt_str(node.last_error.as_ref()));
        data.insert("maintenance".into(), json!(node.maintenance));
        data.insert(
            "maintenance_reason".into(),
            opt_str(node.maintenance_reason.as_ref()),
        );
        data.insert("power_state".into(), opt_str(node.power_state));
        data.insert("properties".into(), Value::Object(node.properties.clone()));
        data.insert(
            "provision_updated_at".into(),
            iso(node.provision_updated_at),
        );
        data.insert(
            "resource_class".into(),
            opt_str(node.attrs.resource_class.as_ref()),
        );
        data.insert(
            "target_power_state".into(),
            opt_str(node.target_power_state),
        );
        data.insert("traits".into(), json!(node.attrs.traits));
        data.insert("updated_at".into(), iso(node.updated_at));
    }
    data.insert("uuid".into(), json!(n.node_uuid.to_string()));
    data.insert("name".into(), opt_str(n.node_name.as_ref()));
    data.insert("provision_state".into(), json!(n.provision_state.as_str()));
    data.insert(
        "target_provision_state".into(),
        opt_str(n.target_provision_state.map(|s| s.as_str())),
    );
    data.insert(
        "previous_provision_state".into(),
        json!(n.previous_provision_state.as_str()),
    );
    data.insert(
        "previous_target_provision_state".into(),
        opt_str(n.previous_target_provision_state.map(|s| s.as_str())),
    );
    data.insert("event".into(), json!(n.event.to_string()));
    let priority = match n.level {
        NotifyLevel::Info => "INFO",
        NotifyLevel::Error => "ERROR",
    };
    json!({
        "message_id": uuid::Uuid::new_v4().to_string(),
        "publisher_id": format!("ironic-conductor.{}", n.publisher),
        "event_type": n.event_type(),
        "priority": priority,
        "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        "payload": {
            "ironic_object.name": "NodeSetProvisionStatePayload",
            "ironic_object.namespace": "ironic",
            "ironic_object.version": PAYLOAD_VERSION,
            "ironic_object.data": Value::Object(data),
        },
    })
}

// ----- queued delivery ---------------------------------------------------------

/// One message on its way: the JSON and its priority (for routing).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub body: Value,
    pub level: NotifyLevel,
}

/// Whether a failed delivery is worth retrying.
#[derive(Debug)]
pub enum SendError {
    /// Network trouble, a 5xx, a broker hiccup: try again.
    Transient(String),
    /// The receiver refused the message (a 4xx): retrying will not help.
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Transient(m) | SendError::Permanent(m) => f.write_str(m),
        }
    }
}

/// Delivers one message, one attempt. [`QueuedSink`] does the retrying.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// `webhook`, `amqp`, ... (the metrics' `sink` label).
    fn kind(&self) -> &'static str;
    async fn send(&self, message: &Outgoing) -> Result<(), SendError>;
}

/// How a [`QueuedSink`] queues and retries.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Messages that may wait for the sender; beyond it they are dropped.
    pub capacity: usize,
    /// Attempts per message (first try included).
    pub attempts: usize,
    /// First backoff; doubles up to `max_backoff`, with jitter.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            capacity: 1024,
            attempts: 5,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// A sink that queues messages for a background sender (never blocks).
pub struct QueuedSink {
    tx: mpsc::Sender<Outgoing>,
    kind: &'static str,
    counters: Arc<NotifyCounters>,
    /// `true` asks the sender to close the queue, deliver what is in it, and end.
    stop: watch::Sender<bool>,
    /// The background sender, taken by [`QueuedSink::flush`].
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for QueuedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedSink")
            .field("kind", &self.kind)
            .finish()
    }
}

impl QueuedSink {
    /// Start the background sender on the current tokio runtime. It ends
    /// after [`QueuedSink::flush`], or when the sink is dropped, in both cases
    /// after delivering what was queued.
    pub fn start(transport: Arc<dyn Transport>, options: QueueOptions) -> Arc<QueuedSink> {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(options.capacity.max(1));
        let (stop, mut stop_rx) = watch::channel(false);
        let counters = Arc::new(NotifyCounters::default());
        let kind = transport.kind();
        let span = tracing::info_span!("worker", name = "notifications", sink = kind);
        let worker_counters = counters.clone();
        let handle = tokio::spawn(tracing::Instrument::instrument(
            async move {
                loop {
                    tokio::select! {
                        biased;
                        msg = rx.recv() => match msg {
                            Some(msg) => deliver(&*transport, &options, &worker_counters, &msg).await,
                            None => return,
                        },
                        // Stop asked (or the sink is gone): no new messages,
                        // deliver the queued ones, end.
                        () = async {
                            // The watch guard must not live across the drain.
                            let _stopped_or_sink_gone = stop_rx.wait_for(|stop| *stop).await.is_ok();
                        } => {
                            rx.close();
                            while let Some(msg) = rx.recv().await {
                                deliver(&*transport, &options, &worker_counters, &msg).await;
                            }
                            return;
                        }
                    }
                }
            },
            span,
        ));
        Arc::new(QueuedSink {
            tx,
            kind,
            counters,
            stop,
            sender: Mutex::new(Some(handle)),
        })
    }

    /// Close the queue and deliver what is in it, waiting at most `within`.
    /// Notifications emitted afterwards are dropped (and counted). Returns
    /// whether everything queued was delivered or given up on in time; on
    /// `false` the sender is aborted and the undelivered count is logged.
    pub async fn flush(&self, within: Duration) -> bool {
        let _receiver_may_be_gone = self.stop.send(true);
        // The lock is held only to take the handle; never across an await.
        let handle = match self.sender.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(mut handle) = handle else {
            return true; // flushed before
        };
        match tokio::time::timeout(within, &mut handle).await {
            Ok(_) => true,
            Err(_) => {
                handle.abort();
                let c = &self.counters;
                let done = c.sent.get() + c.failed.get();
                let undelivered = c.queued.get().saturating_sub(done);
                warn!(
                    sink = self.kind,
                    undelivered,
                    within_ms = within.as_millis() as u64,
                    "notifications still undelivered at shutdown; dropping them"
                );
                false
            }
        }
    }

    /// The delivery counters.
    pub fn counters(&self) -> &Arc<NotifyCounters> {
        &self.counters
    }

    /// Register the delivery counters into `registry` (`/metrics`), labelled
    /// with the transport's kind.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.counters.register(self.kind, registry);
    }

    /// The transport's kind (`webhook`, `amqp`).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn enqueue(&self, body: Value, level: NotifyLevel) {
        match self.tx.try_send(Outgoing { body, level }) {
            Ok(()) => {
                self.counters.queued.inc();
            }
            Err(mpsc::error::TrySendError::Full(m)) => {
                self.counters.dropped.inc();
                warn!(sink = self.kind, event_type = %m.body["event_type"], "notification queue full; notification dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.counters.dropped.inc();
                warn!(
                    sink = self.kind,
                    "notification sender stopped; notification dropped"
                );
            }
        }
    }
}

async fn deliver(
    transport: &dyn Transport,
    options: &QueueOptions,
    counters: &NotifyCounters,
    msg: &Outgoing,
) {
    use backon::{BackoffBuilder, ExponentialBuilder};
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(options.min_backoff)
        .with_max_delay(options.max_backoff)
        .with_max_times(options.attempts.saturating_sub(1))
        .with_jitter()
        .build();
    let mut attempt = 1;
    loop {
        match transport.send(msg).await {
            Ok(()) => {
                counters.sent.inc();
                debug!(event_type = %msg.body["event_type"], attempt, "notification sent");
                return;
            }
            Err(SendError::Permanent(e)) => {
                counters.failed.inc();
                warn!(event_type = %msg.body["event_type"], error.message = %e, "notification refused; not retried");
                return;
            }
            Err(SendError::Transient(e)) => match backoff.next() {
                Some(pause) => {
                    debug!(event_type = %msg.body["event_type"], attempt, error.message = %e, retry_in_ms = pause.as_millis() as u64, "notification delivery failed; retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                None => {
                    counters.failed.inc();
                    warn!(event_type = %msg.body["event_type"], attempts = attempt, error.message = %e, "notification delivery failed; giving up");
                    return;
                }
            },
        }
    }
}

impl NotificationSink for QueuedSink {
    fn emit(&self, n: ProvisionNotification) {
        self.enqueue(ironic_message(&n, None), n.level);
    }

    fn emit_with_node(&self, n: ProvisionNotification, node: &Node) {
        self.enqueue(ironic_message(&n, Some(node)), n.level);
    }
}

// ----- webhook -------------------------------------------------------------------

/// HTTP POST of the message as JSON. 2xx is delivered; 408, 429 and 5xx and
/// network errors are retried; other statuses are refusals.
///
/// The URL may carry credentials (`https://user:password@host/`): it is
/// never part of an error or of `Debug`.
#[derive(Clone)]
pub struct WebhookTransport {
    url: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for WebhookTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        f.debug_struct("WebhookTransport")
            .field("host", &host)
            .finish()
    }
}

impl WebhookTransport {
    /// POST to `url` with a per-attempt timeout. Errors do not repeat the
    /// URL (callers show it masked).
    pub fn new(url: &str, timeout: Duration) -> Result<WebhookTransport, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("the scheme must be http or https".to_string());
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("ferric/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(WebhookTransport {
            url: url.to_string(),
            http,
        })
    }
}

#[async_trait]
impl Transport for WebhookTransport {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, message: &Outgoing) -> Result<(), SendError> {
        let resp = self
            .http
            .post(&self.url)
            .json(&message.body)
            .send()
            .await
            .map_err(|e| SendError::Transient(format!("POST failed: {}", e.without_url())))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(SendError::Transient(format!("webhook answered {status}")))
        } else {
            Err(SendError::Permanent(format!("webhook answered {status}")))
        }
    }
}

// ----- AMQP ------------------------------------------------------------------------

/// Ironic's notification exchange (`control_exchange`).
pub const AMQP_EXCHANGE: &str = "ironic";
/// Ironic's versioned notifications topic; the routing key is
/// `<topic>.<priority>` (`.info`, `.error`).
pub const AMQP_TOPIC: &str = "ironic_versioned_notifications";

/// Publishes to RabbitMQ as oslo.messaging does: a topic exchange, routing
/// key `ironic_versioned_notifications.<priority>`, body
/// `{"oslo.version": "2.0", "oslo.message": "<the JSON message>"}`, with
/// publisher confirms. The connection is opened on first use and reopened
/// after a failure. Cargo feature `amqp` (lapin).
#[cfg(feature = "amqp")]
pub struct AmqpTransport {
    url: String,
    exchange: String,
    channel: tokio::sync::Mutex<Option<(lapin::Connection, lapin::Channel)>>,
}

#[cfg(feature = "amqp")]
impl std::fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("exchange", &self.exchange)
            .finish()
    }
}

#[cfg(feature = "amqp")]
impl AmqpTransport {
    /// Publish to `exchange` on the broker at `url` (`amqp://user:pass@host:port/vhost`).
    pub fn new(url: &str, exchange: &str) -> Result<AmqpTransport, String> {
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err("the URL must start with amqp:// or amqps://".to_string());
        }
        Ok(AmqpTransport {
            url: url.to_string(),
            exchange: exchange.to_string(),
            channel: tokio::sync::Mutex::new(None),
        })
    }

    async fn open(&self) -> Result<(lapin::Connection, lapin::Channel), lapin::Error> {
        use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
        let conn = lapin::Connection::connect(
            &self.url,
            lapin::ConnectionProperties::default()
                .with_connection_name("ferric-notifications".into()),
        )
        .await?;
        let channel = conn.create_channel().await?;
        // oslo.messaging's declaration: a non-durable topic exchange.
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok((conn, channel))
    }
}

#[cfg(feature = "amqp")]
#[async_trait]
impl Transport for AmqpTransport {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    async fn send(&self, message: &Outgoing) -> Result<(), SendError> {
        use lapin::options::BasicPublishOptions;
        let mut guard = self.channel.lock().await;
        if guard.is_none() {
            let opened = self
                .open()
                .await
                .map_err(|e| SendError::Transient(format!("AMQP connect failed: {e}")))?;
            *guard = Some(opened);
        }
        let Some((_, channel)) = guard.as_ref() else {
            return Err(SendError::Transient("AMQP channel not open".into()));
        };
        let priority = match message.level {
            NotifyLevel::Info => "info",
            NotifyLevel::Error => "error",
        };
        let routing_key = format!("{AMQP_TOPIC}.{priority}");
        let body = json!({
            "oslo.version": "2.0",
            "oslo.message": message.body.to_string(),
        })
        .to_string();
        let outcome = async {
            channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    lapin::BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_content_encoding("utf-8".into()),
                )
                .await?
                .await
        }
        .await;
        match outcome {
            Ok(lapin::Confirmation::Nack(_)) => Err(SendError::Transient(
                "the broker refused the message (nack)".into(),
            )),
            Ok(_) => Ok(()),
            Err(e) => {
                // Reconnect on the next attempt.
                *guard = None;
                Err(SendError::Transient(format!("AMQP publish failed: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_core::notify::NotifyStatus;
    use ferric_core::{Event, ProvisionState};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn sample() -> ProvisionNotification {
        ProvisionNotification {
            node_uuid: uuid::Uuid::new_v4(),
            node_name: Some("n1".into()),
            event: Event::Deploy,
            previous_provision_state: ProvisionState::Available,
            previous_target_provision_state: None,
            provision_state: ProvisionState::Deploying,
            target_provision_state: Some(ProvisionState::Active),
            status: NotifyStatus::Start,
            level: NotifyLevel::Info,
            publisher: "c1".into(),
        }
    }

    #[test]
    fn message_has_ironics_envelope_and_payload_fields() {
        let m = ironic_message(&sample(), None);
        assert_eq!(m["event_type"], "baremetal.node.provision_set.start");
        assert_eq!(m["priority"], "INFO");
        assert_eq!(m["publisher_id"], "ironic-conductor.c1");
        let p = &m["payload"];
        assert_eq!(p["ironic_object.name"], "NodeSetProvisionStatePayload");
        let d = &p["ironic_object.data"];
        assert_eq!(d["previous_provision_state"], "available");
        assert_eq!(d["previous_target_provision_state"], Value::Null);
        assert_eq!(d["provision_state"], "deploying");
        assert_eq!(d["target_provision_state"], "active");
        assert_eq!(d["event"], "deploy");
        assert_eq!(d["name"], "n1");
    }

    #[test]
    fn payload_masks_instance_info_secrets() {
        let mut info = serde_json::Map::new();
        info.insert("image_source".into(), json!("http://img/x.qcow2"));
        info.insert("image_password".into(), json!("hunter2"));
        info.insert(
            "configdrive".into(),
            json!({"user_data": "s3cr3t-user-data"}),
        );
        let node = Node {
            uuid: uuid::Uuid::new_v4(),
            name: None,
            driver: "fake-hardware".into(),
            driver_info: Default::default(),
            properties: Default::default(),
            extra: Default::default(),
            instance_info: info,
            instance_uuid: None,
            interfaces: Default::default(),
            driver_internal_info: Default::default(),
            clean_step: Default::default(),
            deploy_step: Default::default(),
            provision_state: ProvisionState::Deploying,
            target_provision_state: None,
            power_state: None,
            target_power_state: None,
            maintenance: false,
            maintenance_reason: None,
            last_error: None,
            conductor_group: String::new(),
            conductor_affinity: None,
            reservation: None,
            lock_epoch: 0,
            lock_waiters: 0,
            revision: 0,
            created_at: DbTime(0),
            updated_at: None,
            provision_updated_at: None,
            attrs: Default::default(),
        };
        let m = ironic_message(&sample(), Some(&node));
        let ii = &m["payload"]["ironic_object.data"]["instance_info"];
        assert_eq!(ii["image_source"], "http://img/x.qcow2");
        assert_eq!(ii["image_password"], "******");
        assert_eq!(ii["configdrive"], "******");
        assert!(!m.to_string().contains("hunter2"));
        assert!(!m.to_string().contains("s3cr3t-user-data"));
    }

    /// Fails `fail_first` times, then blocks until released.
    struct Flaky {
        fail_first: usize,
        calls: AtomicUsize,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl Transport for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        async fn send(&self, _: &Outgoing) -> Result<(), SendError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                return Err(SendError::Transient("down".into()));
            }
            let _p = self.gate.acquire().await;
            Ok(())
        }
    }

    fn opts(capacity: usize, attempts: usize) -> QueueOptions {
        QueueOptions {
            capacity,
            attempts,
            min_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        }
    }

    async fn until(what: impl Fn() -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(std::time::Instant::now() < end, "timed out");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_then_delivers() {
        let t = Arc::new(Flaky {
            fail_first: 2,
            calls: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(100),
        });
        let sink = QueuedSink::start(t.clone(), opts(8, 5));
        sink.emit(sample());
        let c = sink.counters().clone();
        until(|| c.sent.get() == 1).await;
        assert_eq!(t.calls.load(Ordering::SeqCst), 3);
        assert_eq!(c.failed.get(), 0);
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts_run_out() {
        let t = Arc::new(Flaky {
            fail_first: usize::MAX,
            calls: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        });
        let sink = QueuedSink::start(t.clone(), opts(8, 3));
        sink.emit(sample());
        let c = sink.counters().clone();
        until(|| c.failed.get() == 1).await;
        assert_eq!(t.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_blocking() {
        // The sender is stuck on the first message; the queue holds 2 more.
        let t = Arc::new(Flaky {
            fail_first: 0,
            calls: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        });
        let sink = QueuedSink::start(t.clone(), opts(2, 1));
        sink.emit(sample());
        until(|| t.calls.load(Ordering::SeqCst) == 1).await;
        for _ in 0..5 {
            sink.emit(sample());
        }
        let c = sink.counters();
        assert_eq!(c.queued.get(), 3);
        assert_eq!(c.dropped.get(), 3);
        let mut registry = Registry::default();
        sink.register_metrics(&mut registry);
        assert!(crate::metrics::render_registry(&registry)
            .contains("ferric_notifications_dropped_total{sink=\"flaky\"} 3"));
        t.gate.add_permits(10);
        until(|| c.sent.get() == 3).await;
    }

    #[tokio::test]
    async fn flush_delivers_everything_queued_then_refuses_more() {
        // The sender is held on the first message; four more wait in the queue.
        let t = Arc::new(Flaky {
            fail_first: 0,
            calls: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        });
        let sink = QueuedSink::start(t.clone(), opts(8, 1));
        for _ in 0..5 {
            sink.emit(sample());
        }
        until(|| t.calls.load(Ordering::SeqCst) == 1).await;
        let c = sink.counters().clone();
        assert_eq!(c.sent.get(), 0);
        let gate = t.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            gate.gate.add_permits(100);
        });
        assert!(sink.flush(Duration::from_secs(10)).await);
        assert_eq!(c.sent.get(), 5, "every queued message delivered");
        sink.emit(sample());
        assert_eq!(c.dropped.get(), 1, "closed after the flush");
        assert!(
            sink.flush(Duration::from_secs(1)).await,
            "a second flush is a no-op"
        );
    }

    #[tokio::test]
    async fn flush_gives_up_at_its_deadline() {
        let t = Arc::new(Flaky {
            fail_first: 0,
            calls: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        });
        let sink = QueuedSink::start(t.clone(), opts(8, 1));
        sink.emit(sample());
        sink.emit(sample());
        let started = std::time::Instant::now();
        assert!(!sink.flush(Duration::from_millis(100)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(sink.counters().sent.get(), 0);
    }
}
