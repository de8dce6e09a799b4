//! gRPC callouts from a filter (the `grpc` test filter against the echo server of
//! `weft_e2e::grpc`): the request waits for a unary call or a stream and carries its outcome to
//! the upstream — the reply and status 0, a server's error status and message, every message of
//! a stream with its initial metadata; a cluster that is not HTTP/2 or refuses connections is
//! UNAVAILABLE (14), and an unknown cluster is refused at dispatch (PARSE_FAILURE, as Envoy).

use std::net::SocketAddr;

use http::Version;
use weft_e2e::client::{self, Reply};
use weft_e2e::filters::{module, send, start};
use weft_e2e::grpc::EchoServer;
use weft_e2e::resources::{Chain, Cluster, Filter, Listener, Plugin, join};
use weft_e2e::upstream::{Upstream, dead_address, header_values};
use weft_e2e::weft::Weft;
use weft_test_artifacts::TARGETS;

/// The endpoints of the test's clusters.
struct Endpoints {
    web: SocketAddr,
    echo: SocketAddr,
    dead: SocketAddr,
}

/// Cluster `web` (HTTP/1.1) on `web`; `echo` (HTTP/2) on the echo server; `plain`, an
/// HTTP/1.1 cluster on the echo server; `dead` (HTTP/2) on an address nothing listens on. For
/// each `(name, filter)`: chain `name` of the `grpc` filter configured with `filter`, and
/// listener `name` running requests through it to `web` (one proxy, and one compilation of
/// the module, for all of them).
fn config(at: &Endpoints, target: &str, filters: &[(&str, &str)]) -> String {
    let mut docs = vec![
        Cluster::new("web", &[at.web]).to_string(),
        Cluster::new("echo", &[at.echo])
            .field("protocol", "HTTP2")
            .to_string(),
        Cluster::new("plain", &[at.echo]).to_string(),
        Cluster::new("dead", &[at.dead])
            .field("protocol", "HTTP2")
            .field("connectTimeout", "500ms")
            .to_string(),
        Plugin::new("grpc", module("grpc", target)).to_string(),
    ];
    for (name, filter) in filters {
        docs.push(Chain::new(name, [Filter::new("grpc").config(filter)]).to_string());
        docs.push(Listener::new(name, "web").chain(name).to_string());
    }
    join(docs)
}

/// The web upstream, the echo server, and a dead address.
async fn servers() -> (Upstream, EchoServer, Endpoints) {
    let web = Upstream::http1("web").await.expect("upstream web");
    let echo = EchoServer::start().await.expect("gRPC echo server");
    let dead = dead_address().await;
    let at = Endpoints {
        web: web.addr,
        echo: echo.addr,
        dead,
    };
    (web, echo, at)
}

/// `GET /resource` through listener `listener`, with `x-message` when given.
async fn get(weft: &Weft, listener: &str, message: Option<&'static str>) -> Reply {
    let mut request = client::get("/resource");
    if let Some(message) = message {
        request
            .headers_mut()
            .insert("x-message", http::HeaderValue::from_static(message));
    }
    send(weft.addr(listener), Version::HTTP_11, request).await
}

/// The request headers the web upstream saw, from a reply it answered.
fn upstream_saw(reply: &Reply, ctx: &str) -> serde_json::Value {
    assert_eq!(reply.status, 200, "{ctx}: {}", reply.text());
    assert_eq!(reply.header("x-upstream"), Some("web"), "{ctx}");
    reply.json()
}

