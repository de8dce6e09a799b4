//! Draining: stop accepting, let in-flight requests finish (HTTP/1.1 and HTTP/2, with GOAWAY),
//! and give up after the drain timeout rather than hang.

use std::time::{Duration, Instant};

use weft_e2e::{client, client::H2Conn, upstream::Upstream, weft::Weft};

use crate::proxy::config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_http1_requests_finish_and_new_connections_are_refused() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "")).await.expect("weft");
    let addr = weft.addr("public");
    let in_flight = tokio::spawn(async move { client::h1(addr, client::get("/delay/600")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    weft.app.drain().await;
    let drained_after = started.elapsed();
    let reply = in_flight
        .await
        .expect("join")
        .expect("the in-flight request is answered");
    assert_eq!(reply.status, 200);
    assert!(
        drained_after >= Duration::from_millis(300),
        "the drain waited for the request: {drained_after:?}"
    );
    assert!(
        drained_after < Duration::from_secs(3),
        "and no longer: {drained_after:?}"
    );
    assert!(
        client::h1(addr, client::get("/")).await.is_err(),
        "no new connections after a drain"
    );
    assert_eq!(weft.admin_get("/ready").await.expect("ready").status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_get_goaway_and_their_streams_finish() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = Weft::start(&config(&[up.addr], "")).await.expect("weft");
    let conn = H2Conn::connect(weft.addr("public"))
        .await
        .expect("h2c connection");
    let stream = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.get("/delay/500").await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let drain = tokio::spawn(async move {
        weft.app.drain().await;
        weft
    });
    let reply = stream
        .await
        .expect("join")
        .expect("the in-flight stream completes");
    assert_eq!(reply.status, 200);
    assert!(
        conn.wait_closed(Duration::from_secs(3)).await,
        "the connection is closed with GOAWAY"
    );
    assert!(conn.get("/").await.is_err(), "no new streams after GOAWAY");
    drain.await.expect("drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_bounds_a_slow_request() {
    let up = Upstream::http1("web").await.expect("upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("weft.yaml"),
        config(&[up.addr], "  timeout: 30s\n"),
    )
    .expect("config");
    let weft = Weft::start_with(dir, |options| {
        options.drain_timeout = Duration::from_millis(300)
    })
    .await
    .expect("weft");
    let addr = weft.addr("public");
    let slow = tokio::spawn(async move { client::h1(addr, client::get("/delay/10000")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    weft.app.drain().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drain gives up after its timeout: {:?}",
        started.elapsed()
    );
    let outcome = tokio::time::timeout(Duration::from_secs(3), slow)
        .await
        .expect("the slow request ends once the drain is over");
    assert!(
        outcome.expect("join").is_err(),
        "the connection was closed under the unfinished request"
    );
}
