//! What the tests of Wasm filters share: the test filters of `tests/programs` by name and
//! target, a proxy started on a configuration that runs them, and network steps that must
//! succeed within [`STEP`] — a test that would hang panics instead, naming the step.
//!
//! ```no_run
//! # async fn demo() {
//! use weft_e2e::filters::{VERSIONS, send, start_one_filter};
//! use weft_e2e::{client, resources::Filter};
//! for target in weft_test_artifacts::TARGETS {
//!     let (_up, weft) = start_one_filter(target, Filter::new("headers")).await;
//!     for version in VERSIONS {
//!         let reply = send(weft.addr("public"), version, client::get("/")).await;
//!         assert_eq!(reply.status, 200, "{target} over {version:?}");
//!     }
//! }
//! # }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body::Body;

use crate::client::{self, Reply};
use crate::resources::{Filter, Plugin, edge};
use crate::upstream::Upstream;
use crate::weft::Weft;
use crate::within;

/// Every network step of the filter tests is bounded by this.
pub const STEP: Duration = Duration::from_secs(5);

/// Starting a proxy is bounded by this: it compiles every module of its chains (in a debug
/// build, under a machine's full test load, five built-in plugins take seconds).
pub const START: Duration = Duration::from_secs(30);

/// Both downstream protocols: HTTP/1.1 and h2c.
pub const VERSIONS: [Version; 2] = [Version::HTTP_11, Version::HTTP_2];

/// The test filter `name` built for `target`; panics if there is no such filter.
pub fn module(name: &str, target: &str) -> &'static str {
    weft_test_artifacts::path(name, target)
        .unwrap_or_else(|| panic!("test filter {name} is not built for {target}"))
}

/// Upstream `web`, and a proxy in front of it running one filter: [`edge`] with the test filter
/// `filter` is an instance of, built for `target`, as its plugin and `filter` as chain `edge`.
pub async fn start_one_filter(target: &str, filter: Filter) -> (Upstream, Weft) {
    let up = Upstream::http1("web").await.expect("upstream");
    let what = format!("filter {} built for {target}", filter.plugin());
    let plugin = Plugin::new(filter.plugin(), module(filter.plugin(), target));
    let weft = start(&edge(up.addr, &[plugin], [filter]), &what).await;
    (up, weft)
}

/// Starts a proxy on `yaml`; panics naming `what` if it fails or takes longer than [`START`].
pub async fn start(yaml: &str, what: &str) -> Weft {
    let what = format!("starting weft with {what}");
    within(START, &what, Weft::start(yaml))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

/// Runs `fut`; panics naming `what` if it fails or has no outcome within [`STEP`].
pub async fn step<T>(what: &str, fut: impl Future<Output = anyhow::Result<T>>) -> T {
    within(STEP, what, fut)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

/// Sends `req` on a fresh connection of `version` to `addr` (h2c for HTTP/2, else HTTP/1.1)
/// as one [`step`].
pub async fn send<B>(addr: SocketAddr, version: Version, req: Request<B>) -> Reply
where
    B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
{
    let what = format!("{} {} over {version:?}", req.method(), req.uri());
    step(&what, client::cleartext(addr, version, req)).await
}
