//! Upstream connections: establishing them (TCP, then TLS with ALPN), and keeping them — idle
//! HTTP/1.1 connections in a per-endpoint stack, one shared multiplexed HTTP/2 connection.
//! A request is handed back untouched when it could not be written, so the caller may retry it.

use std::{net::SocketAddr, sync::Arc, sync::Mutex, time::Duration};

use http::{Request, Response};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

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

/// A connection able to carry a request.
pub enum Conn {
    /// An HTTP/1.1 connection, exclusive to one request at a time.
    Http1(http1::SendRequest<ProxyBody>),
    /// A handle on a shared HTTP/2 connection.
    Http2(http2::SendRequest<ProxyBody>),
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
        error: hyper::Error,
        /// Whether the connection was opened for this request (a TLS 1.3 server refusing our
        /// client certificate only says so after the handshake, on the first read).
        fresh: bool,
    },
}

/// Connections to one endpoint.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Vec<http1::SendRequest<ProxyBody>>>,
    shared: tokio::sync::Mutex<Option<http2::SendRequest<ProxyBody>>>,
    max_idle: usize,
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

    /// Returns an HTTP/1.1 connection whose response has been fully read.
    pub fn put_back(&self, sender: http1::SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(sender);
        }
    }

    fn take_idle(&self) -> Option<http1::SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Sends `request` on a pooled connection, or on a new one. Returns the response and, for
    /// HTTP/1.1, the connection to put back once the response body is done. `on_connect` is
    /// called for each new connection established.
    pub async fn send(
        &self,
        host: &str,
        port: u16,
        spec: &ConnectSpec,
        mut request: Request<ProxyBody>,
        on_connect: impl Fn(),
    ) -> Result<(Response<Incoming>, Option<http1::SendRequest<ProxyBody>>), SendError> {
        loop {
            let (conn, reused) = match self.checkout(host, port, spec, &on_connect).await {
                Ok(found) => found,
                Err(reason) => {
                    return Err(SendError::NotSent {
                        request: Box::new(request),
                        reason,
                    });
                }
            };
            let result = match conn {
                Conn::Http1(mut sender) => match sender.try_send_request(request).await {
                    Ok(response) => return Ok((response, Some(sender))),
                    Err(e) => e,
                },
                Conn::Http2(mut sender) => match sender.try_send_request(request).await {
                    Ok(response) => return Ok((response, None)),
                    Err(e) => e,
                },
            };
            let mut error = result;
            match error.take_message() {
                // A pooled connection closed under us before anything was written: try a fresh one.
                Some(unsent) if reused => request = unsent,
                Some(unsent) => {
                    return Err(SendError::NotSent {
                        request: Box::new(unsent),
                        reason: error.into_error().to_string(),
                    });
                }
                None => {
                    return Err(SendError::Failed {
                        error: error.into_error(),
                        fresh: !reused,
                    });
                }
            }
        }
    }

    async fn checkout(
        &self,
        host: &str,
        port: u16,
        spec: &ConnectSpec,
        on_connect: &impl Fn(),
    ) -> Result<(Conn, bool), String> {
        if spec.protocol == UpstreamProtocol::Http2 {
            let mut shared = self.shared.lock().await;
            if let Some(sender) = shared.as_ref().filter(|s| !s.is_closed()) {
                return Ok((Conn::Http2(sender.clone()), true));
            }
            *shared = None;
            let conn = connect(host, port, spec).await?;
            on_connect();
            if let Conn::Http2(sender) = &conn {
                *shared = Some(sender.clone());
            }
            return Ok((conn, false));
        }
        if let Some(mut sender) = self.take_idle()
            && sender.ready().await.is_ok()
        {
            return Ok((Conn::Http1(sender), true));
        }
        let conn = connect(host, port, spec).await?;
        on_connect();
        Ok((conn, false))
    }
}

/// Opens a connection within the spec's deadline: resolve, TCP, TLS, HTTP handshake.
async fn connect(host: &str, port: u16, spec: &ConnectSpec) -> Result<Conn, String> {
    let attempt = async {
        let addr = resolve(host, port).await?;
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        match &spec.tls {
            None => handshake(tcp, spec.protocol == UpstreamProtocol::Http2).await,
            Some((config, tls)) => {
                let name = crate::tls::server_name(tls, host).map_err(|e| e.to_string())?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                handshake(stream, h2).await
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

async fn handshake<I>(io: I, h2: bool) -> Result<Conn, String>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        Ok(Conn::Http2(sender))
    } else {
        let (sender, connection) = http1::Builder::new()
            .writev(false)
            .handshake(io)
            .await
            .map_err(|e| format!("HTTP/1.1 handshake failed: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(Conn::Http1(sender))
    }
}
