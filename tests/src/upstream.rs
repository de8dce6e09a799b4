//! Real hyper upstream servers for tests. What an upstream does is chosen by the request path:
//!
//! | path | response |
//! |---|---|
//! | any other | 200, JSON describing the request (see [`Upstream`]) after reading the whole body |
//! | `/echo` | 200, the request body streamed back frame by frame, request trailers as response trailers |
//! | `/trailers` | 200, body `ok`, trailer `x-checksum: abc123` |
//! | `/status/<code>` | that status (JSON body unless the status forbids one) |
//! | `/delay/<ms>` | sleeps, then the JSON answer |
//! | `/stream/<n>` | `n` chunks of `chunk\n`, 50 ms apart |
//!
//! Every response carries `x-upstream: <name>` and `x-upstream-protocol: HTTP/1.1|HTTP/2`.
//! Over HTTP/1.1, hyper sends response trailers only if the request carried `te: trailers`;
//! `/echo` copies the request's `trailer` header so declared trailers can flow back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::certs::TestPki;

mod respond;

/// The body type of upstream responses.
pub type RespBody = BoxBody<Bytes, hyper::Error>;

/// Which protocols an upstream speaks.
#[derive(Clone, Debug)]
pub enum Protocol {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 with prior knowledge, cleartext.
    H2c,
    /// HTTP/1.1 and h2c, told apart by the connection preface.
    Auto,
    /// TLS with this configuration, then HTTP/1.1 or HTTP/2 (ALPN `h2` / `http/1.1`).
    Tls(Arc<rustls::ServerConfig>),
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicUsize,
    connections: AtomicUsize,
}

/// A running (or stopped, see [`Upstream::down`]) test upstream.
///
/// The default JSON answer is `{"upstream", "method", "path" (with query), "version"
/// ("HTTP/1.1"|"HTTP/2"), "headers" (lowercase name → string, or array when repeated),
/// "body_len", "client_cert" (a TLS client certificate was presented), "peer" (the client's
/// `ip:port`), "connection" (1-based ordinal of the TCP connection)}`.
#[derive(Debug)]
pub struct Upstream {
    /// Where it listens; kept across [`Upstream::restart`].
    pub addr: SocketAddr,
    /// Its name, echoed as `x-upstream` and in the JSON body.
    pub name: String,
    protocol: Protocol,
    counters: Arc<Counters>,
    task: Option<JoinHandle<()>>,
}

impl Upstream {
    /// An HTTP/1.1 upstream on a fresh port.
    pub async fn http1(name: &str) -> Result<Upstream> {
        Self::start(Protocol::Http1, name, loopback()).await
    }

    /// An HTTP/2 prior-knowledge (h2c) upstream on a fresh port.
    pub async fn h2c(name: &str) -> Result<Upstream> {
        Self::start(Protocol::H2c, name, loopback()).await
    }

    /// An upstream speaking both HTTP/1.1 and h2c on a fresh port.
    pub async fn auto(name: &str) -> Result<Upstream> {
        Self::start(Protocol::Auto, name, loopback()).await
    }

    /// A TLS upstream (ALPN `h2`, `http/1.1`) serving `pki`'s server certificate as it is on disk
    /// at each handshake; requests client certificates and requires them if asked.
    pub async fn tls(name: &str, pki: &TestPki, require_client_cert: bool) -> Result<Upstream> {
        let config = pki.server_config(&[b"h2", b"http/1.1"], require_client_cert);
        Self::start(Protocol::Tls(config), name, loopback()).await
    }

    /// An HTTP/1.1 upstream on a chosen address (e.g. the port of one that was stopped).
    pub async fn http1_on(addr: SocketAddr, name: &str) -> Result<Upstream> {
        Self::start(Protocol::Http1, name, addr).await
    }

    /// An upstream of any protocol on `addr` (`127.0.0.1:0` for a fresh port).
    pub async fn start(protocol: Protocol, name: &str, addr: SocketAddr) -> Result<Upstream> {
        let mut upstream = Upstream {
            addr,
            name: name.to_string(),
            protocol,
            counters: Arc::default(),
            task: None,
        };
        upstream.up().await?;
        Ok(upstream)
    }

    async fn up(&mut self) -> Result<()> {
        let listener = bind_retrying(self.addr).await?;
        self.addr = listener
            .local_addr()
            .context("reading the upstream address")?;
        let ctx = Arc::new(Shared {
            name: self.name.clone(),
            protocol: self.protocol.clone(),
            counters: self.counters.clone(),
        });
        self.task = Some(tokio::spawn(accept_loop(listener, ctx)));
        Ok(())
    }

    /// Total requests served, across restarts.
    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Total TCP connections accepted, across restarts.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Whether it is currently listening.
    pub fn is_up(&self) -> bool {
        self.task.is_some()
    }

    /// Stops listening and closes every open connection at once (no goodbye), like a crashed
    /// endpoint. The address is kept for [`Upstream::restart`].
    pub async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same address (after [`Upstream::down`], or stops first if running).
    pub async fn restart(&mut self) -> Result<()> {
        self.down().await;
        self.up().await
    }

    /// Stops it and waits until its listener and connections are closed.
    pub async fn stop(mut self) {
        self.down().await;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `127.0.0.1:0`.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An address nothing listens on: bound, read, and closed again.
pub async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind(loopback())
        .await
        .expect("bind a throw-away listener");
    let addr = listener.local_addr().expect("throw-away listener address");
    drop(listener);
    addr
}

/// Binds `addr`, retrying for up to 2 s while a just-closed listener still holds it.
pub async fn bind_retrying(addr: SocketAddr) -> Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(e).with_context(|| format!("binding {addr}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("binding {addr}")),
        }
    }
}

struct Shared {
    name: String,
    protocol: Protocol,
    counters: Arc<Counters>,
}

/// Accepts until aborted; the connection tasks live in a `JoinSet` owned by this task, so
/// aborting it closes the listener and every connection.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let id = shared.counters.connections.fetch_add(1, Ordering::SeqCst) + 1;
                    conns.spawn(serve_tcp(tcp, peer, id, shared.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_tcp(tcp: TcpStream, peer: SocketAddr, id: usize, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    match &shared.protocol {
        Protocol::Http1 => builder = builder.http1_only(),
        Protocol::H2c => builder = builder.http2_only(),
        Protocol::Auto => {}
        Protocol::Tls(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let conn = tls.get_ref().1;
            let client_cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
            if conn.alpn_protocol() == Some(b"h2") {
                builder = builder.http2_only();
            }
            let ctx = ConnCtx {
                shared,
                peer,
                id,
                client_cert,
            };
            return serve_io(builder, tls, ctx).await;
        }
    }
    let ctx = ConnCtx {
        shared,
        peer,
        id,
        client_cert: false,
    };
    serve_io(builder, tcp, ctx).await
}

async fn serve_io<I>(builder: auto::Builder<TokioExecutor>, io: I, ctx: ConnCtx)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = Arc::new(ctx);
    let svc = service_fn(move |req| respond::handle(req, ctx.clone()));
    let _ = builder.serve_connection(TokioIo::new(io), svc).await;
}

struct ConnCtx {
    shared: Arc<Shared>,
    peer: SocketAddr,
    id: usize,
    client_cert: bool,
}

/// The values of request header `name` as the default JSON answer reports them (see
/// [`Upstream`]): none, one, or each of a repeated header in order.
pub fn header_values(answer: &serde_json::Value, name: &str) -> Vec<String> {
    match &answer["headers"][name] {
        serde_json::Value::String(one) => vec![one.clone()],
        serde_json::Value::Array(many) => many
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}
