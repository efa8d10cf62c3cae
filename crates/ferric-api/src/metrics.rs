//! Request metrics (`GET /metrics`, SPEC §8): a counter and a latency
//! histogram per (method, route template, status), and the number of
//! requests in flight.
//!
//! The families are `prometheus-client` metrics, registered into the
//! process's one registry by [`crate::ApiState`] (see
//! [`crate::ApiState::with_registry`]); `/metrics` encodes that registry.
//!
//! Invariant: the label set is bounded. Methods are an enum; a route is the
//! template the router matched (`/v1/nodes/{ident}`), never a raw path, and
//! [`Route`] can only be made from one (or be `unmatched`). Request series
//! appear with their first request: the status is only known then.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::time::Duration;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The `method` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    /// Any other method.
    Other,
}

impl Method {
    /// The label of a request's method.
    pub fn of(method: &axum::http::Method) -> Method {
        match method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

impl EncodeLabelValue for Method {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// The `route` label: a matched route template, or `unmatched`. Carried from
/// the router to the outer middleware in the response's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route(Cow<'static, str>);

impl Route {
    /// Requests no route matched.
    pub const UNMATCHED: Route = Route(Cow::Borrowed("unmatched"));

    /// The route of a request the router matched to `template`.
    pub(crate) fn matched(template: &axum::extract::MatchedPath) -> Route {
        Route(Cow::Owned(template.as_str().to_string()))
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0, encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: Method,
    route: Route,
    status: u16,
}

fn request_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The API's request metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(request_histogram),
            in_flight: Gauge::default(),
        }
    }
}

/// Marks one request in flight until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

impl Metrics {
    /// Register the families into `registry` (shared handles: what is
    /// recorded here shows in `registry`).
    pub fn register(&self, registry: &mut Registry) {
        // Counter names are registered without `_total`: the encoder adds it.
        registry.register(
            "ferric_api_requests",
            "API requests served",
            self.requests.clone(),
        );
        registry.register(
            "ferric_api_request_duration_seconds",
            "API request latency",
            self.duration.clone(),
        );
        registry.register(
            "ferric_api_requests_in_flight",
            "API requests being served",
            self.in_flight.clone(),
        );
    }

    /// Count a request as in flight until the guard drops.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(self)
    }

    /// Record one finished request.
    pub fn record(&self, method: Method, route: Route, status: u16, elapsed: Duration) {
        let labels = RequestLabels {
            method,
            route,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauge() {
        let m = Metrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        let render = || ferric_conductor::metrics::render_registry(&registry);
        let g = m.start();
        let nodes = || Route(Cow::Borrowed("/v1/nodes"));
        m.record(Method::Get, nodes(), 200, Duration::from_millis(3));
        m.record(Method::Get, nodes(), 200, Duration::from_millis(300));
        let text = render();
        assert!(
            text.contains(
                "ferric_api_requests_total{method=\"GET\",route=\"/v1/nodes\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("ferric_api_requests_in_flight 1"));
        drop(g);
        assert!(render().contains("ferric_api_requests_in_flight 0"));
    }
}
