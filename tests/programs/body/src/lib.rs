//! `body`: buffers the whole request body, then replaces it with its ASCII uppercase; does the
//! same to the response body when the request carries `x-upper-response`, and answers 418 from
//! the response-body phase instead when it carries `x-reject-response`.
//!
//! Exercises body buffering (`Action::Pause` from the body callbacks until `end_of_stream`),
//! the buffer family (`proxy_get_buffer_bytes` and `proxy_set_buffer_bytes` on
//! `HttpRequestBody` and `HttpResponseBody`) and a local reply from a response-body phase. Only
//! ASCII letters change, so a body keeps its length (and any `content-length` stays right);
//! other bytes pass through untouched.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_context_id, _root_context_id| {
        Box::new(UppercaseBody::default())
    });
}}

/// The per-request context.
#[derive(Default)]
struct UppercaseBody {
    /// The request asked for its response body in uppercase.
    upper_response: bool,
    /// The request asked for a 418 from the response-body phase.
    reject_response: bool,
}

impl Context for UppercaseBody {}

impl HttpContext for UppercaseBody {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.upper_response = self.get_http_request_header("x-upper-response").is_some();
        self.reject_response = self.get_http_request_header("x-reject-response").is_some();
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.upper_response && !self.reject_response {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        if self.reject_response {
            self.send_http_response(418, vec![], Some(b"rejected by the response-body phase"));
            return Action::Pause;
        }
        if let Some(body) = self.get_http_response_body(0, body_size) {
            let upper = body.to_ascii_uppercase();
            self.set_http_response_body(0, body_size, &upper);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            // Keep buffering: the host calls again with the whole body so far.
            return Action::Pause;
        }
        if let Some(body) = self.get_http_request_body(0, body_size) {
            let upper = body.to_ascii_uppercase();
            self.set_http_request_body(0, body_size, &upper);
        }
        Action::Continue
    }
}
