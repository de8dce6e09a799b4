//! hello-filter: the filter of the weft SDK walkthrough (`README.md` next to this crate).
//!
//! It adds `x-hello: <greeting>` to every request on its way upstream, answers
//! `GET /hello/filter` itself, and stamps every response with `x-served-by: hello-filter`.
//! Configuration: `{"greeting": "..."}` (default `hello`).

use std::rc::Rc;

use serde::Deserialize;
use weft_sdk::{Action, Counter, Filter, Request, Response, Result};

/// The filter's configuration (the `config` of its chain entry).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What the filter says.
    #[serde(default = "default_greeting")]
    pub greeting: String,
}

fn default_greeting() -> String {
    "hello".into()
}

/// One request's filter.
pub struct Hello {
    config: Rc<Config>,
}

impl Filter for Hello {
    type Config = Config;

    fn configure(config: &mut Config) -> Result<(), String> {
        if config.greeting.is_empty() || config.greeting.contains(['\r', '\n']) {
            return Err("greeting: must be a non-empty single line".into());
        }
        Ok(())
    }

    fn new(config: &Rc<Config>) -> Self {
        Hello {
            config: config.clone(),
        }
    }

    fn on_request_headers(&mut self, request: &mut Request) -> Result<Action> {
        Counter::define("hello_requests_total")?.increment(1)?;
        if request.path()? == "/hello/filter" {
            let body = format!("{} from a weft filter\n", self.config.greeting);
            return request.respond(200, &[("content-type", "text/plain")], body.as_bytes());
        }
        request.set_header("x-hello", &self.config.greeting)?;
        Ok(Action::Continue)
    }

    fn on_response_headers(&mut self, response: &mut Response) -> Result<Action> {
        response.set_header("x-served-by", "hello-filter")?;
        Ok(Action::Continue)
    }
}

weft_sdk::export_filter!(Hello);

#[cfg(test)]
mod tests {
    use weft_sdk::testing::{Harness, TestRequest, TestResponse};

    use super::*;

    #[test]
    fn greets_requests_on_their_way_upstream() {
        let harness = Harness::<Hello>::new(r#"{"greeting": "hi"}"#).expect("valid config");
        let exchange = harness.request(TestRequest::get("/api"));
        assert_eq!(exchange.action(), Action::Continue);
        assert_eq!(exchange.request_header("x-hello").as_deref(), Some("hi"));
        exchange.respond(TestResponse::new(200));
        assert_eq!(
            exchange.response_header("x-served-by").as_deref(),
            Some("hello-filter")
        );
        assert_eq!(harness.counter("hello_requests_total"), Some(1));
    }

    #[test]
    fn answers_its_own_path_locally() {
        let harness = Harness::<Hello>::new("{}").expect("valid config");
        let exchange = harness.request(TestRequest::get("/hello/filter"));
        let reply = exchange.local_reply().expect("a local reply");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body_text(), "hello from a weft filter\n");
    }

    #[test]
    fn refuses_a_bad_greeting_naming_the_field() {
        let error = Harness::<Hello>::new(r#"{"greeting": ""}"#).err();
        assert!(error.is_some_and(|e| e.contains("greeting")));
        let error = Harness::<Hello>::new(r#"{"greting": "x"}"#).err();
        assert!(error.is_some_and(|e| e.contains("unknown field `greting`")));
    }
}
