use std::{convert::Infallible, net::SocketAddr};

use http::Response;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};

use super::*;
use crate::{
    config::{
        Outlier,
        resolved::{EndpointSpec, LoadBalancerKind},
    },
    metrics::Metrics,
};

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn pairs_of(list: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
    list.iter().map(|(n, v)| (b(n), b(v))).collect()
}

fn framed(message: &[u8]) -> Vec<u8> {
    frame_message(Bytes::copy_from_slice(message))
        .expect("small message")
        .to_vec()
}

fn config(addr: SocketAddr, protocol: UpstreamProtocol) -> ClusterConfig {
    ClusterConfig {
        name: "callout-test".into(),
        endpoints: vec![EndpointSpec {
            host: addr.ip().to_string(),
            port: addr.port(),
        }],
        load_balancer: LoadBalancerKind::RoundRobin,
        protocol,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        retries: 0,
        outlier: Outlier {
            consecutive_failures: 100,
            ejection_time: Duration::from_secs(1),
        },
        max_idle_per_endpoint: 4,
        tls: None,
    }
}

fn cluster(addr: SocketAddr, protocol: UpstreamProtocol) -> Arc<Cluster> {
    let cluster = Cluster::new(Arc::new(config(addr, protocol)), &Metrics::new());
    Arc::new(cluster.expect("plaintext cluster"))
}

// --- Framing and small helpers ----------------------------------------------------------------

#[test]
fn frame_prefixes_flag_and_big_endian_length() {
    assert_eq!(framed(b"hi"), b"\0\0\0\0\x02hi");
    assert_eq!(framed(b""), b"\0\0\0\0\0");
}

#[test]
fn deframer_joins_a_message_split_across_frames() {
    let wire = framed(b"hello world");
    let mut deframer = Deframer::default();
    // Split inside the prefix, then inside the payload.
    deframer.push(&wire[..3]);
    assert_eq!(deframer.next_message(), Ok(None));
    deframer.push(&wire[3..9]);
    assert_eq!(deframer.next_message(), Ok(None));
    deframer.push(&wire[9..]);
    assert_eq!(deframer.next_message(), Ok(Some(b("hello world"))));
    assert_eq!(deframer.next_message(), Ok(None));
    assert!(deframer.is_empty());
}

#[test]
fn deframer_splits_messages_sharing_a_frame() {
    let mut wire = framed(b"one");
    wire.extend(framed(b""));
    wire.extend(framed(b"three"));
    let second = framed(b"four");
    wire.extend(&second[..2]);
    let mut deframer = Deframer::default();
    deframer.push(&wire);
    assert_eq!(deframer.next_message(), Ok(Some(b("one"))));
    assert_eq!(deframer.next_message(), Ok(Some(b(""))));
    assert_eq!(deframer.next_message(), Ok(Some(b("three"))));
    assert_eq!(deframer.next_message(), Ok(None));
    assert!(!deframer.is_empty());
    deframer.push(&second[2..]);
    assert_eq!(deframer.next_message(), Ok(Some(b("four"))));
    assert!(deframer.is_empty());
}

#[test]
fn deframer_rejects_compressed_and_oversized_messages() {
    let mut deframer = Deframer::default();
    deframer.push(b"\x01\0\0\0\x01x");
    assert_eq!(deframer.next_message(), Err(DeframeError::Compressed));

    let mut deframer = Deframer::default();
    let length = u32::try_from(MAX_GRPC_MESSAGE + 1).expect("fits");
    deframer.push(&[0]);
    deframer.push(&length.to_be_bytes());
    let error = deframer.next_message().expect_err("over the limit");
    assert_eq!(error, DeframeError::TooLarge(MAX_GRPC_MESSAGE + 1));
    assert_eq!(error.status(), code::RESOURCE_EXHAUSTED);
}

#[test]
fn grpc_timeout_uses_milliseconds_then_coarser_units() {
    assert_eq!(grpc_timeout(Duration::from_secs(1)), "1000m");
    assert_eq!(grpc_timeout(Duration::from_millis(250)), "250m");
    assert_eq!(grpc_timeout(Duration::from_micros(1500)), "2m");
    assert_eq!(grpc_timeout(Duration::ZERO), "0m");
    assert_eq!(grpc_timeout(Duration::from_millis(99_999_999)), "99999999m");
    assert_eq!(grpc_timeout(Duration::from_millis(100_000_000)), "100000S");
    assert_eq!(grpc_timeout(Duration::from_secs(100_000_000)), "1666666M");
    assert_eq!(grpc_timeout(Duration::from_secs(6_000_000_000)), "1666666H");
    assert_eq!(grpc_timeout(Duration::MAX), "99999999H");
}

