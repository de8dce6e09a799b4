//! Streaming requests: a request body fed chunk by chunk from the test through a channel
//! (`StreamBody` over a tokio `mpsc`), and a response read chunk by chunk, so a test can prove
//! that bodies flow without being buffered — send chunk 1, see it echoed, only then send chunk 2
//! — and that trailers travel both ways.
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr) -> anyhow::Result<()> {
//! use std::time::Duration;
//! let req = http::Request::post("/echo").body(())?;
//! let (body, pending) = weft_e2e::stream::h2c(addr, req).await?;
//! body.send("one").await?;
//! let mut resp = pending.response().await?;
//! assert_eq!(resp.chunk_within(Duration::from_secs(2)).await?.as_deref(), Some(&b"one"[..]));
//! body.finish();
//! # Ok(()) }
//! ```

use std::any::Any;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http::{HeaderMap, Request, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{Conn, H1Conn, H2Conn, Reply, ReqBody, SendFuture};

/// The test's end of a streamed request body.
#[derive(Debug)]
pub struct BodySender {
    tx: mpsc::Sender<Frame<Bytes>>,
}

impl BodySender {
    /// Sends one data chunk; fails once the request is gone (reset, or connection closed).
    pub async fn send(&self, chunk: impl Into<Bytes>) -> Result<()> {
        self.tx
            .send(Frame::data(chunk.into()))
            .await
            .map_err(|_| anyhow!("the request body is no longer being read"))
    }

    /// Sends trailers and ends the body. Over HTTP/1.1 the request must declare the trailer
    /// names in a `trailer` header.
    pub async fn trailers(self, trailers: HeaderMap) -> Result<()> {
        self.tx
            .send(Frame::trailers(trailers))
            .await
            .map_err(|_| anyhow!("the request body is no longer being read"))
    }

    /// Ends the body.
    pub fn finish(self) {}
}

/// A body fed from a [`BodySender`].
pub fn channel_body() -> (BodySender, ReqBody) {
    let (tx, mut rx) = mpsc::channel::<Frame<Bytes>>(16);
    let frames = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|f| f.map(Ok::<_, Infallible>))
    });
    (BodySender { tx }, StreamBody::new(frames).boxed())
}

type Keepalive = Box<dyn Any + Send>;

/// A response that has not arrived yet; the request keeps going in the background.
#[derive(Debug)]
pub struct PendingResponse {
    task: JoinHandle<Result<hyper::Response<Incoming>>>,
    keepalive: Option<KeepaliveBox>,
}

struct KeepaliveBox {
    _held: Keepalive,
}

impl std::fmt::Debug for KeepaliveBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keepalive")
    }
}

impl Drop for PendingResponse {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PendingResponse {
    fn spawn(sent: SendFuture, keepalive: Keepalive) -> PendingResponse {
        let task = tokio::spawn(async move { sent.await.context("request failed") });
        PendingResponse {
            task,
            keepalive: Some(KeepaliveBox { _held: keepalive }),
        }
    }

    /// Waits for the response head.
    pub async fn response(mut self) -> Result<StreamingResponse> {
        let resp = (&mut self.task).await.context("the request task died")??;
        let (parts, body) = resp.into_parts();
        Ok(StreamingResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            version: parts.version,
            body,
            trailers: None,
            _keepalive: self.keepalive.take(),
        })
    }

    /// Waits up to `timeout` for the response head.
    pub async fn response_within(self, timeout: Duration) -> Result<StreamingResponse> {
        tokio::time::timeout(timeout, self.response())
            .await
            .map_err(|_| anyhow!("no response head within {timeout:?}"))?
    }

    /// Whether the response head has arrived (or the request failed).
    pub fn is_ready(&self) -> bool {
        self.task.is_finished()
    }
}

/// A response whose body is read chunk by chunk.
#[derive(Debug)]
pub struct StreamingResponse {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The HTTP version.
    pub version: Version,
    body: Incoming,
    trailers: Option<HeaderMap>,
    _keepalive: Option<KeepaliveBox>,
}

impl StreamingResponse {
    /// The next data chunk as it arrived, or `None` at the end of the body (trailers, if any, are
    /// then in [`StreamingResponse::trailers`]).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        while let Some(frame) = self.body.frame().await {
            let frame = frame.context("reading the response body")?;
            match frame.into_data() {
                Ok(data) if data.is_empty() => continue,
                Ok(data) => return Ok(Some(data)),
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        self.trailers.get_or_insert_with(HeaderMap::new).extend(t);
                    }
                }
            }
        }
        Ok(None)
    }

    /// [`StreamingResponse::chunk`], failing if nothing arrives within `timeout`.
    pub async fn chunk_within(&mut self, timeout: Duration) -> Result<Option<Bytes>> {
        tokio::time::timeout(timeout, self.chunk())
            .await
            .map_err(|_| anyhow!("no response chunk within {timeout:?}"))?
    }

    /// The trailers, once the body has been read to the end.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref()
    }

    /// Reads the rest of the body; the [`Reply`] holds only what was not read yet.
    pub async fn finish(mut self) -> Result<Reply> {
        let mut rest = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            rest.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status: self.status,
            headers: self.headers,
            body: rest.into(),
            trailers: self.trailers,
            version: self.version,
        })
    }
}

impl H1Conn {
    /// Starts a request whose body the test feeds through the returned [`BodySender`].
    pub async fn stream(&mut self, req: Request<()>) -> Result<(BodySender, PendingResponse)> {
        let (tx, body) = channel_body();
        let sent = self.start(req.map(|()| body)).await?;
        Ok((tx, PendingResponse::spawn(sent, Box::new(self.keepalive()))))
    }
}

impl H2Conn {
    /// Starts a request whose body the test feeds through the returned [`BodySender`].
    pub async fn stream(&self, req: Request<()>) -> Result<(BodySender, PendingResponse)> {
        let (tx, body) = channel_body();
        let sent = self.start(req.map(|()| body)).await?;
        Ok((tx, PendingResponse::spawn(sent, Box::new(self.clone()))))
    }
}

impl Conn {
    /// Starts a request whose body the test feeds through the returned [`BodySender`].
    pub async fn stream(&mut self, req: Request<()>) -> Result<(BodySender, PendingResponse)> {
        let (tx, body) = channel_body();
        let sent = self.start(req.map(|()| body)).await?;
        let keepalive: Arc<crate::AbortOnDrop> = self.keepalive();
        Ok((tx, PendingResponse::spawn(sent, Box::new(keepalive))))
    }
}

/// A streamed request on a fresh HTTP/1.1 connection, closed when the response is dropped.
pub async fn h1(addr: SocketAddr, req: Request<()>) -> Result<(BodySender, PendingResponse)> {
    let mut conn = H1Conn::connect(addr).await?;
    let (tx, body) = channel_body();
    let sent = conn.start(req.map(|()| body)).await?;
    Ok((tx, PendingResponse::spawn(sent, Box::new(conn))))
}

/// A streamed request on a fresh h2c connection, closed when the response is dropped.
pub async fn h2c(addr: SocketAddr, req: Request<()>) -> Result<(BodySender, PendingResponse)> {
    H2Conn::connect(addr).await?.stream(req).await
}

/// A streamed request on a fresh TLS connection (HTTP/2 if ALPN chose it).
pub async fn tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
    req: Request<()>,
) -> Result<(BodySender, PendingResponse)> {
    let mut conn = Conn::tls(addr, config, server_name).await?;
    let (tx, body) = channel_body();
    let sent = conn.start(req.map(|()| body)).await?;
    Ok((tx, PendingResponse::spawn(sent, Box::new(conn))))
}
