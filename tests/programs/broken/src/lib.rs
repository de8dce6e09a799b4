//! `broken`: misbehaves on purpose, in the way its config selects.
//!
//! Exercises containment rather than a host-function family: traps, deadlines and memory caps
//! (and `proxy_log`, through which the SDK's panic hook reports a panic at `Critical` level
//! before the module traps).
//!
//! Config (JSON `{"mode": "..."}`, read in `on_configure`):
//!
//! | mode       | behaviour                                                                  |
//! |------------|----------------------------------------------------------------------------|
//! | `"panic"`  | `panic!` in `on_http_request_headers` (the module traps on `unreachable`)  |
//! | `"loop"`   | loops forever in `on_http_request_headers`                                  |
//! | `"hoard"`  | allocates 1 MiB blocks in `on_http_request_headers` until memory runs out  |
//! | `"reject"` | `on_configure` returns false                                               |
//! | `"none"`   | behaves (continues); also what an empty config means                       |
//!
//! Any other config (not JSON, unknown mode) also makes `on_configure` return false.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_context_id| Box::new(BrokenRoot { mode: Mode::None }));
}}

/// What the filter does wrong.
#[derive(Clone, Copy, Debug)]
enum Mode {
    None,
    Panic,
    Loop,
    Hoard,
}

/// The mode a configuration selects; `Ok(None)` is `"reject"`.
fn parse(bytes: &[u8]) -> Result<Option<Mode>, String> {
    if bytes.is_empty() {
        return Ok(Some(Mode::None));
    }
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("config is not JSON: {e}"))?;
    match json.get("mode").and_then(|v| v.as_str()) {
        Some("none") => Ok(Some(Mode::None)),
        Some("panic") => Ok(Some(Mode::Panic)),
        Some("loop") => Ok(Some(Mode::Loop)),
        Some("hoard") => Ok(Some(Mode::Hoard)),
        Some("reject") => Ok(None),
        _ => Err(format!("unknown config {json}")),
    }
}

/// The root context: reads the mode.
struct BrokenRoot {
    mode: Mode,
}

impl Context for BrokenRoot {}

impl RootContext for BrokenRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match parse(&bytes) {
            Ok(Some(mode)) => {
                self.mode = mode;
                true
            }
            Ok(None) => {
                log::warn!("broken: rejecting configuration as asked");
                false
            }
            Err(reason) => {
                log::error!("broken: rejecting configuration: {reason}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Broken { mode: self.mode }))
    }
}

/// The per-request context.
struct Broken {
    mode: Mode,
}

impl Context for Broken {}

impl HttpContext for Broken {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.mode {
            Mode::None => Action::Continue,
            Mode::Panic => panic!("broken: panic requested by config"),
            Mode::Loop => spin(),
            Mode::Hoard => hoard(),
        }
    }
}

/// Never returns; `black_box` keeps the loop from being optimised into something else.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates and touches 1 MiB blocks, keeping them all, until `memory.grow` fails (the
/// allocator then aborts: a trap) or the host stops the growth itself.
fn hoard() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        block[0] = 1;
        blocks.push(std::hint::black_box(block));
    }
}
