//! The story's traffic: the upstream behind the proxies, one-shot HTTP/1.1 requests, and the
//! load loop that counts failed requests.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{
    Request, Response,
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;

/// The service behind the proxies, on its own runtime: answers every request 200 and says in
/// `x-upstream-saw-hello` which `x-hello` the request arrived with (`-` for none).
pub struct Upstream {
    pub addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Upstream {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the upstream's runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the upstream");
        let addr = listener.local_addr().expect("the upstream's address");
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let saw = request
                            .headers()
                            .get("x-hello")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned();
                        Response::builder()
                            .header("x-upstream-saw-hello", saw)
                            .body(Full::new(Bytes::from_static(b"ok\n")))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            _runtime: runtime,
        }
    }
}

/// A response as the test reads it.
pub struct Reply {
    pub status: u16,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One `GET path` to 127.0.0.1:PORT over a fresh HTTP/1.1 connection (`Connection: close`);
/// `Err` says what went wrong at the connection level.
pub fn get(port: u16, path: &str) -> Result<Reply, String> {
    let fail = |what: &str, e: std::io::Error| format!("127.0.0.1:{port}{path}: {what}: {e}");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| fail("connect", e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail("set a timeout", e))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: story\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| fail("send", e))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| fail("receive", e))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("127.0.0.1:{port}{path}: no HTTP response: {text:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// What one proxy's load thread saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The first failures, each with when it happened.
    failures: Mutex<Vec<String>>,
}

/// The totals of a stopped load loop.
pub struct Totals {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// The first failures of each proxy: which, when (since the start) and why.
    pub failures: Vec<String>,
}

/// Requests sent continuously through each proxy, a thread each, until stopped (or dropped).
/// A failure is a connection error or a status other than 200.
pub struct Load {
    stop: Arc<AtomicBool>,
    tallies: Vec<(&'static str, Arc<Tally>)>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// One thread per `(node, port)`, each sending `GET /load` to its port, paced at one
    /// request per 2 ms.
    pub fn start(targets: &[(&'static str, u16)]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut tallies = Vec::new();
        let mut threads = Vec::new();
        for &(node, port) in targets {
            let tally = Arc::new(Tally::default());
            tallies.push((node, tally.clone()));
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let failure = match get(port, "/load") {
                        Ok(reply) if reply.status == 200 => None,
                        Ok(reply) => {
                            Some(format!("status {}: {}", reply.status, reply.body.trim()))
                        }
                        Err(e) => Some(e),
                    };
                    match failure {
                        None => tally.ok.fetch_add(1, Ordering::Relaxed),
                        Some(failure) => {
                            let mut failures = tally
                                .failures
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner);
                            if failures.len() < 20 {
                                failures.push(format!(
                                    "{node} at {:.2?}: {failure}",
                                    started.elapsed()
                                ));
                            }
                            tally.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    // A pace, not a wait: leaves the two cores to the proxies under test.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }));
        }
        Self {
            stop,
            tallies,
            threads,
        }
    }

    /// Requests `node` answered so far.
    pub fn ok(&self, node: &str) -> u64 {
        self.tallies
            .iter()
            .find(|(n, _)| *n == node)
            .map_or(0, |(_, t)| t.ok.load(Ordering::Relaxed))
    }

    /// Stops the threads; what they saw.
    pub fn stop(mut self) -> Totals {
        self.halt();
        let mut totals = Totals {
            ok: 0,
            failed: 0,
            failures: Vec::new(),
        };
        for (_, tally) in &self.tallies {
            totals.ok += tally.ok.load(Ordering::Relaxed);
            totals.failed += tally.failed.load(Ordering::Relaxed);
            totals.failures.extend(
                tally
                    .failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .drain(..),
            );
        }
        totals
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}
