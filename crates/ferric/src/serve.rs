//! `ferric serve`: the running service.
//!
//! [`run`] is the one place where the long-running parts of a ferric process
//! start and stop, in this order:
//!
//! 1. open the store (migrations run);
//! 2. register this conductor (SPEC §6: hostname, group, drivers);
//! 3. spawn the heartbeat worker ([`Heartbeat`]);
//! 4. start the conductor (own stale locks recovered first, then lock
//!    wakeups, stale-lock recovery, wait timeouts, takeover, power sync) and
//!    the API server on `api.host:api.port`;
//! 5. wait for `shutdown` (SIGINT/SIGTERM in the binary, a channel in tests),
//!    or for a component to end on its own, which is an error;
//! 6. stop the API, drain the conductor, deliver queued notifications
//!    (`notifications.flush_timeout`), unregister, close the store.
//!
//! It takes the shutdown signal as a future so that tests run the whole
//! service in process and stop it deterministically.

use crate::config::Config;
use crate::telemetry::cause_chain;
use anyhow::Context as _;
use ferric_api::ApiState;
use ferric_conductor::cluster::{Conductor, StartOptions};
use ferric_conductor::drivers::agent_client::AgentClient;
use ferric_conductor::drivers::Drivers;
use ferric_conductor::netboot::{NetBoot, PxeConfig};
use ferric_conductor::TaskManager;
use ferric_store::{ConductorInfo, SqlStore, Store, StoreError, StoreOptions};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{error, info, info_span, warn, Instrument as _};

/// Open (and migrate) the store `config` names.
pub async fn open_store(config: &Config) -> anyhow::Result<SqlStore> {
    let mut options = StoreOptions::new(config.database.url.clone());
    options.max_connections = config.database.max_connections;
    options.heartbeat_timeout = config.conductor.heartbeat_timeout;
    options.pg_session = config.database.pg_session();
    SqlStore::open(options)
        .await
        .with_context(|| format!("opening database {}", config.database.masked_url()))
}

/// `[pxe]` with `http_url` filled in from the API listener when unset.
pub fn pxe_config(config: &Config) -> PxeConfig {
    let mut pxe = config.pxe.clone();
    if pxe.http_url.is_empty() {
        let mut host = config.api.host.as_str();
        if host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
        {
            // Listening everywhere gives no address to hand a machine.
            warn!(
                api_host = host,
                "pxe.http_url is not set and api.host is a wildcard: booting machines are \
                 told to reach ferric at conductor.host; set pxe.http_url"
            );
            host = config.conductor.host.as_str();
        }
        pxe.http_url = if host.contains(':') {
            format!("http://[{host}]:{}", config.api.port)
        } else {
            format!("http://{host}:{}", config.api.port)
        };
    }
    pxe
}

/// The hardware registry the config enables.
pub fn drivers(config: &Config) -> anyhow::Result<Drivers> {
    Drivers::new()
        .with(std::sync::Arc::new(
            ferric_conductor::drivers::ipmi::Ipmi::new(config.ipmi.clone()),
        ))
        .with(std::sync::Arc::new(AgentClient::new(config.agent.clone())))
        .with(Arc::new(NetBoot::new(pxe_config(config))))
        .with_config(config.hardware.clone())
        .map_err(|problems| anyhow::anyhow!(problems.join("; ")))
}

/// This conductor's registration, from the config: its hardware types are
/// the enabled ones.
pub fn conductor_info(config: &Config, drivers: &Drivers) -> ConductorInfo {
    ConductorInfo {
        hostname: config.conductor.host.clone(),
        conductor_group: config.conductor.conductor_group.clone(),
        drivers: drivers.names().iter().map(|d| d.to_string()).collect(),
    }
}

