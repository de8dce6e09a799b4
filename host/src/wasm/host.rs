//! [`WasmHost`]: the process-wide services every plugin instance reaches through its host
//! functions — the engine, shared data and queues, plugin metrics, failure counters, and the
//! clusters callouts go to. One per process; it outlives configuration versions, so shared
//! data, queues and metrics survive a hot swap.

use std::{collections::BTreeMap, sync::Arc};

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use weft_abi::{LogLevel, StreamCallback};

use super::{
    metrics::PluginMetrics,
    runtime::{EngineSettings, WasmError, WasmRuntime},
    shared::{SharedData, SharedQueues},
};
use crate::upstream::Cluster;

/// Why a plugin failed, as `weft_plugin_failures_total{reason}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// A call ran past its deadline.
    Deadline,
    /// The instance hit its memory cap.
    Memory,
    /// The guest panicked (the SDK logged at `Critical`, then trapped).
    Panic,
    /// Any other trap.
    Trap,
    /// A fresh instance could not be started (instantiation, `on_vm_start` or `on_configure`).
    Start,
}

impl FailureReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deadline => "deadline",
            Self::Memory => "memory",
            Self::Panic => "panic",
            Self::Trap => "trap",
            Self::Start => "start",
        }
    }
}

/// Process-wide plugin services.
pub struct WasmHost {
    /// The engine and module cache.
    pub runtime: Arc<WasmRuntime>,
    /// Shared data (per VM id, with compare-and-swap).
    pub shared_data: SharedData,
    /// Shared queues.
    pub queues: SharedQueues,
    /// Metrics plugins define.
    pub metrics: PluginMetrics,
    /// `weft_plugin_failures_total{plugin,reason}`.
    pub failures: IntCounterVec,
    /// `weft_plugin_instances_created_total{plugin}`.
    pub instances_created: IntCounterVec,
    /// `weft_plugin_calls_total{plugin}`: calls into plugin instances.
    pub calls: IntCounterVec,
    /// `weft_plugin_reloads_total{plugin}`: filters (re)built for a new configuration or module.
    pub reloads: IntCounterVec,
    /// `weft_plugin_instances{plugin}`: live instances.
    pub instances: IntGaugeVec,
    /// `weft_plugin_memory_bytes{plugin}`: linear memory of live instances.
    pub memory: IntGaugeVec,
    /// The clusters of the serving configuration, for callouts.
    pub clusters: ArcSwap<BTreeMap<Arc<str>, Arc<Cluster>>>,
    /// The [`TRAMPOLINES`] module, instantiated next to each guest that exports every stream
    /// callback.
    pub trampolines: wasmtime::Module,
    /// The host functions, linked once for every module.
    pub linker: wasmtime::Linker<super::runtime::GuestState<super::context::HostData>>,
    /// The most verbose level plugins log at (`proxy_get_log_level`), from `RUST_LOG`.
    pub log_level: LogLevel,
}

impl WasmHost {
    /// Starts the engine and registers plugin metrics in `registry`.
    pub fn new(settings: EngineSettings, registry: &Registry) -> Result<Arc<Self>, WasmError> {
        let runtime = WasmRuntime::new(settings)?;
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, WasmError> {
            let metric = IntCounterVec::new(Opts::new(name, help), &["plugin"])
                .map_err(|e| WasmError::Engine(e.to_string()))?;
            Ok(metric)
        };
        let failures = IntCounterVec::new(
            Opts::new(
                "weft_plugin_failures_total",
                "Plugin failures (trap, panic, deadline, memory, start) by plugin and reason.",
            ),
            &["plugin", "reason"],
        )
        .map_err(|e| WasmError::Engine(e.to_string()))?;
        let instances_created = counter(
            "weft_plugin_instances_created_total",
            "Plugin instances started, by plugin.",
        )?;
        let calls = counter(
            "weft_plugin_calls_total",
            "Calls into plugin instances, by plugin.",
        )?;
        let reloads = counter(
            "weft_plugin_reloads_total",
            "Filters built for a new configuration or module (validation included), by plugin.",
        )?;
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["plugin"])
                .map_err(|e| WasmError::Engine(e.to_string()))
        };
        let instances = gauge("weft_plugin_instances", "Live plugin instances, by plugin.")?;
        let memory = gauge(
            "weft_plugin_memory_bytes",
            "Linear memory of live plugin instances, by plugin.",
        )?;
        for metric in [
            Box::new(failures.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(instances_created.clone()),
            Box::new(calls.clone()),
            Box::new(reloads.clone()),
            Box::new(instances.clone()),
            Box::new(memory.clone()),
        ] {
            // A second host on the same registry (tests) keeps the first registration.
            let _ = registry.register(metric);
        }
        let mut linker = wasmtime::Linker::new(runtime.engine());
        super::hostcalls::add_to_linker(&mut linker)
            .map_err(|e| WasmError::Engine(format!("cannot define the host functions: {e:#}")))?;
        let trampolines = wasmtime::Module::new(runtime.engine(), TRAMPOLINES)
            .map_err(|e| WasmError::Engine(format!("cannot build the trampolines: {e:#}")))?;
        Ok(Arc::new(Self {
            trampolines,
            linker,
            runtime,
            shared_data: SharedData::new(),
            queues: SharedQueues::new(),
            metrics: PluginMetrics::new(registry.clone()),
            failures,
            instances_created,
            calls,
            reloads,
            instances,
            memory,
            clusters: ArcSwap::from_pointee(BTreeMap::new()),
            log_level: current_log_level(),
        }))
    }

    /// Counts a failure of `plugin`.
    pub fn count_failure(&self, plugin: &str, reason: FailureReason) {
        self.failures
            .with_label_values(&[plugin, reason.as_str()])
            .inc();
    }
}

