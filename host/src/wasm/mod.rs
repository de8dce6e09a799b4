//! WebAssembly filters: the runtime that compiles and runs guest modules under deadlines and
//! memory caps (`runtime`), the plugins built into the binary (`builtin`), the process-wide
//! services plugins reach (`host`, `shared`, `metrics`), the properties they read
//! (`properties`), the proxy-wasm host functions (`hostcalls`) acting on per-instance and
//! per-stream state (`context`, `header_names`), callouts (`callout`), plugin instances
//! (`instance`), filters and their instance pools (`filter`), and the chain executor the
//! request path drives (`chain`).

pub mod builtin;
pub mod callout;
pub mod chain;
pub mod context;
pub mod filter;
pub mod header_names;
pub mod host;
pub mod hostcalls;
pub mod instance;
pub mod metrics;
pub mod properties;
pub mod runtime;
pub mod shared;

pub use builtin::{builtin_module, builtins};
pub use host::{FailureReason, WasmHost};
pub use runtime::{
    CompiledModule, EngineSettings, GuestLimits, GuestState, WasmError, WasmRuntime,
};
