//! `ferric bench soak`, short: the soak harness itself keeps working (the
//! 30-minute run is recorded in BENCHMARKS.md).

use crate::helpers::{ferric, output};
use serde_json::Value;

#[test]
fn a_short_soak_runs_loads_samples_and_stops_the_server() {
    let out = output(ferric().args([
        "bench",
        "soak",
        "--duration",
        "15s",
        "--sample-every",
        "1s",
        "--rate",
        "60",
        "--workers",
        "3",
        "--nodes",
        "4",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&stdout).unwrap();
    let n = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}"));
    // Bounded rate: 60 steps/s for 15 s is at most 900 steps, each 1 to 3
    // requests (+ 4 enrolments).
    assert!(n("requests") > 150.0 && n("requests") <= 2704.0, "{r}");
    assert_eq!(n("server_errors_5xx"), 0.0, "{r}");
    assert_eq!(n("transport_errors"), 0.0, "{r}");
    assert!(n("churn_cycles") > 0.0, "{r}");
    assert!(n("provision_verbs_accepted") > 0.0, "{r}");
    assert!(r["by_status"]["200"].as_u64().unwrap_or(0) > 0, "{r}");
    let samples = r["rss_samples"].as_array().unwrap();
    assert!(samples.len() >= 10, "{r}");
    assert!(samples.iter().all(|s| s["rss_mb"].as_f64().unwrap() > 1.0));
    assert!(n("rss_max_mb") >= n("rss_median_mb") && n("rss_median_mb") > 1.0);
    // Stopped gracefully by its PID, and gone.
    let exit = r["server_exit"].as_str().unwrap();
    assert!(
        exit.starts_with("SIGTERM") && exit.contains("exit status: 0"),
        "{exit}"
    );
    let pid = r["server_pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        !status.contains("ferric"),
        "the server process {pid} is still there: {status}"
    );
}
