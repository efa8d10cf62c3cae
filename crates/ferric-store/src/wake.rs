//! Cross-process wakeups for lock waiters (SPEC §4.5).
//!
//! * PostgreSQL: one LISTEN channel per conductor. A release that hands the
//!   lock to a waiter of *another* conductor sends `pg_notify` inside its
//!   transaction, so the notification is delivered exactly when the grant
//!   commits. Releases without waiters never notify (NOTIFY takes a
//!   database-wide lock at commit; see `shared/reference/locks.md` §5.4).
//! * SQLite: no server to push from, so the releasing process pushes
//!   itself. Each conductor's listener binds a Unix datagram socket named by
//!   the database file and the conductor (Linux abstract namespace: no file
//!   to clean up, gone with the process). A release that hands the lock to a
//!   waiter of a conductor not served by this store sends it one datagram
//!   (`node task`) after the grant commits. Nothing runs while nobody is
//!   released: no polling. Where no socket can be bound (not Linux, or the
//!   name is taken by another live process) the listener falls back to
//!   polling `PRAGMA data_version` while its conductor has waiters.
//!
//! Either way a waiter also re-checks every retry interval, so a lost
//! notification costs at most one interval.

use crate::StoreResult;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgListener;
use sqlx::{Any, Row};
use uuid::Uuid;

/// Something a waiter's conductor should react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WakeEvent {
    /// `task_id` was granted the lock of `node`.
    Granted { node: Uuid, task_id: Uuid },
    /// Some other connection committed: every waiter should re-check.
    Changed,
    /// The listener reconnected and may have missed notifications: re-check all.
    Reconnected,
}

/// A subscription returned by [`crate::Store::subscribe_wakeups`].
pub struct WakeSubscription {
    inner: Inner,
}

enum Inner {
    Listen(Box<PgListener>),
    Socket(tokio::net::UnixDatagram),
    Poll {
        conn: PoolConnection<Any>,
        last: Option<i64>,
    },
    Nothing,
}

/// The LISTEN channel of a conductor. Hashed so any hostname and schema fit
/// PostgreSQL's 63-byte identifier limit; the schema keeps test databases apart.
pub fn wake_channel(schema: Option<&str>, conductor: &str) -> String {
    // FNV-1a, 64 bit: stable across processes and versions (unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema
        .unwrap_or("public")
        .bytes()
        .chain([0u8])
        .chain(conductor.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("ferric_wake_{h:016x}")
}

/// The socket address of `conductor`'s SQLite wakeups on the database file
/// `db` (its canonical path): an abstract Unix socket name, hashed so any
/// path and hostname fit. `None` where abstract sockets do not exist.
#[cfg(target_os = "linux")]
pub(crate) fn sqlite_wake_addr(
    db: &str,
    conductor: &str,
) -> Option<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("ferric-wake-{}", wake_channel(Some(db), conductor));
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()
}

/// See the Linux version: no abstract sockets here, so SQLite polls.
#[cfg(not(target_os = "linux"))]
pub(crate) fn sqlite_wake_addr(
    _db: &str,
    _conductor: &str,
) -> Option<std::os::unix::net::SocketAddr> {
    None
}

/// Sends SQLite grant wakeups to other processes (see the module doc).
#[derive(Debug)]
pub(crate) struct SqliteWaker {
    /// The database file's canonical path.
    db: String,
    /// Conductors whose waiters this store's process wakes itself.
    local: std::sync::Mutex<std::collections::HashSet<String>>,
    /// An unbound, non-blocking socket to send from.
    socket: Option<std::os::unix::net::UnixDatagram>,
}

impl SqliteWaker {
    pub(crate) fn new(db: String) -> Self {
        let socket = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .ok();
        SqliteWaker {
            db,
            local: Default::default(),
            socket,
        }
    }

    /// Listen for `conductor`'s grants. `None`: no socket could be bound
    /// (the caller polls instead).
    pub(crate) fn bind(&self, conductor: &str) -> Option<tokio::net::UnixDatagram> {
        let addr = sqlite_wake_addr(&self.db, conductor)?;
        let bound = std::os::unix::net::UnixDatagram::bind_addr(&addr)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(tokio::net::UnixDatagram::from_std);
        match bound {
            Ok(s) => {
                match self.local.lock() {
                    Ok(mut l) => l.insert(conductor.to_string()),
                    Err(p) => p.into_inner().insert(conductor.to_string()),
                };
                Some(s)
            }
            Err(e) => {
                tracing::warn!(conductor, error.message = %e, "cannot bind the SQLite wakeup socket; polling the database file instead");
                None
            }
        }
    }

