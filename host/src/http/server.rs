//! Serving one downstream connection: TLS handshake (ALPN picks h2 or HTTP/1.1; mTLS identity
//! captured), h2c prior-knowledge detection on plaintext, hyper with the listener's limits, and a
//! watchdog that closes idle connections, connections that never send a request in time, and
//! connections told to drain (graceful: GOAWAY on h2, `Connection: close` on HTTP/1.1).

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use http::Request;
use hyper::{body::Incoming, server::conn, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::watch,
};

use super::{
    activity::{Activity, Expiry, Watched},
    body::{Observed, OnEnd, ProxyBody},
    headers,
    proxy::{self, Downstream, TlsInfo},
};
use crate::{
    config::Limits,
    runtime::{ListenerRuntime, Shared},
    tls,
};

/// hyper's built-in header count limit (`http1::Builder::max_headers`).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Everything a connection is served with, whatever its transport.
struct Session {
    shared: Arc<Shared>,
    listener: Arc<ListenerRuntime>,
    downstream: Downstream,
    limits: Limits,
    stop: watch::Receiver<bool>,
    drain_timeout: Duration,
}

/// Serves `stream` until the client leaves, the connection idles out, or `stop` turns true.
pub async fn serve(
    shared: Arc<Shared>,
    name: Arc<str>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let Some(listener) = shared.runtime.load().listeners.get(&name).cloned() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let downstream = Downstream {
        listener: name,
        peer,
        client_address: headers::client_address_value(peer.ip()),
        local,
        tls: None,
    };
    let header_read_timeout = listener.config.limits.header_read_timeout;
    let server_tls = listener.tls.clone();
    let limits = listener.config.limits.clone();
    let mut session = Session {
        shared,
        listener,
        downstream,
        limits,
        stop,
        drain_timeout,
    };

    if let Some(server_tls) = server_tls {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_tls.config());
        let stream = match tokio::time::timeout(header_read_timeout, acceptor.accept(stream)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                session.listener.stats.tls_errors.inc();
                tracing::debug!(listener = %session.downstream.listener, client = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                session.listener.stats.tls_errors.inc();
                return;
            }
        };
        let tls_session = stream.get_ref().1;
        let h2 = tls_session.alpn_protocol() == Some(b"h2");
        session.downstream.tls = Some(TlsInfo {
            version: tls_session
                .protocol_version()
                .map_or("unknown", tls::server::tls_version_name),
            peer: tls::server::peer_identity(tls_session.peer_certificates()),
        });
        serve_http(session, stream, h2).await;
    } else {
        let h2 = match tokio::time::timeout(header_read_timeout, sniff_h2_preface(&stream)).await {
            Ok(Ok(h2)) => h2,
            _ => return,
        };
        serve_http(session, stream, h2).await;
    }
}

/// Whether a plaintext client opens with the HTTP/2 preface (h2c prior knowledge). Peeks only.
async fn sniff_h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A prefix of the preface arrived; wait for the rest.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn serve_http<I>(session: Session, io: I, h2: bool)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let Session {
        shared,
        listener,
        downstream,
        limits,
        stop,
        drain_timeout,
    } = session;
    let limits = &limits;
    let activity = Arc::new(Activity::new(!h2));
    let downstream = Arc::new(downstream);
    let service = {
        let activity = activity.clone();
        service_fn(move |request: Request<Incoming>| {
            let shared = shared.clone();
            let downstream = downstream.clone();
            let activity = activity.clone();
            let fallback = listener.clone();
            async move {
                let started = Instant::now();
                activity.request_started();
                let runtime = shared.runtime.load_full();
                // Requests use the listener's current settings; a listener removed by a reload
                // keeps serving its open connections with the settings they started with.
                let listener = runtime
                    .listeners
                    .get(&downstream.listener)
                    .cloned()
                    .unwrap_or(fallback);
                let response = proxy::handle(runtime, listener.clone(), &downstream, request).await;
                listener.stats.codes.inc(response.status());
                let done = RequestDone {
                    listener,
                    activity,
                    started,
                };
                Ok::<_, Infallible>(response.map(|body| Observed::new(body, done)))
            }
        })
    };
    let io = TokioIo::new(Watched::new(io, activity.clone()));
    if h2 {
        let mut builder = conn::http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new()).max_header_list_size(
            u32::try_from(limits.max_request_headers_bytes).unwrap_or(u32::MAX),
        );
        let connection = builder.serve_connection(io, service);
        supervise(connection, activity, limits.clone(), stop, drain_timeout).await;
    } else {
        let mut builder = conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // The watchdog enforces the header deadline (see `activity`); hyper's own timer
            // would also cut idle keep-alive connections at the header deadline.
            .header_read_timeout(None)
            .writev(false)
            .max_header_size(limits.max_request_headers_bytes)
            .max_buf_size(limits.max_request_headers_bytes.max(8192) + 8192);
        // hyper parses into a stack array of 100 headers by default; setting any count moves
        // that array to the heap for every request.
        if limits.max_request_headers != HYPER_DEFAULT_MAX_HEADERS {
            builder.max_headers(limits.max_request_headers);
        }
        let connection = builder.serve_connection(io, service);
        supervise(connection, activity, limits.clone(), stop, drain_timeout).await;
    }
}

