//! `callout`: holds each request while it makes an HTTP callout, then resumes it.
//!
//! Exercises the callout family: `proxy_http_call`, `proxy_on_http_call_response` (which the
//! SDK routes to the request's context with `proxy_set_effective_context`), reading the
//! callout's response headers (`HttpCallResponseHeaders` map), `proxy_continue_stream` and
//! `proxy_send_local_response`; logs through `proxy_log`.
//!
//! Config (JSON, `on_configure`; anything else makes it return false):
//! `{"cluster": "NAME", "path": "/", "timeout_ms": 1000}` — `path` and `timeout_ms` optional,
//! with those defaults.
//!
//! - Request headers: `GET <path>` to `<cluster>` (`:authority` is the cluster name) and pause.
//!   If the host refuses to dispatch (Envoy: BAD_ARGUMENT for an unknown cluster), answers
//!   `503` with header `x-callout-error: dispatch <Status>` at once.
//! - Callout response with a `:status`: sets request headers `x-callout-status: <status>` and
//!   `x-callout-body-size: <bytes>`, then resumes the request.
//! - Callout response without headers (Envoy's way of reporting a refused, reset or timed-out
//!   call): answers `503` with header `x-callout-error: failed`.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_context_id| Box::new(CalloutRoot { config: None }));
}}

/// The parsed plugin configuration.
struct CalloutConfig {
    cluster: String,
    path: String,
    timeout: Duration,
}

impl CalloutConfig {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("config is not JSON: {e}"))?;
        let cluster = json
            .get("cluster")
            .and_then(|v| v.as_str())
            .ok_or("config needs a string \"cluster\"")?;
        let path = match json.get("path") {
            None => "/",
            Some(v) => v.as_str().ok_or("\"path\" must be a string")?,
        };
        let timeout_ms = match json.get("timeout_ms") {
            None => 1000,
            Some(v) => v.as_u64().ok_or("\"timeout_ms\" must be a whole number")?,
        };
        Ok(CalloutConfig {
            cluster: cluster.to_owned(),
            path: path.to_owned(),
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

/// The root context: parses the configuration.
struct CalloutRoot {
    config: Option<Rc<CalloutConfig>>,
}

impl Context for CalloutRoot {}

impl RootContext for CalloutRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match CalloutConfig::parse(&bytes) {
            Ok(config) => {
                self.config = Some(Rc::new(config));
                true
            }
            Err(reason) => {
                log::error!("callout: rejecting configuration: {reason}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Callout {
            config: self.config.clone(),
        }))
    }
}

/// The per-request context.
struct Callout {
    config: Option<Rc<CalloutConfig>>,
}

impl Context for Callout {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        match self.get_http_call_response_header(":status") {
            Some(status) => {
                log::info!("callout: answered {status}");
                self.set_http_request_header("x-callout-status", Some(&status));
                self.set_http_request_header("x-callout-body-size", Some(&body_size.to_string()));
                self.resume_http_request();
            }
            None => {
                log::warn!("callout: failed");
                self.send_http_response(
                    503,
                    vec![("x-callout-error", "failed")],
                    Some(b"callout failed\n"),
                );
            }
        }
    }
}

impl HttpContext for Callout {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        let headers = vec![
            (":method", "GET"),
            (":path", config.path.as_str()),
            (":authority", config.cluster.as_str()),
        ];
        match self.dispatch_http_call(&config.cluster, headers, None, vec![], config.timeout) {
            Ok(_token) => Action::Pause,
            Err(status) => {
                log::warn!(
                    "callout: dispatch to {} refused: {status:?}",
                    config.cluster
                );
                let error = format!("dispatch {status:?}");
                self.send_http_response(
                    503,
                    vec![("x-callout-error", &error)],
                    Some(b"callout dispatch failed\n"),
                );
                Action::Pause
            }
        }
    }
}
