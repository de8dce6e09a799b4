//! WebAssembly filters: the runtime that compiles and runs guest modules under deadlines and
//! memory caps (`runtime`), and the state plugins share across instances and workers (`shared`).
//! The proxy-wasm host functions and filter chains build on them.

pub mod runtime;
pub mod shared;

pub use runtime::{
    CompiledModule, EngineSettings, GuestLimits, GuestState, WasmError, WasmRuntime,
};
