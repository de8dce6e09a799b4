//! Unit tests for plugin metrics: Envoy's rules per metric type, ids, shared names, and the
//! Prometheus exposition.

use prometheus::Registry;
use weft_abi::{MetricType, Status};

use super::*;

fn metrics() -> (PluginMetrics, Registry) {
    let registry = Registry::new();
    (PluginMetrics::new(registry.clone()), registry)
}

fn exposition(registry: &Registry) -> String {
    let mut out = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut out,
    )
    .expect("encode");
    String::from_utf8(out).expect("utf8")
}

#[test]
fn counters_only_grow() {
    let (metrics, registry) = metrics();
    let id = metrics
        .define(MetricType::Counter, "requests_seen")
        .expect("define");
    assert_eq!(
        id & 0b11,
        MetricType::Counter as u32,
        "the type rides in the low bits"
    );
    metrics.increment(id, 2).expect("increment");
    metrics.record(id, 3).expect("record adds");
    assert_eq!(metrics.get(id), Ok(5));
    assert_eq!(metrics.increment(id, 0), Err(Status::BadArgument));
    assert_eq!(metrics.increment(id, -1), Err(Status::BadArgument));
    assert!(exposition(&registry).contains("requests_seen 5"));
}

#[test]
fn gauges_move_both_ways_and_record_sets() {
    let (metrics, _) = metrics();
    let id = metrics
        .define(MetricType::Gauge, "in_flight")
        .expect("define");
    metrics.increment(id, 5).expect("up");
    metrics.increment(id, -2).expect("down");
    assert_eq!(metrics.get(id), Ok(3));
    metrics.record(id, 42).expect("set");
    assert_eq!(metrics.get(id), Ok(42));
}

#[test]
fn histograms_only_record() {
    let (metrics, registry) = metrics();
    let id = metrics
        .define(MetricType::Histogram, "body.size")
        .expect("define");
    metrics.record(id, 100).expect("record");
    metrics.record(id, 3000).expect("record");
    assert_eq!(metrics.increment(id, 1), Err(Status::BadArgument));
    assert_eq!(metrics.get(id), Err(Status::BadArgument));
    let text = exposition(&registry);
    assert!(
        text.contains("body_size_count 2"),
        "dots become underscores: {text}"
    );
    assert!(text.contains("body_size_sum 3100"), "{text}");
}

#[test]
fn unknown_ids_and_mismatched_types_are_not_found() {
    let (metrics, _) = metrics();
    assert_eq!(metrics.get(4), Err(Status::NotFound));
    let id = metrics.define(MetricType::Counter, "c").expect("define");
    let as_gauge = (id & !0b11) | MetricType::Gauge as u32;
    assert_eq!(metrics.increment(as_gauge, 1), Err(Status::NotFound));
    assert_eq!(metrics.record(id + 4, 1), Err(Status::NotFound));
}

#[test]
fn a_name_defined_again_is_the_same_metric() {
    let (metrics, _) = metrics();
    let first = metrics
        .define(MetricType::Counter, "shared_total")
        .expect("define");
    let second = metrics
        .define(MetricType::Counter, "shared_total")
        .expect("define again");
    metrics.increment(first, 1).expect("inc");
    metrics.increment(second, 1).expect("inc");
    assert_eq!(metrics.get(first), Ok(2));
    assert_eq!(
        metrics.define(MetricType::Gauge, "shared_total"),
        Err(Status::BadArgument),
        "one name, one type"
    );
    assert_eq!(
        metrics.define(MetricType::Counter, ""),
        Err(Status::BadArgument)
    );
}

#[test]
fn names_are_made_valid_for_prometheus() {
    assert_eq!(
        prometheus_name("envoy.wasm-custom/metric").as_deref(),
        Some("envoy_wasm_custom_metric")
    );
    assert_eq!(prometheus_name("9lives").as_deref(), Some("_9lives"));
    assert_eq!(prometheus_name(""), None);
}

#[test]
fn a_plugin_cannot_take_a_name_weft_uses() {
    let weft = crate::metrics::Metrics::new();
    let metrics = PluginMetrics::new(weft.registry().clone());
    assert_eq!(
        metrics.define(MetricType::Counter, "weft_config_reloads_total"),
        Err(Status::BadArgument)
    );
    let id = metrics
        .define(MetricType::Counter, "my_filter_hits")
        .expect("a fresh name is fine");
    metrics.increment(id, 1).expect("inc");
    assert!(
        weft.render().contains("my_filter_hits 1"),
        "plugin metrics appear on /stats/prometheus"
    );
}
