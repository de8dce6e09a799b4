//! Upstream connections: establishing them (TCP, then TLS with ALPN), and keeping them — idle
//! HTTP/1.1 connections in a per-endpoint stack (probed before reuse), one shared multiplexed
//! HTTP/2 connection. A request is handed back untouched when it could not be sent, so the
//! caller may retry it elsewhere.

use std::{net::SocketAddr, sync::Arc, sync::Mutex, time::Duration};

use http::{Request, Response};
use hyper::{body::Incoming, client::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::h1::{self, Failure, UpstreamBody};
use crate::{config::resolved::UpstreamProtocol, http::body::ProxyBody};

/// How to reach a cluster's endpoints.
#[derive(Clone)]
pub struct ConnectSpec {
    /// Protocol to speak.
    pub protocol: UpstreamProtocol,
    /// TCP + TLS deadline.
    pub timeout: Duration,
    /// TLS client configuration and the SNI override.
    pub tls: Option<(Arc<rustls::ClientConfig>, crate::config::ClientTlsConfig)>,
}

/// A freshly established connection.
enum Conn {
    Http1(h1::Connection),
    Http2(http2::SendRequest<ProxyBody>),
}

/// A response as it arrived, by protocol.
pub enum Exchanged {
    /// From an HTTP/1.1 connection; its body returns the connection when done.
    Http1(Response<UpstreamBody>),
    /// From the shared HTTP/2 connection.
    Http2(Response<Incoming>),
}

/// Why an exchange failed after the request went out.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// On an HTTP/1.1 connection.
    #[error(transparent)]
    Http1(#[from] h1::Error),
    /// On the HTTP/2 connection.
    #[error(transparent)]
    Http2(#[from] hyper::Error),
}

/// Why a request could not be sent.
pub enum SendError {
    /// Nothing was written; the request comes back for a retry elsewhere.
    NotSent {
        /// The untouched request.
        request: Box<Request<ProxyBody>>,
        /// Why.
        reason: String,
    },
    /// The request was (at least partly) written, then the exchange failed.
    Failed {
        /// What failed.
        error: ExchangeError,
        /// Whether the connection was opened for this request (a TLS 1.3 server refusing our
        /// client certificate only says so after the handshake, on the first read).
        fresh: bool,
    },
}

/// Connections to one endpoint.
pub struct Pool {
    idle: Mutex<Vec<h1::Connection>>,
    shared: tokio::sync::Mutex<Option<http2::SendRequest<ProxyBody>>>,
    max_idle: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle_count())
            .field("max_idle", &self.max_idle)
            .finish()
    }
}

