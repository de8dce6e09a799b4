//! Raw TCP for what hyper will not do: upstreams that misbehave ([`RawUpstream`]) and a client
//! that writes exact bytes ([`raw_exchange`]) or dribbles a request head ([`slowloris`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::AbortOnDrop;
use crate::upstream::loopback;

/// What a [`RawUpstream`] does with each connection.
#[derive(Clone, Debug)]
pub enum Misbehaviour {
    /// Reads the request head, then resets the connection (RST, no response).
    Reset,
    /// Reads the request head, then closes the connection cleanly (FIN, no response).
    Close,
    /// Reads the request head, writes these bytes verbatim, then closes.
    Respond(Bytes),
    /// Reads and discards forever, never answering, holding the socket open.
    Silent,
}

/// A TCP server that misbehaves in one chosen way; stops when dropped.
#[derive(Debug)]
pub struct RawUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Bytes>>>,
    _task: AbortOnDrop,
}

impl RawUpstream {
    /// Accepts, reads the request head, and resets the connection without responding.
    pub async fn reset() -> Result<RawUpstream> {
        Self::start(Misbehaviour::Reset).await
    }

    /// Accepts, reads the request head, and closes the connection without responding.
    pub async fn close() -> Result<RawUpstream> {
        Self::start(Misbehaviour::Close).await
    }

    /// Answers every request with a head whose `Content-Length` is not a number.
    pub async fn malformed() -> Result<RawUpstream> {
        let garbage = "HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\nhello";
        Self::start(Misbehaviour::Respond(Bytes::from_static(
            garbage.as_bytes(),
        )))
        .await
    }

    /// Answers every request with exactly `bytes`, then closes.
    pub async fn respond_with(bytes: impl Into<Bytes>) -> Result<RawUpstream> {
        Self::start(Misbehaviour::Respond(bytes.into())).await
    }

    /// Accepts and never responds, holding each socket open until dropped.
    pub async fn silent() -> Result<RawUpstream> {
        Self::start(Misbehaviour::Silent).await
    }

    /// Starts one with the given behaviour on a fresh port.
    pub async fn start(behaviour: Misbehaviour) -> Result<RawUpstream> {
        let listener = TcpListener::bind(loopback())
            .await
            .context("binding a raw upstream")?;
        let addr = listener
            .local_addr()
            .context("reading the raw upstream address")?;
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), received.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        count.fetch_add(1, Ordering::SeqCst);
                        conns.spawn(misbehave(tcp, behaviour.clone(), log.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(RawUpstream {
            addr,
            connections,
            received,
            _task: AbortOnDrop(task),
        })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// What each connection sent before the misbehaviour (the request head, lossy UTF-8).
    pub fn received(&self) -> Vec<String> {
        let log = self.received.lock().unwrap_or_else(|e| e.into_inner());
        log.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

/// Reads until the end of a request head (or 64 KiB, EOF, or 2 s).
async fn read_head(tcp: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(2);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    head
}

async fn misbehave(mut tcp: TcpStream, behaviour: Misbehaviour, log: Arc<Mutex<Vec<Bytes>>>) {
    let head = read_head(&mut tcp).await;
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(head.into());
    match behaviour {
        Misbehaviour::Reset => {
            let _ = tcp.set_zero_linger();
        }
        Misbehaviour::Close => {
            let _ = tcp.shutdown().await;
        }
        Misbehaviour::Respond(bytes) => {
            let _ = tcp.write_all(&bytes).await;
            let _ = tcp.shutdown().await;
            // Drain what the peer still sends, so closing does not turn into a reset.
            let mut sink = [0u8; 4096];
            let deadline = Instant::now() + Duration::from_secs(1);
            while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, tcp.read(&mut sink)).await {
                if n == 0 {
                    break;
                }
            }
        }
        Misbehaviour::Silent => {
            let mut sink = [0u8; 4096];
            while let Ok(n) = tcp.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        }
    }
}

/// Writes `bytes` on a fresh connection, then reads until the peer closes or `timeout` passes
/// (no error on timeout or reset); returns everything that arrived, as lossy UTF-8.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Result<String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.write_all(bytes)
        .await
        .with_context(|| format!("writing {} bytes to {addr}", bytes.len()))?;
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + timeout;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&received).into_owned())
}

/// The status code in the first line of a raw HTTP/1.x response (`HTTP/1.1 404 Not Found`).
pub fn status_of(raw: &str) -> Option<u16> {
    let line = raw.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// The status code of every line that looks like an HTTP/1.x status line, in order — e.g. to
/// count the responses to pipelined requests.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.split("\r\n").filter_map(status_of).collect()
}

/// How a [`slowloris`] connection ended.
#[derive(Clone, Debug)]
pub struct SlowlorisOutcome {
    /// Whether the server closed (or reset) the connection before we gave up.
    pub closed_by_peer: bool,
    /// Time from connecting to the close (or to giving up).
    pub after: Duration,
    /// Everything the server sent (e.g. a 408), lossy UTF-8.
    pub received: String,
    /// Header lines we managed to send after the request line.
    pub lines_sent: usize,
}

/// Sends a request line and then one more header line every `interval`, never finishing the
/// head, until the server closes the connection or `give_up_after` passes.
pub async fn slowloris(
    addr: SocketAddr,
    interval: Duration,
    give_up_after: Duration,
) -> Result<SlowlorisOutcome> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let start = Instant::now();
    let (mut rd, mut wr) = tcp.into_split();
    wr.write_all(b"GET / HTTP/1.1\r\nhost: slowloris\r\n")
        .await
        .context("writing the request line")?;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let mut lines_sent = 0;
    let mut tick = tokio::time::interval_at(start + interval, interval);
    let give_up = tokio::time::sleep_until(start + give_up_after);
    tokio::pin!(give_up);
    let closed_by_peer = loop {
        tokio::select! {
            _ = &mut give_up => break false,
            _ = tick.tick() => {
                let line = format!("x-slow-{lines_sent}: y\r\n");
                if wr.write_all(line.as_bytes()).await.is_err() {
                    break true;
                }
                lines_sent += 1;
            }
            read = rd.read(&mut buf) => match read {
                Ok(0) | Err(_) => break true,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            },
        }
    };
    Ok(SlowlorisOutcome {
        closed_by_peer,
        after: start.elapsed(),
        received: String::from_utf8_lossy(&received).into_owned(),
        lines_sent,
    })
}
