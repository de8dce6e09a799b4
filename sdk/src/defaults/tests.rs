//! The word of default callbacks, driven through the native harness (which runs the same
//! callbacks as the Wasm exports). Each test runs on a thread of its own: the word is a
//! thread-local, and a test thread may be reused.

use std::rc::Rc;

use serde::Deserialize;
use weft_abi::StreamCallback::{
    Log, RequestBody, RequestHeaders, RequestTrailers, ResponseBody, ResponseHeaders,
    ResponseTrailers,
};

use super::current;
use crate::testing::{Harness, TestRequest, TestResponse};
use crate::{Action, Filter, Request, Response, Result};
use crate::{Counter, Log as LogView};

#[derive(Deserialize)]
struct Config {}

/// Overrides the request headers only.
struct HeadersOnly;

impl Filter for HeadersOnly {
    type Config = Config;

    fn new(_: &Rc<Config>) -> Self {
        HeadersOnly
    }

    fn on_request_headers(&mut self, request: &mut Request) -> Result<Action> {
        request.set_header("x-seen", "1")?;
        Ok(Action::Continue)
    }
}

/// Overrides the response body only.
struct BodyRewriter;

impl Filter for BodyRewriter {
    type Config = Config;

    fn new(_: &Rc<Config>) -> Self {
        BodyRewriter
    }

    fn on_response_body(&mut self, response: &mut Response) -> Result<Action> {
        let body = response.body()?.to_ascii_uppercase();
        response.set_body(&body)?;
        Ok(Action::Continue)
    }
}

/// Overrides `on_log` only.
struct Logger;

impl Filter for Logger {
    type Config = Config;

    fn new(_: &Rc<Config>) -> Self {
        Logger
    }

    fn on_log(&mut self, _: &LogView) {
        let _ = Counter::define("logged").and_then(|c| c.increment(1));
    }
}

/// Overrides every phase by handing it to a `HeadersOnly` — whose defaults run inside these
/// overrides, which do more.
struct Wrapper {
    inner: HeadersOnly,
}

impl Filter for Wrapper {
    type Config = Config;

    fn new(config: &Rc<Config>) -> Self {
        Wrapper {
            inner: HeadersOnly::new(config),
        }
    }

    fn on_request_body(&mut self, request: &mut Request) -> Result<Action> {
        self.inner.on_request_body(request)?;
        request.set_body(b"wrapped")?;
        Ok(Action::Continue)
    }

    fn on_response_headers(&mut self, response: &mut Response) -> Result<Action> {
        self.inner.on_response_headers(response)?;
        response.set_header("x-wrapped", "1")?;
        Ok(Action::Continue)
    }

    fn on_response_body(&mut self, response: &mut Response) -> Result<Action> {
        self.inner.on_response_body(response)?;
        response.set_body(b"wrapped")?;
        Ok(Action::Continue)
    }
}

/// A request with a body and a response with a body through a fresh harness of `F`.
fn exchange<F: Filter>() {
    let harness = Harness::<F>::new("{}").expect("configured");
    let exchange = harness.request(TestRequest::post("/").body("hello"));
    assert_eq!(exchange.action(), Action::Continue);
    exchange.respond(TestResponse::new(200).body("world"));
    exchange.finish();
}

fn on_fresh_thread(test: impl FnOnce() + Send + 'static) {
    std::thread::spawn(test).join().expect("test thread");
}

fn bits(callbacks: &[weft_abi::StreamCallback]) -> u32 {
    callbacks.iter().fold(0, |word, c| word | c.bit())
}

#[test]
fn trailers_are_known_before_any_filter_runs() {
    on_fresh_thread(|| {
        assert_eq!(current(), bits(&[RequestTrailers, ResponseTrailers]));
    });
}

#[test]
fn the_defaults_a_filter_keeps_are_recorded_once_they_ran() {
    on_fresh_thread(|| {
        exchange::<HeadersOnly>();
        assert_eq!(
            current(),
            bits(&[
                RequestBody,
                RequestTrailers,
                ResponseHeaders,
                ResponseBody,
                ResponseTrailers,
                Log
            ]),
            "everything but the overridden request headers"
        );
    });
}

#[test]
fn an_overridden_callback_is_never_recorded() {
    on_fresh_thread(|| {
        for _ in 0..3 {
            exchange::<BodyRewriter>();
        }
        assert_eq!(current() & ResponseBody.bit(), 0);
        assert_eq!(
            current(),
            bits(&[
                RequestHeaders,
                RequestBody,
                RequestTrailers,
                ResponseHeaders,
                ResponseTrailers,
                Log
            ])
        );
    });
}

#[test]
fn a_default_run_inside_another_types_override_is_not_recorded() {
    on_fresh_thread(|| {
        exchange::<Wrapper>();
        assert_eq!(
            current(),
            bits(&[RequestHeaders, RequestTrailers, ResponseTrailers, Log]),
            "only `Wrapper`'s own defaults (request headers, log) count"
        );
    });
}

#[test]
fn a_second_filter_type_leaves_only_the_trailers() {
    on_fresh_thread(|| {
        exchange::<HeadersOnly>();
        exchange::<BodyRewriter>();
        assert_eq!(current(), bits(&[RequestTrailers, ResponseTrailers]));
        exchange::<HeadersOnly>();
        assert_eq!(current(), bits(&[RequestTrailers, ResponseTrailers]));
    });
}

#[test]
fn an_overridden_on_log_keeps_being_called() {
    on_fresh_thread(|| {
        let harness = Harness::<Logger>::new("{}").expect("configured");
        for _ in 0..3 {
            let exchange = harness.request(TestRequest::get("/"));
            exchange.respond(TestResponse::new(200));
            exchange.finish();
        }
        assert_eq!(harness.counter("logged"), Some(3));
        assert_eq!(current() & Log.bit(), 0, "on_log is the filter's own");
        assert_ne!(current() & ResponseHeaders.bit(), 0);
    });
}
