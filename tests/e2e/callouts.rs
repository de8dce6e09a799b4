//! HTTP callouts from a filter to a cluster named in its config: the request waits for the
//! callout and carries its result to the upstream; a callout that is refused, times out, or
//! names a cluster that does not exist ends the request with the filter's 503 — the failure as
//! Envoy reports it (a response without headers, or BAD_ARGUMENT at dispatch), and promptly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Version;
use weft_e2e::client::{self, Reply};
use weft_e2e::resources::{Chain, Cluster, Filter, Listener, Plugin, join};
use weft_e2e::upstream::{Upstream, header_values};
use weft_e2e::weft::Weft;
use weft_e2e::within;
use weft_test_artifacts::{TARGETS, path};

/// Every network step of these tests is bounded by this.
const STEP: Duration = Duration::from_secs(5);

const VERSIONS: [Version; 2] = [Version::HTTP_11, Version::HTTP_2];

/// Cluster `web` on `web`, cluster `auth` on `auth`, the `callout` filter configured with
/// `config`, listener `public`.
fn config(web: SocketAddr, auth: SocketAddr, target: &str, config: &str) -> String {
    let module = path("callout", target).expect("callout is built for every target");
    join([
        Cluster::new("web", &[web]).to_string(),
        Cluster::new("auth", &[auth])
            .field("connectTimeout", "500ms")
            .to_string(),
        Plugin::new("callout", module).to_string(),
        Chain::new("edge", [Filter::new("callout").config(config)]).to_string(),
        Listener::new("public", "web").chain("edge").to_string(),
    ])
}

async fn start(yaml: &str, what: &str) -> Weft {
    within(
        STEP,
        &format!("starting weft with {what}"),
        Weft::start(yaml),
    )
    .await
    .unwrap_or_else(|e| panic!("weft starts with {what}: {e:#}"))
}

async fn get(weft: &Weft, version: Version, what: &str) -> Reply {
    within(
        STEP,
        what,
        client::cleartext(weft.addr("public"), version, client::get("/resource")),
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

/// An address nothing listens on: bound, read, and closed again.
async fn dead_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a throw-away listener");
    let addr = listener.local_addr().expect("throw-away listener address");
    drop(listener);
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callout_result_reaches_the_upstream_request() {
    for target in TARGETS {
        let web = Upstream::http1("web").await.expect("upstream web");
        let auth = Upstream::http1("auth").await.expect("upstream auth");
        // 204: no body; 200: the auth upstream's JSON answer, a body of some size.
        for (status, empty) in [(204, true), (200, false)] {
            let callout = format!("{{cluster: auth, path: /status/{status}, timeout_ms: 2000}}");
            let weft = start(&config(web.addr, auth.addr, target, &callout), target).await;
            for version in VERSIONS {
                let ctx = format!("{target}, callout answering {status}, over {version:?}");
                let before = auth.requests();
                let reply = get(&weft, version, &ctx).await;
                assert_eq!(reply.status, 200, "{ctx}: {}", reply.text());
                assert_eq!(reply.header("x-upstream"), Some("web"), "{ctx}");
                let seen = reply.json();
                assert_eq!(seen["path"], "/resource", "{ctx}");
                assert_eq!(
                    header_values(&seen, "x-callout-status"),
                    [status.to_string()],
                    "{ctx}: the callout's status reaches the upstream: {seen}"
                );
                let size = header_values(&seen, "x-callout-body-size");
                let size: usize = match size.as_slice() {
                    [one] => one.parse().expect("x-callout-body-size is a number"),
                    other => panic!("{ctx}: x-callout-body-size {other:?}"),
                };
                assert_eq!(size == 0, empty, "{ctx}: callout body size {size}");
                assert_eq!(
                    auth.requests(),
                    before + 1,
                    "{ctx}: one callout per request"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_callout_answers_503() {
    for target in TARGETS {
        let web = Upstream::http1("web").await.expect("upstream web");
        let dead = dead_address().await;
        let yaml = config(
            web.addr,
            dead,
            target,
            "{cluster: auth, path: /, timeout_ms: 2000}",
        );
        let weft = start(&yaml, target).await;
        for version in VERSIONS {
            let ctx = format!("{target} over {version:?}, callout endpoint refusing");
            let reply = get(&weft, version, &ctx).await;
            assert_eq!(reply.status, 503, "{ctx}: {}", reply.text());
            assert_eq!(reply.header("x-callout-error"), Some("failed"), "{ctx}");
        }
        assert_eq!(
            web.requests(),
            0,
            "{target}: the request stopped at the filter"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callout_past_its_timeout_answers_503_promptly() {
    for target in TARGETS {
        let web = Upstream::http1("web").await.expect("upstream web");
        let auth = Upstream::http1("auth").await.expect("upstream auth");
        let yaml = config(
            web.addr,
            auth.addr,
            target,
            "{cluster: auth, path: /delay/2000, timeout_ms: 200}",
        );
        let weft = start(&yaml, target).await;
        for version in VERSIONS {
            let ctx = format!("{target} over {version:?}, callout timing out");
            let started = Instant::now();
            let reply = get(&weft, version, &ctx).await;
            let took = started.elapsed();
            assert_eq!(reply.status, 503, "{ctx}: {}", reply.text());
            assert_eq!(reply.header("x-callout-error"), Some("failed"), "{ctx}");
            assert!(
                took < Duration::from_millis(1200),
                "{ctx}: a 200 ms callout timeout answered after {took:?} (the callout takes 2 s)"
            );
        }
        assert_eq!(
            web.requests(),
            0,
            "{target}: the request stopped at the filter"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callout_to_an_unknown_cluster_is_refused_at_dispatch() {
    for target in TARGETS {
        let web = Upstream::http1("web").await.expect("upstream web");
        let auth = Upstream::http1("auth").await.expect("upstream auth");
        let yaml = config(
            web.addr,
            auth.addr,
            target,
            "{cluster: nowhere, path: /, timeout_ms: 1000}",
        );
        let weft = start(&yaml, target).await;
        for version in VERSIONS {
            let ctx = format!("{target} over {version:?}, callout to cluster nowhere");
            let reply = get(&weft, version, &ctx).await;
            assert_eq!(reply.status, 503, "{ctx}: {}", reply.text());
            assert_eq!(
                reply.header("x-callout-error"),
                Some("dispatch BadArgument"),
                "{ctx}: Envoy's BAD_ARGUMENT for an unknown cluster"
            );
        }
        assert_eq!(web.requests(), 0, "{target}");
        assert_eq!(auth.requests(), 0, "{target}");
    }
}
