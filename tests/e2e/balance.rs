//! Load balancing over real upstreams: round robin spreads exactly, random reaches everyone,
//! least request avoids a busy endpoint, and an endpoint that keeps failing is ejected, its
//! traffic retried elsewhere, and taken back once the ejection time has passed.

use std::time::Duration;

use weft_e2e::{client, raw::RawUpstream, upstream::Upstream, wait_for, weft::Weft};

use crate::proxy::config;

async fn upstreams(n: usize) -> Vec<Upstream> {
    let mut ups = Vec::new();
    for i in 0..n {
        ups.push(Upstream::http1(&format!("u{i}")).await.expect("upstream"));
    }
    ups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_exactly() {
    let ups = upstreams(3).await;
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let weft = Weft::start(&config(&addrs, "  loadBalancer: ROUND_ROBIN\n"))
        .await
        .expect("weft");
    for _ in 0..30 {
        let reply = client::h1(weft.addr("public"), client::get("/"))
            .await
            .expect("request");
        assert_eq!(reply.status, 200);
    }
    let counts: Vec<_> = ups.iter().map(Upstream::requests).collect();
    assert_eq!(counts, vec![10, 10, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reaches_every_endpoint() {
    let ups = upstreams(3).await;
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let weft = Weft::start(&config(&addrs, "  loadBalancer: RANDOM\n"))
        .await
        .expect("weft");
    for _ in 0..150 {
        let reply = client::h1(weft.addr("public"), client::get("/"))
            .await
            .expect("request");
        assert_eq!(reply.status, 200);
    }
    let counts: Vec<_> = ups.iter().map(Upstream::requests).collect();
    assert_eq!(counts.iter().sum::<usize>(), 150);
    assert!(
        counts.iter().all(|&c| c >= 20),
        "every endpoint gets a fair share: {counts:?}"
    );
}

/// One endpoint never answers; requests stuck there keep it busy. Least request sends the rest
/// to the idle endpoint, where round robin would keep feeding the stuck one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_a_busy_endpoint() {
    let stuck = RawUpstream::silent().await.expect("silent upstream");
    let healthy = Upstream::http1("healthy").await.expect("upstream");
    let extra = "  loadBalancer: LEAST_REQUEST\n  timeout: 10s\n";
    let weft = Weft::start(&config(&[stuck.addr, healthy.addr], extra))
        .await
        .expect("weft");
    let addr = weft.addr("public");
    // Pile requests up until some are stuck on the silent endpoint.
    let mut hanging = Vec::new();
    for _ in 0..6 {
        hanging.push(tokio::spawn(async move {
            client::h1(addr, client::get("/hang")).await
        }));
    }
    // Each request stuck on the silent endpoint holds its own connection there.
    let placed = wait_for(
        || async { stuck.connections() + healthy.requests() == 6 },
        Duration::from_secs(3),
    )
    .await;
    assert!(
        placed && stuck.connections() >= 1,
        "some requests are stuck on the silent endpoint"
    );
    let before = healthy.requests();
    for _ in 0..10 {
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            client::h1(addr, client::get("/fast")),
        )
        .await
        .expect("least request must not queue behind the busy endpoint")
        .expect("request");
        assert_eq!(reply.status, 200);
    }
    assert_eq!(healthy.requests() - before, 10);
    for task in hanging {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected_retried_around_and_comes_back() {
    let steady = Upstream::http1("steady").await.expect("upstream");
    let mut flaky = Upstream::http1("flaky").await.expect("upstream");
    let extra = "  retries: 1\n  outlierDetection: {consecutiveFailures: 2, ejectionTime: 1s}\n";
    let weft = Weft::start(&config(&[steady.addr, flaky.addr], extra))
        .await
        .expect("weft");
    let addr = weft.addr("public");

    flaky.down().await;
    for _ in 0..10 {
        let reply = client::h1(addr, client::get("/")).await.expect("request");
        assert_eq!(
            reply.status,
            200,
            "connection failures are retried on the other endpoint: {}",
            reply.text()
        );
        assert_eq!(reply.header("x-upstream"), Some("steady"));
    }
    let clusters = weft.admin_get("/clusters").await.expect("clusters").text();
    assert!(
        clusters.contains(&format!(
            "web::{}::health_flags::/failed_outlier_check",
            flaky.addr
        )),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("web::{}::health_flags::healthy", steady.addr)),
        "{clusters}"
    );
    assert_eq!(
        weft.metric("weft_upstream_ejections_total{cluster=\"web\"}")
            .await,
        Some(1.0)
    );
    assert!(
        weft.metric("weft_upstream_retries_total{cluster=\"web\"}")
            .await
            .unwrap_or(0.0)
            >= 2.0
    );

    // Back up; once the ejection time has passed it takes traffic again.
    flaky.restart().await.expect("restart");
    let back = wait_for(
        || async {
            let _ = client::h1(addr, client::get("/")).await;
            flaky.requests() > 0
        },
        Duration::from_secs(4),
    )
    .await;
    assert!(back, "the endpoint returns after its ejection time");
    let clusters = weft.admin_get("/clusters").await.expect("clusters").text();
    assert!(
        clusters.contains(&format!("web::{}::health_flags::healthy", flaky.addr)),
        "{clusters}"
    );
}