#[test]
fn http_call_headers_need_method_path_and_authority() {
    let complete = pairs_of(&[
        (":method", "GET"),
        (":path", "/x"),
        (":authority", "svc"),
        ("x-a", "1"),
    ]);
    assert!(validate_http_call_headers(&complete));
    for missing in [":method", ":path", ":authority"] {
        let without: Vec<_> = complete
            .iter()
            .filter(|(n, _)| n.as_ref() != missing.as_bytes())
            .cloned()
            .collect();
        assert!(!validate_http_call_headers(&without), "without {missing}");
        let empty: Vec<_> = complete
            .iter()
            .map(|(n, v)| {
                let v = if n.as_ref() == missing.as_bytes() {
                    Bytes::new()
                } else {
                    v.clone()
                };
                (n.clone(), v)
            })
            .collect();
        assert!(!validate_http_call_headers(&empty), "empty {missing}");
    }
}

#[test]
fn http_status_maps_to_grpc_status() {
    let cases = [
        (400, code::INTERNAL),
        (401, code::UNAUTHENTICATED),
        (403, code::PERMISSION_DENIED),
        (404, code::UNIMPLEMENTED),
        (429, code::UNAVAILABLE),
        (502, code::UNAVAILABLE),
        (503, code::UNAVAILABLE),
        (504, code::UNAVAILABLE),
        (500, code::UNKNOWN),
        (301, code::UNKNOWN),
    ];
    for (http, grpc) in cases {
        let status = StatusCode::from_u16(http).expect("valid status");
        assert_eq!(status_from_http(status), grpc, "HTTP {http}");
    }
}

#[test]
fn grpc_status_and_message_are_read_from_headers() {
    let mut headers = HeaderMap::new();
    assert_eq!(grpc_status(&headers), None);
    headers.insert(&GRPC_STATUS, HeaderValue::from_static("5"));
    headers.insert(
        &GRPC_MESSAGE,
        HeaderValue::from_static("not%20found%%zz%E2%9C%93"),
    );
    assert_eq!(grpc_status(&headers), Some(5));
    assert_eq!(grpc_message(&headers), Bytes::from("not found%%zz\u{2713}"));
    headers.insert(&GRPC_STATUS, HeaderValue::from_static("five"));
    assert_eq!(grpc_status(&headers), Some(code::UNKNOWN));
}

#[test]
fn http_request_follows_the_cluster_protocol() {
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("address");
    let headers = pairs_of(&[
        (":method", "POST"),
        (":path", "/submit?x=1"),
        (":authority", "api.internal"),
        ("X-Custom", "yes"),
        ("bad name", "skipped"),
        ("content-length", "999"),
        ("connection", "close"),
    ]);

    let h1 = config(addr, UpstreamProtocol::Http1);
    let request = http_request(&h1, &headers, b("body"), &[]).expect("valid request");
    assert_eq!(request.method(), Method::POST);
    assert_eq!(request.uri(), "/submit?x=1");
    assert_eq!(request.version(), Version::HTTP_11);
    let h = request.headers();
    assert_eq!(h["host"], "api.internal");
    assert_eq!(h["x-custom"], "yes");
    assert_eq!(h["content-length"], "4");
    assert!(!h.contains_key("connection"));
    assert_eq!(h.len(), 3);

    let h2 = config(addr, UpstreamProtocol::Http2);
    let trailers = pairs_of(&[("x-sum", "1")]);
    let request = http_request(&h2, &headers, b("body"), &trailers).expect("valid request");
    assert_eq!(request.uri(), "http://api.internal/submit?x=1");
    assert_eq!(request.version(), Version::HTTP_2);
    assert!(!request.headers().contains_key("host"));
    // Trailers follow the body, so its length is not announced.
    assert!(!request.headers().contains_key("content-length"));

    let mut with_scheme = headers.clone();
    with_scheme.push((b(":scheme"), b("https")));
    let request = http_request(&h2, &with_scheme, Bytes::new(), &[]).expect("valid request");
    assert_eq!(request.uri(), "https://api.internal/submit?x=1");

    let relative = pairs_of(&[(":method", "GET"), (":path", "x"), (":authority", "a")]);
    assert!(http_request(&h1, &relative, Bytes::new(), &[]).is_err());
}

