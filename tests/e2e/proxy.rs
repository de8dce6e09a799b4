//! The proxying core: HTTP/1.1, h2c and HTTP/2 upstreams, the headers a proxy must add and
//! remove, `Host` preserved, bodies and trailers streamed both ways, keep-alive pooling.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Version};
use weft_e2e::{client, stream, upstream::Upstream, weft::Weft};

/// One listener `public` in front of cluster `web` with `endpoints`.
pub fn config(endpoints: &[std::net::SocketAddr], cluster_extra: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "apiVersion: weft/v1\nkind: Cluster\nmetadata: {{name: web}}\nspec:\n  endpoints: [{}]\n{cluster_extra}\
         ---\napiVersion: weft/v1\nkind: Listener\nmetadata: {{name: public}}\nspec:\n  address: 127.0.0.1:0\n  defaultCluster: web\n",
        endpoints.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_forwards_the_request_and_sets_forwarding_headers() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "")).await.expect("weft");
    let mut request = client::post("/submit?x=1&y=2", "hello body");
    let headers = request.headers_mut();
    headers.insert("host", HeaderValue::from_static("app.example:8080"));
    headers.insert(
        "connection",
        HeaderValue::from_static("keep-alive, x-secret"),
    );
    headers.insert("x-secret", HeaderValue::from_static("hop"));
    headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    headers.insert(
        "proxy-authorization",
        HeaderValue::from_static("Basic Zm9v"),
    );
    headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
    headers.insert("x-custom", HeaderValue::from_static("kept"));
    let reply = client::h1(weft.addr("public"), request)
        .await
        .expect("request through weft");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/submit?x=1&y=2");
    assert_eq!(seen["body_len"], 10);
    let h = &seen["headers"];
    assert_eq!(h["host"], "app.example:8080", "Host is kept");
    assert_eq!(
        h["x-forwarded-for"], "203.0.113.7, 127.0.0.1",
        "the client address is appended"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-custom"], "kept");
    let id = h["x-request-id"]
        .as_str()
        .expect("x-request-id is generated");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    for hop in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-authorization",
    ] {
        assert!(
            h.get(hop).is_none(),
            "hop-by-hop header {hop} must not be forwarded: {h}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_request_id_is_kept_and_each_generated_one_is_unique() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "")).await.expect("weft");
    let mut request = client::get("/");
    request
        .headers_mut()
        .insert("x-request-id", HeaderValue::from_static("trace-me-42"));
    let reply = client::h1(weft.addr("public"), request)
        .await
        .expect("request");
    assert_eq!(reply.json()["headers"]["x-request-id"], "trace-me-42");
    let a = client::h1(weft.addr("public"), client::get("/"))
        .await
        .expect("request")
        .json();
    let b = client::h1(weft.addr("public"), client::get("/"))
        .await
        .expect("request")
        .json();
    assert_ne!(a["headers"]["x-request-id"], b["headers"]["x-request-id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_downstream_reaches_an_http1_upstream_with_the_authority_as_host() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "")).await.expect("weft");
    let mut request = client::get("/h2?q=1");
    request
        .headers_mut()
        .insert("host", HeaderValue::from_static("api.example"));
    let reply = client::h2c(weft.addr("public"), request)
        .await
        .expect("h2c request");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.version,
        Version::HTTP_2,
        "the client spoke h2c with prior knowledge"
    );
    let seen = reply.json();
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["path"], "/h2?q=1");
    assert_eq!(seen["headers"]["host"], "api.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_cluster_speaks_h2c_upstream_and_multiplexes_one_connection() {
    let up = Upstream::h2c("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "  protocol: HTTP2\n"))
        .await
        .expect("weft");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let addr = weft.addr("public");
        tasks.push(tokio::spawn(async move {
            client::h1(addr, client::get(&format!("/n/{i}"))).await
        }));
    }
    for task in tasks {
        let reply = task.await.expect("join").expect("request");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["version"], "HTTP/2");
        assert_eq!(
            reply.version,
            Version::HTTP_11,
            "the downstream stays HTTP/1.1"
        );
    }
    assert_eq!(
        up.connections(),
        1,
        "one shared HTTP/2 connection carries every request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_connections_to_the_upstream_are_pooled() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "")).await.expect("weft");
    for _ in 0..5 {
        let reply = client::h1(weft.addr("public"), client::get("/"))
            .await
            .expect("request");
        assert_eq!(reply.status, 200);
    }
    assert_eq!(up.requests(), 5);
    assert_eq!(
        up.connections(),
        1,
        "sequential requests reuse one pooled upstream connection"
    );
    let clusters = weft.admin_get("/clusters").await.expect("clusters").text();
    assert!(
        clusters.contains(&format!("web::{}::cx_idle::1", up.addr)),
        "{clusters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_bodies_stream_without_buffering_over_http1() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "")).await.expect("weft");
    let request = Request::post("/echo").body(()).expect("request");
    let (body, pending) = stream::h1(weft.addr("public"), request)
        .await
        .expect("stream");
    body.send("first chunk").await.expect("send 1");
    let mut response = pending
        .response_within(Duration::from_secs(3))
        .await
        .expect("headers arrive before the body ends");
    assert_eq!(response.status, 200);
    let first = response
        .chunk_within(Duration::from_secs(3))
        .await
        .expect("chunk 1");
    assert_eq!(
        first.as_deref(),
        Some(&b"first chunk"[..]),
        "chunk 1 is echoed before chunk 2 is sent"
    );
    body.send("second chunk").await.expect("send 2");
    let second = response
        .chunk_within(Duration::from_secs(3))
        .await
        .expect("chunk 2");
    assert_eq!(second.as_deref(), Some(&b"second chunk"[..]));
    body.finish();
    let rest = response.finish().await.expect("end of body");
    assert!(rest.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_trailers_stream_both_ways_over_http2() {
    let up = Upstream::h2c("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "  protocol: HTTP2\n"))
        .await
        .expect("weft");
    let request = Request::post("/echo").body(()).expect("request");
    let (body, pending) = stream::h2c(weft.addr("public"), request)
        .await
        .expect("stream");
    body.send("ping").await.expect("send");
    let mut response = pending
        .response_within(Duration::from_secs(3))
        .await
        .expect("headers");
    let echoed = response
        .chunk_within(Duration::from_secs(3))
        .await
        .expect("chunk");
    assert_eq!(echoed.as_deref(), Some(&b"ping"[..]));
    let mut trailers = HeaderMap::new();
    trailers.insert("x-request-checksum", HeaderValue::from_static("c0ffee"));
    body.trailers(trailers).await.expect("send trailers");
    let rest = response.finish().await.expect("end");
    let trailers = rest
        .trailers
        .expect("the request trailers come back as response trailers");
    assert_eq!(trailers["x-request-checksum"], "c0ffee");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_trailers_from_an_http1_upstream_reach_an_h2_client() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "")).await.expect("weft");
    let reply = client::h2c(weft.addr("public"), client::get("/trailers"))
        .await
        .expect("request");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ok");
    assert_eq!(
        reply.trailer("x-checksum"),
        Some("abc123"),
        "trailers survive the proxy: {:?}",
        reply.trailers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_arrives_whole() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "")).await.expect("weft");
    let payload = Bytes::from(vec![b'x'; 8 * 1024 * 1024]);
    let reply = client::h1(
        weft.addr("public"),
        client::post("/upload", payload.clone()),
    )
    .await
    .expect("upload");
    assert_eq!(reply.json()["body_len"], payload.len());
    let reply = client::h2c(weft.addr("public"), client::post("/echo", payload.clone()))
        .await
        .expect("echo");
    assert_eq!(reply.body.len(), payload.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_by_the_upstream_is_replaced_transparently() {
    let mut up = Upstream::http1("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "")).await.expect("weft");
    let addr = weft.addr("public");
    assert_eq!(
        client::h1(addr, client::get("/"))
            .await
            .expect("first")
            .status,
        200
    );
    // The upstream restarts: the pooled keep-alive connection is dead.
    up.down().await;
    up.restart().await.expect("restart");
    for _ in 0..3 {
        let reply = client::h1(addr, client::get("/")).await.expect("request");
        assert_eq!(
            reply.status,
            200,
            "a stale pooled connection must not surface: {}",
            reply.text()
        );
    }
    assert_eq!(up.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_framed_by_close_or_marked_close_arrive_whole_and_are_not_reused() {
    use weft_e2e::raw::RawUpstream;
    for (wire, body) in [
        (
            &b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"[..],
            "until the end",
        ),
        (
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nclose"[..],
            "close",
        ),
        (
            &b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold"[..],
            "old",
        ),
        (
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nsure"[..],
            "sure",
        ),
    ] {
        let up = RawUpstream::respond_with(Bytes::from_static(wire))
            .await
            .expect("raw upstream");
        let weft = Weft::start(&config(&[up.addr], "")).await.expect("weft");
        for round in 1..=2 {
            let reply = client::h1(weft.addr("public"), client::get("/"))
                .await
                .expect("request");
            assert_eq!(
                (reply.status, reply.text().as_str()),
                (200, body),
                "round {round}"
            );
        }
        assert_eq!(
            up.connections(),
            2,
            "a connection the upstream closes is never reused: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_responses_stream_chunk_by_chunk() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "")).await.expect("weft");
    let request = Request::get("/stream/3").body(()).expect("request");
    let (body, pending) = stream::h1(weft.addr("public"), request)
        .await
        .expect("stream");
    body.finish();
    let mut response = pending
        .response_within(Duration::from_secs(3))
        .await
        .expect("headers");
    let first = response
        .chunk_within(Duration::from_secs(1))
        .await
        .expect("first chunk");
    assert_eq!(
        first.as_deref(),
        Some(&b"chunk\n"[..]),
        "the first chunk arrives before the others are sent"
    );
    let rest = response.finish().await.expect("rest");
    assert_eq!(rest.body.len(), 12);
}
