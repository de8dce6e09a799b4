//! Downstream safety limits of a listener (`limits:`), seen from a client: the header count
//! (`maxRequestHeaders`, default 100) and header block size (`maxRequestHeadersBytes`, default
//! 60 KiB) answer 431 on HTTP/1.1 and h2c; malformed HTTP/1.1 requests answer 400; a slow or
//! silent client is cut off by `headerReadTimeout`; an idle keep-alive connection is closed by
//! `idleTimeout` (but never one with a request in flight); `maxConnections` closes extra
//! connections at accept. A rejected request never reaches the upstream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::Full;
use tokio::io::AsyncReadExt;
use weft_e2e::client::{self, H1Conn, H2Conn};
use weft_e2e::raw::{raw_exchange, slowloris, status_of};
use weft_e2e::upstream::Upstream;
use weft_e2e::wait_for;
use weft_e2e::weft::Weft;

/// A cluster `web` on `upstream` and a listener `public` in front of it with `limits` (the
/// inside of a YAML flow mapping, e.g. `maxRequestHeaders: 10`; empty for the defaults).
fn config(upstream: SocketAddr, limits: &str) -> String {
    format!(
        r#"apiVersion: weft/v1
kind: Cluster
metadata: {{name: web}}
spec: {{endpoints: ["{upstream}"]}}
---
apiVersion: weft/v1
kind: Listener
metadata: {{name: public}}
spec:
  address: 127.0.0.1:0
  defaultCluster: web
  limits: {{{limits}}}
"#
    )
}

async fn start(limits: &str) -> (Upstream, Weft) {
    let upstream = Upstream::http1("web").await.expect("start the upstream");
    let weft = Weft::start(&config(upstream.addr, limits))
        .await
        .expect("start weft");
    (upstream, weft)
}

