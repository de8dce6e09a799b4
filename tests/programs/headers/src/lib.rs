//! `headers`: rewrites request and response headers, and answers locally on request.
//!
//! Exercises the header-map family (`proxy_get_header_map_value`, `proxy_add_header_map_value`,
//! `proxy_remove_header_map_value`), `proxy_get_property` (`plugin_name`) and
//! `proxy_send_local_response`.
//!
//! - Request headers: adds `x-filtered-by: <name>`, where `<name>` is the `plugin_name`
//!   property or, if the host has none, the root context id in decimal. The header is *added*,
//!   so a chain with this filter twice shows the request order: `x-filtered-by: a` then `b`.
//!   Removes `x-remove-me`.
//! - `x-deny: 1` on the request: answers `403` with header `x-denied-by: <name>` and body
//!   `denied by <name>\n` (`send_http_response`), and pauses; nothing reaches the upstream.
//! - Response headers: adds `x-response-filter: 1` and `x-response-filtered-by: <name>` (the
//!   latter shows the reverse order of response phases in a chain).

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_context_id, root_context_id| {
        Box::new(Headers { root_context_id, name: None })
    });
}}

/// The per-request context.
struct Headers {
    root_context_id: u32,
    /// This filter's name, read once per request.
    name: Option<String>,
}

impl Headers {
    /// The `plugin_name` property, or the root context id if the host has no such property.
    fn name(&mut self) -> String {
        if self.name.is_none() {
            let name = self
                .get_property(vec!["plugin_name"])
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_else(|| self.root_context_id.to_string());
            self.name = Some(name);
        }
        self.name.clone().unwrap_or_default()
    }
}

impl Context for Headers {}

impl HttpContext for Headers {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let name = self.name();
        if self.get_http_request_header("x-deny").as_deref() == Some("1") {
            let body = format!("denied by {name}\n");
            self.send_http_response(403, vec![("x-denied-by", &name)], Some(body.as_bytes()));
            return Action::Pause;
        }
        self.add_http_request_header("x-filtered-by", &name);
        self.remove_http_request_header("x-remove-me");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let name = self.name();
        self.add_http_response_header("x-response-filter", "1");
        self.add_http_response_header("x-response-filtered-by", &name);
        Action::Continue
    }
}