#[test]
fn grpc_request_targets_service_and_method() {
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("address");
    let request = GrpcRequest {
        service: b("pkg.Echo"),
        method: b("Say"),
        initial_metadata: pairs_of(&[("x-token", "t"), ("content-type", "text/plain")]),
        timeout: Some(Duration::from_secs(2)),
    };
    let config = config(addr, UpstreamProtocol::Http2);
    let built = grpc_request(&config, &request, full(Bytes::new())).expect("valid request");
    assert_eq!(built.method(), Method::POST);
    assert_eq!(built.uri(), "http://callout-test/pkg.Echo/Say");
    let h = built.headers();
    assert_eq!(h["content-type"], "application/grpc");
    assert_eq!(h["te"], "trailers");
    assert_eq!(h["grpc-timeout"], "2000m");
    assert_eq!(h["x-token"], "t");

    let bad = GrpcRequest {
        method: b("a/b"),
        ..request
    };
    assert!(grpc_request(&config, &bad, full(Bytes::new())).is_err());
}

// --- Against real servers ---------------------------------------------------------------------

/// A hyper server on 127.0.0.1:0, stopped when dropped.
struct TestServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Handler =
    fn(Request<Incoming>) -> futures_util::future::BoxFuture<'static, Response<ProxyBody>>;

