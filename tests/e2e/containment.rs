//! A filter that panics, loops or hoards memory fails only its own request: with `FAIL_CLOSE`
//! a 503 naming the filter, with `FAIL_OPEN` the filter is skipped and the rest of the chain
//! runs; `weft_plugin_failures_total{plugin,reason}` counts each failure; the instance is
//! replaced, and requests on other chains — Wasm filters included — keep flowing while a guest
//! is stuck in a loop.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weft_e2e::client::{self, Reply};
use weft_e2e::filters::{STEP, module, start, step};
use weft_e2e::resources::{Chain, Cluster, Filter, Listener, Plugin, join};
use weft_e2e::upstream::{Upstream, header_values};
use weft_e2e::weft::Weft;
use weft_e2e::{wait_for, within};
use weft_test_artifacts::TARGETS;

/// `GET /` on a fresh HTTP/1.1 connection.
async fn get(addr: SocketAddr, what: &str) -> Reply {
    step(what, client::h1(addr, client::get("/"))).await
}

/// `weft_plugin_failures_total` of plugin `broken` for `reason` (0 when absent).
async fn failures(weft: &Weft, reason: &str) -> f64 {
    let prefix = format!(r#"weft_plugin_failures_total{{plugin="broken",reason="{reason}"}}"#);
    weft.metric(&prefix).await.unwrap_or(0.0)
}

/// Waits until the failure count for `reason` is `n`; panics with the count it saw otherwise.
async fn expect_failures(weft: &Weft, reason: &str, n: f64, ctx: &str) {
    let reached = wait_for(|| async { failures(weft, reason).await == n }, STEP).await;
    if !reached {
        let text = weft.metrics().await.unwrap_or_default();
        let counted: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("weft_plugin_failures_total"))
            .collect();
        panic!(
            "{ctx}: weft_plugin_failures_total{{plugin=\"broken\",reason=\"{reason}\"}} \
             should be {n}; counted: {counted:#?}"
        );
    }
}

/// Listeners `closed` (`broken` as filter `boom`, FAIL_CLOSE), `open` (`broken` as `boom-open`,
/// FAIL_OPEN, then `headers` as `after`) and `healthy` (`headers` as `healthy`).
fn three_listeners(up: SocketAddr, target: &str, mode: &str, deadline: &str) -> String {
    let broken = |name: &str| {
        Filter::new("broken")
            .named(name)
            .config(&format!("{{mode: {mode}}}"))
    };
    join([
        Cluster::new("web", &[up]).to_string(),
        Plugin::new("broken", module("broken", target))
            .deadline(deadline)
            .memory_limit("16Mi")
            .to_string(),
        Plugin::new("headers", module("headers", target)).to_string(),
        Chain::new("closed", [broken("boom")]).to_string(),
        Chain::new(
            "open",
            [
                broken("boom-open").fail_open(),
                Filter::new("headers").named("after"),
            ],
        )
        .to_string(),
        Chain::new("healthy", [Filter::new("headers").named("healthy")]).to_string(),
        Listener::new("closed", "web").chain("closed").to_string(),
        Listener::new("open", "web").chain("open").to_string(),
        Listener::new("healthy", "web").chain("healthy").to_string(),
    ])
}

