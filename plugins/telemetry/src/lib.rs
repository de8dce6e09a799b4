//! The built-in `telemetry` plugin (`builtin://telemetry`): Istio's request metrics, an access
//! log, W3C trace context and request ids.
//!
//! ```yaml
//! - plugin: telemetry
//!   config:
//!     metrics: true          # istio_* metrics on /stats/prometheus (default true)
//!     accessLog:             # absent: no access log
//!       format: envoy        # envoy (default) | json
//!     tracing: true          # traceparent generated / continued (default true)
//!     requestId: true        # x-request-id generated when absent (default true)
//! ```
//!
//! - **Metrics** (see [`metrics`]): `istio_requests_total`, `istio_request_duration_milliseconds`,
//!   `istio_request_bytes`, `istio_response_bytes`, labeled `response_code`, `request_method`,
//!   `destination_cluster`, `source_principal`. Recorded when the request ends, so requests
//!   answered earlier in the chain (a 401 from auth, a 429 from ratelimit) count too.
//! - **Access log** (see [`access_log`]): one line per request through the proxy's log, at
//!   info level.
//! - **Tracing**: a request with a valid `traceparent` goes upstream with the same trace id
//!   and flags and a new span id as parent (this proxy's span); one without (or with an
//!   invalid one) starts a new sampled trace (`00-<random 16 bytes>-<random 8 bytes>-01`).
//!   `tracestate` is left as it is.
//! - **Request ids**: a request without `x-request-id` gets a random UUID v4 one; the id (new
//!   or the client's) goes upstream and back on the response, so a client can quote it.

use std::rc::Rc;

use serde::Deserialize;
use weft_sdk::{Action, Filter, Log, LogLevel, Request, Response, Result, property_i64};

pub mod access_log;
pub mod metrics;
#[cfg(test)]
mod tests;
pub mod trace;

use access_log::{Entry, Format};
use metrics::{Sample, SeriesCache};

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Record Istio's request metrics.
    #[serde(default = "enabled")]
    pub metrics: bool,
    /// Write an access log line per request; absent: none.
    #[serde(default)]
    pub access_log: Option<AccessLog>,
    /// Generate or continue a W3C `traceparent`.
    #[serde(default = "enabled")]
    pub tracing: bool,
    /// Generate `x-request-id` when absent, and return it on the response.
    #[serde(default = "enabled")]
    pub request_id: bool,
    /// Metric ids, by label set.
    #[serde(skip)]
    series: SeriesCache,
}

fn enabled() -> bool {
    true
}

/// The access log's settings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLog {
    /// The line format (default `envoy`).
    #[serde(default)]
    pub format: Format,
}

/// One request's filter.
pub struct Telemetry {
    config: Rc<Config>,
    /// The request's id, to return on the response.
    request_id: Option<String>,
}

impl Filter for Telemetry {
    type Config = Config;

    fn new(config: &Rc<Config>) -> Self {
        Telemetry {
            config: config.clone(),
            request_id: None,
        }
    }

    fn on_request_headers(&mut self, request: &mut Request) -> Result<Action> {
        if self.config.tracing {
            let incoming = request.header("traceparent")?;
            let mut buffer = [0; trace::TRACEPARENT_LEN];
            let next =
                trace::next_traceparent(incoming.as_deref().and_then(trace::parse), &mut buffer);
            request.set_header("traceparent", next)?;
        }
        if self.config.request_id {
            self.request_id = match request.header("x-request-id")? {
                Some(id) if !id.is_empty() => Some(id),
                _ => {
                    let mut buffer = [0; trace::UUID_LEN];
                    let id = trace::new_request_id(&mut buffer);
                    request.set_header("x-request-id", id)?;
                    Some(id.to_owned())
                }
            };
        }
        Ok(Action::Continue)
    }

    fn on_response_headers(&mut self, response: &mut Response) -> Result<Action> {
        if let Some(id) = &self.request_id {
            response.set_header("x-request-id", id)?;
        }
        Ok(Action::Continue)
    }

    fn on_log(&mut self, log: &Log) {
        let access_log = self.config.access_log;
        if !self.config.metrics && access_log.is_none() {
            return;
        }
        // Nothing here can fail the request any more: what cannot be read is unknown.
        let status = log.status().ok().flatten();
        let duration = log.duration().ok().flatten();
        let method = log.request_header(":method").ok().flatten();
        if self.config.metrics {
            let cluster = log.cluster().ok().flatten();
            let principal = log.peer_principal().ok().flatten();
            let total = |path: &[&str]| {
                property_i64(path)
                    .ok()
                    .flatten()
                    .map(|n| n.max(0).unsigned_abs())
            };
            let request_bytes =
                total(&["request", "total_size"]).or_else(|| log.request_size().ok().flatten());
            let response_bytes =
                total(&["response", "total_size"]).or_else(|| log.response_size().ok().flatten());
            self.config.series.record(&Sample {
                status,
                method: metrics::method_label(method.as_deref()),
                cluster: cluster.as_deref(),
                principal: principal.as_deref(),
                duration,
                request_bytes,
                response_bytes,
            });
        }
        if let Some(access_log) = access_log {
            let request = |name: &str| log.request_header(name).ok().flatten();
            let entry = Entry {
                start_time: property_i64(&["request", "time"]).ok().flatten(),
                method,
                path: request(":path"),
                protocol: weft_sdk::property_string(&["request", "protocol"])
                    .ok()
                    .flatten(),
                response_code: status,
                bytes_received: log.request_size().ok().flatten(),
                bytes_sent: log.response_size().ok().flatten(),
                duration,
                upstream_service_time: log
                    .response_header("x-envoy-upstream-service-time")
                    .ok()
                    .flatten(),
                forwarded_for: request("x-forwarded-for"),
                user_agent: request("user-agent"),
                request_id: request("x-request-id"),
                authority: request(":authority"),
                upstream_host: weft_sdk::property_string(&["upstream", "address"])
                    .ok()
                    .flatten(),
            };
            weft_sdk::log(LogLevel::Info, &entry.line(access_log.format));
        }
    }
}

weft_sdk::export_filter!(Telemetry);
