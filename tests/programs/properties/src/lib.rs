//! `properties`: copies host properties into request headers.
//!
//! Exercises `proxy_get_property` with Envoy's property names and encodings. On request headers
//! it reads each property below and *sets* (replaces) the header next to it; a property the
//! host does not have (NOT_FOUND) leaves that header absent, so a client cannot spoof one.
//!
//! | property          | header                   | encoding read                        |
//! |-------------------|--------------------------|--------------------------------------|
//! | `request.path`    | `x-prop-request-path`    | string (path with query)             |
//! | `request.method`  | `x-prop-request-method`  | string                               |
//! | `source.address`  | `x-prop-source-address`  | string, `ip:port`                    |
//! | `connection.mtls` | `x-prop-connection-mtls` | bool, one byte → `true` / `false`    |
//! | `plugin_name`     | `x-prop-plugin-name`     | string                               |
//!
//! A value that is not valid UTF-8 is copied lossily; a `connection.mtls` value that is not one
//! byte is written as `bad-bool:<hex bytes>` so a wrong encoding shows in the test's failure.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_context_id, _root_context_id| Box::new(Properties));
}}

/// How a property's bytes become a header value.
#[derive(Clone, Copy)]
enum Encoding {
    String,
    Bool,
}

/// Property path, header name, encoding.
const COPIED: &[(&[&str], &str, Encoding)] = &[
    (
        &["request", "path"],
        "x-prop-request-path",
        Encoding::String,
    ),
    (
        &["request", "method"],
        "x-prop-request-method",
        Encoding::String,
    ),
    (
        &["source", "address"],
        "x-prop-source-address",
        Encoding::String,
    ),
    (
        &["connection", "mtls"],
        "x-prop-connection-mtls",
        Encoding::Bool,
    ),
    (&["plugin_name"], "x-prop-plugin-name", Encoding::String),
];

/// The per-request context.
struct Properties;

impl Context for Properties {}

impl HttpContext for Properties {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for &(path, header, encoding) in COPIED {
            let value = self
                .get_property(path.to_vec())
                .map(|bytes| decode(&bytes, encoding));
            self.set_http_request_header(header, value.as_deref());
        }
        Action::Continue
    }
}

fn decode(bytes: &[u8], encoding: Encoding) -> String {
    match (encoding, bytes) {
        (Encoding::String, _) => String::from_utf8_lossy(bytes).into_owned(),
        (Encoding::Bool, [0]) => "false".to_owned(),
        (Encoding::Bool, [1]) => "true".to_owned(),
        (Encoding::Bool, other) => {
            let hex: String = other.iter().map(|b| format!("{b:02x}")).collect();
            format!("bad-bool:{hex}")
        }
    }
}
