//! The quick start (`weft up`, `examples/quickstart/weft.yaml`) walked through as its comments
//! tell a newcomer to: the five built-in plugins chained in front of the demo service in two
//! versions — public `/hello` with trace headers, API keys, a rate limit, the canary route
//! with its prefix rewrite, injected faults, and Istio's metrics on the admin endpoint.

use std::path::Path;
use std::time::{Duration, Instant};

use http::{HeaderValue, Version};
use weft_e2e::client::{self, Reply};
use weft_e2e::filters::{send, start};

/// The quick start's own file, with the demo services and the listener moved to where this
/// test runs them (the same substitution `weft up` makes).
async fn quickstart() -> weft_e2e::weft::Weft {
    let v1 = weft_host::demo::spawn("127.0.0.1:0".parse().expect("addr"), "demo-v1")
        .await
        .expect("demo v1");
    let v2 = weft_host::demo::spawn("127.0.0.1:0".parse().expect("addr"), "demo-v2")
        .await
        .expect("demo v2");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/weft.yaml");
    let yaml = std::fs::read_to_string(&file).expect("examples/quickstart/weft.yaml");
    let yaml = yaml
        .replace("127.0.0.1:9001", &v1.to_string())
        .replace("127.0.0.1:9002", &v2.to_string())
        .replace("127.0.0.1:8080", "127.0.0.1:0");
    start(&yaml, "examples/quickstart/weft.yaml").await
}

fn with(
    mut request: http::Request<http_body_util::Full<bytes::Bytes>>,
    name: &'static str,
    value: &'static str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    request
        .headers_mut()
        .insert(name, HeaderValue::from_static(value));
    request
}

fn service(reply: &Reply) -> String {
    reply.json()["service"].as_str().unwrap_or("?").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_does_what_its_comments_say() {
    let weft = quickstart().await;
    let addr = weft.addr("public");

    // Public: no credentials, demo v1, trace headers generated on the way.
    let hello = send(addr, Version::HTTP_11, client::get("/hello")).await;
    assert_eq!(hello.status, 200, "{}", hello.text());
    assert_eq!(service(&hello), "demo-v1");
    let seen = &hello.json()["headers"];
    let traceparent = seen["traceparent"].as_str().unwrap_or_default();
    assert!(
        traceparent.len() == 55 && traceparent.starts_with("00-"),
        "the upstream sees a generated W3C traceparent: {seen}"
    );
    assert!(
        seen["x-request-id"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "{seen}"
    );

    // Credentials for the API.
    let denied = send(addr, Version::HTTP_2, client::get("/api/orders")).await;
    assert_eq!(denied.status, 401, "{}", denied.text());
    assert!(denied.header("www-authenticate").is_some());

    // With the key: a route that does not exist is 404 ...
    let missing = send(
        addr,
        Version::HTTP_11,
        with(client::get("/nowhere"), "x-api-key", "demo-key"),
    )
    .await;
    assert_eq!(missing.status, 404, "{}", missing.text());

    // ... and /api reaches v1 or v2 with the prefix rewritten, until the burst of 10 (the 404
    // took one) is spent.
    let mut served = 0;
    let limited = loop {
        let reply = send(
            addr,
            Version::HTTP_11,
            with(client::get("/api/orders?page=2"), "x-api-key", "demo-key"),
        )
        .await;
        if reply.status != 200 {
            break reply;
        }
        assert!(
            ["demo-v1", "demo-v2"].contains(&service(&reply).as_str()),
            "{}",
            reply.text()
        );
        assert_eq!(
            reply.json()["path"],
            "/orders?page=2",
            "rewritePrefix keeps the query"
        );
        served += 1;
        assert!(served <= 9, "the rate limit never answered");
    };
    assert_eq!(served, 9, "burst 10, one spent on the 404");
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(limited.header("retry-after").is_some());

    // Faults on request.
    let aborted = send(
        addr,
        Version::HTTP_11,
        with(client::get("/hello"), "x-fault-abort", "1"),
    )
    .await;
    assert_eq!(aborted.status, 503);
    let started = Instant::now();
    let delayed = send(
        addr,
        Version::HTTP_11,
        with(client::get("/hello"), "x-fault-delay", "1"),
    )
    .await;
    assert_eq!(delayed.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "held about 1s"
    );

    // Istio's metrics, by response code.
    let codes = ["200", "401", "404", "429", "503"];
    let has_all = |metrics: &str| {
        codes.iter().all(|code| {
            metrics.lines().any(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains(&format!("response_code=\"{code}\""))
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut metrics = weft.metrics().await.unwrap_or_default();
    while !has_all(&metrics) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = weft.metrics().await.unwrap_or_default();
    }
    let found = has_all(&metrics);
    assert!(
        found,
        "istio_requests_total has a series per response code:\n{metrics}"
    );
}
