//! The simulator's own tests, kept short for `cargo test --workspace`; the big
//! batch runs from .ci/run (`cargo run -p ferric-sim -- --seeds 10000 --time-limit 300`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_sim::{run, Bug, Outcome, SimConfig};

fn batch(seeds: std::ops::Range<u64>, cfg: &SimConfig) -> Vec<Outcome> {
    seeds.map(|s| run(s, cfg)).collect()
}

fn failing(outs: &[Outcome]) -> Vec<(u64, &'static str, String)> {
    outs.iter()
        .flat_map(|o| {
            o.violations
                .iter()
                .map(move |v| (o.seed, v.invariant, v.detail.clone()))
        })
        .collect()
}

#[test]
fn three_hundred_seeds_with_every_fault_have_no_violation() {
    let outs = batch(0..300, &SimConfig::default());
    let bad = failing(&outs);
    assert!(
        bad.is_empty(),
        "replay with `cargo run -p ferric-sim -- --seed N`: {bad:#?}"
    );
    // The runs did something: grants, faults, simulated time.
    let ops: u64 = outs.iter().map(|o| o.store_ops).sum();
    assert!(ops > 300 * 100, "only {ops} store operations");
}

#[test]
fn a_seed_replays_exactly() {
    let cfg = SimConfig {
        keep_trace: true,
        ..Default::default()
    };
    for seed in [1, 42, 1234] {
        let a = run(seed, &cfg);
        let b = run(seed, &cfg);
        assert_eq!(a.trace, b.trace, "seed {seed} diverged");
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.store_ops, b.store_ops);
        assert!(a.trace.len() > 50, "seed {seed}: trace too short");
    }
    assert_ne!(run(1, &cfg).trace_hash, run(2, &cfg).trace_hash);
}

fn finds(bug: Bug, invariant: &str) {
    let cfg = SimConfig {
        bug: Some(bug),
        ..Default::default()
    };
    let outs = batch(0..20, &cfg);
    let bad = failing(&outs);
    assert!(
        bad.iter().any(|(_, inv, _)| *inv == invariant),
        "{bug:?} was not caught as {invariant} in 20 seeds: {bad:?}"
    );
}

#[test]
fn planted_unfenced_write_is_caught() {
    finds(Bug::UnfencedWrite, "write-is-fenced");
}

#[test]
fn planted_release_without_holder_check_is_caught() {
    finds(Bug::ReleaseWithoutHolderCheck, "release-is-fenced");
}

#[test]
fn planted_lifo_grant_is_caught() {
    finds(Bug::LifoGrant, "fifo-live-waiter-skipped");
}

/// Power states recorded without the lock from a stale reading (the node
/// was held, granted or written since it was read) are caught, each way.
#[test]
fn planted_unfenced_observation_is_caught() {
    let cfg = SimConfig {
        bug: Some(Bug::UnfencedObservation),
        ..Default::default()
    };
    let bad = failing(&batch(0..20, &cfg));
    for invariant in [
        "observation-while-held",
        "observation-after-grant",
        "observation-after-write",
    ] {
        assert!(
            bad.iter().any(|(_, inv, _)| *inv == invariant),
            "UnfencedObservation was not caught as {invariant} in 20 seeds: {bad:?}"
        );
    }
}

/// The simulated power sync does record readings without the lock, and the
/// store refuses some as stale: both sides of the fence are exercised.
#[test]
fn power_sync_records_readings_and_has_stale_ones_refused() {
    let cfg = SimConfig {
        keep_trace: true,
        ..Default::default()
    };
    let (mut recorded, mut read) = (0u64, 0u64);
    for out in batch(0..5, &cfg) {
        for line in &out.trace {
            let Some(rest) = line.split("power sync recorded ").nth(1) else {
                continue;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            recorded += words[0].parse::<u64>().unwrap();
            read += words[2].parse::<u64>().unwrap();
        }
    }
    assert!(
        recorded > 0 && recorded < read,
        "recorded {recorded} of {read} readings"
    );
}

/// The TaskManager gaps the simulator works around by default are real: with
/// a workaround off, store errors or restarts leave locks nobody uses.
fn gap_shows(without: &str, seeds: std::ops::Range<u64>) {
    let mut cfg = SimConfig::default();
    assert!(cfg.workarounds.disable(without));
    let outs = batch(seeds, &cfg);
    let bad = failing(&outs);
    assert!(
        bad.iter().any(|(_, inv, _)| *inv == "no-leaked-lock"),
        "without {without}: {bad:?}"
    );
}

#[test]
fn gap_waiter_left_queued_after_a_store_error_shows() {
    gap_shows("cancel-left-waiter", 0..3);
}

/// Dropping `acquire(..).retry(Patient).exclusive()` while it waits (an HTTP
/// handler whose client went away) used to leave the waiter queued. The
/// TaskManager now cancels it (QueueGuard): with the simulator's workaround
/// off, the seeds that showed the gap are clean.
#[test]
fn fixed_dropped_acquire_leaves_no_waiter() {
    let mut cfg = SimConfig {
        store_errors: false,
        ambiguous_commits: false,
        ..Default::default()
    };
    assert!(cfg.workarounds.disable("cancel-left-waiter"));
    let bad = failing(&batch(0..5, &cfg));
    assert!(bad.is_empty(), "{bad:?}");
}

/// Gaps the TaskManager has closed: with the workaround off, the seeds that
/// showed them have no violation.
fn gap_fixed(without: &str, seeds: std::ops::Range<u64>) {
    let mut cfg = SimConfig::default();
    assert!(cfg.workarounds.disable(without));
    let bad = failing(&batch(seeds, &cfg));
    assert!(bad.is_empty(), "without {without}: {bad:?}");
}

#[test]
fn gap_previous_lifes_waiters_after_restart_shows() {
    gap_shows("drop-own-waiters-on-restart", 1..5);
}

/// A store error on release is retried in the background (release_in_background).
#[test]
fn fixed_release_is_retried() {
    gap_fixed("retry-release", 14..15);
}

/// Recovery that fails after its takeover fails the node (retried) and releases.
#[test]
fn fixed_failed_recovery_releases_the_lock() {
    gap_fixed("release-after-failed-recovery", 364..365);
}
