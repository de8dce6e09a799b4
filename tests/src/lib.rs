//! Helpers shared by weft's end-to-end tests: every test starts its own servers on
//! `127.0.0.1:0` and everything it starts stops when its handle is dropped.
//!
//! - [`certs`]: a throw-away PKI (CA, server, client with a SPIFFE identity, a rogue client) and
//!   rustls configurations built from it.
//! - [`upstream`]: real hyper upstreams (HTTP/1.1, h2c, both, TLS/mTLS) whose behaviour is chosen
//!   by the request path (`/echo`, `/trailers`, `/status/<code>`, `/delay/<ms>`, `/stream/<n>`).
//! - [`grpc`]: a gRPC echo server (`weft.test.Echo`: unary `Say`, full-duplex `Chat`, failing
//!   `Fail`) over h2c.
//! - [`raw`]: misbehaving TCP upstreams and a raw TCP client (`raw_exchange`, `slowloris`).
//! - [`client`]: a test client on hyper's connection APIs, one-shot or keep-alive, with
//!   streaming request bodies and trailers.
//! - [`stream`]: streamed request bodies (and trailers) fed chunk by chunk from the test.
//! - [`weft`]: the proxy started in-process from a YAML string.
//! - [`resources`]: the YAML documents (`Cluster`, `Plugin`, `FilterChain`, `Listener`) it is
//!   started with.
//! - [`filters`]: what the tests of Wasm filters share — the test filters by name and target,
//!   a proxy started on them, requests that must succeed within a deadline.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use weft_e2e::{client, upstream::Upstream};
//! let up = Upstream::http1("a").await?;
//! let reply = client::h1(up.addr, client::get("/hello?x=1")).await?;
//! assert_eq!(reply.status, 200);
//! assert_eq!(reply.json()["path"], "/hello?x=1");
//! # Ok(()) }
//! ```

pub mod certs;
pub mod client;
pub mod filters;
pub mod grpc;
pub mod raw;
pub mod resources;
pub mod stream;
pub mod upstream;

#[cfg(test)]
mod selftest;
pub mod weft;

use std::time::Duration;

use tokio::task::JoinHandle;

/// A spawned task that is aborted when this guard is dropped, so nothing a test starts outlives
/// it.
#[derive(Debug)]
pub struct AbortOnDrop<T = ()>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls `cond` every 20 ms until it returns true or `timeout` passes; returns whether it held.
pub async fn wait_for<F, Fut>(mut cond: F, timeout: Duration) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `fut`, panicking with `what` if it has no outcome within `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {limit:?}"))
}
