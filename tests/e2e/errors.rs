//! How weft reports failures to the client: each one a status and a one-line text body naming
//! the cause and the cluster — 502 for an upstream that resets, closes without replying or
//! answers garbage; 504 for one that never answers within the cluster `timeout`; 503 for a
//! connect failure and, once outlier detection ejected the endpoint, for no healthy endpoint;
//! 404 when a listener has nowhere to send a request. Also: an upstream's own 5xx passes through
//! untouched, a request whose bytes reached an upstream is never retried while a connection
//! failure is, and bodiless responses (HEAD, 204, 304) keep a keep-alive connection usable.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Method;
use weft_e2e::client::{self, H1Conn, Reply};
use weft_e2e::raw::{Misbehaviour, RawUpstream, raw_exchange, statuses};
use weft_e2e::upstream::{Upstream, dead_address};
use weft_e2e::weft::Weft;

/// A cluster `web` over `endpoints` with extra spec fields `extra` (the inside of a YAML flow
/// mapping, e.g. `timeout: 300ms, retries: 0`), and a listener `public` defaulting to it.
fn config(endpoints: &[SocketAddr], extra: &str) -> String {
    let endpoints = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    format!(
        r#"apiVersion: weft/v1
kind: Cluster
metadata: {{name: web}}
spec: {{endpoints: [{endpoints}]{extra}}}
---
apiVersion: weft/v1
kind: Listener
metadata: {{name: public}}
spec: {{address: "127.0.0.1:0", defaultCluster: web}}
"#
    )
}

async fn start(endpoints: &[SocketAddr], extra: &str) -> Weft {
    Weft::start(&config(endpoints, extra))
        .await
        .expect("start weft")
}

/// Asserts a weft-generated error: `status`, a plain-text body of exactly one line, containing
/// every one of `needles`.
fn assert_weft_error(reply: &Reply, status: u16, needles: &[&str]) {
    let body = reply.text();
    assert_eq!(reply.status, status, "unexpected status; body: {body:?}");
    assert!(
        body.ends_with('\n') && body.trim_end().lines().count() == 1 && !body.trim().is_empty(),
        "the error body is one line: {body:?}"
    );
    for needle in needles {
        assert!(
            body.contains(needle),
            "the error body names {needle:?}: {body:?}"
        );
    }
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "the error body is plain text: {:?}",
        reply.headers
    );
    assert!(
        reply.header("x-upstream").is_none(),
        "weft's own error must not look like an upstream answer: {:?}",
        reply.headers
    );
}

