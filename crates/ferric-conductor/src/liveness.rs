//! Self-fencing (issue 17, item 3): a conductor that cannot write its
//! heartbeat stops acting before the others may judge it dead, and after
//! an outage it does not judge the others dead before they had time to
//! beat again.
//!
//! The others judge a conductor dead when its heartbeat is older than
//! `heartbeat_timeout` on the database clock. A beat's timestamp is taken
//! by the database after the beat was sent, so measured from the *send* of
//! the last successful beat, this process's monotonic clock can only be
//! early. [`Liveness::is_fenced`] turns true midway between the heartbeat
//! interval and the timeout after that send (a healthy conductor beats
//! every interval): from then on the conductor takes no lock and writes
//! nothing under one (`TaskError::Fenced`), before the others may recover
//! its locks.
//!
//! When heartbeats come back after a failure, [`Liveness::may_judge_others`]
//! stays false for one `heartbeat_timeout`: every conductor cut off by the
//! same outage has had time to beat again, so recovery only takes the
//! locks of conductors that are really gone. A conductor that never saw a
//! failed beat judges at once (start-up included).
//!
//! Unarmed (no beat recorded: tests driving a `TaskManager` without a
//! heartbeat) it never fences.

use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;
use tracing::{info, warn};

/// This conductor's view of its own heartbeat.
#[derive(Debug)]
pub struct Liveness {
    interval: Duration,
    timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the newest successful beat was sent.
    last_ok_sent: Option<Instant>,
    /// A beat failed (or the conductor fenced) since the last success.
    degraded: bool,
    /// When beats came back after a failure.
    resumed_at: Option<Instant>,
    /// The fence was logged (once per outage).
    fence_logged: bool,
}

impl Liveness {
    /// For a conductor beating every `interval` in a cluster whose heartbeat
    /// timeout is `timeout`.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Liveness {
            interval,
            timeout,
            state: Mutex::new(State::default()),
        }
    }

    /// How long after the send of the last good beat the conductor fences.
    pub fn fence_after(&self) -> Duration {
        (self.interval + self.timeout) / 2
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this short lock leaves plain data behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A beat sent at `sent` was written.
    pub fn beat_ok(&self, sent: Instant) {
        self.beat_ok_at(sent, Instant::now());
    }

    fn beat_ok_at(&self, sent: Instant, now: Instant) {
        let mut s = self.lock();
        let was_fenced = s
            .last_ok_sent
            .is_some_and(|t| sent.saturating_duration_since(t) > self.fence_after());
        if s.degraded || was_fenced {
            s.resumed_at = Some(now);
            if s.fence_logged {
                info!(
                    grace = ?self.timeout,
                    "heartbeat restored: acting again; judging other conductors after the grace"
                );
            }
        }
        s.degraded = false;
        s.fence_logged = false;
        s.last_ok_sent = Some(sent.max(s.last_ok_sent.unwrap_or(sent)));
    }

    /// A beat failed.
    pub fn beat_failed(&self) {
        self.lock().degraded = true;
    }

    /// True when this conductor must not take locks nor write under them.
    pub fn is_fenced(&self) -> bool {
        self.is_fenced_at(Instant::now())
    }

    fn is_fenced_at(&self, now: Instant) -> bool {
        let mut s = self.lock();
        let Some(last) = s.last_ok_sent else {
            return false;
        };
        let since = now.saturating_duration_since(last);
        let fenced = since > self.fence_after();
        if fenced {
            s.degraded = true;
            if !s.fence_logged {
                s.fence_logged = true;
                warn!(
                    since_last_beat = ?since,
                    heartbeat_timeout = ?self.timeout,
                    "heartbeat not written for too long: fenced (taking no \
                     locks, writing nothing under them) until it is"
                );
            }
        }
        fenced
    }

    /// True when stale-lock recovery may judge other conductors dead.
    pub fn may_judge_others(&self) -> bool {
        self.may_judge_others_at(Instant::now())
    }

    fn may_judge_others_at(&self, now: Instant) -> bool {
        if self.is_fenced_at(now) {
            return false;
        }
        let s = self.lock();
        !s.degraded
            && s.resumed_at
                .is_none_or(|t| now.saturating_duration_since(t) >= self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_before_the_timeout_and_waits_a_timeout_after_resuming() {
        let sec = Duration::from_secs;
        let l = Liveness::new(sec(2), sec(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + sec(s);
        assert!(!l.is_fenced_at(t0) && l.may_judge_others_at(t0), "unarmed");
        l.beat_ok_at(t0, t0);
        assert!(!l.is_fenced_at(at(5)) && l.may_judge_others_at(at(5)));
        assert!(l.is_fenced_at(at(7)), "fenced past 6 s");
        assert!(!l.may_judge_others_at(at(7)));
        l.beat_failed();
        l.beat_ok_at(at(17), at(17));
        assert!(!l.is_fenced_at(at(17)));
        assert!(!l.may_judge_others_at(at(17)), "grace after the outage");
        for t in [19, 21, 23, 25] {
            l.beat_ok_at(at(t), at(t));
            assert!(!l.may_judge_others_at(at(t)), "{t}");
        }
        l.beat_ok_at(at(27), at(27));
        assert!(l.may_judge_others_at(at(27)), "a timeout of good beats");
    }

    #[test]
    fn a_conductor_that_never_missed_a_beat_judges_at_once() {
        let l = Liveness::new(Duration::from_secs(2), Duration::from_secs(10));
        let t0 = Instant::now();
        for s in 0..10 {
            let t = t0 + Duration::from_secs(2 * s);
            l.beat_ok_at(t, t);
            assert!(l.may_judge_others_at(t));
        }
    }
}