    /// Tell `conductor`'s process that `task_id` holds `node` (after the
    /// grant committed). Best effort: a lost datagram costs the waiter one
    /// re-check interval; a conductor of this process is woken in process.
    pub(crate) fn granted(&self, conductor: &str, node: Uuid, task_id: Uuid) {
        let local = match self.local.lock() {
            Ok(l) => l.contains(conductor),
            Err(p) => p.into_inner().contains(conductor),
        };
        if local {
            return;
        }
        let (Some(socket), Some(addr)) = (&self.socket, sqlite_wake_addr(&self.db, conductor))
        else {
            return;
        };
        // Refused (nobody listening), full, or gone: the re-check covers it.
        if let Err(e) = socket.send_to_addr(format!("{node} {task_id}").as_bytes(), &addr) {
            tracing::debug!(conductor, node_uuid = %node, error.message = %e, "SQLite wakeup not delivered");
        }
    }
}

fn parse_grant(payload: &[u8]) -> WakeEvent {
    let text = String::from_utf8_lossy(payload);
    let mut parts = text.split(' ');
    let node = parts.next().and_then(|s| Uuid::parse_str(s).ok());
    let task = parts.next().and_then(|s| Uuid::parse_str(s).ok());
    match (node, task) {
        (Some(node), Some(task_id)) => WakeEvent::Granted { node, task_id },
        _ => WakeEvent::Changed,
    }
}

impl WakeSubscription {
    pub(crate) fn socket(socket: tokio::net::UnixDatagram) -> Self {
        WakeSubscription {
            inner: Inner::Socket(socket),
        }
    }

    pub(crate) fn listen(listener: PgListener) -> Self {
        WakeSubscription {
            inner: Inner::Listen(Box::new(listener)),
        }
    }

    pub(crate) fn poll(conn: PoolConnection<Any>) -> Self {
        WakeSubscription {
            inner: Inner::Poll { conn, last: None },
        }
    }

    /// A subscription that never fires (the store has no other processes).
    pub fn nothing() -> Self {
        WakeSubscription {
            inner: Inner::Nothing,
        }
    }

    /// Whether the caller must pace calls to [`WakeSubscription::next`]
    /// itself (SQLite polling) rather than block in it.
    pub fn is_poll(&self) -> bool {
        matches!(self.inner, Inner::Poll { .. })
    }

    /// PostgreSQL: wait for the next wakeup. SQLite: check once and return
    /// `Some(Changed)` if another connection committed since the last check.
    /// A subscription that never fires never returns.
    pub async fn next(&mut self) -> StoreResult<Option<WakeEvent>> {
        match &mut self.inner {
            Inner::Listen(l) => match l.try_recv().await? {
                Some(n) => Ok(Some(parse_grant(n.payload().as_bytes()))),
                None => Ok(Some(WakeEvent::Reconnected)),
            },
            Inner::Socket(s) => {
                let mut buf = [0u8; 128];
                let n = s
                    .recv(&mut buf)
                    .await
                    .map_err(|e| crate::StoreError::Database(sqlx::Error::Io(e)))?;
                Ok(Some(parse_grant(&buf[..n])))
            }
            Inner::Poll { conn, last } => {
                let v: i64 = sqlx::query("PRAGMA data_version")
                    .fetch_one(&mut **conn)
                    .await?
                    .try_get(0)?;
                let changed = last.is_some_and(|l| l != v);
                *last = Some(v);
                Ok(changed.then_some(WakeEvent::Changed))
            }
            // Never fires: pend instead of returning at once, so a caller's
            // loop does not spin.
            Inner::Nothing => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_fit_postgres_identifiers_and_differ_by_schema() {
        let a = wake_channel(
            None,
            "conductor-with-a-very-long-host-name.example.internal.cluster.local",
        );
        assert!(a.len() <= 63);
        assert_ne!(wake_channel(Some("t1"), "c"), wake_channel(Some("t2"), "c"));
        assert_eq!(wake_channel(Some("t1"), "c"), wake_channel(Some("t1"), "c"));
    }
}