async fn upstream_502s(weft: &Weft) -> f64 {
    weft.metric(r#"weft_upstream_requests_total{cluster="web",code="502"}"#)
        .await
        .unwrap_or(0.0)
}

/// An upstream that takes the request and then fails the exchange (`behaviour`) gives a 502
/// naming the cluster and the endpoint, and the request is not retried.
async fn reset_after_the_request_is_502(behaviour: Misbehaviour) {
    let raw = RawUpstream::start(behaviour)
        .await
        .expect("start a misbehaving upstream");
    let weft = start(&[raw.addr], "").await;
    let reply = client::h1(weft.addr("public"), client::get("/"))
        .await
        .expect("request through weft");
    assert_weft_error(
        &reply,
        502,
        &["upstream reset in cluster web", &raw.addr.to_string()],
    );
    assert_eq!(
        raw.connections(),
        1,
        "the request was sent once, not retried"
    );
    assert_eq!(upstream_502s(&weft).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_is_502_naming_the_cluster() {
    reset_after_the_request_is_502(Misbehaviour::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_close_without_reply_is_502_naming_the_cluster() {
    reset_after_the_request_is_502(Misbehaviour::Close).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_response_is_502_naming_the_cluster() {
    let raw = RawUpstream::malformed()
        .await
        .expect("start a malformed upstream");
    let weft = start(&[raw.addr], "").await;
    let reply = client::h1(weft.addr("public"), client::get("/"))
        .await
        .expect("request through weft");
    assert_weft_error(
        &reply,
        502,
        &[
            "malformed upstream response in cluster web",
            &raw.addr.to_string(),
        ],
    );
    assert!(
        !reply.text().contains("hello"),
        "none of the garbage response reaches the client: {:?}",
        reply.text()
    );
    assert_eq!(upstream_502s(&weft).await, 1.0);

    // The same over h2c.
    let reply = client::h2c(weft.addr("public"), client::get("/"))
        .await
        .expect("h2c request through weft");
    assert_weft_error(&reply, 502, &["malformed upstream response in cluster web"]);
    assert_eq!(upstream_502s(&weft).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_504_after_the_cluster_timeout() {
    let raw = RawUpstream::silent()
        .await
        .expect("start a silent upstream");
    let weft = start(&[raw.addr], "timeout: 300ms").await;
    let started = Instant::now();
    let reply = client::h1(weft.addr("public"), client::get("/"))
        .await
        .expect("request through weft");
    let took = started.elapsed();
    assert_weft_error(
        &reply,
        504,
        &["timeout", "cluster web", &raw.addr.to_string()],
    );
    assert!(
        took >= Duration::from_millis(250) && took <= Duration::from_secs(1),
        "answered soon after the 300 ms timeout, took {took:?}"
    );
    let timeouts = weft
        .metric(r#"weft_upstream_requests_total{cluster="web",code="504"}"#)
        .await;
    assert_eq!(timeouts, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_503_connect_error() {
    let dead = dead_address().await;
    let weft = start(&[dead], "").await;
    let reply = client::h1(weft.addr("public"), client::get("/"))
        .await
        .expect("request through weft");
    assert_weft_error(&reply, 503, &["connect", "cluster web", &dead.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejected_endpoint_is_503_no_healthy_endpoint() {
    let dead = dead_address().await;
    let weft = start(
        &[dead],
        "retries: 0, outlierDetection: {consecutiveFailures: 1, ejectionTime: 10s}",
    )
    .await;
    let addr = weft.addr("public");

    let first = client::h1(addr, client::get("/"))
        .await
        .expect("first request through weft");
    assert_weft_error(&first, 503, &["connect", "cluster web"]);

    let second = client::h1(addr, client::get("/"))
        .await
        .expect("second request through weft");
    assert_weft_error(&second, 503, &["no healthy endpoint in cluster web"]);
    let ejections = weft
        .metric(r#"weft_upstream_ejections_total{cluster="web"}"#)
        .await;
    assert_eq!(ejections, Some(1.0), "the endpoint was ejected once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_without_default_cluster_is_404() {
    let weft = Weft::start(
        r#"apiVersion: weft/v1
kind: Listener
metadata: {name: public}
spec: {address: "127.0.0.1:0"}
"#,
    )
    .await
    .expect("start weft");
    let reply = client::h1(weft.addr("public"), client::get("/anything"))
        .await
        .expect("request through weft");
    assert_weft_error(&reply, 404, &["no route", "public"]);

    let reply = client::h2c(weft.addr("public"), client::get("/anything"))
        .await
        .expect("h2c request through weft");
    assert_weft_error(&reply, 404, &["no route", "public"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_5xx_passes_through_unchanged() {
    let upstream = Upstream::http1("web").await.expect("start the upstream");
    let weft = start(&[upstream.addr], "").await;
    for code in [500u16, 503] {
        let path = format!("/status/{code}");
        let reply = client::h1(weft.addr("public"), client::get(&path))
            .await
            .expect("request through weft");
        assert_eq!(
            reply.status,
            code,
            "the upstream's status is kept: {}",
            reply.text()
        );
        assert_eq!(
            reply.header("x-upstream"),
            Some("web"),
            "the upstream's own response, headers and all"
        );
        assert_eq!(
            reply.json()["path"],
            path.as_str(),
            "the upstream's body, not a weft error text"
        );
    }
    assert_eq!(
        upstream.requests(),
        2,
        "each request reached the upstream once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_reached_an_upstream_is_never_retried() {
    let reset = RawUpstream::reset()
        .await
        .expect("start a resetting upstream");
    let healthy = Upstream::http1("healthy")
        .await
        .expect("start the upstream");
    let weft = start(
        &[reset.addr, healthy.addr],
        "loadBalancer: ROUND_ROBIN, retries: 2",
    )
    .await;
    let addr = weft.addr("public");

    let (mut ok, mut failed) = (0, 0);
    for i in 0..6 {
        let body = format!("payload {i}");
        let reply = client::h1(addr, client::post("/upload", body.clone()))
            .await
            .expect("POST through weft");
        match reply.status {
            200 => {
                ok += 1;
                assert_eq!(
                    reply.json()["body_len"],
                    body.len(),
                    "the whole body arrived"
                );
            }
            502 => {
                failed += 1;
                assert_weft_error(&reply, 502, &["upstream reset in cluster web"]);
            }
            other => panic!(
                "POST {i}: expected 200 or 502, got {other}: {}",
                reply.text()
            ),
        }
    }
    assert!(
        failed >= 1 && ok >= 1,
        "round robin sent requests to both endpoints: {ok} ok, {failed} failed"
    );
    assert_eq!(
        healthy.requests(),
        ok,
        "the healthy upstream saw exactly the requests answered 200 — none retried after a reset"
    );
    assert_eq!(
        reset.connections(),
        failed,
        "each 502 is one attempt on the resetting endpoint"
    );
    assert_eq!(
        weft.metric(r#"weft_upstream_retries_total{cluster="web"}"#)
            .await
            .unwrap_or(0.0),
        0.0,
        "no retries were made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_on_another_endpoint() {
    let dead = dead_address().await;
    let healthy = Upstream::http1("healthy")
        .await
        .expect("start the upstream");
    let weft = start(
        &[dead, healthy.addr],
        "loadBalancer: ROUND_ROBIN, retries: 1",
    )
    .await;
    let addr = weft.addr("public");

    for i in 0..4 {
        let body = format!("payload {i}");
        let reply = client::h1(addr, client::post("/upload", body.clone()))
            .await
            .expect("POST through weft");
        assert_eq!(
            reply.status,
            200,
            "request {i} is retried past the dead endpoint: {}",
            reply.text()
        );
        assert_eq!(reply.header("x-upstream"), Some("healthy"));
        assert_eq!(
            reply.json()["body_len"],
            body.len(),
            "the unsent body travels whole on the retry"
        );
    }
    assert_eq!(
        healthy.requests(),
        4,
        "each request reached the healthy upstream once"
    );
    let retries = weft
        .metric(r#"weft_upstream_retries_total{cluster="web"}"#)
        .await
        .unwrap_or(0.0);
    assert!(retries >= 1.0, "retries are counted, got {retries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_responses_keep_the_connection_usable() {
    let upstream = Upstream::http1("web").await.expect("start the upstream");
    let weft = start(&[upstream.addr], "").await;
    let addr = weft.addr("public");

    let mut conn = H1Conn::connect(addr).await.expect("connect to weft");
    let head = conn
        .send(client::request(Method::HEAD, "/", ""))
        .await
        .expect("HEAD through weft");
    assert_eq!(head.status, 200);
    assert!(
        head.body.is_empty(),
        "a HEAD response has no body: {:?}",
        head.text()
    );
    let after_head = conn.get("/after-head").await.expect("GET after HEAD");
    assert_eq!(after_head.status, 200);
    assert_eq!(after_head.json()["path"], "/after-head");

    for code in [204u16, 304] {
        let reply = conn
            .get(&format!("/status/{code}"))
            .await
            .expect("bodiless status through weft");
        assert_eq!(reply.status, code);
        assert!(
            reply.body.is_empty(),
            "a {code} has no body: {:?}",
            reply.text()
        );
        assert!(
            reply.header("transfer-encoding").is_none(),
            "a {code} carries no transfer-encoding: {:?}",
            reply.headers
        );
        let next = conn
            .get(&format!("/after-{code}"))
            .await
            .expect("request after a bodiless response on the same connection");
        assert_eq!(next.status, 200);
        assert_eq!(next.json()["path"], format!("/after-{code}"));
    }
    assert!(!conn.is_closed(), "the connection stayed open throughout");

    // Byte-exact: pipelined HEAD, 204, 304 and a last GET come back as exactly four responses.
    let raw = raw_exchange(
        addr,
        b"HEAD / HTTP/1.1\r\nhost: weft.test\r\n\r\n\
          GET /status/204 HTTP/1.1\r\nhost: weft.test\r\n\r\n\
          GET /status/304 HTTP/1.1\r\nhost: weft.test\r\n\r\n\
          GET /last HTTP/1.1\r\nhost: weft.test\r\nconnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await
    .expect("pipelined exchange with weft");
    assert_eq!(statuses(&raw), vec![200, 204, 304, 200], "{raw}");
    let bodies: Vec<&str> = raw.splitn(5, "\r\n\r\n").collect();
    assert_eq!(bodies.len(), 5, "four response heads: {raw}");
    for between in &bodies[1..4] {
        assert!(
            between.starts_with("HTTP/1.1 "),
            "nothing but the next response follows a bodiless one: {raw}"
        );
    }
    assert!(bodies[4].contains("\"/last\""), "{raw}");
}
