//! State plugins share across requests and instances: shared data with compare-and-swap (every
//! concurrent request, over HTTP/1.1 connections and h2c streams alike, gets its own count),
//! shared queues delivered to the root context, and timers ticking on their own.

use std::net::SocketAddr;
use std::time::Duration;

use http::Version;
use weft_e2e::client::{self, H2Conn, Reply};
use weft_e2e::filters::{STEP, start_one_filter, step};
use weft_e2e::resources::Filter;
use weft_e2e::upstream::header_values;
use weft_e2e::{wait_for, within};
use weft_test_artifacts::TARGETS;

/// The single value of request header `name` the upstream saw, as a number.
fn seen_number(reply: &Reply, name: &str) -> Option<u64> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    match header_values(&reply.json(), name).as_slice() {
        [] => None,
        [one] => Some(
            one.parse()
                .unwrap_or_else(|_| panic!("{name}: {one:?} is not a number")),
        ),
        many => panic!("{name} seen {} times: {many:?}", many.len()),
    }
}

/// `GET /` on a fresh connection of `version`.
async fn get(addr: SocketAddr, version: Version, what: &str) -> Reply {
    step(what, client::cleartext(addr, version, client::get("/"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_shared_count() {
    const N: u64 = 50;
    for target in TARGETS {
        let (_up, weft) = start_one_filter(target, Filter::new("shared")).await;
        let addr = weft.addr("public");

        // Half on their own HTTP/1.1 connections, half as streams of one h2c connection, all
        // at once.
        let h2 = step("connecting h2c", H2Conn::connect(addr)).await;
        let mut tasks = Vec::new();
        for i in 0..N {
            let h2 = h2.clone();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    client::h1(addr, client::get(&format!("/n/{i}"))).await
                } else {
                    h2.get(&format!("/n/{i}")).await
                }
            }));
        }
        let mut counts = Vec::new();
        for task in tasks {
            let reply = within(STEP, "a concurrent request", task)
                .await
                .expect("the request task")
                .unwrap_or_else(|e| panic!("{target}: a concurrent request failed: {e:#}"));
            counts.push(seen_number(&reply, "x-count").expect("x-count is set"));
        }
        counts.sort_unstable();
        assert_eq!(
            counts,
            (1..=N).collect::<Vec<_>>(),
            "{target}: each of {N} concurrent requests sees a distinct count, none lost"
        );

        // Every request enqueued its count; the root context drains the queue and records how
        // many items it took, which later requests report.
        let delivered = wait_for(
            || async {
                let reply = get(addr, Version::HTTP_11, "a request after the burst").await;
                seen_number(&reply, "x-dequeued").is_some_and(|n| n > 0)
            },
            STEP,
        )
        .await;
        assert!(
            delivered,
            "{target}: the shared queue is delivered to on_queue_ready (x-dequeued stays 0)"
        );
        let reply = get(addr, Version::HTTP_2, "a last request").await;
        assert!(
            seen_number(&reply, "x-count").is_some_and(|n| n > N),
            "{target}: the count keeps growing after the burst"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_ticks_without_traffic() {
    for target in TARGETS {
        let (_up, weft) =
            start_one_filter(target, Filter::new("tick").config("{period_ms: 50}")).await;
        let addr = weft.addr("public");
        let first = seen_number(
            &get(addr, Version::HTTP_11, "the first request").await,
            "x-ticks",
        )
        .unwrap_or(0);

        // No requests for 400 ms: ~8 periods of 50 ms.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let later = seen_number(
            &get(addr, Version::HTTP_2, "a request 400 ms later").await,
            "x-ticks",
        );
        assert!(
            later.is_some_and(|n| n >= first + 3),
            "{target}: a 50 ms timer ticks several times in 400 ms: {first} then {later:?}"
        );
        let still = wait_for(
            || async {
                let reply = get(addr, Version::HTTP_11, "a request after more ticks").await;
                seen_number(&reply, "x-ticks") > later
            },
            STEP,
        )
        .await;
        assert!(still, "{target}: the timer keeps ticking");
    }
}
