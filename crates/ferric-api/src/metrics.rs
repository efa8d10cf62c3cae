//! Request metrics in the Prometheus text format (`GET /metrics`, SPEC §8):
//! a counter and a latency histogram per (method, route template, status),
//! and the number of requests in flight. Route templates (`/v1/nodes/{ident}`)
//! keep the label set bounded; unmatched paths share one label.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The matched route template of a request, carried from the router to the
/// outer middleware in the response's extensions.
#[derive(Debug, Clone)]
pub struct RouteName(pub String);

#[derive(Debug, Default, Clone)]
struct Series {
    count: u64,
    sum_secs: f64,
    buckets: [u64; BUCKETS.len()],
}

type Key = (String, String, u16);

/// The API's request metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<Key, Series>>,
    in_flight: AtomicI64,
}

/// Marks one request in flight until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Count a request as in flight until the guard drops.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Record one finished request.
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut guard = match self.series.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let s = guard
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        s.count += 1;
        s.sum_secs += secs;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                s.buckets[i] += 1;
            }
        }
    }

    /// The metrics in Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let series = match self.series.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut out = String::new();
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str("# HELP ferric_api_requests_total API requests served.\n");
        out.push_str("# TYPE ferric_api_requests_total counter\n");
        for ((m, r, st), s) in &series {
            let _ = writeln!(
                out,
                "ferric_api_requests_total{{method=\"{}\",route=\"{}\",status=\"{st}\"}} {}",
                esc(m),
                esc(r),
                s.count
            );
        }
        out.push_str("# HELP ferric_api_request_duration_seconds API request latency.\n");
        out.push_str("# TYPE ferric_api_request_duration_seconds histogram\n");
        for ((m, r, st), s) in &series {
            let labels = format!("method=\"{}\",route=\"{}\",status=\"{st}\"", esc(m), esc(r));
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ferric_api_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "ferric_api_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "ferric_api_request_duration_seconds_sum{{{labels}}} {}",
                s.sum_secs
            );
            let _ = writeln!(
                out,
                "ferric_api_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        out.push_str("# HELP ferric_api_requests_in_flight API requests being served.\n");
        out.push_str("# TYPE ferric_api_requests_in_flight gauge\n");
        let _ = writeln!(
            out,
            "ferric_api_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauge() {
        let m = Metrics::default();
        let g = m.start();
        m.record("GET", "/v1/nodes", 200, Duration::from_millis(3));
        m.record("GET", "/v1/nodes", 200, Duration::from_millis(300));
        let text = m.render();
        assert!(text.contains(
            "ferric_api_requests_total{method=\"GET\",route=\"/v1/nodes\",status=\"200\"} 2"
        ));
        assert!(text.contains("le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("ferric_api_requests_in_flight 1"));
        drop(g);
        assert!(m.render().contains("ferric_api_requests_in_flight 0"));
    }
}
