//! Tests of the harness itself: the upstreams, clients, raw servers and PKI do what the
//! end-to-end tests rely on.

use std::time::{Duration, Instant};

use anyhow::Result;
use http::{HeaderMap, HeaderValue, Request, Version};

use crate::certs::{Identity, TestPki, der_mentions};
use crate::client::{self, H1Conn, H2Conn};
use crate::raw::{self, RawUpstream};
use crate::upstream::Upstream;
use crate::{stream, wait_for};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn http1_upstream_describes_the_request() -> Result<()> {
    let up = Upstream::http1("alpha").await?;
    let mut req = client::post("/some/path?q=1", "hello");
    req.headers_mut()
        .append("x-multi", HeaderValue::from_static("a"));
    req.headers_mut()
        .append("x-multi", HeaderValue::from_static("b"));
    let reply = client::h1(up.addr, req).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-upstream"), Some("alpha"));
    assert_eq!(reply.header("x-upstream-protocol"), Some("HTTP/1.1"));
    let json = reply.json();
    assert_eq!(json["upstream"], "alpha");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/some/path?q=1");
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(json["body_len"], 5);
    assert_eq!(json["client_cert"], false);
    assert_eq!(json["headers"]["x-multi"], serde_json::json!(["a", "b"]));
    assert_eq!(json["headers"]["host"], up.addr.to_string());
    assert_eq!(json["connection"], 1);
    Ok(())
}

#[tokio::test]
async fn h2c_and_auto_upstreams_speak_http2() -> Result<()> {
    let h2 = Upstream::h2c("h2").await?;
    let reply = client::h2c(h2.addr, client::get("/x")).await?;
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.json()["version"], "HTTP/2");
    assert_eq!(reply.header("x-upstream-protocol"), Some("HTTP/2"));
    assert!(client::h1(h2.addr, client::get("/x")).await.is_err());

    let auto = Upstream::auto("both").await?;
    assert_eq!(
        client::h2c(auto.addr, client::get("/")).await?.json()["version"],
        "HTTP/2"
    );
    assert_eq!(
        client::h1(auto.addr, client::get("/")).await?.json()["version"],
        "HTTP/1.1"
    );
    Ok(())
}

#[tokio::test]
async fn tls_upstream_negotiates_alpn_and_sees_client_certs() -> Result<()> {
    let pki = TestPki::new()?;
    let up = Upstream::tls("secure", &pki, false).await?;
    let h2 = pki.client_config(&[b"h2", b"http/1.1"], None);
    let reply = client::tls(up.addr, h2, "localhost", client::get("/")).await?;
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.json()["client_cert"], false);

    let h1 = pki.client_config(&[b"http/1.1"], Some(Identity::Client));
    let reply = client::tls(up.addr, h1, "upstream.test", client::get("/")).await?;
    assert_eq!(reply.json()["version"], "HTTP/1.1");
    assert_eq!(reply.json()["client_cert"], true);
    Ok(())
}

#[tokio::test]
async fn mtls_upstream_refuses_missing_or_rogue_client_certs() -> Result<()> {
    let pki = TestPki::new()?;
    let up = Upstream::tls("strict", &pki, true).await?;
    let alpn: &[&[u8]] = &[b"h2"];
    for identity in [None, Some(Identity::Rogue)] {
        let config = pki.client_config(alpn, identity);
        let result = client::tls(up.addr, config, "localhost", client::get("/")).await;
        assert!(result.is_err(), "{identity:?} was let in");
    }
    let config = pki.client_config(alpn, Some(Identity::Client));
    let reply = client::tls(up.addr, config, "127.0.0.1", client::get("/")).await?;
    assert_eq!(reply.json()["client_cert"], true);
    assert_eq!(up.requests(), 1);
    Ok(())
}

#[tokio::test]
async fn rotate_server_cert_changes_the_served_certificate() -> Result<()> {
    let pki = TestPki::new()?;
    let up = Upstream::tls("rotating", &pki, false).await?;
    let config = pki.client_config(&[b"h2"], None);
    let before = client::peer_certificate(up.addr, config.clone(), "localhost").await?;
    assert!(!der_mentions(&before, "rotated-cn"));
    pki.rotate_server_cert("rotated-cn")?;
    let after = client::peer_certificate(up.addr, config, "localhost").await?;
    assert!(der_mentions(&after, "rotated-cn"));
    assert_ne!(before, after);
    Ok(())
}

