//! A gRPC echo server for tests: service `weft.test.Echo` over h2c (HTTP/2 with prior
//! knowledge) on `127.0.0.1:0`, written on hyper with the gRPC framing by hand (a 5-byte prefix
//! per message: compression flag 0, big-endian length).
//!
//! | method | answer |
//! |---|---|
//! | `/weft.test.Echo/Say` | reads the request's one message `m`; answers `m-reply`, then trailers `grpc-status: 0` |
//! | `/weft.test.Echo/Chat` | answers each request message `m` with `m-reply` as it arrives (full duplex); trailers `grpc-status: 0` once the request ends |
//! | `/weft.test.Echo/Fail` | reads the request, then answers trailers-only: `grpc-status: 7`, `grpc-message: denied` |
//! | any other | trailers-only `grpc-status: 12` (UNIMPLEMENTED) |
//!
//! `Say` with other than exactly one message answers trailers-only `grpc-status: 13`. The
//! answers of `Say` and `Chat` are HTTP 200 with `content-type: application/grpc` and
//! `x-echo-meta: <the request's x-from metadata>`. Every request is recorded ([`Call`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use weft_e2e::grpc::{EchoServer, frame};
//! let server = EchoServer::start().await?;
//! let req = http::Request::post("/weft.test.Echo/Say")
//!     .header("content-type", "application/grpc")
//!     .body(http_body_util::Full::new(frame(b"hi")))?;
//! let reply = weft_e2e::client::h2c(server.addr, req).await?;
//! assert_eq!(reply.body, frame(b"hi-reply"));
//! assert_eq!(reply.trailer("grpc-status"), Some("0"));
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::AbortOnDrop;
use crate::upstream::loopback;

/// The body type of the server's responses.
type GrpcBody = BoxBody<Bytes, Infallible>;

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Call {
    /// `/service/method`.
    pub path: String,
    /// Its headers (the gRPC metadata among them).
    pub headers: HeaderMap,
}

impl Call {
    /// A header's value as a string, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A running echo server; it stops, closing its connections, when dropped.
#[derive(Debug)]
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    _task: AbortOnDrop,
}

impl EchoServer {
    /// Starts a server on a fresh port.
    pub async fn start() -> Result<EchoServer> {
        let listener = TcpListener::bind(loopback())
            .await
            .context("binding the gRPC echo server")?;
        let addr = listener
            .local_addr()
            .context("reading the gRPC echo server's address")?;
        let calls = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(accept_loop(listener, calls.clone()));
        Ok(EchoServer {
            addr,
            calls,
            _task: AbortOnDrop(task),
        })
    }

    /// Every request received so far, in order of arrival.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }
}

/// One message with the gRPC prefix: compression flag 0, big-endian length, the message.
pub fn frame(message: &[u8]) -> Bytes {
    let length = u32::try_from(message.len()).expect("a test message fits a gRPC frame");
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(length);
    framed.put_slice(message);
    framed.freeze()
}

/// Splits a body into gRPC messages, whatever chunks it arrives in.
#[derive(Debug, Default)]
pub struct Deframer {
    buffer: BytesMut,
}

impl Deframer {
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next complete message, if one has arrived (compression flags are not checked).
    pub fn next_message(&mut self) -> Option<Bytes> {
        let prefix = self.buffer.get(..5)?;
        let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if self.buffer.len() < 5 + length {
            return None;
        }
        self.buffer.advance(5);
        Some(self.buffer.split_to(length).freeze())
    }

    /// Whether no partial message is pending.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }
}

