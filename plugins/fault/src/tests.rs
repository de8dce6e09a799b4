//! Native tests of the fault plugin through `weft_sdk::testing`: aborts, delays held on the
//! SDK's timer, abort after delay, header triggers, percentages and configuration errors.

use std::time::Duration;

use weft_sdk::Action;
use weft_sdk::testing::{Harness, TestRequest};

use super::*;

fn fault(config: &str) -> Harness<Fault> {
    match Harness::<Fault>::new(config) {
        Ok(harness) => harness,
        Err(e) => panic!("configuration refused: {e}"),
    }
}

const ABORTS: &str = "fault_aborts_total{filter=\"test\"}";
const DELAYS: &str = "fault_delays_total{filter=\"test\"}";

#[test]
fn abort_at_100_percent_answers_with_the_status() {
    let harness = fault(r#"{"abort": {"status": 503, "percent": 100}}"#);
    for _ in 0..3 {
        let exchange = harness.request(TestRequest::get("/"));
        assert_eq!(exchange.action(), Action::Pause);
        let reply = exchange.local_reply().expect("an abort");
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body_text(), "fault filter abort");
    }
    assert_eq!(harness.counter(ABORTS), Some(3));
}

#[test]
fn percent_defaults_to_100() {
    let harness = fault(r#"{"abort": {"status": 418}}"#);
    let exchange = harness.request(TestRequest::get("/"));
    assert_eq!(exchange.local_reply().map(|r| r.status), Some(418));
}

#[test]
fn zero_percent_lets_every_request_pass_untouched() {
    let harness = fault(
        r#"{"abort": {"status": 503, "percent": 0}, "delay": {"duration": "1s", "percent": 0}}"#,
    );
    for _ in 0..100 {
        let exchange = harness.request(TestRequest::get("/"));
        assert_eq!(exchange.action(), Action::Continue);
        assert_eq!(exchange.local_reply(), None);
    }
    // Nothing happened, so nothing was counted (or even defined).
    assert_eq!(harness.counter(ABORTS), None);
    assert_eq!(harness.counter(DELAYS), None);
}

#[test]
fn header_trigger_limits_faults_to_requests_with_the_header() {
    let harness = fault(r#"{"abort": {"status": 500}, "headerTrigger": "X-Fault"}"#);
    let plain = harness.request(TestRequest::get("/"));
    assert_eq!(plain.action(), Action::Continue);
    assert_eq!(plain.local_reply(), None);
    let triggered = harness.request(TestRequest::get("/").header("x-fault", ""));
    assert_eq!(triggered.local_reply().map(|r| r.status), Some(500));
    assert_eq!(harness.counter(ABORTS), Some(1));
}

#[test]
fn a_delay_holds_the_request_until_its_time_is_up() {
    let harness = fault(r#"{"delay": {"duration": "300ms"}}"#);
    let delayed = harness.request(TestRequest::get("/"));
    assert_eq!(delayed.action(), Action::Pause);
    assert_eq!(harness.counter(DELAYS), Some(1));
    harness.advance(Duration::from_millis(299));
    assert!(!delayed.resumed(), "resumed before the delay was over");
    harness.advance(Duration::from_millis(1));
    assert!(delayed.resumed(), "not resumed once the delay was over");
    assert_eq!(delayed.local_reply(), None);
}

#[test]
fn delays_of_concurrent_requests_run_side_by_side() {
    let harness = fault(r#"{"delay": {"duration": "1s"}, "headerTrigger": "x-slow"}"#);
    let first = harness.request(TestRequest::get("/").header("x-slow", "1"));
    harness.advance(Duration::from_millis(500));
    let second = harness.request(TestRequest::get("/").header("x-slow", "1"));
    let fast = harness.request(TestRequest::get("/"));
    assert_eq!(fast.action(), Action::Continue);
    harness.advance(Duration::from_millis(500));
    assert!(first.resumed());
    assert!(!second.resumed());
    harness.advance(Duration::from_millis(500));
    assert!(second.resumed());
}

#[test]
fn with_both_drawn_the_abort_comes_after_the_delay() {
    let harness = fault(r#"{"abort": {"status": 504}, "delay": {"duration": "2s"}}"#);
    let exchange = harness.request(TestRequest::get("/"));
    assert_eq!(exchange.action(), Action::Pause);
    assert_eq!(exchange.local_reply(), None, "aborted before the delay");
    harness.advance(Duration::from_millis(1999));
    assert_eq!(exchange.local_reply(), None);
    harness.advance(Duration::from_millis(1));
    assert_eq!(exchange.local_reply().map(|r| r.status), Some(504));
    assert!(
        !exchange.resumed(),
        "an aborted request must not go upstream"
    );
    assert_eq!(harness.counter(DELAYS), Some(1));
    assert_eq!(harness.counter(ABORTS), Some(1));
}

#[test]
fn percentages_select_about_that_share_of_requests() {
    let harness = fault(
        r#"{"abort": {"status": 503, "percent": 25}, "delay": {"duration": "1ms", "percent": 12.5}}"#,
    );
    let (mut aborted, mut delayed) = (0u32, 0u32);
    for _ in 0..8000 {
        let exchange = harness.request(TestRequest::get("/"));
        if exchange.action() == Action::Pause && exchange.local_reply().is_none() {
            delayed += 1;
            harness.advance(Duration::from_millis(1));
        }
        if exchange.local_reply().is_some() {
            aborted += 1;
        }
    }
    // 25 % of 8000 = 2000, 12.5 % = 1000; five standard deviations either side.
    assert!(
        (1800..=2200).contains(&aborted),
        "aborted {aborted} of 8000"
    );
    assert!((860..=1140).contains(&delayed), "delayed {delayed} of 8000");
    assert_eq!(harness.counter(ABORTS), Some(u64::from(aborted)));
    assert_eq!(harness.counter(DELAYS), Some(u64::from(delayed)));
}

#[test]
fn durations_take_ms_s_and_m() {
    let cases = [
        ("100ms", Duration::from_millis(100)),
        ("300ms", Duration::from_millis(300)),
        ("2s", Duration::from_secs(2)),
        ("1.5s", Duration::from_millis(1500)),
        ("0.25ms", Duration::from_micros(250)),
        ("1m", Duration::from_secs(60)),
    ];
    for (text, expected) in cases {
        assert_eq!(config::parse_duration(text), Ok(expected), "{text}");
    }
}

#[test]
fn config_errors_name_the_field() {
    let cases = [
        ("{}", "set `abort`, `delay` or both"),
        (
            r#"{"abort": {"status": 600}}"#,
            "abort.status: 600 is not a status in 200..=599",
        ),
        (
            r#"{"abort": {"status": 199}}"#,
            "abort.status: 199 is not a status in 200..=599",
        ),
        (
            r#"{"abort": {"status": 503, "percent": 100.5}}"#,
            "abort.percent: 100.5 is not between 0 and 100",
        ),
        (
            r#"{"delay": {"duration": "1s", "percent": -1}}"#,
            "delay.percent: -1 is not between 0 and 100",
        ),
        (
            r#"{"delay": {"duration": "100"}}"#,
            "delay.duration: `100` needs a unit",
        ),
        (
            r#"{"delay": {"duration": "5h"}}"#,
            "delay.duration: `5h`: unknown unit `h`",
        ),
        (
            r#"{"delay": {"duration": "0ms"}}"#,
            "delay.duration: `0ms` must be more than 0",
        ),
        (
            r#"{"delay": {"duration": "ms"}}"#,
            "delay.duration: `ms` is not a number",
        ),
        (
            r#"{"delay": {"duration": "1.2.3s"}}"#,
            "delay.duration: `1.2.3s` is not a number",
        ),
        (
            r#"{"abort": {"status": 503}, "headerTrigger": ""}"#,
            "headerTrigger: `` is not a header name",
        ),
        (
            r#"{"abort": {"code": 503}}"#,
            "abort.code: unknown field `code`",
        ),
        (r#"{"abort": {}}"#, "missing field `status`"),
        (
            r#"{"delay": {"duration": 100}}"#,
            "delay.duration: invalid type",
        ),
    ];
    for (config, expected) in cases {
        let error = match Harness::<Fault>::new(config) {
            Ok(_) => panic!("configuration accepted: {config}"),
            Err(e) => e,
        };
        assert!(
            error.contains(expected),
            "config {config}\n  error    {error}\n  expected {expected}"
        );
    }
}
