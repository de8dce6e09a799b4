//! End-to-end tests of the built-in `fault` plugin (`builtin://fault`) through the proxy: an
//! abort at 100 % never reaches the upstream, a header trigger limits faults to the requests
//! carrying it, a delayed request is held while other requests through the same proxy pass at
//! full speed, and an abort drawn with a delay comes after it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request};
use weft_e2e::client::{self, H1Conn};
use weft_e2e::filters::{VERSIONS, send, start, step};
use weft_e2e::resources::{Filter, Plugin, edge};
use weft_e2e::upstream::Upstream;
use weft_e2e::weft::Weft;

/// Cluster `web` over `upstream` and the builtin fault plugin with `config` as chain `edge`.
async fn faulty(upstream: SocketAddr, config: &str) -> Weft {
    let plugin = Plugin::new("fault", "").url("builtin://fault");
    let yaml = edge(upstream, &[plugin], [Filter::new("fault").config(config)]);
    start(&yaml, &format!("the fault plugin with {config}")).await
}

fn with_header<B>(mut request: Request<B>, name: &'static str) -> Request<B> {
    request
        .headers_mut()
        .insert(name, HeaderValue::from_static("1"));
    request
}

#[tokio::test]
async fn an_abort_at_100_percent_answers_503_without_reaching_the_upstream() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = faulty(up.addr, "{abort: {status: 503, percent: 100}}").await;
    for version in VERSIONS {
        let reply = send(weft.addr("public"), version, client::get("/")).await;
        assert_eq!(reply.status, 503, "{version:?}");
        assert_eq!(reply.text(), "fault filter abort", "{version:?}");
    }
    assert_eq!(
        up.requests(),
        0,
        "an aborted request never reaches the upstream"
    );
    let counted = weft.metric(r#"fault_aborts_total{filter="fault"}"#).await;
    assert_eq!(counted, Some(2.0), "aborts are counted");
    weft.shutdown().await;
}

#[tokio::test]
async fn a_header_trigger_limits_the_abort_to_requests_carrying_it() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = faulty(up.addr, "{abort: {status: 503}, headerTrigger: x-fault}").await;
    let addr = weft.addr("public");
    for version in VERSIONS {
        let plain = send(addr, version, client::get("/")).await;
        assert_eq!(plain.status, 200, "{version:?}: {}", plain.text());
        assert_eq!(plain.header("x-upstream"), Some("web"), "{version:?}");
        let triggered = send(addr, version, with_header(client::get("/"), "x-fault")).await;
        assert_eq!(triggered.status, 503, "{version:?}: {}", triggered.text());
    }
    assert_eq!(
        up.requests(),
        2,
        "only the untriggered requests reach the upstream"
    );
    weft.shutdown().await;
}

#[tokio::test]
async fn a_delay_holds_the_triggered_request_without_slowing_the_others() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = faulty(up.addr, "{delay: {duration: 300ms}, headerTrigger: x-slow}").await;
    let addr = weft.addr("public");
    let mut fast = step("connecting", H1Conn::connect(addr)).await;
    // Warm up: the instance and the upstream connection exist before anything is timed.
    let warm = step("a warm-up request", fast.get("/")).await;
    assert_eq!(warm.status, 200, "{}", warm.text());

    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let reply = send(
            addr,
            http::Version::HTTP_11,
            with_header(client::get("/"), "x-slow"),
        )
        .await;
        (reply.status, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    for n in 0..10 {
        let begun = Instant::now();
        let reply = step("an untriggered request", fast.get("/")).await;
        let took = begun.elapsed();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(
            took < Duration::from_millis(100),
            "untriggered request {n} took {took:?} while another was delayed"
        );
    }
    assert!(
        !slow.is_finished(),
        "the untriggered requests ran while the triggered one was held"
    );
    let (status, took) = slow.await.expect("the delayed request's task");
    assert_eq!(status, 200, "a delayed request goes on to the upstream");
    assert!(
        took >= Duration::from_millis(300),
        "held for {took:?}, want 300ms"
    );
    assert!(took < Duration::from_secs(2), "held for {took:?}");
    let delays = weft.metric(r#"fault_delays_total{filter="fault"}"#).await;
    assert_eq!(delays, Some(1.0));
    weft.shutdown().await;
}

#[tokio::test]
async fn an_abort_drawn_with_a_delay_comes_after_the_delay() {
    let up = Upstream::http1("web").await.expect("upstream");
    let config = "{abort: {status: 504}, delay: {duration: 200ms}}";
    let weft = faulty(up.addr, config).await;
    for version in VERSIONS {
        let started = Instant::now();
        let reply = send(weft.addr("public"), version, client::get("/")).await;
        let took = started.elapsed();
        assert_eq!(reply.status, 504, "{version:?}: {}", reply.text());
        assert_eq!(reply.text(), "fault filter abort", "{version:?}");
        assert!(
            took >= Duration::from_millis(200),
            "{version:?}: answered after {took:?}"
        );
    }
    assert_eq!(
        up.requests(),
        0,
        "the aborted requests never reach the upstream"
    );
    weft.shutdown().await;
}
