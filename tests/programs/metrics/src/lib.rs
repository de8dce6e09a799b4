//! `metrics`: one metric of each kind, updated per request.
//!
//! Exercises the metrics family: `proxy_define_metric` (in `on_configure`),
//! `proxy_increment_metric`, `proxy_record_metric` and `proxy_get_metric`.
//!
//! | metric                        | kind      | per request                                 |
//! |-------------------------------|-----------|---------------------------------------------|
//! | `weft_test_requests`          | counter   | +1 on request headers                       |
//! | `weft_test_active_requests`   | gauge     | +1 on request headers, −1 in `on_log`       |
//! | `weft_test_request_headers`   | histogram | records the request's number of headers     |
//!
//! After incrementing, it sets request header `x-requests: <counter value>` (`proxy_get_metric`).
//! A host that cannot define the metrics makes `on_configure` return false; an error from any
//! later metric call panics (traps), since it can only be a host bug.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_context_id| Box::new(MetricsRoot { ids: None }));
}}

/// The ids `proxy_define_metric` returned.
#[derive(Clone, Copy)]
struct MetricIds {
    requests: u32,
    active: u32,
    headers: u32,
}

/// The root context: defines the metrics.
struct MetricsRoot {
    ids: Option<MetricIds>,
}

impl Context for MetricsRoot {}

impl RootContext for MetricsRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let define = |kind, name| hostcalls::define_metric(kind, name).ok();
        self.ids = match (
            define(MetricType::Counter, "weft_test_requests"),
            define(MetricType::Gauge, "weft_test_active_requests"),
            define(MetricType::Histogram, "weft_test_request_headers"),
        ) {
            (Some(requests), Some(active), Some(headers)) => Some(MetricIds {
                requests,
                active,
                headers,
            }),
            // A host that cannot define them rejects this configuration.
            _ => return false,
        };
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(MetricsStream {
            ids: self.ids,
            counted: false,
        }))
    }
}

/// The per-request context.
struct MetricsStream {
    ids: Option<MetricIds>,
    /// Whether this request raised the gauge (so `on_log` lowers it once).
    counted: bool,
}

impl Context for MetricsStream {}

impl HttpContext for MetricsStream {
    fn on_http_request_headers(&mut self, num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(ids) = self.ids else {
            return Action::Continue;
        };
        must(
            hostcalls::increment_metric(ids.requests, 1),
            "increment counter",
        );
        must(
            hostcalls::increment_metric(ids.active, 1),
            "increment gauge",
        );
        self.counted = true;
        must(
            hostcalls::record_metric(ids.headers, num_headers as u64),
            "record histogram",
        );
        let requests = must(hostcalls::get_metric(ids.requests), "get counter");
        self.set_http_request_header("x-requests", Some(&requests.to_string()));
        Action::Continue
    }

    fn on_log(&mut self) {
        if let (Some(ids), true) = (self.ids, self.counted) {
            must(
                hostcalls::increment_metric(ids.active, -1),
                "decrement gauge",
            );
        }
    }
}

/// A metric the host defined must be usable: an error is a host bug, so it traps (panics)
/// where a test sees it, instead of being ignored.
fn must<T>(result: Result<T, proxy_wasm::types::Status>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(status) => panic!("{what} failed: {status:?}"),
    }
}
