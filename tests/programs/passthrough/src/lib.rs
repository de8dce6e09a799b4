//! `passthrough`: does nothing. Every callback keeps its default, which returns `Continue`.
//!
//! Exercises only the context lifecycle (`proxy_on_context_create`, the request and response
//! callbacks, `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`) and no host function at all:
//! the baseline the benchmarks measure a filter's fixed cost with.

use proxy_wasm::traits::{Context, HttpContext};

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_context_id, _root_context_id| Box::new(Passthrough));
}}

/// The per-request context; every phase continues at once.
struct Passthrough;

impl Context for Passthrough {}

impl HttpContext for Passthrough {}
