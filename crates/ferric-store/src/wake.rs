//! Cross-process wakeups for lock waiters (SPEC §4.5).
//!
//! * PostgreSQL: one LISTEN channel per conductor. A release that hands the
//!   lock to a waiter of *another* conductor sends `pg_notify` inside its
//!   transaction, so the notification is delivered exactly when the grant
//!   commits. Releases without waiters never notify (NOTIFY takes a
//!   database-wide lock at commit; see `shared/reference/locks.md` §5.4).
//! * SQLite: no server to push from. A waiter's conductor polls
//!   `PRAGMA data_version`, which changes whenever another connection commits,
//!   and only while it has waiters.
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

impl WakeSubscription {
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
                Some(n) => {
                    let mut parts = n.payload().split(' ');
                    let node = parts.next().and_then(|s| Uuid::parse_str(s).ok());
                    let task = parts.next().and_then(|s| Uuid::parse_str(s).ok());
                    Ok(Some(match (node, task) {
                        (Some(node), Some(task_id)) => WakeEvent::Granted { node, task_id },
                        _ => WakeEvent::Changed,
                    }))
                }
                None => Ok(Some(WakeEvent::Reconnected)),
            },
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
