//! HTTP callouts from a filter to a cluster named in its config: the request waits for the
//! callout and carries its result to the upstream; a callout that is refused, times out, or
//! names a cluster that does not exist ends the request with the filter's 503 — the failure as
//! Envoy reports it (a response without headers, or BAD_ARGUMENT at dispatch), and promptly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Version;
use weft_e2e::client::{self, Reply};
use weft_e2e::filters::{VERSIONS, module, start, step};
use weft_e2e::resources::{Chain, Cluster, Filter, Listener, Plugin, join};
use weft_e2e::upstream::{Upstream, dead_address, header_values};
use weft_e2e::weft::Weft;
use weft_test_artifacts::TARGETS;

/// Cluster `web` on `web`, cluster `auth` on `auth`, the `callout` filter configured with
/// `config`, listener `public`.
fn config(web: SocketAddr, auth: SocketAddr, target: &str, config: &str) -> String {
    join([
        Cluster::new("web", &[web]).to_string(),
        Cluster::new("auth", &[auth])
            .field("connectTimeout", "500ms")
            .to_string(),
        Plugin::new("callout", module("callout", target)).to_string(),
        Chain::new("edge", [Filter::new("callout").config(config)]).to_string(),
        Listener::new("public", "web").chain("edge").to_string(),
    ])
}

/// `GET /resource` through listener `public` on a fresh connection of `version`.
async fn get(weft: &Weft, version: Version, what: &str) -> Reply {
    let request = client::get("/resource");
    step(
        what,
        client::cleartext(weft.addr("public"), version, request),
    )
    .await
}

/// With the callout filter configured with `callout` (cluster `auth` on `auth`), `GET
/// /resource` over each version ends at the filter: its 503 with `x-callout-error: error`, and
/// nothing reaches `web`. Returns each request's context and how long it took.
async fn failed_callouts(
    web: &Upstream,
    auth: SocketAddr,
    target: &str,
    callout: &str,
    what: &str,
    error: &str,
) -> Vec<(String, Duration)> {
    let weft = start(&config(web.addr, auth, target, callout), target).await;
    let mut took = Vec::new();
    for version in VERSIONS {
        let ctx = format!("{target} over {version:?}, {what}");
        let started = Instant::now();
        let reply = get(&weft, version, &ctx).await;
        let elapsed = started.elapsed();
        assert_eq!(reply.status, 503, "{ctx}: {}", reply.text());
        assert_eq!(reply.header("x-callout-error"), Some(error), "{ctx}");
        took.push((ctx, elapsed));
    }
    assert_eq!(
        web.requests(),
        0,
        "{target}: the request stopped at the filter"
    );
    took
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
        let callout = "{cluster: auth, path: /, timeout_ms: 2000}";
        let what = "callout endpoint refusing";
        failed_callouts(&web, dead, target, callout, what, "failed").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callout_past_its_timeout_answers_503_promptly() {
    for target in TARGETS {
        let web = Upstream::http1("web").await.expect("upstream web");
        let auth = Upstream::http1("auth").await.expect("upstream auth");
        let callout = "{cluster: auth, path: /delay/2000, timeout_ms: 200}";
        let what = "callout timing out";
        for (ctx, took) in failed_callouts(&web, auth.addr, target, callout, what, "failed").await {
            assert!(
                took < Duration::from_millis(1200),
                "{ctx}: a 200 ms callout timeout answered after {took:?} (the callout takes 2 s)"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callout_to_an_unknown_cluster_is_refused_at_dispatch() {
    for target in TARGETS {
        let web = Upstream::http1("web").await.expect("upstream web");
        let auth = Upstream::http1("auth").await.expect("upstream auth");
        let callout = "{cluster: nowhere, path: /, timeout_ms: 1000}";
        let what = "callout to cluster nowhere";
        // Envoy's BAD_ARGUMENT for an unknown cluster.
        let error = "dispatch BadArgument";
        failed_callouts(&web, auth.addr, target, callout, what, error).await;
        assert_eq!(auth.requests(), 0, "{target}");
    }
}