async fn serve(handler: Handler) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.spawn(async move {
                let service = service_fn(move |request| async move {
                    Ok::<_, Infallible>(handler(request).await)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestServer { addr, task }
}

fn grpc_events() -> (
    impl FnMut(GrpcEvent) + Send + 'static,
    mpsc::UnboundedReceiver<GrpcEvent>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (move |event| drop(tx.send(event)), rx)
}

fn drain(mut rx: mpsc::UnboundedReceiver<GrpcEvent>) -> Vec<GrpcEvent> {
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    events
}

fn answer_echo(
    request: Request<Incoming>,
) -> futures_util::future::BoxFuture<'static, Response<ProxyBody>> {
    Box::pin(async move {
        let (parts, body) = request.into_parts();
        if parts.uri.path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let collected = body.collect().await.expect("request body");
        let request_trailer = collected
            .trailers()
            .and_then(|t| t.get("x-sum"))
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let mut trailers = HeaderMap::new();
        trailers.insert("x-done", HeaderValue::from_static("yes"));
        let text = format!(
            "{} {} host={} trailer={} body={}",
            parts.method,
            parts.uri,
            parts
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("-"),
            request_trailer,
            String::from_utf8_lossy(&collected.to_bytes()),
        );
        let frames = [Frame::data(Bytes::from(text)), Frame::trailers(trailers)];
        let body = boxed(StreamBody::new(stream::iter(
            frames.map(Ok::<_, Infallible>),
        )));
        Response::builder()
            .status(201)
            .header("X-Reply", "r")
            // hyper sends HTTP/1.1 trailers only when declared.
            .header("trailer", "x-done")
            .body(body)
            .expect("response")
    })
}

#[tokio::test]
async fn http_call_collects_headers_body_and_trailers() {
    let server = serve(answer_echo).await;
    let cluster = cluster(server.addr, UpstreamProtocol::Http1);
    let headers = pairs_of(&[
        (":method", "POST"),
        (":path", "/echo?q=1"),
        (":authority", "svc.local"),
        ("te", "trailers"),
    ]);
    let response = http_call(
        cluster,
        headers,
        b("payload"),
        pairs_of(&[("x-sum", "42")]),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(response.headers[0], (b(":status"), b("201")));
    assert!(response.headers.contains(&(b("x-reply"), b("r"))));
    assert_eq!(
        response.body,
        b("POST /echo?q=1 host=svc.local trailer=42 body=payload")
    );
    assert_eq!(response.trailers, pairs_of(&[("x-done", "yes")]));
}

#[tokio::test]
async fn http_call_over_http2_sends_an_absolute_target() {
    let server = serve(answer_echo).await;
    let cluster = cluster(server.addr, UpstreamProtocol::Http2);
    let headers = pairs_of(&[(":method", "GET"), (":path", "/h2"), (":authority", "svc")]);
    let response = http_call(
        cluster,
        headers,
        Bytes::new(),
        vec![],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(response.headers[0], (b(":status"), b("201")));
    assert_eq!(response.body, b("GET http://svc/h2 host=- trailer= body="));
    assert_eq!(response.trailers, pairs_of(&[("x-done", "yes")]));
}

#[tokio::test]
async fn http_call_failures_have_no_headers() {
    let server = serve(answer_echo).await;
    let slow = pairs_of(&[
        (":method", "GET"),
        (":path", "/slow"),
        (":authority", "svc"),
    ]);
    let started = tokio::time::Instant::now();
    let response = http_call(
        cluster(server.addr, UpstreamProtocol::Http1),
        slow.clone(),
        Bytes::new(),
        vec![],
        Duration::from_millis(100),
    )
    .await;
    assert!(response.headers.is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));

    // Nothing listens on a port just released.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("local address");
    drop(closed);
    let response = http_call(
        cluster(addr, UpstreamProtocol::Http1),
        slow,
        Bytes::new(),
        vec![],
        Duration::from_secs(5),
    )
    .await;
    assert!(response.headers.is_empty());
}

#[tokio::test]
async fn http_call_refuses_bodies_over_the_cap() {
    fn answer_big(
        _: Request<Incoming>,
    ) -> futures_util::future::BoxFuture<'static, Response<ProxyBody>> {
        Box::pin(async { Response::new(full(vec![b'x'; MAX_RESPONSE_BODY + 1])) })
    }
    let server = serve(answer_big).await;
    let headers = pairs_of(&[(":method", "GET"), (":path", "/"), (":authority", "svc")]);
    let response = http_call(
        cluster(server.addr, UpstreamProtocol::Http1),
        headers,
        Bytes::new(),
        vec![],
        Duration::from_secs(5),
    )
    .await;
    assert!(response.headers.is_empty());
}

fn grpc_ok() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("x-trailer", HeaderValue::from_static("t"));
    trailers
}

/// A gRPC server: `/test.Echo/Unary` answers with the request's message then `world`, in
/// DATA frames cut across message boundaries; `/test.Echo/Stream` echoes each DATA frame as it
/// arrives; `/test.Echo/Fail` is trailers-only with status 5; anything else is a 404.
fn answer_grpc(
    request: Request<Incoming>,
) -> futures_util::future::BoxFuture<'static, Response<ProxyBody>> {
    Box::pin(async move {
        let response = Response::builder()
            .header("content-type", "application/grpc")
            .header("x-initial", "i");
        match request.uri().path() {
            "/test.Echo/Unary" => {
                let timeout = request.headers().get("grpc-timeout").cloned();
                let body = request.into_body().collect().await.expect("request body");
                let mut wire = body.to_bytes().to_vec();
                wire.extend(framed(b"world"));
                let (first, rest) = wire.split_at(3);
                let (second, third) = rest.split_at(rest.len() - 4);
                let frames = [first, second, third]
                    .map(|chunk| Ok::<_, Infallible>(Frame::data(Bytes::copy_from_slice(chunk))));
                let frames = frames.into_iter().chain([Ok(Frame::trailers(grpc_ok()))]);
                let response = match timeout {
                    Some(timeout) => response.header("x-seen-timeout", timeout),
                    None => response,
                };
                response
                    .body(boxed(StreamBody::new(stream::iter(frames))))
                    .expect("response")
            }
            "/test.Echo/Stream" => {
                let frames = stream::unfold(Some(request.into_body()), |state| async move {
                    let mut incoming = state?;
                    loop {
                        match incoming.frame().await {
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    let frame = Ok::<_, Infallible>(Frame::data(data));
                                    return Some((frame, Some(incoming)));
                                }
                            }
                            _ => return Some((Ok(Frame::trailers(grpc_ok())), None)),
                        }
                    }
                });
                response
                    .body(boxed(StreamBody::new(frames)))
                    .expect("response")
            }
            "/test.Echo/Fail" => response
                .header("grpc-status", "5")
                .header("grpc-message", "no%20such%20thing")
                .body(full(Bytes::new()))
                .expect("response"),
            _ => Response::builder()
                .status(404)
                .body(full(Bytes::new()))
                .expect("response"),
        }
    })
}

fn echo_request(method: &str) -> GrpcRequest {
    GrpcRequest {
        service: b("test.Echo"),
        method: b(method),
        initial_metadata: pairs_of(&[("x-token", "t")]),
        timeout: Some(Duration::from_secs(5)),
    }
}

#[tokio::test]
async fn grpc_call_delivers_metadata_messages_trailers_and_status() {
    let server = serve(answer_grpc).await;
    let (deliver, rx) = grpc_events();
    grpc_call(
        cluster(server.addr, UpstreamProtocol::Http2),
        echo_request("Unary"),
        b("hello"),
        deliver,
    )
    .await;
    let events = drain(rx);
    assert_eq!(events.len(), 5, "{events:?}");
    let GrpcEvent::InitialMetadata(initial) = &events[0] else {
        panic!("initial metadata first: {events:?}");
    };
    assert_eq!(initial[0], (b(":status"), b("200")));
    assert!(initial.contains(&(b("x-initial"), b("i"))));
    assert!(initial.contains(&(b("x-seen-timeout"), b("5000m"))));
    assert!(matches!(&events[1], GrpcEvent::Message(m) if m == "hello"));
    assert!(matches!(&events[2], GrpcEvent::Message(m) if m == "world"));
    assert!(
        matches!(&events[3], GrpcEvent::TrailingMetadata(t) if t.contains(&(b("x-trailer"), b("t"))))
    );
    assert!(matches!(&events[4], GrpcEvent::Close { status: 0, .. }));
}