/// Run ferric until `shutdown` resolves, then stop gracefully.
///
/// Returns an error, having started nothing, when the config is invalid or
/// the database cannot be opened or registered with; returns an error after
/// stopping when a component ended on its own.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate()?;
    let auth = config.api.build_auth()?;
    // Checked by Config::validate; an error here is still a clear one.
    let public_endpoint = config.api.public_endpoint().map_err(anyhow::Error::msg)?;
    let nofile = crate::fdlimit::raise_nofile_limit();
    let serve_options = ferric_api::server::ServeOptions {
        header_timeout: config.api.header_timeout,
        body_timeout: config.api.body_timeout,
        max_connections: crate::fdlimit::max_connections(
            config.api.max_connections,
            nofile,
            config.database.max_connections,
        ),
    };
    let store = Arc::new(open_store(&config).await?);
    match store.autovacuum_off().await {
        Ok(true) => warn!(
            "PostgreSQL runs with autovacuum off: the planner's statistics of ferric's \
             tables are only as fresh as the last ANALYZE, and node lists slow down as \
             the fleet grows (a 100,000-node list ~10x); run ANALYZE after large \
             enrolments or turn autovacuum on"
        ),
        Ok(false) => {}
        Err(e) => warn!(error.message = %e, "could not read PostgreSQL's autovacuum setting"),
    }
    let drivers = drivers(&config)?;
    let info = conductor_info(&config, &drivers);
    let mut dnsmasq = start_dnsmasq(&drivers).await?;

    warn_if_already_alive(&*store, &info.hostname).await;
    let registered_at = std::time::Instant::now();
    store
        .register_conductor(&info)
        .await
        .with_context(|| format!("registering conductor {}", info.hostname))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let notifications = config.notifications.build()?;
    let tm = TaskManager::new(
        store.clone(),
        config.conductor.clone(),
        notifications.sink.clone(),
    );
    let heartbeat = Heartbeat::new(
        store.clone(),
        info.clone(),
        config.conductor.heartbeat_interval,
        config.conductor.heartbeat_timeout,
    )
    .with_liveness(tm.liveness().clone());
    // Registering wrote the first heartbeat: fencing is armed from here.
    tm.liveness().beat_ok(registered_at);
    let mut heartbeat_task = tokio::spawn(
        heartbeat
            .run(stopped(stop_rx.clone()))
            .instrument(info_span!("worker", name = "heartbeat")),
    );

    // The conductor: recovers locks left under this hostname by a previous
    // life (before any task starts), then runs lock wakeups, stale-lock
    // recovery, wait timeouts, takeover and power sync. Heartbeats stay with
    // the worker above.
    let conductor = Conductor::start_with(
        tm.clone(),
        StartOptions {
            heartbeat: false,
            drivers: drivers.clone(),
        },
    )
    .await
    .context("starting the conductor")?;

    // The API, stopped before the conductor so no new work arrives while it drains.
    let listener = bind_api(&config.api.host, config.api.port)
        .await
        .with_context(|| format!("binding the API to {}:{}", config.api.host, config.api.port))?;
    let api_addr = listener
        .local_addr()
        .context("reading the API's bound address")?;
    let (api_stop_tx, api_stop_rx) = watch::channel(false);
    // The process's one metrics registry: the conductor's and the
    // notification sender's families here, the API's added by `with_registry`.
    let mut registry = Registry::default();
    tm.metrics().register(&mut registry);
    if let Some(queued) = &notifications.queued {
        queued.register_metrics(&mut registry);
    }
    let mut api_task = tokio::spawn(
        ferric_api::serve_with(
            listener,
            ApiState::new(tm.clone())
                .with_registry(registry)
                .with_drivers(drivers)
                .with_fake_step_delay(config.conductor.fake_step_delay)
                .with_auth(auth)
                .with_ramdisk_heartbeat_timeout(config.api.ramdisk_heartbeat_timeout)
                .with_public_endpoint(public_endpoint),
            serve_options,
            stopped(api_stop_rx),
        )
        .instrument(info_span!("api")),
    );

    info!(
        database = %config.database.masked_url(),
        backend = ?store.backend(),
        hostname = %info.hostname,
        conductor_group = %info.conductor_group,
        drivers = ?info.drivers,
        heartbeat_interval = ?config.conductor.heartbeat_interval,
        api = %format!("http://{api_addr}"),
        api_auth = ?config.api.auth,
        api_public_endpoint = %config.api.public_endpoint,
        api_max_connections = serve_options.max_connections,
        open_file_limit = nofile,
        "ferric serving"
    );

    let mut failure = None;
    tokio::select! {
        () = shutdown => info!(hostname = %info.hostname, "ferric stopping"),
        ended = &mut heartbeat_task => {
            error!(hostname = %info.hostname, "heartbeat worker ended unexpectedly; stopping");
            failure = Some(match ended {
                Ok(()) => anyhow::anyhow!("heartbeat worker ended unexpectedly"),
                Err(e) => anyhow::Error::new(e).context("heartbeat worker failed"),
            });
        }
        ended = &mut api_task => {
            error!(hostname = %info.hostname, "API server ended unexpectedly; stopping");
            failure = Some(match ended {
                Ok(Ok(())) => anyhow::anyhow!("API server ended unexpectedly"),
                Ok(Err(e)) => anyhow::Error::new(e).context("API server failed"),
                Err(e) => anyhow::Error::new(e).context("API server failed"),
            });
        }
    }

    // Stop taking requests, let running work finish (heartbeats go on while
    // it drains, SPEC §6), then stop the heartbeat and leave the cluster.
    let _receivers_may_be_gone = api_stop_tx.send(true);
    if !api_task.is_finished() {
        match api_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error.message = %e, "API server failed while stopping"),
            Err(e) => warn!(error.message = %e, "API server failed while stopping"),
        }
    }
    conductor.stop().await;
    // Every provision change has been made; deliver its notifications before
    // leaving (bounded by notifications.flush_timeout).
    if let Some(queued) = &notifications.queued {
        let within = config.notifications.flush_timeout;
        if queued.flush(within).await {
            info!(sink = queued.kind(), "notifications delivered");
        }
    }
    let _receivers_may_be_gone = stop_tx.send(true);
    if !heartbeat_task.is_finished() {
        if let Err(e) = heartbeat_task.await {
            warn!(error.message = %e, "heartbeat worker failed while stopping");
        }
    }
    if let Some(child) = dnsmasq.as_mut() {
        stop_dnsmasq(child).await;
    }
    let unregistered = store
        .unregister_conductor(&info.hostname)
        .await
        .with_context(|| format!("unregistering conductor {}", info.hostname));
    store.close().await;
    match (failure, unregistered) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(e),
        (None, Ok(())) => {
            info!(hostname = %info.hostname, "ferric stopped");
            Ok(())
        }
    }
}