/// The FAIL_CLOSE / FAIL_OPEN / replacement / counting story for one misbehaviour, under a
/// call deadline of `deadline`.
async fn contained(mode: &str, reason: &str, deadline: &str) {
    for target in TARGETS {
        let ctx = format!("{target}, mode {mode}");
        let up = Upstream::http1("web").await.expect("upstream");
        let weft = start(&three_listeners(up.addr, target, mode, deadline), &ctx).await;

        let started = Instant::now();
        let reply = get(weft.addr("closed"), &format!("{ctx}: FAIL_CLOSE")).await;
        let took = started.elapsed();
        assert_eq!(reply.status, 503, "{ctx}: FAIL_CLOSE: {}", reply.text());
        assert!(
            reply.text().contains("boom"),
            "{ctx}: the 503 names the failed filter `boom`: {:?}",
            reply.text()
        );
        assert!(
            took < Duration::from_secs(1),
            "{ctx}: the failure is reported promptly (deadline {deadline}), took {took:?}"
        );
        assert_eq!(up.requests(), 0, "{ctx}: FAIL_CLOSE stops the request");
        expect_failures(&weft, reason, 1.0, &ctx).await;

        let reply = get(weft.addr("open"), &format!("{ctx}: FAIL_OPEN")).await;
        assert_eq!(reply.status, 200, "{ctx}: FAIL_OPEN: {}", reply.text());
        assert_eq!(
            header_values(&reply.json(), "x-filtered-by"),
            ["after"],
            "{ctx}: FAIL_OPEN skips only the failed filter; the next one runs"
        );
        assert_eq!(up.requests(), 1, "{ctx}");
        expect_failures(&weft, reason, 2.0, &ctx).await;

        // A fresh instance replaces the failed one: same config, same outcome, no hang.
        let reply = get(weft.addr("closed"), &format!("{ctx}: FAIL_CLOSE again")).await;
        assert_eq!(reply.status, 503, "{ctx}: second request: {}", reply.text());
        assert!(reply.text().contains("boom"), "{ctx}: {:?}", reply.text());
        let reply = get(weft.addr("open"), &format!("{ctx}: FAIL_OPEN again")).await;
        assert_eq!(
            reply.status,
            200,
            "{ctx}: FAIL_OPEN again: {}",
            reply.text()
        );
        expect_failures(&weft, reason, 4.0, &ctx).await;

        let reply = get(weft.addr("healthy"), &format!("{ctx}: healthy chain")).await;
        assert_eq!(reply.status, 200, "{ctx}: healthy: {}", reply.text());
        assert_eq!(
            header_values(&reply.json(), "x-filtered-by"),
            ["healthy"],
            "{ctx}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_filter_fails_its_request_by_its_fail_strategy() {
    contained("panic", "panic", "100ms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_filter_is_stopped_at_its_deadline() {
    contained("loop", "deadline", "100ms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hoarding_filter_is_stopped_at_its_memory_limit() {
    // A deadline far beyond what hoarding 16 MiB takes: on a saturated machine the guest may
    // be descheduled long enough for a 100ms deadline to stop it first, for the wrong reason.
    contained("hoard", "memory", "5s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_filter_does_not_stall_other_requests() {
    // More looping requests than the test runtime has worker threads, and than the machine has
    // CPUs (a filter's instance pool may be sized by them): no request may wait for another's.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let loops = cpus.clamp(2, 16) + 1;
    let up = Upstream::http1("web").await.expect("upstream");
    // A long deadline, so the guests are still looping while the other requests run.
    let deadline = Duration::from_secs(4);
    let weft = start(
        &three_listeners(up.addr, TARGETS[0], "loop", "4s"),
        "a 4s deadline",
    )
    .await;

    let fired = Instant::now();
    let looping: Vec<_> = (0..loops)
        .map(|_| {
            let addr = weft.addr("closed");
            tokio::spawn(async move {
                let reply = client::h1(addr, client::get("/")).await;
                (reply, fired.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let healthy = weft.addr("healthy");
    let burst = Instant::now();
    for i in 0..20 {
        let started = Instant::now();
        let reply = within(
            Duration::from_millis(500),
            &format!("healthy request {i} while {loops} guests loop"),
            client::h1(healthy, client::get("/")),
        )
        .await
        .unwrap_or_else(|e| panic!("healthy request {i}: {e:#}"));
        assert_eq!(reply.status, 200, "healthy request {i}: {}", reply.text());
        assert_eq!(
            header_values(&reply.json(), "x-filtered-by"),
            ["healthy"],
            "healthy request {i} ran its Wasm filter"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "healthy request {i} took {:?}",
            started.elapsed()
        );
    }
    let burst = burst.elapsed();
    assert!(
        looping.iter().all(|t| !t.is_finished()),
        "test precondition: the looping requests are still stuck after the healthy burst \
         ({burst:?}, fired {:?} ago)",
        fired.elapsed()
    );

    let mut took = Vec::new();
    for task in looping {
        let (reply, elapsed) = within(3 * deadline, "a looping request", task)
            .await
            .expect("the looping request task");
        let reply = reply.expect("the looping request gets an answer");
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert!(reply.text().contains("boom"), "{:?}", reply.text());
        took.push(elapsed);
    }
    // Each guest is stopped at its own deadline, not after another one's: a request must not
    // wait for an instance that is stuck in someone else's loop.
    assert!(
        took.iter()
            .all(|t| *t >= deadline * 3 / 4 && *t < deadline * 3 / 2),
        "{loops} guests looping at once under a {deadline:?} deadline are each stopped after \
         about {deadline:?}, took {took:?}"
    );
    expect_failures(&weft, "deadline", loops as f64, "after the loops").await;
    assert_eq!(
        up.requests(),
        20,
        "only the healthy requests reached the upstream"
    );
}
