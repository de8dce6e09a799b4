//! End-to-end tests of the built-in `telemetry` plugin (`builtin://telemetry`) through the proxy:
//! Istio's request metrics on `/stats/prometheus`, one series per response code (requests
//! answered earlier in the chain included), and the trace context and request id the upstream
//! and the client see.

use http::{HeaderValue, Version};
use weft_e2e::client::{self, Reply};
use weft_e2e::filters::{STEP, send, start};
use weft_e2e::resources::{Filter, Plugin, edge};
use weft_e2e::upstream::{Upstream, header_values};
use weft_e2e::wait_for;
use weft_e2e::weft::Weft;

fn builtin(name: &str) -> Plugin {
    Plugin::new(name, "").url(&format!("builtin://{name}"))
}

/// The sum of the samples of `family` (exactly: `family{…} value`) whose labels include every
/// `label="value"` of `labels`, whatever order the exporter writes them in.
fn series_sum(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(family).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((set, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let pairs: Vec<&str> = set.split(',').collect();
        if labels.iter().all(|l| pairs.contains(l))
            && let Some(value) = value.trim().parse::<f64>().ok()
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// Waits (up to [`STEP`]) until `family` with `labels` sums to `expected` on the admin
/// endpoint; metrics are recorded when a request ends, just after its response.
async fn expect_series(weft: &Weft, family: &str, labels: &[&str], expected: f64) {
    let reached = wait_for(
        || async {
            let text = weft.metrics().await.unwrap_or_default();
            series_sum(&text, family, labels) == Some(expected)
        },
        STEP,
    )
    .await;
    if !reached {
        let text = weft.metrics().await.unwrap_or_default();
        let relevant: Vec<&str> = text.lines().filter(|l| l.starts_with("istio_")).collect();
        panic!(
            "{family} {labels:?} never reached {expected}; now {:?}:\n{}",
            series_sum(&text, family, labels),
            relevant.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_metrics_count_requests_per_response_code() {
    let up = Upstream::http1("web").await.expect("upstream");
    let filters = [
        Filter::new("ratelimit").config("{key: \"header:x-user\", rate: 1/h, burst: 1}"),
        Filter::new("telemetry"),
    ];
    let plugins = [builtin("ratelimit"), builtin("telemetry")];
    let weft = start(&edge(up.addr, &plugins, filters), "builtin telemetry").await;
    let addr = weft.addr("public");

    for version in [Version::HTTP_11, Version::HTTP_2, Version::HTTP_11] {
        let reply = send(addr, version, client::get("/ok")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    for version in [Version::HTTP_2, Version::HTTP_11] {
        let reply = send(addr, version, client::get("/status/404")).await;
        assert_eq!(reply.status, 404);
    }
    // Answered by ratelimit before telemetry's request phase: still counted.
    for expected in [200, 429] {
        let mut request = client::get("/limited");
        let headers = request.headers_mut();
        headers.insert("x-user", HeaderValue::from_static("ann"));
        assert_eq!(send(addr, Version::HTTP_11, request).await.status, expected);
    }

    let common = [
        "request_method=\"GET\"",
        "destination_cluster=\"web\"",
        "source_principal=\"unknown\"",
    ];
    let with_code = |code: &'static str| {
        let mut labels = common.to_vec();
        labels.push(code);
        labels
    };
    let ok = with_code("response_code=\"200\"");
    expect_series(&weft, "istio_requests_total", &ok, 4.0).await;
    let not_found = with_code("response_code=\"404\"");
    expect_series(&weft, "istio_requests_total", &not_found, 2.0).await;
    expect_series(
        &weft,
        "istio_requests_total",
        &["response_code=\"429\"", "request_method=\"GET\""],
        1.0,
    )
    .await;
    expect_series(&weft, "istio_request_duration_milliseconds_count", &ok, 4.0).await;
    expect_series(&weft, "istio_request_bytes_count", &ok, 4.0).await;
    expect_series(&weft, "istio_response_bytes_count", &ok, 4.0).await;
    let text = weft.metrics().await.expect("scraping /stats/prometheus");
    let response_bytes = series_sum(&text, "istio_response_bytes_sum", &ok).unwrap_or(0.0);
    assert!(
        response_bytes > 0.0,
        "the upstream's JSON answers have bytes"
    );
    weft.shutdown().await;
}

/// The upstream's view of `reply`'s request: the single value of header `name`.
fn seen(reply: &Reply, name: &str) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    match header_values(&reply.json(), name).as_slice() {
        [one] => one.clone(),
        other => panic!("the upstream saw {name} as {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_trace_context_and_request_ids() {
    let up = Upstream::http1("web").await.expect("upstream");
    let filters = [Filter::new("telemetry")];
    let weft = start(
        &edge(up.addr, &[builtin("telemetry")], filters),
        "builtin telemetry",
    )
    .await;
    let addr = weft.addr("public");

    for version in [Version::HTTP_11, Version::HTTP_2] {
        // Nothing from the client: a new trace and a new id.
        let reply = send(addr, version, client::get("/")).await;
        let traceparent = seen(&reply, "traceparent");
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [2, 32, 16, 2],
            "{traceparent}"
        );
        assert_eq!((parts[0], parts[3]), ("00", "01"), "{traceparent}");
        let id = seen(&reply, "x-request-id");
        assert_eq!(id.len(), 36, "a UUID: {id}");
        assert_eq!(
            reply.header("x-request-id"),
            Some(id.as_str()),
            "the client gets the id the upstream saw"
        );

        // The client's trace goes on with a new parent span; its id is kept.
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut request = client::get("/");
        let headers = request.headers_mut();
        headers.insert("traceparent", HeaderValue::from_static(incoming));
        headers.insert("x-request-id", HeaderValue::from_static("client-id-7"));
        let reply = send(addr, version, request).await;
        let traceparent = seen(&reply, "traceparent");
        assert_eq!(&traceparent[..36], &incoming[..36], "same trace");
        assert_ne!(&traceparent[36..52], &incoming[36..52], "a new parent span");
        assert_eq!(seen(&reply, "x-request-id"), "client-id-7");
        assert_eq!(reply.header("x-request-id"), Some("client-id-7"));
    }
    weft.shutdown().await;
}
