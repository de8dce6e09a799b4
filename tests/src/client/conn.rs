//! Keep-alive connections: [`H1Conn`], [`H2Conn`] and [`Conn`] (whichever ALPN chose), each
//! closed when dropped, and the request normalisation described in [`crate::client`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, Version, header};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::{Reply, ReqBody, boxed, get, tcp, tls_connect};
use crate::AbortOnDrop;

/// A request handed to a connection, resolving to the response head.
pub(crate) type SendFuture =
    Pin<Box<dyn Future<Output = hyper::Result<Response<Incoming>>> + Send>>;

/// Spawns a connection driver; the returned receiver turns `true` when the connection ends.
pub(crate) fn drive<F>(conn: F) -> (Arc<AbortOnDrop>, watch::Receiver<bool>)
where
    F: Future + Send + 'static,
{
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let _ = conn.await;
        let _ = tx.send(true);
    });
    (Arc::new(AbortOnDrop(task)), rx)
}

async fn wait_closed(mut closed: watch::Receiver<bool>, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, closed.wait_for(|c| *c))
        .await
        .is_ok()
}

/// A keep-alive HTTP/1.1 connection; closed when dropped.
#[derive(Debug)]
pub struct H1Conn {
    sender: http1::SendRequest<ReqBody>,
    authority: String,
    closed: watch::Receiver<bool>,
    driver: Arc<AbortOnDrop>,
}

impl H1Conn {
    /// Connects over cleartext TCP.
    pub async fn connect(addr: SocketAddr) -> Result<H1Conn> {
        H1Conn::handshake(tcp(addr).await?, addr.to_string()).await
    }

    /// Speaks HTTP/1.1 over any stream; `authority` is the default `host`.
    pub async fn handshake<I>(io: I, authority: String) -> Result<H1Conn>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .context("HTTP/1.1 handshake")?;
        let (driver, closed) = drive(conn);
        Ok(H1Conn {
            sender,
            authority,
            closed,
            driver,
        })
    }

    /// Sends a request and reads the whole response; waits until the connection is free.
    pub async fn send<B>(&mut self, req: Request<B>) -> Result<Reply>
    where
        B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
    {
        Reply::read(self.send_raw(boxed(req)).await?).await
    }

    /// `GET path` with the default `host`.
    pub async fn get(&mut self, path: &str) -> Result<Reply> {
        self.send(get(path)).await
    }

    /// Sends a request and returns the response as soon as its head arrives.
    pub async fn send_raw(&mut self, req: Request<ReqBody>) -> Result<Response<Incoming>> {
        let sent = self.start(req).await?;
        sent.await.context("HTTP/1.1 request failed")
    }

    /// Hands the request to the connection; the returned future yields the response.
    pub(crate) async fn start(&mut self, mut req: Request<ReqBody>) -> Result<SendFuture> {
        prepare_h1(&mut req, &self.authority)?;
        self.sender
            .ready()
            .await
            .context("HTTP/1.1 connection not usable")?;
        Ok(Box::pin(self.sender.send_request(req)))
    }

    /// Whether the connection can no longer carry requests.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed() || *self.closed.borrow()
    }

    /// Waits up to `timeout` for the connection to end; whether it did.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        wait_closed(self.closed.clone(), timeout).await
    }

    pub(crate) fn keepalive(&self) -> Arc<AbortOnDrop> {
        self.driver.clone()
    }
}

/// A keep-alive HTTP/2 connection; `send` takes `&self`, so requests can run concurrently.
#[derive(Clone, Debug)]
pub struct H2Conn {
    sender: http2::SendRequest<ReqBody>,
    scheme: &'static str,
    authority: String,
    closed: watch::Receiver<bool>,
    driver: Arc<AbortOnDrop>,
}

impl H2Conn {
    /// Connects with HTTP/2 prior knowledge over cleartext TCP (h2c).
    pub async fn connect(addr: SocketAddr) -> Result<H2Conn> {
        H2Conn::handshake(tcp(addr).await?, "http", addr.to_string()).await
    }

    /// Speaks HTTP/2 over any stream; `scheme` and `authority` fill relative URIs.
    pub async fn handshake<I>(io: I, scheme: &'static str, authority: String) -> Result<H2Conn>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .context("HTTP/2 handshake")?;
        let (driver, closed) = drive(conn);
        Ok(H2Conn {
            sender,
            scheme,
            authority,
            closed,
            driver,
        })
    }

    /// Sends a request and reads the whole response.
    pub async fn send<B>(&self, req: Request<B>) -> Result<Reply>
    where
        B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
    {
        Reply::read(self.send_raw(boxed(req)).await?).await
    }