/// What the trampolines' `stream` export runs, by its first argument (see [`TRAMPOLINES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum StreamOp {
    /// `(context, root, headers, end_of_stream)`: `proxy_on_context_create`, then
    /// `proxy_on_request_headers`; its action.
    Start = 0,
    /// `(context, headers, end_of_stream)`: `proxy_on_request_headers`.
    RequestHeaders = 1,
    /// `(context, size, end_of_stream)`: `proxy_on_request_body`.
    RequestBody = 2,
    /// `(context, trailers)`: `proxy_on_request_trailers`.
    RequestTrailers = 3,
    /// `(context, headers, end_of_stream)`: `proxy_on_response_headers`.
    ResponseHeaders = 4,
    /// `(context, size, end_of_stream)`: `proxy_on_response_body`.
    ResponseBody = 5,
    /// `(context, trailers)`: `proxy_on_response_trailers`.
    ResponseTrailers = 6,
    /// `(context, skip_log)`: `proxy_on_done`, `proxy_on_log` unless `skip_log` (the module
    /// noted its `on_log` does nothing), `proxy_on_delete` (the done flag is ignored: weft
    /// never defers a delete); 0.
    Finish = 7,
    /// `(context)`: `proxy_on_delete`; 0.
    Delete = 8,
}

impl StreamOp {
    /// The op that runs the phase callback `callback`; `None` for `on_log`, which runs as
    /// part of [`Finish`](Self::Finish).
    pub fn phase(callback: StreamCallback) -> Option<Self> {
        Some(match callback {
            StreamCallback::RequestHeaders => Self::RequestHeaders,
            StreamCallback::RequestBody => Self::RequestBody,
            StreamCallback::RequestTrailers => Self::RequestTrailers,
            StreamCallback::ResponseHeaders => Self::ResponseHeaders,
            StreamCallback::ResponseBody => Self::ResponseBody,
            StreamCallback::ResponseTrailers => Self::ResponseTrailers,
            StreamCallback::Log => return None,
        })
    }
}

/// A tiny module instantiated next to each guest that imports its stream callbacks and exports
/// one function for all of them: `stream(op, context, a, b, c) -> i32` runs the
/// [`StreamOp`] `op` with the arguments it takes. Every call a stream makes then has the same
/// signature — one copy of the host's call path is hot, not one per signature — and context
/// creation with request headers, or done, log and delete, are one trip into Wasm each.
const TRAMPOLINES: &str = r#"
(module
  (import "guest" "proxy_on_context_create" (func $create (param i32 i32)))
  (import "guest" "proxy_on_request_headers" (func $request_headers (param i32 i32 i32) (result i32)))
  (import "guest" "proxy_on_request_body" (func $request_body (param i32 i32 i32) (result i32)))
  (import "guest" "proxy_on_request_trailers" (func $request_trailers (param i32 i32) (result i32)))
  (import "guest" "proxy_on_response_headers" (func $response_headers (param i32 i32 i32) (result i32)))
  (import "guest" "proxy_on_response_body" (func $response_body (param i32 i32 i32) (result i32)))
  (import "guest" "proxy_on_response_trailers" (func $response_trailers (param i32 i32) (result i32)))
  (import "guest" "proxy_on_done" (func $done (param i32) (result i32)))
  (import "guest" "proxy_on_log" (func $log (param i32)))
  (import "guest" "proxy_on_delete" (func $delete (param i32)))
  (func (export "stream") (param $op i32) (param $context i32) (param $a i32) (param $b i32)
    (param $c i32) (result i32)
    (block $delete
    (block $finish
    (block $response_trailers
    (block $response_body
    (block $response_headers
    (block $request_trailers
    (block $request_body
    (block $request_headers
    (block $start
      (block $invalid
        (br_table $start $request_headers $request_body $request_trailers $response_headers
          $response_body $response_trailers $finish $delete $invalid (local.get $op)))
      (unreachable))
      (call $create (local.get $context) (local.get $a))
      (return (call $request_headers (local.get $context) (local.get $b) (local.get $c))))
      (return (call $request_headers (local.get $context) (local.get $a) (local.get $b))))
      (return (call $request_body (local.get $context) (local.get $a) (local.get $b))))
      (return (call $request_trailers (local.get $context) (local.get $a))))
      (return (call $response_headers (local.get $context) (local.get $a) (local.get $b))))
      (return (call $response_body (local.get $context) (local.get $a) (local.get $b))))
      (return (call $response_trailers (local.get $context) (local.get $a))))
      (drop (call $done (local.get $context)))
      (if (i32.eqz (local.get $a)) (then (call $log (local.get $context))))
      (call $delete (local.get $context))
      (return (i32.const 0)))
    (call $delete (local.get $context))
    (i32.const 0)))
"#;

/// The most verbose level `tracing` will record for plugin logs.
fn current_log_level() -> LogLevel {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => LogLevel::Trace,
        LevelFilter::DEBUG => LogLevel::Debug,
        LevelFilter::INFO => LogLevel::Info,
        LevelFilter::WARN => LogLevel::Warn,
        LevelFilter::ERROR => LogLevel::Error,
        _ => LogLevel::Critical,
    }
}