/// The end of a request's response body: its duration recorded, the connection's activity
/// updated. A named type rather than a closure, so the response body type is nameable and needs
/// no second box.
struct RequestDone {
    listener: Arc<ListenerRuntime>,
    activity: Arc<Activity>,
    started: Instant,
}

impl OnEnd for RequestDone {
    fn on_end(self, _clean: bool) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.started);
        self.listener.stats.duration.observe(elapsed.as_secs_f64());
        self.activity.request_finished(now);
    }
}

/// The body of every downstream response.
type ResponseBody = Observed<ProxyBody, RequestDone>;

/// A hyper server connection that can be asked to finish gracefully.
trait Graceful: Future<Output = hyper::Result<()>> {
    fn shutdown(self: Pin<&mut Self>);
}

impl<I, S> Graceful for conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = ResponseBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Graceful for conn::http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = ResponseBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, ResponseBody>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// What a connection's watchdog asks of it.
enum Order {
    /// Finish gracefully: GOAWAY on HTTP/2, `Connection: close` after the current response.
    Shutdown,
    /// Close now.
    Close,
}

/// Drives a connection to its end, obeying its watchdog. The watchdog runs as its own task, so
/// each wakeup of the connection costs one channel check rather than a timer poll.
async fn supervise<C: Graceful>(
    connection: C,
    activity: Arc<Activity>,
    limits: Limits,
    stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let (orders, mut received) = tokio::sync::mpsc::channel(2);
    let watchdog = tokio::spawn(watchdog(activity, limits, stop, drain_timeout, orders));
    let _watchdog = AbortOnDrop(watchdog);
    tokio::pin!(connection);
    loop {
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                }
                return;
            }
            order = received.recv() => match order {
                Some(Order::Shutdown) => connection.as_mut().shutdown(),
                Some(Order::Close) | None => return,
            },
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches a connection: asks it to finish gracefully when it idles (no request in flight for
/// `idleTimeout`; no first request within `headerReadTimeout`) or when `stop` turns true, and to
/// close at once when a request head stalls past `headerReadTimeout` or when a graceful finish
/// overruns its grace period.
async fn watchdog(
    activity: Arc<Activity>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    drain_timeout: Duration,
    orders: tokio::sync::mpsc::Sender<Order>,
) {
    let period = (limits.idle_timeout.min(limits.header_read_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing: Option<Instant> = None;
    if *stop.borrow_and_update() {
        let _ = orders.send(Order::Shutdown).await;
        closing = Some(Instant::now() + drain_timeout);
    }
    loop {
        tokio::select! {
            _ = stop.changed(), if closing.is_none() => {
                let _ = orders.send(Order::Shutdown).await;
                closing = Some(Instant::now() + drain_timeout);
            }
            _ = tick.tick() => {
                if let Some(deadline) = closing {
                    if Instant::now() >= deadline {
                        let _ = orders.send(Order::Close).await;
                        return;
                    }
                    continue;
                }
                match activity.expired(&limits) {
                    None => {}
                    Some(Expiry::HeadTimeout) => {
                        tracing::debug!("request head not received within headerReadTimeout; closing");
                        let _ = orders.send(Order::Close).await;
                        return;
                    }
                    Some(Expiry::Idle) => {
                        let _ = orders.send(Order::Shutdown).await;
                        closing = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
            }
        }
    }
}