    /// `GET path` with the default authority.
    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.send(get(path)).await
    }

    /// Sends a request and returns the response as soon as its head arrives.
    pub async fn send_raw(&self, req: Request<ReqBody>) -> Result<Response<Incoming>> {
        let sent = self.start(req).await?;
        sent.await.context("HTTP/2 request failed")
    }

    /// Opens a stream for the request; the returned future yields the response.
    pub(crate) async fn start(&self, mut req: Request<ReqBody>) -> Result<SendFuture> {
        prepare_h2(&mut req, self.scheme, &self.authority)?;
        let mut sender = self.sender.clone();
        sender
            .ready()
            .await
            .context("HTTP/2 connection not usable")?;
        Ok(Box::pin(sender.send_request(req)))
    }

    /// Whether the connection can no longer open streams (e.g. after GOAWAY).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed() || *self.closed.borrow()
    }

    /// Waits up to `timeout` for the connection to end; whether it did.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        wait_closed(self.closed.clone(), timeout).await
    }

    pub(crate) fn keepalive(&self) -> Arc<AbortOnDrop> {
        self.driver.clone()
    }
}

/// A connection of either version, as ALPN chose it.
#[derive(Debug)]
pub enum Conn {
    /// HTTP/1.1.
    H1(H1Conn),
    /// HTTP/2.
    H2(H2Conn),
}

impl Conn {
    /// Connects with TLS; HTTP/2 if the server chose ALPN `h2`, else HTTP/1.1.
    pub async fn tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Conn> {
        let stream = tls_connect(addr, config, server_name).await?;
        let authority = format!("{server_name}:{}", addr.port());
        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            Ok(Conn::H2(
                H2Conn::handshake(stream, "https", authority).await?,
            ))
        } else {
            Ok(Conn::H1(H1Conn::handshake(stream, authority).await?))
        }
    }

    /// The HTTP version in use.
    pub fn version(&self) -> Version {
        match self {
            Conn::H1(_) => Version::HTTP_11,
            Conn::H2(_) => Version::HTTP_2,
        }
    }

    /// Sends a request and reads the whole response.
    pub async fn send<B>(&mut self, req: Request<B>) -> Result<Reply>
    where
        B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
    {
        match self {
            Conn::H1(c) => c.send(req).await,
            Conn::H2(c) => c.send(req).await,
        }
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<Reply> {
        self.send(get(path)).await
    }

    /// Sends a request and returns the response as soon as its head arrives.
    pub async fn send_raw(&mut self, req: Request<ReqBody>) -> Result<Response<Incoming>> {
        match self {
            Conn::H1(c) => c.send_raw(req).await,
            Conn::H2(c) => c.send_raw(req).await,
        }
    }

    pub(crate) async fn start(&mut self, req: Request<ReqBody>) -> Result<SendFuture> {
        match self {
            Conn::H1(c) => c.start(req).await,
            Conn::H2(c) => c.start(req).await,
        }
    }

    pub(crate) fn keepalive(&self) -> Arc<AbortOnDrop> {
        match self {
            Conn::H1(c) => c.keepalive(),
            Conn::H2(c) => c.keepalive(),
        }
    }
}

fn prepare_h1(req: &mut Request<ReqBody>, authority: &str) -> Result<()> {
    if !req.headers().contains_key(header::HOST) {
        let host = req
            .uri()
            .authority()
            .map_or(authority.to_string(), |a| a.to_string());
        let host = HeaderValue::from_str(&host).with_context(|| format!("bad host {host:?}"))?;
        req.headers_mut().insert(header::HOST, host);
    }
    if req.uri().scheme().is_some() {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = path.parse().context("origin-form request target")?;
    }
    if req.version() == Version::HTTP_2 {
        *req.version_mut() = Version::HTTP_11;
    }
    Ok(())
}

fn prepare_h2(req: &mut Request<ReqBody>, scheme: &str, authority: &str) -> Result<()> {
    if req.uri().authority().is_none() {
        let host = match req.headers_mut().remove(header::HOST) {
            Some(h) => h.to_str().context("non-ASCII host header")?.to_string(),
            None => authority.to_string(),
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = format!("{scheme}://{host}{path}")
            .parse()
            .context("HTTP/2 request URI")?;
        *req.uri_mut() = uri;
    }
    if req.uri().scheme().is_none() {
        bail!("an HTTP/2 request URI needs a scheme: {}", req.uri());
    }
    *req.version_mut() = Version::HTTP_2;
    Ok(())
}