fn trailer_request(declare: bool) -> Result<Request<()>> {
    let mut req = Request::post("/echo");
    if declare {
        req = req.header("trailer", "x-sum").header("te", "trailers");
    }
    Ok(req.body(())?)
}

async fn echo_streams(mut send: impl AsyncStreamStart) -> Result<()> {
    let (body, pending) = send.start(trailer_request(true)?).await?;
    body.send("chunk-1").await?;
    let mut resp = pending.response_within(2 * SECOND).await?;
    assert_eq!(resp.status, 200);
    // Chunk 1 comes back before chunk 2 is even sent: nothing buffers the whole body.
    assert_eq!(
        resp.chunk_within(2 * SECOND).await?.as_deref(),
        Some(&b"chunk-1"[..])
    );
    body.send("chunk-2").await?;
    assert_eq!(
        resp.chunk_within(2 * SECOND).await?.as_deref(),
        Some(&b"chunk-2"[..])
    );
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", HeaderValue::from_static("42"));
    body.trailers(trailers).await?;
    let rest = resp.finish().await?;
    assert!(rest.body.is_empty());
    assert_eq!(rest.trailer("x-sum"), Some("42"));
    Ok(())
}

/// Lets one test body drive the streaming helpers of each protocol.
trait AsyncStreamStart {
    async fn start(
        &mut self,
        req: Request<()>,
    ) -> Result<(stream::BodySender, stream::PendingResponse)>;
}

struct ViaH1(H1Conn);
struct ViaH2(H2Conn);

impl AsyncStreamStart for ViaH1 {
    async fn start(
        &mut self,
        req: Request<()>,
    ) -> Result<(stream::BodySender, stream::PendingResponse)> {
        self.0.stream(req).await
    }
}

impl AsyncStreamStart for ViaH2 {
    async fn start(
        &mut self,
        req: Request<()>,
    ) -> Result<(stream::BodySender, stream::PendingResponse)> {
        self.0.stream(req).await
    }
}

#[tokio::test]
async fn echo_streams_chunks_and_trailers_over_h1_and_h2() -> Result<()> {
    let up = Upstream::auto("echo").await?;
    echo_streams(ViaH1(H1Conn::connect(up.addr).await?)).await?;
    echo_streams(ViaH2(H2Conn::connect(up.addr).await?)).await?;
    // The one-shot helpers stream too.
    let (body, pending) = stream::h2c(up.addr, trailer_request(false)?).await?;
    body.send("x").await?;
    let mut resp = pending.response().await?;
    assert_eq!(
        resp.chunk_within(2 * SECOND).await?.as_deref(),
        Some(&b"x"[..])
    );
    body.finish();
    assert!(resp.finish().await?.trailers.is_none());
    Ok(())
}

#[tokio::test]
async fn trailers_status_delay_and_stream_paths() -> Result<()> {
    let up = Upstream::auto("paths").await?;
    let reply = client::h2c(up.addr, client::get("/trailers")).await?;
    assert_eq!(
        (reply.text().as_str(), reply.trailer("x-checksum")),
        ("ok", Some("abc123"))
    );
    let mut req = client::get("/trailers");
    req.headers_mut()
        .insert("te", HeaderValue::from_static("trailers"));
    assert_eq!(
        client::h1(up.addr, req).await?.trailer("x-checksum"),
        Some("abc123")
    );

    assert_eq!(
        client::h1(up.addr, client::get("/status/503"))
            .await?
            .status,
        503
    );
    assert_eq!(
        client::h2c(up.addr, client::get("/status/204"))
            .await?
            .status,
        204
    );

    let started = Instant::now();
    assert_eq!(
        client::h1(up.addr, client::get("/delay/150")).await?.status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(150));

    let (body, pending) = stream::h1(up.addr, Request::get("/stream/3").body(())?).await?;
    body.finish();
    let mut resp = pending.response().await?;
    let mut chunks = 0;
    while let Some(chunk) = resp.chunk_within(2 * SECOND).await? {
        assert_eq!(&chunk[..], b"chunk\n");
        chunks += 1;
    }
    assert_eq!(chunks, 3);
    Ok(())
}

