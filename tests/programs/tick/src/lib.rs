//! `tick`: counts timer ticks in shared data.
//!
//! Exercises the timer family (`proxy_set_tick_period_milliseconds` in `on_configure`,
//! `proxy_on_tick` on the root context) and shared data with compare-and-swap.
//!
//! Config (JSON, optional): `{"period_ms": 100}` — the tick period, default 100 ms; anything
//! else makes `on_configure` return false.
//!
//! - Each tick adds 1 to the shared-data key `tick.count` (decimal ASCII), retrying on
//!   `CasMismatch`. Every root context (one per instance) ticks and counts into the same key.
//! - Each request sets request header `x-ticks: <tick.count>` (absent before the first tick),
//!   so a test can watch the count grow.

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};

/// Shared-data key of the tick counter.
const TICKS_KEY: &str = "tick.count";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_context_id| Box::new(TickRoot));
}}

/// The tick period a configuration asks for.
fn period(bytes: &[u8]) -> Result<Duration, String> {
    if bytes.is_empty() {
        return Ok(Duration::from_millis(100));
    }
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("config is not JSON: {e}"))?;
    match json.get("period_ms") {
        None => Ok(Duration::from_millis(100)),
        Some(v) => v
            .as_u64()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| "\"period_ms\" must be a positive whole number".to_owned()),
    }
}

/// The root context: owns the timer.
struct TickRoot;

impl Context for TickRoot {}

impl RootContext for TickRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match period(&bytes) {
            Ok(period) => {
                self.set_tick_period(period);
                true
            }
            Err(reason) => {
                log::error!("tick: rejecting configuration: {reason}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        loop {
            let (value, cas) = self.get_shared_data(TICKS_KEY);
            let next = parse(value.as_deref()).unwrap_or(0) + 1;
            match self.set_shared_data(TICKS_KEY, Some(next.to_string().as_bytes()), cas) {
                Ok(()) => return,
                Err(Status::CasMismatch) => continue,
                Err(status) => panic!("set_shared_data({TICKS_KEY}) failed: {status:?}"),
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TickReport))
    }
}

/// The per-request context: reports the count.
struct TickReport;

impl Context for TickReport {}

impl HttpContext for TickReport {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (value, _cas) = self.get_shared_data(TICKS_KEY);
        let ticks = parse(value.as_deref()).map(|n| n.to_string());
        self.set_http_request_header("x-ticks", ticks.as_deref());
        Action::Continue
    }
}

fn parse(value: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(value?).ok()?.parse().ok()
}