/// A raw HTTP/1.1 GET carrying exactly `total` header lines (counting `host` and
/// `connection: close`, so the exchange ends when weft answers).
fn h1_with_header_count(total: usize) -> Vec<u8> {
    assert!(total >= 2, "host and connection are always sent");
    let mut req = String::from("GET / HTTP/1.1\r\nhost: weft.test\r\nconnection: close\r\n");
    for i in 0..total - 2 {
        req.push_str(&format!("x-h-{i}: v\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// A raw HTTP/1.1 GET with one header whose value is `size` bytes long.
fn h1_with_big_header(size: usize) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nhost: weft.test\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "a".repeat(size)
    )
    .into_bytes()
}

/// A GET carrying `count` extra headers `x-h-<i>` (the client adds no other regular header on
/// h2c: the host travels as `:authority`).
fn get_with_headers(count: usize) -> Request<Full<Bytes>> {
    let mut req = client::get("/");
    for i in 0..count {
        let name = HeaderName::try_from(format!("x-h-{i}")).expect("valid header name");
        req.headers_mut()
            .insert(name, HeaderValue::from_static("v"));
    }
    req
}

/// A GET with one header `x-big` whose value is `size` bytes long.
fn get_with_big_header(size: usize) -> Request<Full<Bytes>> {
    let mut req = client::get("/");
    let value = HeaderValue::try_from("a".repeat(size)).expect("valid header value");
    req.headers_mut().insert("x-big", value);
    req
}

const RAW_WAIT: Duration = Duration::from_secs(2);

async fn raw_status(addr: SocketAddr, bytes: &[u8]) -> (Option<u16>, String) {
    let raw = raw_exchange(addr, bytes, RAW_WAIT)
        .await
        .expect("raw exchange with weft");
    (status_of(&raw), raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_is_431_on_h1_and_never_forwarded() {
    let (upstream, weft) = start("").await;
    let addr = weft.addr("public");

    let (status, raw) = raw_status(addr, &h1_with_header_count(90)).await;
    assert_eq!(
        status,
        Some(200),
        "90 headers are within the default 100: {raw}"
    );
    assert_eq!(upstream.requests(), 1, "the accepted request was forwarded");

    for total in [101, 120] {
        let (status, raw) = raw_status(addr, &h1_with_header_count(total)).await;
        assert_eq!(
            status,
            Some(431),
            "{total} headers exceed the default limit of 100: {raw}"
        );
    }
    assert_eq!(
        upstream.requests(),
        1,
        "requests with too many headers must never reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_is_431_on_h2c_and_never_forwarded() {
    let (upstream, weft) = start("").await;
    let addr = weft.addr("public");

    let ok = client::h2c(addr, get_with_headers(90))
        .await
        .expect("h2c request with 90 headers");
    assert_eq!(ok.status, 200, "90 headers are allowed: {}", ok.text());
    assert_eq!(upstream.requests(), 1);

    for count in [101, 120] {
        let reply = client::h2c(addr, get_with_headers(count))
            .await
            .expect("h2c request with too many headers gets an answer");
        assert_eq!(
            reply.status,
            431,
            "{count} headers exceed the default limit of 100: {}",
            reply.text()
        );
        assert!(
            reply.text().contains("headers"),
            "the 431 body names the cause: {:?}",
            reply.text()
        );
    }
    assert_eq!(
        upstream.requests(),
        1,
        "requests with too many headers must never reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_header_count_limit_applies_on_h1_and_h2c() {
    let (upstream, weft) = start("maxRequestHeaders: 10").await;
    let addr = weft.addr("public");

    let (status, raw) = raw_status(addr, &h1_with_header_count(10)).await;
    assert_eq!(status, Some(200), "10 headers meet a limit of 10: {raw}");
    let (status, raw) = raw_status(addr, &h1_with_header_count(11)).await;
    assert_eq!(status, Some(431), "11 headers exceed a limit of 10: {raw}");

    let reply = client::h2c(addr, get_with_headers(10))
        .await
        .expect("h2c request with 10 headers");
    assert_eq!(
        reply.status,
        200,
        "10 headers meet a limit of 10: {}",
        reply.text()
    );
    let reply = client::h2c(addr, get_with_headers(11))
        .await
        .expect("h2c request with 11 headers");
    assert_eq!(
        reply.status,
        431,
        "11 headers exceed a limit of 10: {}",
        reply.text()
    );

    assert_eq!(
        upstream.requests(),
        2,
        "only the two requests within the limit reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_block_over_60k_is_431_on_h1_and_never_forwarded() {
    let (upstream, weft) = start("").await;
    let addr = weft.addr("public");

    let (status, raw) = raw_status(addr, &h1_with_big_header(40 * 1024)).await;
    assert_eq!(status, Some(200), "a 40 KiB header fits in 60 KiB: {raw}");
    let (status, raw) = raw_status(addr, &h1_with_big_header(70 * 1024)).await;
    assert_eq!(status, Some(431), "a 70 KiB header exceeds 60 KiB: {raw}");
    assert_eq!(
        upstream.requests(),
        1,
        "the oversized request must never reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_block_over_60k_is_431_on_h2c_and_never_forwarded() {
    let (upstream, weft) = start("").await;
    let addr = weft.addr("public");

    let reply = client::h2c(addr, get_with_big_header(40 * 1024))
        .await
        .expect("h2c request with a 40 KiB header");
    assert_eq!(
        reply.status,
        200,
        "a 40 KiB header fits in 60 KiB: {}",
        reply.text()
    );

    let reply = client::h2c(addr, get_with_big_header(70 * 1024))
        .await
        .expect("an h2c request with a 70 KiB header gets a 431 response, not a stream reset");
    assert_eq!(
        reply.status,
        431,
        "a 70 KiB header exceeds 60 KiB: {}",
        reply.text()
    );
    assert_eq!(
        upstream.requests(),
        1,
        "the oversized request must never reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_header_bytes_limit_applies_on_h1_and_h2c() {
    let (upstream, weft) = start("maxRequestHeadersBytes: 4096").await;
    let addr = weft.addr("public");

    let (status, raw) = raw_status(addr, &h1_with_big_header(3000)).await;
    assert_eq!(status, Some(200), "3000 bytes fit in 4096: {raw}");
    let (status, raw) = raw_status(addr, &h1_with_big_header(5000)).await;
    assert_eq!(status, Some(431), "5000 bytes exceed 4096: {raw}");

    let reply = client::h2c(addr, get_with_big_header(3000))
        .await
        .expect("h2c request with a 3000-byte header");
    assert_eq!(
        reply.status,
        200,
        "3000 bytes fit in 4096: {}",
        reply.text()
    );
    let reply = client::h2c(addr, get_with_big_header(5000))
        .await
        .expect("an h2c request with a 5000-byte header gets a 431 response, not a stream reset");
    assert_eq!(
        reply.status,
        431,
        "5000 bytes exceed 4096: {}",
        reply.text()
    );

    assert_eq!(
        upstream.requests(),
        2,
        "only the two requests within the limit reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400_and_never_forwarded() {
    let (upstream, weft) = start("").await;
    let addr = weft.addr("public");
    let cases: [(&str, &[u8]); 5] = [
        ("garbage request line", b"GARBAGE\r\n\r\n"),
        (
            "header line without a colon",
            b"GET / HTTP/1.1\r\nhost: weft.test\r\nBad Header\r\n\r\n",
        ),
        (
            "conflicting Content-Length headers",
            b"POST / HTTP/1.1\r\nhost: weft.test\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabcde",
        ),
        (
            "non-numeric Content-Length",
            b"POST / HTTP/1.1\r\nhost: weft.test\r\ncontent-length: abc\r\n\r\nabc",
        ),
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        let (status, raw) = raw_status(addr, bytes).await;
        assert_eq!(status, Some(400), "{what} must get 400, got: {raw:?}");
    }
    assert_eq!(
        upstream.requests(),
        0,
        "malformed requests must never reach the upstream"
    );

    // The listener still serves well-formed requests.
    let reply = client::h1(addr, client::get("/"))
        .await
        .expect("a well-formed request after the malformed ones");
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_host_400_names_the_cause() {
    let (upstream, weft) = start("").await;
    let (status, raw) = raw_status(weft.addr("public"), b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, Some(400), "{raw:?}");
    assert!(
        raw.to_ascii_lowercase().contains("host"),
        "the 400 body says the Host header is missing: {raw:?}"
    );
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_by_header_read_timeout() {
    let (upstream, weft) = start("headerReadTimeout: 300ms").await;
    let outcome = slowloris(
        weft.addr("public"),
        Duration::from_millis(100),
        Duration::from_secs(3),
    )
    .await
    .expect("slowloris client");
    assert!(
        outcome.closed_by_peer,
        "weft must close a connection trickling its headers: {outcome:?}"
    );
    assert!(
        outcome.after <= Duration::from_millis(1500),
        "closed within ~1.5 s of a 300 ms header timeout, took {:?}",
        outcome.after
    );
    assert!(
        outcome.after >= Duration::from_millis(250),
        "closed before the header timeout could have expired: {outcome:?}"
    );
    if let Some(status) = status_of(&outcome.received) {
        assert_eq!(
            status, 408,
            "a reply to a slow header block is a 408: {outcome:?}"
        );
    } else {
        assert!(
            outcome.received.is_empty(),
            "weft sent something that is not an HTTP response: {outcome:?}"
        );
    }
    assert_eq!(
        upstream.requests(),
        0,
        "an unfinished head is never forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_by_header_read_timeout() {
    let (_upstream, weft) = start("headerReadTimeout: 300ms").await;
    let mut tcp = client::tcp(weft.addr("public"))
        .await
        .expect("connect to weft");
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    };
    let after = started.elapsed();
    let received = String::from_utf8_lossy(&received);
    assert!(
        closed,
        "weft must close a connection that never sends a request"
    );
    assert!(
        after <= Duration::from_millis(1500),
        "closed within ~1.5 s of a 300 ms header timeout, took {after:?}"
    );
    if let Some(status) = status_of(&received) {
        assert_eq!(status, 408, "{received:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h1_keepalive_connection_is_closed() {
    let (_upstream, weft) = start("idleTimeout: 400ms").await;
    let mut conn = H1Conn::connect(weft.addr("public"))
        .await
        .expect("connect to weft");
    // Requests 150 ms apart keep the connection alive past one idle timeout in total.
    for i in 0..3 {
        let reply = conn
            .get("/")
            .await
            .expect("request on the keep-alive connection");
        assert_eq!(reply.status, 200, "request {i}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        !conn.is_closed(),
        "a connection used every 150 ms must not idle out at 400 ms"
    );
    assert!(
        conn.wait_closed(Duration::from_millis(1500)).await,
        "weft must close a keep-alive connection idle for longer than idleTimeout (400 ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2c_connection_is_closed() {
    let (_upstream, weft) = start("idleTimeout: 300ms").await;
    let conn = H2Conn::connect(weft.addr("public"))
        .await
        .expect("h2c connect to weft");
    let reply = conn.get("/").await.expect("h2c request");
    assert_eq!(reply.status, 200);
    assert!(
        conn.wait_closed(Duration::from_millis(1500)).await,
        "weft must close (GOAWAY) an h2c connection idle for longer than idleTimeout (300 ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_in_flight_outlives_idle_timeout() {
    let (_upstream, weft) = start("idleTimeout: 300ms").await;
    let addr = weft.addr("public");

    let mut h1 = H1Conn::connect(addr).await.expect("connect to weft");
    let started = Instant::now();
    let reply = h1
        .get("/delay/800")
        .await
        .expect("an h1 request in flight must not be cut by the idle timeout");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(started.elapsed() >= Duration::from_millis(800));

    let h2 = H2Conn::connect(addr).await.expect("h2c connect to weft");
    let reply = h2
        .get("/delay/800")
        .await
        .expect("an h2c request in flight must not be cut by the idle timeout");
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_closes_extra_connections_at_accept() {
    let (_upstream, weft) = start("maxConnections: 2").await;
    let addr = weft.addr("public");

    let mut a = H1Conn::connect(addr).await.expect("first connection");
    let mut b = H1Conn::connect(addr).await.expect("second connection");
    assert_eq!(a.get("/").await.expect("request on the first").status, 200);
    assert_eq!(b.get("/").await.expect("request on the second").status, 200);

    // The third is accepted by the kernel, then closed by weft without an answer.
    let third = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nhost: weft.test\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    if let Ok(raw) = &third {
        assert!(
            raw.is_empty(),
            "a connection past maxConnections must be closed unanswered, got {raw:?}"
        );
    }
    let overflow = weft
        .metric(r#"weft_downstream_cx_overflow_total{listener="public"}"#)
        .await
        .unwrap_or(0.0);
    assert!(
        overflow >= 1.0,
        "the refused connection is counted, got {overflow}"
    );

    // The two open connections are unaffected.
    assert_eq!(
        a.get("/")
            .await
            .expect("first connection still works")
            .status,
        200
    );
    assert_eq!(
        b.get("/")
            .await
            .expect("second connection still works")
            .status,
        200
    );

    // Closing one frees a slot for a new connection.
    drop(a);
    let freed = wait_for(
        || async {
            weft.metric(r#"weft_downstream_cx_active{listener="public"}"#)
                .await
                == Some(1.0)
        },
        Duration::from_secs(2),
    )
    .await;
    assert!(freed, "weft noticed the closed connection");
    let reply = client::h1(addr, client::get("/"))
        .await
        .expect("a new connection once a slot is free");
    assert_eq!(reply.status, 200);
    drop(b);
}

/// The header deadline starts with the first byte of a request head, not when a keep-alive
/// connection begins to wait: an idle connection lives until `idleTimeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_outlives_the_header_deadline_until_the_idle_timeout() {
    let (_up, weft) = start("headerReadTimeout: 200ms, idleTimeout: 1200ms").await;
    let mut conn = H1Conn::connect(weft.addr("public")).await.expect("connect");
    assert_eq!(conn.get("/").await.expect("first request").status, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !conn.is_closed(),
        "idle for 700ms: past headerReadTimeout, within idleTimeout"
    );
    assert_eq!(
        conn.get("/")
            .await
            .expect("second request on the same connection")
            .status,
        200
    );
    assert!(
        conn.wait_closed(Duration::from_secs(3)).await,
        "closed once idleTimeout passes"
    );
}
