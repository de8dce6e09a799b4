//! `body`: buffers the whole request body, then replaces it with its ASCII uppercase.
//!
//! Exercises body buffering (`Action::Pause` from `on_http_request_body` until `end_of_stream`)
//! and the buffer family: `proxy_get_buffer_bytes` and `proxy_set_buffer_bytes` on
//! `HttpRequestBody`. Only ASCII letters change, so the body keeps its length (and any
//! `content-length` stays right); other bytes pass through untouched.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_context_id, _root_context_id| Box::new(UppercaseBody));
}}

/// The per-request context.
struct UppercaseBody;

impl Context for UppercaseBody {}

impl HttpContext for UppercaseBody {
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