/// The one value of request header `name` the upstream saw.
fn one(seen: &serde_json::Value, name: &str, ctx: &str) -> String {
    match header_values(seen, name).as_slice() {
        [value] => value.clone(),
        other => panic!("{ctx}: {name} is {other:?} in {seen}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_reply_reaches_the_upstream_request() {
    let (_web, echo, at) = servers().await;
    for target in TARGETS {
        let call = [("call", "{cluster: echo, mode: call, timeout_ms: 2000}")];
        let yaml = config(&at, target, &call);
        let weft = start(&yaml, target).await;
        for (message, expected) in [(None, "hello-reply"), (Some("ping"), "ping-reply")] {
            let ctx = format!("{target}, unary call with x-message {message:?}");
            let before = echo.calls().len();
            let seen = upstream_saw(&get(&weft, "call", message).await, &ctx);
            assert_eq!(seen["path"], "/resource", "{ctx}");
            assert_eq!(one(&seen, "x-grpc-status", &ctx), "0", "{ctx}");
            assert_eq!(one(&seen, "x-grpc-reply", &ctx), expected, "{ctx}");
            assert!(header_values(&seen, "x-grpc-message").is_empty(), "{ctx}");

            let calls = echo.calls();
            assert_eq!(calls.len(), before + 1, "{ctx}: one call per request");
            let call = &calls[before];
            assert_eq!(call.path, "/weft.test.Echo/Say", "{ctx}");
            assert_eq!(
                call.header("x-from"),
                Some("grpc-filter"),
                "{ctx}: metadata"
            );
            assert_eq!(
                call.header("content-type"),
                Some("application/grpc"),
                "{ctx}"
            );
            assert_eq!(call.header("te"), Some("trailers"), "{ctx}");
            assert_eq!(
                call.header("grpc-timeout"),
                Some("2000m"),
                "{ctx}: the guest's timeout"
            );
        }
        weft.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_call_reports_the_servers_status_and_message() {
    let (_web, echo, at) = servers().await;
    for target in TARGETS {
        let fail = [("fail", "{cluster: echo, method: Fail, timeout_ms: 2000}")];
        let yaml = config(&at, target, &fail);
        let weft = start(&yaml, target).await;
        let ctx = format!("{target}, unary call to Fail");
        let seen = upstream_saw(&get(&weft, "fail", None).await, &ctx);
        assert_eq!(one(&seen, "x-grpc-status", &ctx), "7", "{ctx}");
        assert_eq!(
            one(&seen, "x-grpc-message", &ctx),
            "denied",
            "{ctx}: grpc-message through proxy_get_status"
        );
        assert!(
            header_values(&seen, "x-grpc-reply").is_empty(),
            "{ctx}: no message arrived"
        );
        let calls = echo.calls();
        assert_eq!(
            calls.last().map(|c| c.path.as_str()),
            Some("/weft.test.Echo/Fail"),
            "{ctx}"
        );
        weft.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_carries_every_reply_and_the_initial_metadata() {
    let (_web, echo, at) = servers().await;
    for target in TARGETS {
        let yaml = config(&at, target, &[("stream", "{cluster: echo, mode: stream}")]);
        let weft = start(&yaml, target).await;
        for round in 1..=2 {
            let ctx = format!("{target}, stream to Chat, request {round}");
            let before = echo.calls().len();
            let seen = upstream_saw(&get(&weft, "stream", None).await, &ctx);
            assert_eq!(one(&seen, "x-grpc-status", &ctx), "0", "{ctx}");
            assert_eq!(
                one(&seen, "x-grpc-replies", &ctx),
                "one-reply,two-reply",
                "{ctx}: both replies, in order"
            );
            assert_eq!(
                one(&seen, "x-grpc-echo-meta", &ctx),
                "grpc-filter",
                "{ctx}: the server's initial metadata, echoing the filter's"
            );
            let calls = echo.calls();
            assert_eq!(calls.len(), before + 1, "{ctx}: one stream per request");
            let call = &calls[before];
            assert_eq!(call.path, "/weft.test.Echo/Chat", "{ctx}");
            assert_eq!(
                call.header("grpc-timeout"),
                None,
                "{ctx}: a stream sets none"
            );
        }
        weft.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_http2_or_a_listener_is_unavailable() {
    let (web, echo, at) = servers().await;
    let filters = [
        (
            "plain-call",
            "{cluster: plain, mode: call, timeout_ms: 2000}",
        ),
        ("plain-stream", "{cluster: plain, mode: stream}"),
        ("dead-call", "{cluster: dead, mode: call, timeout_ms: 2000}"),
        ("dead-stream", "{cluster: dead, mode: stream}"),
    ];
    for target in TARGETS {
        let weft = start(&config(&at, target, &filters), target).await;
        for (listener, _) in filters {
            let ctx = format!("{target}, {listener}");
            let seen = upstream_saw(&get(&weft, listener, None).await, &ctx);
            assert_eq!(
                one(&seen, "x-grpc-status", &ctx),
                "14",
                "{ctx}: UNAVAILABLE"
            );
            assert!(header_values(&seen, "x-grpc-reply").is_empty(), "{ctx}");
            assert!(header_values(&seen, "x-grpc-replies").is_empty(), "{ctx}");
        }
        weft.shutdown().await;
    }
    assert!(
        echo.calls().is_empty(),
        "nothing reached the echo server through the HTTP/1.1 cluster"
    );
    assert_eq!(
        web.requests(),
        filters.len() * TARGETS.len(),
        "every request resumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_cluster_is_refused_at_dispatch() {
    let (web, echo, at) = servers().await;
    let filters = [
        ("call", "{cluster: nowhere, mode: call}"),
        ("stream", "{cluster: nowhere, mode: stream}"),
    ];
    for target in TARGETS {
        let weft = start(&config(&at, target, &filters), target).await;
        for (listener, _) in filters {
            let ctx = format!("{target}, {listener} to cluster nowhere");
            let reply = get(&weft, listener, None).await;
            assert_eq!(reply.status, 503, "{ctx}: {}", reply.text());
            assert_eq!(
                reply.header("x-grpc-error"),
                Some("dispatch ParseFailure"),
                "{ctx}: Envoy's PARSE_FAILURE for an unknown gRPC cluster"
            );
        }
        weft.shutdown().await;
    }
    assert_eq!(web.requests(), 0, "the requests stopped at the filter");
    assert!(echo.calls().is_empty());
}
