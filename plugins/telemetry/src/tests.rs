//! Native tests of the telemetry filter through `weft_sdk::testing`: metrics and their labels,
//! trace context, request ids, access log lines and configuration.

use std::time::Duration;

use weft_sdk::testing::{Harness, TestRequest, TestResponse};
use weft_sdk::{Action, LogLevel};

use super::*;

fn harness(config: &str) -> Harness<Telemetry> {
    match Harness::<Telemetry>::new(config) {
        Ok(harness) => harness,
        Err(e) => panic!("configuration refused: {e}"),
    }
}

fn series(family: &str, code: &str, method: &str, cluster: &str, principal: &str) -> String {
    format!(
        "{family}{{response_code=\"{code}\",request_method=\"{method}\",\
         destination_cluster=\"{cluster}\",source_principal=\"{principal}\"}}"
    )
}

fn info_lines(harness: &Harness<Telemetry>) -> Vec<String> {
    harness
        .logs()
        .into_iter()
        .filter(|(level, _)| *level == LogLevel::Info)
        .map(|(_, line)| line)
        .collect()
}

#[test]
fn records_istio_metrics_per_code_method_cluster_and_principal() {
    let harness = harness("{}");
    for _ in 0..2 {
        let exchange = harness.request(
            TestRequest::post("/api")
                .property("weft.upstream_cluster", "web")
                .body("hello"),
        );
        harness.advance(Duration::from_millis(25));
        exchange.respond(TestResponse::new(200).body("0123456789"));
        exchange.finish();
    }
    let missing = harness.request(
        TestRequest::get("/nope")
            .property("weft.upstream_cluster", "web")
            .principal("spiffe://mesh/sa/client"),
    );
    missing.respond(TestResponse::new(404));
    missing.finish();

    let ok = |family| series(family, "200", "POST", "web", "unknown");
    assert_eq!(harness.counter(&ok("istio_requests_total")), Some(2));
    assert_eq!(
        harness.histogram(&ok("istio_request_duration_milliseconds")),
        Some(vec![25, 25])
    );
    // Without the host's total sizes, the body sizes.
    assert_eq!(
        harness.histogram(&ok("istio_request_bytes")),
        Some(vec![5, 5])
    );
    assert_eq!(
        harness.histogram(&ok("istio_response_bytes")),
        Some(vec![10, 10])
    );
    let not_found = series(
        "istio_requests_total",
        "404",
        "GET",
        "web",
        "spiffe://mesh/sa/client",
    );
    assert_eq!(harness.counter(&not_found), Some(1));
}

#[test]
fn prefers_total_sizes_and_labels_the_unknown() {
    let harness = harness("{}");
    let exchange = harness.request(
        TestRequest::new("BREW", "/pot")
            .property("request.total_size", 300_i64.to_le_bytes())
            .property("response.total_size", 120_i64.to_le_bytes()),
    );
    exchange.finish();
    let labels = |family| series(family, "0", "OTHER", "unknown", "unknown");
    assert_eq!(harness.counter(&labels("istio_requests_total")), Some(1));
    assert_eq!(
        harness.histogram(&labels("istio_request_bytes")),
        Some(vec![300])
    );
    assert_eq!(
        harness.histogram(&labels("istio_response_bytes")),
        Some(vec![120])
    );
}

#[test]
fn starts_a_trace_when_the_request_has_none() {
    let harness = harness("{}");
    let exchange = harness.request(TestRequest::get("/"));
    assert_eq!(exchange.action(), Action::Continue);
    let traceparent = exchange.request_header("traceparent").expect("traceparent");
    assert!(trace::parse(&traceparent).is_some(), "{traceparent}");
    assert!(traceparent.starts_with("00-") && traceparent.ends_with("-01"));

    let other = harness.request(TestRequest::get("/"));
    let second = other.request_header("traceparent").expect("traceparent");
    assert_ne!(traceparent[3..35], second[3..35], "a new trace per request");
}

#[test]
fn continues_a_valid_trace_with_a_new_span() {
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let harness = harness("{}");
    let exchange = harness.request(TestRequest::get("/").header("traceparent", incoming));
    let upstream = exchange.request_header("traceparent").expect("traceparent");
    assert_eq!(&upstream[..36], &incoming[..36], "same trace");
    assert_ne!(&upstream[36..52], &incoming[36..52], "new parent span");
    assert_eq!(&upstream[52..], "-00", "flags kept");
}

#[test]
fn replaces_an_invalid_traceparent_with_a_new_trace() {
    let invalid = "00-00000000000000000000000000000000-b7ad6b7169203331-01";
    let harness = harness("{}");
    let exchange = harness.request(TestRequest::get("/").header("traceparent", invalid));
    let upstream = exchange.request_header("traceparent").expect("traceparent");
    assert!(trace::parse(&upstream).is_some());
    assert_ne!(&upstream[3..35], &invalid[3..35]);
}