/// With `pxe.manage_dhcp`, write dnsmasq's configuration and host
/// directories (into an existing `pxe.state_dir`, or any with
/// `pxe.dnsmasq_spawn`); with `pxe.dnsmasq_spawn`, run dnsmasq on it as a
/// child (stopped by [`stop_dnsmasq`], and killed if ferric dies first).
async fn start_dnsmasq(drivers: &Drivers) -> anyhow::Result<Option<tokio::process::Child>> {
    let Some(nb) = drivers.netboot() else {
        return Ok(None);
    };
    let pxe = nb.config();
    if !pxe.manage_dhcp {
        return Ok(None);
    }
    if !pxe.dnsmasq_spawn {
        // Not spawning: write the configuration for the operator's dnsmasq
        // only into a state directory that exists (ferric does not create
        // it at start, so a serve that never network-boots writes nothing).
        if tokio::fs::metadata(&pxe.state_dir)
            .await
            .is_ok_and(|m| m.is_dir())
        {
            match nb.write_dnsmasq_conf().await {
                Ok(conf) => {
                    info!(conf = %conf.display(), "dnsmasq configuration written; run dnsmasq with it")
                }
                Err(e) => warn!(error.message = %e, "cannot write dnsmasq's configuration"),
            }
        }
        return Ok(None);
    }
    let conf = nb
        .write_dnsmasq_conf()
        .await
        .context("writing dnsmasq's configuration (pxe.state_dir)")?;
    let child = tokio::process::Command::new(&pxe.dnsmasq_binary)
        .arg("--keep-in-foreground")
        .arg(format!("--conf-file={}", conf.display()))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} (pxe.dnsmasq_binary)", pxe.dnsmasq_binary))?;
    info!(pid = ?child.id(), conf = %conf.display(), "dnsmasq started");
    Ok(Some(child))
}

/// Stop the dnsmasq [`start_dnsmasq`] started: SIGKILL by its PID (it holds
/// no state ferric needs; leases are in its lease file), then reap it.
async fn stop_dnsmasq(child: &mut tokio::process::Child) {
    if let Ok(Some(status)) = child.try_wait() {
        warn!(%status, "dnsmasq had already exited");
        return;
    }
    if let Err(e) = child.kill().await {
        warn!(error.message = %e, "cannot stop dnsmasq");
    } else {
        info!("dnsmasq stopped");
    }
}

/// Connections the kernel queues for the API while it is at its connection
/// limit (std and tokio listen with 128): with 1,100 idle sockets against a
/// limit of 888, a new client still completes its handshake and is served
/// when idle ones time out, instead of retrying SYNs for tens of seconds.
pub const API_LISTEN_BACKLOG: u32 = 1024;

/// Listen on `host:port` (the first address it resolves to) with
/// [`API_LISTEN_BACKLOG`].
async fn bind_api(host: &str, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} resolves to no address")))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(API_LISTEN_BACKLOG)
}

/// A future that resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _sender_gone_means_stop = stop.wait_for(|s| *s).await;
}

