//! [`WasmHost`]: the process-wide services every plugin instance reaches through its host
//! functions — the engine, shared data and queues, plugin metrics, failure counters, and the
//! clusters callouts go to. One per process; it outlives configuration versions, so shared
//! data, queues and metrics survive a hot swap.

use std::{collections::BTreeMap, sync::Arc};

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use weft_abi::LogLevel;

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
    /// A tiny module instantiated next to each guest that exports the stream callbacks it
    /// imports: `start` creates a stream context and runs its request-headers callback, `finish`
    /// runs done, log and delete — two trips into Wasm where there would be five.
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

/// `start(context, root, headers, end_of_stream) -> action`: `proxy_on_context_create` then
/// `proxy_on_request_headers`. `finish(context)`: `proxy_on_done`, `proxy_on_log`,
/// `proxy_on_delete`, in that order (the done flag is ignored: weft never defers a delete).
const TRAMPOLINES: &str = r#"
(module
  (import "guest" "proxy_on_context_create" (func $create (param i32 i32)))
  (import "guest" "proxy_on_request_headers" (func $headers (param i32 i32 i32) (result i32)))
  (import "guest" "proxy_on_done" (func $done (param i32) (result i32)))
  (import "guest" "proxy_on_log" (func $log (param i32)))
  (import "guest" "proxy_on_delete" (func $delete (param i32)))
  (func (export "start") (param $context i32) (param $root i32) (param $count i32) (param $end i32)
    (result i32)
    (call $create (local.get $context) (local.get $root))
    (call $headers (local.get $context) (local.get $count) (local.get $end)))
  (func (export "finish") (param $context i32)
    (drop (call $done (local.get $context)))
    (call $log (local.get $context))
    (call $delete (local.get $context))))
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
