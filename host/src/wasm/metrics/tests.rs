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

const REQUESTS_200: &str = "istio_requests_total{response_code=\"200\",request_method=\"GET\",\
                            destination_cluster=\"web\",source_principal=\"unknown\"}";

#[test]
fn labeled_names_are_series_of_one_family_on_the_exposition() {
    let (metrics, registry) = metrics();
    let ok = metrics
        .define(MetricType::Counter, REQUESTS_200)
        .expect("define a labeled counter");
    let reordered = metrics
        .define(
            MetricType::Counter,
            "istio_requests_total{source_principal=\"unknown\",destination_cluster=\"web\",\
             request_method=\"GET\",response_code=\"200\",}",
        )
        .expect("the same labels in another order, with a trailing comma");
    assert_eq!(ok, reordered, "one series, one id");
    assert_eq!(
        metrics.define(MetricType::Counter, REQUESTS_200),
        Ok(ok),
        "the same full name returns the same id"
    );
    let unavailable = metrics
        .define(
            MetricType::Counter,
            "istio_requests_total{response_code=\"503\",request_method=\"GET\",\
             destination_cluster=\"web\",source_principal=\"unknown\"}",
        )
        .expect("another series of the family");
    assert_ne!(ok, unavailable);
    metrics.increment(ok, 2).expect("inc");
    metrics.increment(reordered, 1).expect("inc");
    metrics.increment(unavailable, 1).expect("inc");
    assert_eq!(metrics.get(ok), Ok(3));

    let duration = metrics
        .define(
            MetricType::Histogram,
            "istio_request_duration_milliseconds{response_code=\"200\",destination_cluster=\"web\"}",
        )
        .expect("define a labeled histogram");
    metrics.record(duration, 3).expect("record");
    metrics.record(duration, 40).expect("record");

    let text = exposition(&registry);
    assert_eq!(
        text.matches("# TYPE istio_requests_total counter").count(),
        1,
        "one family: {text}"
    );
    assert!(
        text.contains(
            "istio_requests_total{destination_cluster=\"web\",request_method=\"GET\",\
             response_code=\"200\",source_principal=\"unknown\"} 3\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "istio_requests_total{destination_cluster=\"web\",request_method=\"GET\",\
             response_code=\"503\",source_principal=\"unknown\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "istio_request_duration_milliseconds_bucket{destination_cluster=\"web\",\
             response_code=\"200\",le=\"4\"} 1\n"
        ),
        "the usual buckets, labeled: {text}"
    );
    assert!(
        text.contains(
            "istio_request_duration_milliseconds_sum{destination_cluster=\"web\",\
             response_code=\"200\"} 43\n"
        ),
        "{text}"
    );
}

#[test]
fn label_values_may_hold_any_text_escaped() {
    let (metrics, registry) = metrics();
    let id = metrics
        .define(
            MetricType::Gauge,
            r#"weird_values{path="/a,b=\"c\"}",dir="C:\\tmp",emoji="ünï ☃"}"#,
        )
        .expect("escaped quotes, backslashes, commas and braces in values");
    metrics.record(id, 7).expect("set");
    let text = exposition(&registry);
    assert!(
        text.contains(r#"weird_values{dir="C:\\tmp",emoji="ünï ☃",path="/a,b=\"c\"}"} 7"#),
        "{text}"
    );
}

#[test]
fn a_family_keeps_its_first_label_names_and_type() {
    let (metrics, _) = metrics();
    metrics
        .define(MetricType::Counter, "hits{route=\"a\",code=\"200\"}")
        .expect("first definition");
    for other in [
        "hits{route=\"a\"}",
        "hits{route=\"a\",code=\"200\",method=\"GET\"}",
        "hits{route=\"a\",status=\"200\"}",
        "hits",
    ] {
        assert_eq!(
            metrics.define(MetricType::Counter, other),
            Err(Status::BadArgument),
            "{other}: another label set"
        );
    }
    assert_eq!(
        metrics.define(MetricType::Gauge, "hits{route=\"b\",code=\"200\"}"),
        Err(Status::BadArgument),
        "another type"
    );
    metrics
        .define(MetricType::Counter, "hits{code=\"404\",route=\"b\"}")
        .expect("the same set, new values");

    metrics
        .define(MetricType::Gauge, "plain_gauge")
        .expect("plain");
    assert_eq!(
        metrics.define(MetricType::Gauge, "plain_gauge{a=\"1\"}"),
        Err(Status::BadArgument),
        "a plain family has no labels"
    );
    assert!(
        metrics.define(MetricType::Gauge, "plain_gauge{}").is_ok(),
        "`{{}}` is no labels"
    );
}

#[test]
fn malformed_labeled_names_are_bad_arguments() {
    let (metrics, _) = metrics();
    for name in [
        "m{",
        "m{a}",
        "m{a=1}",
        "m{a=\"1\"",
        "m{a=\"1\"}x",
        "m{a=\"1\" }",
        "m{ a=\"1\"}",
        "m{a=\"1\",,b=\"2\"}",
        "m{a=\"1\"b=\"2\"}",
        "m{a=\"bad \\x escape\"}",
        "m{a=\"dangling\\",
        "m{1a=\"1\"}",
        "m{a-b=\"1\"}",
        "m{__name__=\"1\"}",
        "m{a=\"1\",a=\"2\"}",
        "{a=\"1\"}",
        "m{a=\"1\"}{b=\"2\"}",
    ] {
        assert_eq!(
            metrics.define(MetricType::Counter, name),
            Err(Status::BadArgument),
            "{name}"
        );
    }
    assert_eq!(
        metrics.define(MetricType::Histogram, "h{le=\"1\"}"),
        Err(Status::BadArgument),
        "`le` belongs to the buckets"
    );
    let long = format!("m{{a=\"{}\"}}", "x".repeat(MAX_NAME_BYTES));
    assert_eq!(
        metrics.define(MetricType::Counter, &long),
        Err(Status::BadArgument)
    );
    assert!(
        metrics.define(MetricType::Counter, "m{a=\"1\"}").is_ok(),
        "nothing was left half-defined"
    );
}

#[test]
fn a_family_holds_a_bounded_number_of_series() {
    let (metrics, registry) = metrics();
    for i in 0..MAX_SERIES_PER_FAMILY {
        metrics
            .define(MetricType::Counter, &format!("by_user{{user=\"{i}\"}}"))
            .expect("under the cap");
    }
    assert_eq!(
        metrics.define(MetricType::Counter, "by_user{user=\"one-too-many\"}"),
        Err(Status::BadArgument),
        "past the cap"
    );
    assert!(
        metrics
            .define(MetricType::Counter, "by_user{user=\"7\"}")
            .is_ok(),
        "existing series still resolve"
    );
    assert!(
        metrics
            .define(MetricType::Counter, "other_family{user=\"x\"}")
            .is_ok(),
        "the cap is per family"
    );
    let text = exposition(&registry);
    assert_eq!(
        text.matches("by_user{").count(),
        MAX_SERIES_PER_FAMILY,
        "no series past the cap is exported"
    );
}

#[test]
fn names_parse_into_family_and_labels() {
    assert_eq!(
        parse_name("a.b{x=\"1\",y=\"q\\\"\\\\\\n\"}"),
        Some(ParsedName {
            family: "a.b",
            labels: vec![("x", "1".to_owned()), ("y", "q\"\\\n".to_owned())],
        })
    );
    assert_eq!(
        parse_name("plain.name"),
        Some(ParsedName {
            family: "plain.name",
            labels: vec![],
        })
    );
}
