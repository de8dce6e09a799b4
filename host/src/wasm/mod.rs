//! WebAssembly filters: the runtime that compiles and runs guest modules under deadlines and
//! memory caps (`runtime`). The proxy-wasm host functions and filter chains build on it.

pub mod runtime;

pub use runtime::{
    CompiledModule, EngineSettings, GuestLimits, GuestState, WasmError, WasmRuntime,
};
