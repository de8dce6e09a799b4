//! A lean HTTP/1.1 client for upstream connections, driven entirely from the request's own task:
//! the request head is written, the body pumped and the response read on the one connection,
//! with no connection task, channel or cross-task wakeup in between — the proxy's hottest path.
//! Parsing is `httparse`'s; framing follows RFC 9112. HTTP/2 upstreams use hyper.
//!
//! A [`Connection`] is exclusive to one exchange at a time. [`send`] returns the response as soon
//! as its head is read; its [`UpstreamBody`] streams the rest and hands the connection back
//! (through a release callback) when the exchange ended cleanly and the connection may be reused.

pub mod decode;
pub mod encode;

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use bytes::BytesMut;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use tokio_util::io::poll_read_buf;

use self::{
    decode::{Decoded, Decoder, Head, Malformed},
    encode::{BodyPump, Framing},
};
use crate::http::body::{BoxError, ProxyBody};

/// A plaintext or TLS upstream stream.
pub enum Stream {
    /// TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An HTTP/1.1 connection to an upstream endpoint.
pub struct Connection {
    stream: Stream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The encoded request head, kept to reuse its allocation.
    out: Vec<u8>,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The response was not valid HTTP/1.1.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The connection failed while reading or writing.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before a complete response head.
    #[error("connection closed before the response head")]
    Closed,
}

/// The outcome of a failed [`send`].
pub enum Failure {
    /// Nothing of the request reached the upstream (or a reused connection turned out closed
    /// before it could have processed it): the request comes back to be sent elsewhere.
    NotSent(Box<Request<ProxyBody>>, Error),
    /// The exchange failed after the request (or part of it) went out.
    Failed(Error),
}

impl Connection {
    /// A connection over an established stream.
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            out: Vec::with_capacity(512),
        }
    }

    /// Whether an idle connection can carry another request: not closed by the upstream and
    /// with no unsolicited bytes waiting. Never blocks.
    pub fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        matches!(
            poll_read_buf(Pin::new(&mut self.stream), &mut cx, &mut self.buf),
            Poll::Pending
        )
    }
}

/// Methods a client may repeat without changing the outcome (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Sends `request` on `conn` and reads the response head. `reused` says whether the connection
/// was taken from the pool: a bodiless idempotent request that finds a pooled connection closed
/// before any response byte comes back as [`Failure::NotSent`] for another try.
pub async fn send(
    mut conn: Connection,
    request: Request<ProxyBody>,
    reused: bool,
) -> Result<Response<UpstreamBody>, Failure> {
    let (parts, body) = request.into_parts();
    let empty = body.is_end_stream();
    let mut out = std::mem::take(&mut conn.out);
    out.clear();
    let framing = encode::encode_head(&parts, empty, &mut out);
    let written = async {
        conn.stream.write_all(&out).await?;
        if empty {
            conn.stream.flush().await
        } else {
            Ok(())
        }
    }
    .await;
    conn.out = out;
    if let Err(e) = written {
        return Err(Failure::NotSent(
            Box::new(Request::from_parts(parts, body)),
            e.into(),
        ));
    }

    let method = parts.method.clone();
    let mut pump = (framing != Framing::Empty).then(|| BodyPump::new(body, framing));
    let mut received = false;
    let head = poll_fn(|cx| read_head(&mut conn, &mut pump, &method, &mut received, cx)).await;
    match head {
        Ok(Head {
            response,
            framing,
            keep_alive,
        }) => Ok(response.map(|()| UpstreamBody {
            decoder: Decoder::new(framing),
            conn: Some(conn),
            pump,
            keep_alive,
            release: None,
        })),
        Err(error) => {
            let stale = reused
                && !received
                && empty
                && idempotent(&method)
                && matches!(error, Error::Closed | Error::Io(_));
            if stale {
                let retry =
                    Request::from_parts(parts, crate::http::body::full(bytes::Bytes::new()));
                Err(Failure::NotSent(Box::new(retry), error))
            } else {
                Err(Failure::Failed(error))
            }
        }
    }
}

fn read_head(
    conn: &mut Connection,
    pump: &mut Option<BodyPump>,
    method: &Method,
    received: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Result<Head, Error>> {
    // The body goes up while the response comes down: an upstream may answer before it has read
    // everything, or echo the body as it arrives.
    pump_request(pump, &mut conn.stream, cx)?;
    loop {
        if !conn.buf.is_empty()
            && let Some(head) = decode::parse_head(&mut conn.buf, method)?
        {
            return Poll::Ready(Ok(head));
        }
        match poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(Error::Closed)),
            Poll::Ready(Ok(_)) => *received = true,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
        }
    }
}

/// Writes what is available of the request body, if one is still going up; the pump is
/// dropped once the body is done (or failed).
fn pump_request(
    pump: &mut Option<BodyPump>,
    stream: &mut Stream,
    cx: &mut Context<'_>,
) -> io::Result<()> {
    if let Some(p) = pump.as_mut()
        && let Poll::Ready(done) = p.poll_pump(stream, cx)
    {
        *pump = None;
        done?;
    }
    Ok(())
}

/// What to do with the connection once a response is over: `Some` when it may be reused.
pub type Release = Box<dyn FnOnce(Option<Connection>) + Send>;

/// A response body read from an upstream connection (pumping the rest of the request body
/// meanwhile, if any).
pub struct UpstreamBody {
    conn: Option<Connection>,
    decoder: Decoder,
    pump: Option<BodyPump>,
    keep_alive: bool,
    release: Option<Release>,
}

impl UpstreamBody {
    /// Sets what happens to the connection when the body ends or is dropped.
    pub fn on_release(&mut self, release: Release) {
        self.release = Some(release);
    }

    fn finish(&mut self, clean: bool) {
        let conn = self.conn.take();
        let reusable = clean
            && self.keep_alive
            && self.pump.is_none()
            && conn.as_ref().is_some_and(|c| c.buf.is_empty());
        self.pump = None;
        if let Some(release) = self.release.take() {
            release(conn.filter(|_| reusable));
        }
    }

    fn fail(
        &mut self,
        error: impl Into<BoxError>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        self.finish(false);
        Poll::Ready(Some(Err(error.into())))
    }
}

impl Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Err(e) = pump_request(&mut this.pump, &mut conn.stream, cx) {
            return this.fail(e);
        }
        loop {
            let decoded = match this.decoder.decode(&mut conn.buf) {
                Ok(decoded) => decoded,
                Err(e) => return this.fail(e),
            };
            match decoded {
                Decoded::Data(data) => {
                    if this.decoder.is_done() {
                        this.finish(true);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::Trailers(trailers) => {
                    this.finish(true);
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Decoded::End => {
                    this.finish(true);
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => {
                    match poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(0)) => {
                            return match this.decoder.at_eof() {
                                Ok(()) => {
                                    // Closed by the upstream: the body is complete, the connection is not.
                                    this.finish(false);
                                    Poll::Ready(None)
                                }
                                Err(e) => this.fail(e),
                            };
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return this.fail(e),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body hyper never polled because it was empty is a clean end too.
        let clean = self.decoder.is_done();
        self.finish(clean);
    }
}
