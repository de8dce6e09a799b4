//! A test client on hyper 1's connection APIs: one-shot calls ([`h1`], [`h2c`], [`tls`]) that
//! open a connection per request, and keep-alive connections ([`H1Conn`], [`H2Conn`], [`Conn`])
//! for tests that need several requests — or a streamed request body, see [`crate::stream`] —
//! on one connection.
//!
//! Requests are normalised before sending: HTTP/1.1 gets a `host` header (from the URI's
//! authority, else the address dialled) and an origin-form target; HTTP/2 gets an absolute URI
//! whose authority is taken from the `host` header (which is then removed), else the address.
//! Over HTTP/1.1 hyper only delivers response trailers when the request says `te: trailers`,
//! and only sends request trailers that are declared in a `trailer` header.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Version};
use http_body::Body;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

mod conn;

pub(crate) use conn::SendFuture;
pub use conn::{Conn, H1Conn, H2Conn};

/// The request body type every connection sends (a boxed, infallible body).
pub type ReqBody = BoxBody<Bytes, Infallible>;

/// A fully read response.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The trailers, if any arrived.
    pub trailers: Option<HeaderMap>,
    /// The HTTP version the response came over.
    pub version: Version,
}

impl Reply {
    /// The body parsed as JSON; panics with the body in the message if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}: {}",
                self.status,
                self.text()
            )
        })
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A response header's value as a string, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A trailer's value as a string, if present.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()?
            .get(name)
            .and_then(|v| v.to_str().ok())
    }

    /// Reads a streaming response to the end.
    pub async fn read(resp: Response<Incoming>) -> Result<Reply> {
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.context("reading the response body")?;
        let trailers = collected.trailers().cloned();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
            version: parts.version,
        })
    }
}

/// A GET request for `path` (which may carry a query).
pub fn get(path: &str) -> Request<Full<Bytes>> {
    request(Method::GET, path, Bytes::new())
}

/// A POST request for `path` with `body`.
pub fn post(path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    request(Method::POST, path, body)
}

/// A request with any method; add headers through `headers_mut()`.
pub fn request(method: Method, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body.into()));
    *req.method_mut() = method;
    *req.uri_mut() = path
        .parse()
        .unwrap_or_else(|e| panic!("bad request path {path:?}: {e}"));
    req
}

fn boxed<B>(req: Request<B>) -> Request<ReqBody>
where
    B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
{
    req.map(|b| b.boxed())
}

/// One request on a fresh HTTP/1.1 connection, closed afterwards.
pub async fn h1<B>(addr: SocketAddr, req: Request<B>) -> Result<Reply>
where
    B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
{
    H1Conn::connect(addr).await?.send(req).await
}

/// One request on a fresh h2c (HTTP/2 prior knowledge) connection, closed afterwards.
pub async fn h2c<B>(addr: SocketAddr, req: Request<B>) -> Result<Reply>
where
    B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
{
    H2Conn::connect(addr).await?.send(req).await
}

/// One request on a fresh cleartext connection of `version`: h2c for `HTTP/2`, else HTTP/1.1.
pub async fn cleartext<B>(addr: SocketAddr, version: Version, req: Request<B>) -> Result<Reply>
where
    B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
{
    match version {
        Version::HTTP_2 => h2c(addr, req).await,
        _ => h1(addr, req).await,
    }
}

/// One request over a fresh TLS connection; HTTP/2 if ALPN chose `h2`, else HTTP/1.1.
pub async fn tls<B>(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
    req: Request<B>,
) -> Result<Reply>
where
    B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
{
    Conn::tls(addr, config, server_name).await?.send(req).await
}

/// Opens a TCP connection (with `TCP_NODELAY`).
pub async fn tcp(addr: SocketAddr) -> Result<TcpStream> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Connects and completes a TLS handshake (the server may still reject a client certificate
/// afterwards: in TLS 1.3 that shows on the first read).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_string())
        .with_context(|| format!("bad TLS server name {server_name:?}"))?;
    let tcp = tcp(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr} as {server_name}"))
}

/// The leaf certificate a TLS server at `addr` presents.
pub async fn peer_certificate(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Result<CertificateDer<'static>> {
    let tls = tls_connect(addr, config, server_name).await?;
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .context("no server certificate")?;
    Ok(certs
        .first()
        .context("an empty server certificate chain")?
        .clone()
        .into_owned())
}
