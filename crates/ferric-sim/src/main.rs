//! `ferric-sim --seed N` replays one seed and prints its trace;
//! `ferric-sim --seeds N --time-limit SECS` runs a batch and prints JSON.
//! Exits non-zero when a violation is found.

use ferric_sim::{run, Bug, SimConfig};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: ferric-sim (--seed N | --seeds N [--start S] [--time-limit SECS]) \
[--bug unfenced-write|release-without-holder-check|lifo-grant|unfenced-observation] \
[--no-workarounds | --without cancel-left-waiter|retry-release|drop-own-waiters-on-restart|release-after-failed-recovery] \
[--active SECS] \
[--no-crashes] [--no-pauses] [--no-lost-notifications] [--no-store-errors] [--no-operator-releases] \
[--no-ambiguous-commits] [--no-cancelled-waits] [--no-power-sync]";

struct Args {
    seed: Option<u64>,
    seeds: u64,
    start: u64,
    time_limit: Option<Duration>,
    cfg: SimConfig,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seed: None,
        seeds: 0,
        start: 0,
        time_limit: None,
        cfg: SimConfig::default(),
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, name: &str| -> Result<u64, String> {
        v.ok_or(format!("{name} needs a value"))?
            .parse::<u64>()
            .map_err(|e| format!("{name}: {e}"))
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--seed" => a.seed = Some(num(it.next(), "--seed")?),
            "--seeds" => a.seeds = num(it.next(), "--seeds")?,
            "--start" => a.start = num(it.next(), "--start")?,
            "--time-limit" => {
                a.time_limit = Some(Duration::from_secs(num(it.next(), "--time-limit")?))
            }
            "--active" => a.cfg.active = Duration::from_secs(num(it.next(), "--active")?),
            "--no-workarounds" => a.cfg.workarounds = ferric_sim::Workarounds::NONE,
            "--without" => {
                let name = it.next().unwrap_or_default();
                if !a.cfg.workarounds.disable(&name) {
                    return Err(format!("unknown workaround {name:?}\n{USAGE}"));
                }
            }
            "--no-ambiguous-commits" => a.cfg.ambiguous_commits = false,
            "--no-crashes" => a.cfg.crashes = false,
            "--no-pauses" => a.cfg.pauses = false,
            "--no-lost-notifications" => a.cfg.lost_notifications = false,
            "--no-store-errors" => a.cfg.store_errors = false,
            "--no-operator-releases" => a.cfg.operator_releases = false,
            "--no-cancelled-waits" => a.cfg.cancelled_waits = false,
            "--no-power-sync" => a.cfg.power_sync = false,
            "--bug" => {
                a.cfg.bug = Some(match it.next().as_deref() {
                    Some("unfenced-write") => Bug::UnfencedWrite,
                    Some("release-without-holder-check") => Bug::ReleaseWithoutHolderCheck,
                    Some("lifo-grant") => Bug::LifoGrant,
                    Some("unfenced-observation") => Bug::UnfencedObservation,
                    other => return Err(format!("unknown bug {other:?}")),
                })
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if a.seed.is_none() && a.seeds == 0 {
        return Err(USAGE.to_string());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match args.seed {
        Some(seed) => replay(seed, args.cfg),
        None => batch(&args),
    }
}

fn replay(seed: u64, mut cfg: SimConfig) -> ExitCode {
    cfg.keep_trace = true;
    let out = run(seed, &cfg);
    for line in &out.trace {
        println!("{line}");
    }
    let report = serde_json::json!({
        "seed": seed,
        "trace_hash": format!("{:016x}", out.trace_hash),
        "simulated_ms": out.simulated_ms,
        "store_ops": out.store_ops,
        "violations": out.violations.iter().map(|v| v.to_json(seed)).collect::<Vec<_>>(),
    });
    println!("{report}");
    if out.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn batch(args: &Args) -> ExitCode {
    let started = Instant::now();
    let mut violations = Vec::new();
    let mut failing = Vec::new();
    let mut seeds_run = 0u64;
    let mut simulated_ms = 0u64;
    let mut combined: u64 = 0xcbf2_9ce4_8422_2325;
    for seed in args.start..args.start.saturating_add(args.seeds) {
        if args.time_limit.is_some_and(|t| started.elapsed() >= t) {
            break;
        }
        let out = run(seed, &args.cfg);
        seeds_run += 1;
        simulated_ms += out.simulated_ms;
        combined = (combined ^ out.trace_hash).wrapping_mul(0x0000_0100_0000_01b3);
        if !out.violations.is_empty() {
            failing.push(seed);
            violations.extend(out.violations.iter().take(5).map(|v| v.to_json(seed)));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "seeds_run": seeds_run,
        "first_seed": args.start,
        "failing_seeds": failing,
        "violations": violations,
        "seconds": (secs * 10.0).round() / 10.0,
        "seeds_per_second": if secs > 0.0 { (seeds_run as f64 / secs * 10.0).round() / 10.0 } else { 0.0 },
        "trace_hash": format!("{combined:016x}"),
        "simulated_hours": (simulated_ms as f64 / 3.6e6 * 10.0).round() / 10.0,
        "replay": "cargo run -p ferric-sim -- --seed N",
    });
    println!("{report}");
    if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