#[tokio::test]
async fn counters_down_and_restart() -> Result<()> {
    let mut up = Upstream::http1("flaky").await?;
    let addr = up.addr;
    let mut conn = H1Conn::connect(addr).await?;
    conn.get("/a").await?;
    let reply = conn.get("/b").await?;
    assert_eq!(reply.json()["connection"], 1);
    assert_eq!((up.connections(), up.requests()), (1, 2));

    up.down().await;
    assert!(
        conn.wait_closed(2 * SECOND).await,
        "down() left a connection open"
    );
    assert!(client::h1(addr, client::get("/")).await.is_err());

    up.restart().await?;
    assert_eq!(up.addr, addr);
    assert_eq!(
        client::h1(addr, client::get("/")).await?.json()["connection"],
        2
    );
    assert_eq!(up.requests(), 3);

    up.stop().await;
    let other = Upstream::http1_on(addr, "other").await?;
    assert_eq!(
        client::h1(addr, client::get("/")).await?.json()["upstream"],
        "other"
    );
    drop(other);
    Ok(())
}

#[tokio::test]
async fn raw_upstreams_misbehave_as_told() -> Result<()> {
    let request = b"GET / HTTP/1.1\r\nhost: raw\r\n\r\n";
    let reset = RawUpstream::reset().await?;
    assert_eq!(
        raw::raw_exchange(reset.addr, request, 2 * SECOND).await?,
        ""
    );
    assert_eq!(reset.connections(), 1);
    assert!(reset.received()[0].starts_with("GET / HTTP/1.1"));

    let close = RawUpstream::close().await?;
    assert_eq!(
        raw::raw_exchange(close.addr, request, 2 * SECOND).await?,
        ""
    );

    let malformed = RawUpstream::malformed().await?;
    let got = raw::raw_exchange(malformed.addr, request, 2 * SECOND).await?;
    assert_eq!(raw::status_of(&got), Some(200));
    assert!(got.contains("Content-Length: nope"));

    let silent = RawUpstream::silent().await?;
    let started = Instant::now();
    assert_eq!(
        raw::raw_exchange(silent.addr, request, Duration::from_millis(300)).await?,
        ""
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(wait_for(|| async { silent.connections() == 1 }, SECOND).await);

    // hyper's own client gives up on the reset and malformed answers.
    assert!(client::h1(reset.addr, client::get("/")).await.is_err());
    assert!(client::h1(malformed.addr, client::get("/")).await.is_err());
    Ok(())
}

#[tokio::test]
async fn slowloris_reports_how_the_connection_ended() -> Result<()> {
    let silent = RawUpstream::silent().await?;
    let tick = Duration::from_millis(50);
    let outcome = raw::slowloris(silent.addr, tick, Duration::from_millis(300)).await?;
    assert!(!outcome.closed_by_peer);
    assert!(outcome.lines_sent >= 3, "{outcome:?}");

    let listener = tokio::net::TcpListener::bind(crate::upstream::loopback()).await?;
    let addr = listener.local_addr()?;
    let _closer = crate::AbortOnDrop(tokio::spawn(async move {
        if let Ok((mut tcp, _)) = listener.accept().await {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = tokio::io::AsyncWriteExt::write_all(
                &mut tcp,
                b"HTTP/1.1 408 Request Timeout\r\n\r\n",
            )
            .await;
        }
    }));
    let outcome = raw::slowloris(addr, tick, 3 * SECOND).await?;
    assert!(outcome.closed_by_peer);
    assert!(outcome.after >= Duration::from_millis(200) && outcome.after < 2 * SECOND);
    assert_eq!(raw::status_of(&outcome.received), Some(408));
    Ok(())
}

#[test]
fn status_lines_parse() {
    assert_eq!(
        raw::status_of("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        Some(431)
    );
    assert_eq!(raw::status_of("garbage"), None);
    assert_eq!(raw::status_of(""), None);
    let two = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n";
    assert_eq!(raw::statuses(two), vec![200, 404]);
}