#[test]
fn generates_a_request_id_and_returns_it_on_the_response() {
    let harness = harness("{}");
    let exchange = harness.request(TestRequest::get("/"));
    let id = exchange.request_header("x-request-id").expect("an id");
    assert_eq!(id.len(), 36);
    assert_eq!(id.as_bytes()[14], b'4', "UUID v4: {id}");
    exchange.respond(TestResponse::new(200));
    assert_eq!(exchange.response_header("x-request-id"), Some(id));
}

#[test]
fn keeps_the_clients_request_id() {
    let harness = harness("{}");
    let exchange = harness.request(TestRequest::get("/").header("x-request-id", "client-42"));
    assert_eq!(
        exchange.request_header("x-request-id").as_deref(),
        Some("client-42")
    );
    exchange.respond(TestResponse::new(200).header("x-request-id", "upstream-7"));
    assert_eq!(
        exchange.response_header("x-request-id").as_deref(),
        Some("client-42")
    );
}

#[test]
fn writes_envoy_access_log_lines() {
    let harness = harness(r#"{"accessLog": {"format": "envoy"}}"#);
    let exchange = harness.request(
        TestRequest::post("/api?x=1")
            .header("user-agent", "curl/8.5.0")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-request-id", "req-1")
            .property("request.protocol", "HTTP/1.1")
            .body("abc"),
    );
    harness.advance(Duration::from_millis(7));
    exchange.respond(TestResponse::new(201).body("created"));
    exchange.finish();
    let lines = info_lines(&harness);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    let (time, rest) = line
        .strip_prefix('[')
        .and_then(|l| l.split_once("] "))
        .expect("[START_TIME] first");
    assert_eq!(time.len(), "2024-05-01T12:00:00.123Z".len(), "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    assert_eq!(
        rest,
        r#""POST /api?x=1 HTTP/1.1" 201 - 3 7 7 - "203.0.113.9" "curl/8.5.0" "req-1" "example.com" "-""#
    );
}

#[test]
fn writes_json_access_log_lines_with_the_same_fields() {
    let harness = harness(r#"{"accessLog": {"format": "json"}, "metrics": false}"#);
    let exchange = harness.request(TestRequest::get("/a\"b").header("user-agent", "ua"));
    harness.advance(Duration::from_millis(3));
    exchange.respond(TestResponse::new(404).body("no"));
    let id = exchange.request_header("x-request-id").expect("an id");
    exchange.finish();
    let lines = info_lines(&harness);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let value: serde_json::Value = match serde_json::from_str(&lines[0]) {
        Ok(value) => value,
        Err(e) => panic!("not JSON ({e}): {}", lines[0]),
    };
    assert_eq!(value["method"], "GET");
    assert_eq!(value["path"], "/a\"b");
    assert_eq!(value["protocol"], serde_json::Value::Null);
    assert_eq!(value["response_code"], 404);
    assert_eq!(value["bytes_received"], 0);
    assert_eq!(value["bytes_sent"], 2);
    assert_eq!(value["duration"], 3);
    assert_eq!(value["user_agent"], "ua");
    assert_eq!(value["request_id"], id.as_str());
    assert_eq!(value["authority"], "example.com");
    assert_eq!(value["x_forwarded_for"], serde_json::Value::Null);
    assert!(
        value["start_time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(value.as_object().map(|o| o.len()), Some(15));
    assert!(harness.metric_names().is_empty(), "metrics off");
}

#[test]
fn does_only_what_is_enabled() {
    let harness = harness(r#"{"metrics": false, "tracing": false, "requestId": false}"#);
    let exchange = harness.request(TestRequest::get("/"));
    assert_eq!(exchange.request_header("traceparent"), None);
    assert_eq!(exchange.request_header("x-request-id"), None);
    exchange.respond(TestResponse::new(200));
    assert_eq!(exchange.response_header("x-request-id"), None);
    exchange.finish();
    assert!(harness.metric_names().is_empty());
    assert!(info_lines(&harness).is_empty(), "no access log by default");
}

#[test]
fn refuses_bad_configurations_naming_the_field() {
    for (config, expected) in [
        (r#"{"accessLog": {"format": "xml"}}"#, "accessLog.format"),
        (r#"{"accessLog": {"fmt": "json"}}"#, "unknown field `fmt`"),
        (r#"{"tracing": "yes"}"#, "tracing"),
        (r#"{"requestID": true}"#, "unknown field `requestID`"),
    ] {
        match Harness::<Telemetry>::new(config) {
            Ok(_) => panic!("accepted {config}"),
            Err(e) => assert!(e.contains(expected), "{config}: {e}"),
        }
    }
}
