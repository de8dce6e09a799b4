//! `route`: chooses the upstream cluster and rewrites the path, as a router filter would.
//!
//! Exercises `proxy_set_property` / `proxy_get_property` with weft's documented routing
//! property `weft.upstream_cluster`, and `:path` through the header-map family.
//!
//! - Request headers: if the request carries `x-route: NAME`, sets the property
//!   `weft.upstream_cluster` to `NAME` (so the request goes to cluster `NAME`), reads it back and
//!   sets request header `x-routed-to: <value read back>`.
//! - A path starting with `/strip/` loses that prefix (`/strip/a?b` → `/a?b`), through `:path`.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

/// weft's routing property.
const UPSTREAM_CLUSTER: &str = "weft.upstream_cluster";

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_context_id, _root_context_id| Box::new(Route));
}}

/// The per-request context.
struct Route;

impl Context for Route {}

impl HttpContext for Route {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(cluster) = self.get_http_request_header("x-route") {
            self.set_property(vec![UPSTREAM_CLUSTER], Some(cluster.as_bytes()));
            let read_back = self
                .get_property(vec![UPSTREAM_CLUSTER])
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_else(|| "<none>".to_owned());
            self.set_http_request_header("x-routed-to", Some(&read_back));
        }
        if let Some(path) = self.get_http_request_header(":path")
            && let Some(rest) = path.strip_prefix("/strip/")
        {
            self.set_http_request_header(":path", Some(&format!("/{rest}")));
        }
        Action::Continue
    }
}