impl Pool {
    /// An empty pool keeping at most `max_idle` idle HTTP/1.1 connections.
    pub fn new(max_idle: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            shared: tokio::sync::Mutex::new(None),
            max_idle,
        }
    }

    /// Idle HTTP/1.1 connections.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }

    /// Drops every idle connection (after an ejection, say).
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Returns an HTTP/1.1 connection whose exchange ended cleanly.
    pub fn put_back(&self, conn: h1::Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(conn);
        }
    }

    fn take_idle(&self) -> Option<h1::Connection> {
        loop {
            let mut conn = self.idle.lock().ok()?.pop()?;
            if conn.is_reusable() {
                return Some(conn);
            }
        }
    }

    /// Sends `request` on a pooled connection, or on a new one. `on_connect` is called for each
    /// new connection established.
    pub async fn send(
        &self,
        host: &str,
        port: u16,
        spec: &ConnectSpec,
        mut request: Request<ProxyBody>,
        on_connect: impl Fn(),
    ) -> Result<Exchanged, SendError> {
        // The connecting paths are boxed: a new connection (TCP, TLS, an HTTP/2 handshake) is
        // rare next to a pooled one, and inline its futures would make the future of every
        // request kilobytes larger — built, and moved, per request.
        if spec.protocol == UpstreamProtocol::Http2 {
            match self.shared_h2(host, port, spec, &on_connect).await {
                Ok(Some(sender)) => return send_h2(sender, request).await,
                Ok(None) => {} // TLS negotiated HTTP/1.1: fall through.
                Err(reason) => {
                    return Err(SendError::NotSent {
                        request: Box::new(request),
                        reason,
                    });
                }
            }
        }
        loop {
            let (conn, reused) = match self.take_idle() {
                Some(conn) => (conn, true),
                None => match Box::pin(connect(host, port, spec)).await {
                    Ok(Conn::Http1(conn)) => {
                        on_connect();
                        (conn, false)
                    }
                    Ok(Conn::Http2(sender)) => {
                        on_connect();
                        return send_h2(sender, request).await;
                    }
                    Err(reason) => {
                        return Err(SendError::NotSent {
                            request: Box::new(request),
                            reason,
                        });
                    }
                },
            };
            match h1::send(conn, request, reused).await {
                Ok(response) => return Ok(Exchanged::Http1(response)),
                // A pooled connection closed under us: try another, or a fresh one.
                Err(Failure::NotSent(unsent, _)) if reused => request = *unsent,
                Err(Failure::NotSent(unsent, error)) => {
                    return Err(SendError::NotSent {
                        request: unsent,
                        reason: error.to_string(),
                    });
                }
                Err(Failure::Failed(error)) => {
                    return Err(SendError::Failed {
                        error: error.into(),
                        fresh: !reused,
                    });
                }
            }
        }
    }

    /// The shared HTTP/2 connection, established if needed; `None` when TLS negotiation chose
    /// HTTP/1.1 (the new connection then goes to the idle pool).
    async fn shared_h2(
        &self,
        host: &str,
        port: u16,
        spec: &ConnectSpec,
        on_connect: &impl Fn(),
    ) -> Result<Option<http2::SendRequest<ProxyBody>>, String> {
        let mut shared = self.shared.lock().await;
        if let Some(sender) = shared.as_ref().filter(|s| !s.is_closed()) {
            return Ok(Some(sender.clone()));
        }
        *shared = None;
        let conn = Box::pin(connect(host, port, spec)).await?;
        on_connect();
        match conn {
            Conn::Http2(sender) => {
                *shared = Some(sender.clone());
                Ok(Some(sender))
            }
            Conn::Http1(conn) => {
                self.put_back(conn);
                Ok(None)
            }
        }
    }
}

async fn send_h2(
    mut sender: http2::SendRequest<ProxyBody>,
    request: Request<ProxyBody>,
) -> Result<Exchanged, SendError> {
    match sender.try_send_request(request).await {
        Ok(response) => Ok(Exchanged::Http2(response)),
        Err(mut error) => match error.take_message() {
            Some(unsent) => Err(SendError::NotSent {
                request: Box::new(unsent),
                reason: error.into_error().to_string(),
            }),
            None => Err(SendError::Failed {
                error: error.into_error().into(),
                fresh: false,
            }),
        },
    }
}

/// Opens a connection within the spec's deadline: resolve, TCP, TLS, and for HTTP/2 the
/// connection preface.
async fn connect(host: &str, port: u16, spec: &ConnectSpec) -> Result<Conn, String> {
    let attempt = async {
        let addr = resolve(host, port).await?;
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        match &spec.tls {
            None if spec.protocol == UpstreamProtocol::Http2 => handshake_h2(tcp).await,
            None => Ok(Conn::Http1(h1::Connection::new(h1::Stream::Plain(tcp)))),
            Some((config, tls)) => {
                let name = crate::tls::server_name(tls, host).map_err(|e| e.to_string())?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    handshake_h2(stream).await
                } else {
                    Ok(Conn::Http1(h1::Connection::new(h1::Stream::Tls(Box::new(
                        stream,
                    )))))
                }
            }
        }
    };
    match tokio::time::timeout(spec.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("connect timeout after {:?}", spec.timeout)),
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

async fn handshake_h2<I>(io: I) -> Result<Conn, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
        }
    });
    Ok(Conn::Http2(sender))
}