/// Accepts until aborted; the connection tasks are owned by this task, so aborting it closes
/// the listener and every connection.
async fn accept_loop(listener: TcpListener, calls: Arc<Mutex<Vec<Call>>>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    conns.spawn(serve(tcp, calls.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve(tcp: TcpStream, calls: Arc<Mutex<Vec<Call>>>) {
    let _ = tcp.set_nodelay(true);
    let svc = service_fn(move |req| {
        let calls = calls.clone();
        async move { Ok::<_, Infallible>(handle(req, &calls).await) }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tcp), svc)
        .await;
}

async fn handle(req: Request<Incoming>, calls: &Mutex<Vec<Call>>) -> Response<GrpcBody> {
    let path = req.uri().path().to_owned();
    calls.lock().expect("calls lock").push(Call {
        path: path.clone(),
        headers: req.headers().clone(),
    });
    let echo_meta = req.headers().get("x-from").cloned();
    let body = req.into_body();
    match path.as_str() {
        "/weft.test.Echo/Say" => say(body, echo_meta).await,
        "/weft.test.Echo/Chat" => chat(body, echo_meta),
        "/weft.test.Echo/Fail" => {
            let _ = body.collect().await;
            trailers_only(7, "denied")
        }
        _ => trailers_only(12, &format!("no method {path}")),
    }
}

/// Unary: exactly one message in, its reply out.
async fn say(body: Incoming, echo_meta: Option<HeaderValue>) -> Response<GrpcBody> {
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return trailers_only(13, &format!("reading the request: {e}")),
    };
    let mut deframer = Deframer::default();
    deframer.push(&bytes);
    let mut messages = Vec::new();
    while let Some(message) = deframer.next_message() {
        messages.push(message);
    }
    let [message] = messages.as_slice() else {
        let got = messages.len();
        return trailers_only(13, &format!("expected one request message, got {got}"));
    };
    if !deframer.is_empty() {
        return trailers_only(13, "request ended inside a message");
    }
    let frames = [
        Frame::data(frame(&reply_to(message))),
        Frame::trailers(status_trailers(0)),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames.map(Ok)));
    answer(body.boxed(), echo_meta)
}

/// Full duplex: each message answered as soon as it is whole.
fn chat(mut body: Incoming, echo_meta: Option<HeaderValue>) -> Response<GrpcBody> {
    let (tx, mut rx) = mpsc::channel::<Frame<Bytes>>(16);
    tokio::spawn(async move {
        let mut deframer = Deframer::default();
        while let Some(frame_result) = body.frame().await {
            let Ok(Ok(data)) = frame_result.map(Frame::into_data) else {
                // A reset request, or its trailers: nothing to answer.
                continue;
            };
            deframer.push(&data);
            while let Some(message) = deframer.next_message() {
                if tx
                    .send(Frame::data(frame(&reply_to(&message))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        let _ = tx.send(Frame::trailers(status_trailers(0))).await;
    });
    let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|f| f.map(Ok)));
    answer(StreamBody::new(frames).boxed(), echo_meta)
}

/// `<message>-reply`.
fn reply_to(message: &[u8]) -> Vec<u8> {
    [message, b"-reply"].concat()
}

/// HTTP 200 with the gRPC content type and `x-echo-meta`.
fn answer(body: GrpcBody, echo_meta: Option<HeaderValue>) -> Response<GrpcBody> {
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if let Some(meta) = echo_meta {
        headers.insert("x-echo-meta", meta);
    }
    resp
}

fn status_trailers(status: u32) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    trailers
}

/// A response whose headers are its trailers: HTTP 200, no body.
fn trailers_only(status: u32, message: &str) -> Response<GrpcBody> {
    let mut resp = Response::new(Empty::new().boxed());
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.extend(status_trailers(status));
    if let Ok(message) = HeaderValue::from_str(message) {
        headers.insert("grpc-message", message);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{client, stream, within};

    const STEP: Duration = Duration::from_secs(5);

    fn grpc_request<B>(method: &str, body: B) -> Request<B> {
        Request::post(format!("/weft.test.Echo/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-from", "selftest")
            .body(body)
            .expect("a valid request")
    }

    #[tokio::test]
    async fn say_answers_one_reply_and_status_0() {
        let server = EchoServer::start().await.expect("echo server");
        let req = grpc_request("Say", http_body_util::Full::new(frame(b"hi")));
        let reply = within(STEP, "Say", client::h2c(server.addr, req))
            .await
            .expect("Say answered");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/grpc"));
        assert_eq!(reply.header("x-echo-meta"), Some("selftest"));
        assert_eq!(reply.body, frame(b"hi-reply"));
        assert_eq!(reply.trailer("grpc-status"), Some("0"));
        let calls = server.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].path, "/weft.test.Echo/Say");
        assert_eq!(calls[0].header("x-from"), Some("selftest"));
    }

    #[tokio::test]
    async fn fail_and_unknown_methods_answer_trailers_only() {
        let server = EchoServer::start().await.expect("echo server");
        for (method, status, message) in [("Fail", "7", "denied"), ("Nope", "12", "")] {
            let req = grpc_request(method, http_body_util::Full::new(frame(b"x")));
            let reply = within(STEP, method, client::h2c(server.addr, req))
                .await
                .expect("answered");
            assert_eq!(reply.status, 200, "{method}");
            assert_eq!(reply.header("grpc-status"), Some(status), "{method}");
            if !message.is_empty() {
                assert_eq!(reply.header("grpc-message"), Some(message), "{method}");
            }
            assert!(reply.body.is_empty(), "{method}: trailers-only");
            assert_eq!(reply.trailers, None, "{method}: trailers-only");
        }
    }

    #[tokio::test]
    async fn chat_answers_each_message_before_the_next_is_sent() {
        let server = EchoServer::start().await.expect("echo server");
        let (body, pending) = within(
            STEP,
            "opening Chat",
            stream::h2c(server.addr, grpc_request("Chat", ())),
        )
        .await
        .expect("Chat opened");
        let mut deframer = Deframer::default();
        body.send(frame(b"one")).await.expect("send one");
        let mut resp = within(STEP, "Chat headers", pending.response())
            .await
            .expect("Chat response");
        for (sent, expected) in [(None, "one-reply"), (Some("two"), "two-reply")] {
            if let Some(message) = sent {
                body.send(frame(message.as_bytes())).await.expect("send");
            }
            let message = loop {
                if let Some(message) = deframer.next_message() {
                    break message;
                }
                let chunk = resp.chunk_within(STEP).await.expect("a reply chunk");
                deframer.push(&chunk.expect("the reply before the end"));
            };
            assert_eq!(message, expected.as_bytes());
        }
        body.finish();
        let rest = within(STEP, "Chat end", resp.finish())
            .await
            .expect("Chat ends");
        assert!(rest.body.is_empty());
        assert_eq!(rest.trailer("grpc-status"), Some("0"));
    }
}