/// Another process registered under the same hostname and still beating
/// would share lock ownership with us: say so loudly. (Ironic overwrites the
/// registration too; after a crash the old row looks alive for up to
/// heartbeat_timeout, so refusing to start would block restarts.)
async fn warn_if_already_alive(store: &dyn Store, hostname: &str) {
    match store.list_conductors().await {
        Ok(rows) => {
            if let Some(row) = rows.iter().find(|r| r.hostname == hostname && r.alive) {
                warn!(
                    hostname,
                    heartbeat_age_ms = row.heartbeat_age_ms,
                    "conductor {hostname} is still registered as alive; taking over its \
                     registration. If another process runs with this host name, stop it: \
                     two conductors with one name share every lock"
                );
            }
        }
        Err(e) => warn!(
            error.message = %e,
            error.cause_chain = %cause_chain(&e),
            "cannot list conductors before registering"
        ),
    }
}

/// Counters of the heartbeat worker (tests read them; metrics will).
#[derive(Debug, Default)]
pub struct HeartbeatStats {
    /// Successful beats since start (registration not counted).
    pub beats: AtomicU64,
    /// Failed beats since start.
    pub failures: AtomicU64,
}

/// The heartbeat worker: refreshes this conductor's heartbeat every
/// `interval` so that the others judge it alive (SPEC §6).
///
/// Invariant: a failed beat never ends the loop. Ironic's heartbeat thread
/// once died on a database error and left a healthy conductor looking dead
/// forever; here every error is logged and the next tick tries again.
pub struct Heartbeat {
    store: Arc<dyn Store>,
    info: ConductorInfo,
    interval: Duration,
    timeout: Duration,
    stats: Arc<HeartbeatStats>,
    /// Told of every beat: the conductor fences itself when beats stop
    /// (ferric_conductor::liveness).
    liveness: Option<Arc<ferric_conductor::liveness::Liveness>>,
}

impl Heartbeat {
    /// A worker for `info` beating every `interval`; `timeout` is the
    /// heartbeat timeout the cluster judges liveness by.
    pub fn new(
        store: Arc<dyn Store>,
        info: ConductorInfo,
        interval: Duration,
        timeout: Duration,
    ) -> Self {
        Heartbeat {
            store,
            info,
            interval,
            timeout,
            stats: Arc::default(),
            liveness: None,
        }
    }

    /// Report every beat to `liveness` (self-fencing).
    pub fn with_liveness(mut self, liveness: Arc<ferric_conductor::liveness::Liveness>) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// The worker's counters.
    pub fn stats(&self) -> Arc<HeartbeatStats> {
        self.stats.clone()
    }

    /// One beat, bounded by the heartbeat timeout. Re-registers when the
    /// conductor row has gone (deleted by hand, or a restored database).
    pub async fn run_once(&self) -> Result<(), StoreError> {
        let beat = async {
            match self.store.heartbeat(&self.info.hostname).await {
                Err(StoreError::ConductorNotFound(_)) => {
                    warn!(hostname = %self.info.hostname, "conductor row is gone; registering again");
                    self.store.register_conductor(&self.info).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, beat).await {
            Ok(result) => result,
            Err(_elapsed) => Err(StoreError::Invalid(format!(
                "heartbeat took longer than the heartbeat timeout ({:?})",
                self.timeout
            ))),
        }
    }

    /// Beat every interval until `stop` resolves. The first beat is one
    /// interval after start: registering counts as a beat.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await;
        tokio::pin!(stop);
        let mut failed_in_a_row: u64 = 0;
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticker.tick() => {}
            }
            let sent = std::time::Instant::now();
            let beat = self.run_once().await;
            if let Some(l) = &self.liveness {
                match &beat {
                    Ok(()) => l.beat_ok(sent),
                    Err(_) => l.beat_failed(),
                }
            }
            match beat {
                Ok(()) => {
                    self.stats.beats.fetch_add(1, Ordering::Relaxed);
                    if failed_in_a_row > 0 {
                        info!(failed_beats = failed_in_a_row, "heartbeat recovered");
                        failed_in_a_row = 0;
                    }
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    failed_in_a_row += 1;
                    let silent_for = self
                        .interval
                        .saturating_mul(u32::try_from(failed_in_a_row).unwrap_or(u32::MAX));
                    if silent_for >= self.timeout {
                        // Operator must act: the cluster now judges this
                        // conductor dead and may recover its locks.
                        error!(
                            error.message = %e,
                            error.cause_chain = %cause_chain(&e),
                            failed_beats = failed_in_a_row,
                            "heartbeat failing for longer than heartbeat_timeout; \
                             other conductors consider this one dead; retrying"
                        );
                    } else {
                        warn!(
                            error.message = %e,
                            error.cause_chain = %cause_chain(&e),
                            failed_beats = failed_in_a_row,
                            "heartbeat failed; retrying at the next interval"
                        );
                    }
                }
            }
        }
    }
}