#[tokio::test]
async fn grpc_stream_is_full_duplex() {
    let server = serve(answer_grpc).await;
    let (deliver, mut rx) = grpc_events();
    let (outbound, messages) = mpsc::unbounded_channel();
    let call = tokio::spawn(grpc_stream(
        cluster(server.addr, UpstreamProtocol::Http2),
        GrpcRequest {
            timeout: None,
            ..echo_request("Stream")
        },
        messages,
        deliver,
    ));
    let next = async |rx: &mut mpsc::UnboundedReceiver<GrpcEvent>| {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("event in time")
            .expect("event")
    };
    outbound
        .send(GrpcOutbound::Message(b("ping")))
        .expect("stream open");
    assert!(matches!(next(&mut rx).await, GrpcEvent::InitialMetadata(_)));
    // The echo arrives while the request body is still open.
    assert!(matches!(next(&mut rx).await, GrpcEvent::Message(m) if m == "ping"));
    outbound
        .send(GrpcOutbound::Message(b("pong")))
        .expect("stream open");
    assert!(matches!(next(&mut rx).await, GrpcEvent::Message(m) if m == "pong"));
    outbound.send(GrpcOutbound::End).expect("stream open");
    assert!(matches!(
        next(&mut rx).await,
        GrpcEvent::TrailingMetadata(_)
    ));
    assert!(matches!(
        next(&mut rx).await,
        GrpcEvent::Close { status: 0, .. }
    ));
    call.await.expect("call task");
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn grpc_failures_close_with_a_status() {
    let server = serve(answer_grpc).await;
    let h2 = cluster(server.addr, UpstreamProtocol::Http2);

    // Trailers-only answer.
    let (deliver, rx) = grpc_events();
    grpc_call(h2.clone(), echo_request("Fail"), b("x"), deliver).await;
    let events = drain(rx);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(&events[0], GrpcEvent::TrailingMetadata(_)));
    assert!(matches!(
        &events[1],
        GrpcEvent::Close { status: 5, message } if message == "no such thing"
    ));

    // Not 200, no grpc-status.
    let (deliver, rx) = grpc_events();
    grpc_call(h2.clone(), echo_request("Missing"), b("x"), deliver).await;
    let events = drain(rx);
    assert!(
        matches!(
            &events[..],
            [GrpcEvent::Close {
                status: code::UNIMPLEMENTED,
                ..
            }]
        ),
        "{events:?}"
    );

    // The deadline passes: the stream never ends its request body, so no answer comes.
    let (deliver, rx) = grpc_events();
    let (_outbound, messages) = mpsc::unbounded_channel();
    let request = GrpcRequest {
        timeout: Some(Duration::from_millis(200)),
        ..echo_request("Stream")
    };
    grpc_stream(h2, request, messages, deliver).await;
    let events = drain(rx);
    assert!(
        matches!(
            events.last(),
            Some(GrpcEvent::Close {
                status: code::DEADLINE_EXCEEDED,
                ..
            })
        ),
        "{events:?}"
    );
    let closes = events
        .iter()
        .filter(|e| matches!(e, GrpcEvent::Close { .. }))
        .count();
    assert_eq!(closes, 1);

    // Not an HTTP/2 cluster.
    let (deliver, rx) = grpc_events();
    let h1 = cluster(server.addr, UpstreamProtocol::Http1);
    grpc_call(h1, echo_request("Unary"), b("x"), deliver).await;
    let events = drain(rx);
    assert!(
        matches!(&events[..], [GrpcEvent::Close { status: code::UNAVAILABLE, message }] if message == "cluster is not HTTP/2"),
        "{events:?}"
    );

    // Nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("local address");
    drop(closed);
    let (deliver, rx) = grpc_events();
    grpc_call(
        cluster(addr, UpstreamProtocol::Http2),
        echo_request("Unary"),
        b("x"),
        deliver,
    )
    .await;
    let events = drain(rx);
    assert!(
        matches!(
            &events[..],
            [GrpcEvent::Close {
                status: code::UNAVAILABLE,
                ..
            }]
        ),
        "{events:?}"
    );
}
