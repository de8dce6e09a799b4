//! Native tests of the ratelimit filter through `weft_sdk::testing`: buckets, headers, refill,
//! keys, sharing between workers and configuration errors.

use std::time::Duration;

use weft_sdk::Action;
use weft_sdk::testing::{Exchange, Harness, TestRequest, TestResponse};

use super::*;

fn harness(config: &str) -> Harness<RateLimit> {
    match Harness::<RateLimit>::new(config) {
        Ok(harness) => harness,
        Err(e) => panic!("configuration refused: {e}"),
    }
}

/// Sends `request` and, when it went on, a 200 response; the status the client sees.
fn status(exchange: &Exchange<'_, RateLimit>) -> u16 {
    match exchange.local_reply() {
        Some(reply) => reply.status,
        None => {
            assert_eq!(exchange.action(), Action::Continue);
            exchange.respond(TestResponse::new(200));
            200
        }
    }
}

fn statuses(harness: &Harness<RateLimit>, request: &TestRequest, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| status(&harness.request(request.clone())))
        .collect()
}

#[test]
fn allows_a_burst_then_answers_429_with_retry_after_and_quota_headers() {
    let harness = harness(r#"{"key": "client_ip", "rate": "2/s", "burst": 3}"#);
    for left in ["2", "1", "0"] {
        let exchange = harness.request(TestRequest::get("/"));
        assert_eq!(status(&exchange), 200);
        assert_eq!(
            exchange.response_header("x-ratelimit-limit").as_deref(),
            Some("3")
        );
        assert_eq!(
            exchange.response_header("x-ratelimit-remaining").as_deref(),
            Some(left)
        );
        assert_eq!(
            exchange.response_header("x-ratelimit-reset").as_deref(),
            Some("1")
        );
    }
    let refused = harness.request(TestRequest::get("/"));
    let reply = refused.local_reply().expect("a 429");
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(reply.header("x-ratelimit-reset"), Some("1"));
    assert_eq!(reply.body_text(), "rate limited\n");
    assert_eq!(
        harness.counter(r#"ratelimit_allowed_total{filter="test"}"#),
        Some(3)
    );
    assert_eq!(
        harness.counter(r#"ratelimit_limited_total{filter="test"}"#),
        Some(1)
    );
}

#[test]
fn burst_defaults_to_the_rate() {
    let harness = harness(r#"{"key": "client_ip", "rate": "5/m"}"#);
    let request = TestRequest::get("/");
    assert_eq!(
        statuses(&harness, &request, 6),
        [200, 200, 200, 200, 200, 429]
    );
}

#[test]
fn refills_over_time_one_token_per_interval() {
    let harness = harness(r#"{"key": "client_ip", "rate": "1/m", "burst": 2}"#);
    let request = TestRequest::get("/");
    assert_eq!(statuses(&harness, &request, 3), [200, 200, 429]);

    harness.advance(Duration::from_secs(20));
    let refused = harness.request(request.clone());
    let reply = refused.local_reply().expect("still limited");
    assert_eq!(reply.header("retry-after"), Some("40"));
    drop(refused);

    harness.advance(Duration::from_secs(40));
    let allowed = harness.request(request.clone());
    assert_eq!(status(&allowed), 200);
    assert_eq!(
        allowed.response_header("x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    drop(allowed);
    assert_eq!(statuses(&harness, &request, 1), [429]);

    // A long quiet time fills the bucket up to its burst, no further.
    harness.advance(Duration::from_secs(3_600));
    assert_eq!(statuses(&harness, &request, 3), [200, 200, 429]);
}

#[test]
fn keeps_one_bucket_per_client_ip_whatever_the_port() {
    let harness = harness(r#"{"key": "client_ip", "rate": "1/h"}"#);
    let first = TestRequest::get("/").client("10.0.0.1:1000");
    let same_ip = TestRequest::get("/").client("10.0.0.1:2000");
    let other = TestRequest::get("/").client("10.0.0.2:1000");
    let v6 = TestRequest::get("/").client("[2001:db8::1]:443");
    let v6_same = TestRequest::get("/").client("[2001:db8::1]:444");
    assert_eq!(statuses(&harness, &first, 1), [200]);
    assert_eq!(statuses(&harness, &same_ip, 1), [429]);
    assert_eq!(statuses(&harness, &other, 2), [200, 429]);
    assert_eq!(statuses(&harness, &v6, 1), [200]);
    assert_eq!(statuses(&harness, &v6_same, 1), [429]);
    assert!(
        harness
            .shared_data("ratelimit:test:client_ip:2001:db8::1")
            .is_some_and(|v| v.len() == 8)
    );
    assert!(
        harness
            .shared_data("ratelimit:test:client_ip:10.0.0.1")
            .is_some()
    );
}

#[test]
fn workers_sharing_the_proxy_share_buckets_exactly() {
    let config = r#"{"key": "header:x-user", "rate": "1/h", "burst": 10}"#;
    let one = harness(config);
    let two = match Harness::<RateLimit>::sharing(&one, config) {
        Ok(harness) => harness,
        Err(e) => panic!("configuration refused: {e}"),
    };
    let request = TestRequest::get("/").header("x-user", "ann");
    let mut allowed = 0;
    for i in 0..30 {
        let worker = if i % 3 == 0 { &one } else { &two };
        if status(&worker.request(request.clone())) == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
    assert_eq!(
        one.counter(r#"ratelimit_limited_total{filter="test"}"#),
        Some(20)
    );
}

#[test]
fn a_header_key_limits_each_value_and_skips_requests_without_it() {
    let harness = harness(r#"{"key": "header:X-User", "rate": "1/h"}"#);
    let ann = TestRequest::get("/").header("x-user", "ann");
    let bob = TestRequest::get("/").header("x-user", "bob");
    let nobody = TestRequest::get("/");
    assert_eq!(statuses(&harness, &ann, 2), [200, 429]);
    assert_eq!(statuses(&harness, &bob, 2), [200, 429]);
    assert_eq!(statuses(&harness, &nobody, 3), [200, 200, 200]);
    let unlimited = harness.request(nobody);
    assert_eq!(status(&unlimited), 200);
    assert_eq!(unlimited.response_header("x-ratelimit-limit"), None);
}

#[test]
fn a_principal_key_limits_each_identity_and_all_anonymous_clients_together() {
    let harness = harness(r#"{"key": "principal", "rate": "1/h"}"#);
    let web = TestRequest::get("/").principal("spiffe://mesh/ns/a/sa/web");
    let api = TestRequest::get("/").principal("spiffe://mesh/ns/a/sa/api");
    assert_eq!(statuses(&harness, &web, 2), [200, 429]);
    assert_eq!(statuses(&harness, &api, 1), [200]);
    let anonymous_one = TestRequest::get("/").client("10.0.0.1:1");
    let anonymous_two = TestRequest::get("/").client("10.0.0.2:1");
    assert_eq!(statuses(&harness, &anonymous_one, 1), [200]);
    assert_eq!(statuses(&harness, &anonymous_two, 1), [429]);
}

#[test]
fn a_route_key_limits_each_path_whatever_the_query() {
    let harness = harness(r#"{"key": "route", "rate": "1/h"}"#);
    let a = TestRequest::get("/a?page=1");
    let a_other_query = TestRequest::get("/a?page=2");
    let b = TestRequest::get("/b");
    assert_eq!(statuses(&harness, &a, 1), [200]);
    assert_eq!(statuses(&harness, &a_other_query, 1), [429]);
    assert_eq!(statuses(&harness, &b, 1), [200]);
}

#[test]
fn refuses_bad_configurations_naming_the_field() {
    let refused = |config: &str| match Harness::<RateLimit>::new(config) {
        Ok(_) => panic!("accepted {config}"),
        Err(e) => e,
    };
    for (config, expected) in [
        (r#"{"key": "client_ip", "rate": "10/d"}"#, "rate: `10/d`"),
        (r#"{"key": "client_ip", "rate": "0/s"}"#, "rate: `0/s`"),
        (
            r#"{"key": "client_ip", "rate": "many/s"}"#,
            "rate: `many/s`",
        ),
        (r#"{"key": "client_ip", "rate": "5"}"#, "rate: `5`"),
        (
            r#"{"key": "client_ip", "rate": "5/s", "burst": 0}"#,
            "burst: must be at least 1",
        ),
        (r#"{"key": "ip", "rate": "5/s"}"#, "key: unknown key `ip`"),
        (r#"{"key": "header:", "rate": "5/s"}"#, "key: `` is not"),
        (
            r#"{"key": "header:a b", "rate": "5/s"}"#,
            "key: `a b` is not",
        ),
        (r#"{"rate": "5/s"}"#, "missing field `key`"),
        (
            r#"{"key": "route", "rate": "5/s", "burts": 1}"#,
            "unknown field `burts`",
        ),
        (
            r#"{"key": "route", "rate": "2000000000/s"}"#,
            "rate: `2000000000/s`",
        ),
    ] {
        let error = refused(config);
        assert!(error.contains(expected), "{config}: {error}");
    }
}

#[test]
fn client_ip_strips_the_port() {
    assert_eq!(client_ip("192.0.2.1:8080"), "192.0.2.1");
    assert_eq!(client_ip("[::1]:8080"), "::1");
    assert_eq!(client_ip("192.0.2.1"), "192.0.2.1");
    assert_eq!(client_ip("::1"), "::1");
    assert_eq!(client_ip("[::1"), "[::1");
}
