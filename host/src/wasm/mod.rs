//! WebAssembly filters: the runtime that compiles and runs guest modules under deadlines and
//! memory caps (`runtime`), the state plugins share across instances and workers (`shared`),
//! the metrics they define (`metrics`), and the properties they read (`properties`).
//! The proxy-wasm host functions and filter chains build on them.

pub mod metrics;
pub mod properties;
pub mod runtime;
pub mod shared;

pub use runtime::{
    CompiledModule, EngineSettings, GuestLimits, GuestState, WasmError, WasmRuntime,
};
