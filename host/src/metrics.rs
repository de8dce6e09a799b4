//! The proxy's own metrics (`weft_*`), registered once per process in a `prometheus::Registry`
//! and rendered by the admin server on `/stats/prometheus`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the data path updates.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Downstream requests by listener and response code.
    pub downstream_requests: IntCounterVec,
    /// Downstream request duration (headers in → response body done), by listener.
    pub downstream_duration: HistogramVec,
    /// Open downstream connections, by listener.
    pub downstream_cx_active: IntGaugeVec,
    /// Downstream connections accepted, by listener.
    pub downstream_cx_total: IntCounterVec,
    /// Connections closed at accept because the listener was at `maxConnections`.
    pub downstream_cx_overflow: IntCounterVec,
    /// TLS handshakes that failed (including refused client certificates), by listener.
    pub downstream_tls_errors: IntCounterVec,
    /// Upstream requests by cluster and response code (`503`, `504`… for local failures).
    pub upstream_requests: IntCounterVec,
    /// Upstream connections that could not be established, by cluster.
    pub upstream_cx_connect_fail: IntCounterVec,
    /// New upstream connections, by cluster.
    pub upstream_cx_total: IntCounterVec,
    /// Retries on another endpoint after a connection failure, by cluster.
    pub upstream_retries: IntCounterVec,
    /// Endpoint ejections by outlier detection, by cluster.
    pub upstream_ejections: IntCounterVec,
    /// Configuration reloads by result (`success`, `failure`).
    pub config_reloads: IntCounterVec,
    /// Certificate reloads by listener and result.
    pub tls_reloads: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition is valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let downstream_requests = counter(
            "weft_downstream_requests_total",
            "Downstream requests by listener and response code.",
            &["listener", "code"],
        );
        let downstream_cx_total = counter(
            "weft_downstream_cx_total",
            "Downstream connections accepted.",
            &["listener"],
        );
        let downstream_cx_overflow = counter(
            "weft_downstream_cx_overflow_total",
            "Downstream connections refused because the listener was at maxConnections.",
            &["listener"],
        );
        let downstream_tls_errors = counter(
            "weft_downstream_tls_errors_total",
            "Failed downstream TLS handshakes.",
            &["listener"],
        );
        let upstream_requests = counter(
            "weft_upstream_requests_total",
            "Upstream requests by cluster and response code.",
            &["cluster", "code"],
        );
        let upstream_cx_connect_fail = counter(
            "weft_upstream_cx_connect_fail_total",
            "Upstream connection failures.",
            &["cluster"],
        );
        let upstream_cx_total = counter(
            "weft_upstream_cx_total",
            "Upstream connections opened.",
            &["cluster"],
        );
        let upstream_retries = counter(
            "weft_upstream_retries_total",
            "Requests retried on another endpoint after a connection failure.",
            &["cluster"],
        );
        let upstream_ejections = counter(
            "weft_upstream_ejections_total",
            "Endpoints ejected by outlier detection.",
            &["cluster"],
        );
        let config_reloads = counter(
            "weft_config_reloads_total",
            "Configuration reloads by result.",
            &["result"],
        );
        let tls_reloads = counter(
            "weft_tls_reloads_total",
            "Certificate reloads by listener and result.",
            &["listener", "result"],
        );
        let downstream_cx_active = IntGaugeVec::new(
            Opts::new("weft_downstream_cx_active", "Open downstream connections."),
            &["listener"],
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(downstream_cx_active.clone()))
            .expect("metric names are unique");
        let downstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "weft_downstream_request_duration_seconds",
                "Downstream request duration.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["listener"],
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(downstream_duration.clone()))
            .expect("metric names are unique");
        Self {
            registry,
            downstream_requests,
            downstream_duration,
            downstream_cx_active,
            downstream_cx_total,
            downstream_cx_overflow,
            downstream_tls_errors,
            upstream_requests,
            upstream_cx_connect_fail,
            upstream_cx_total,
            upstream_retries,
            upstream_ejections,
            config_reloads,
            tls_reloads,
        }
    }

    /// The registry, for subsystems that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
