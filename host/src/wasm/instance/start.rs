//! An instance's start: instantiation, the trampolines, weft's guest extensions (the host
//! buffer, the default-callbacks word), the module's start function, and the root context
//! created and configured.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize},
};

use bytes::Bytes;
use wasmtime::{InstancePre, TypedFunc, WasmParams, WasmResults};
use weft_abi::{GuestExport, WeftExport};

use super::{Failure, GuestStore, Instance, InstanceSpec, Trampolines};
use crate::wasm::{
    context::{Exports, HostData},
    host::{FailureReason, WasmHost},
    hostcalls::host_buffer_region,
    runtime::GuestState,
};

/// Export lookup helper: an optional typed export.
fn export<P: WasmParams, R: WasmResults>(
    instance: &wasmtime::Instance,
    store: &mut GuestStore,
    name: GuestExport,
) -> Result<Option<TypedFunc<P, R>>, String> {
    match instance.get_func(&mut *store, name.name()) {
        None => Ok(None),
        Some(func) => func
            .typed::<P, R>(&*store)
            .map(Some)
            .map_err(|e| format!("export `{name}` has the wrong signature: {e}")),
    }
}

impl Instance {
    /// Instantiates the module, runs its start function, creates the root context and runs
    /// `proxy_on_vm_start` and `proxy_on_configure`. `Err` says why the instance cannot serve —
    /// a configuration the plugin rejects included.
    pub async fn start(
        host: &Arc<WasmHost>,
        pre: &InstancePre<GuestState<HostData>>,
        spec: &InstanceSpec,
    ) -> Result<Arc<Instance>, Failure> {
        let data = HostData::new(
            host.clone(),
            spec.identity.clone(),
            spec.configuration.clone(),
            Bytes::new(),
        );
        let cell = data.instance.clone();
        let mut store = host.runtime.store(GuestState::new(spec.limits, data));
        let start_failure = |detail: String| Failure {
            reason: FailureReason::Start,
            detail,
            stale: false,
        };
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| start_failure(format!("cannot instantiate: {e:#}")))?;
        let exports = resolve_exports(&instance, &mut store).map_err(start_failure)?;
        store.data_mut().data.exports = Some(exports.clone());
        let trampolines = match exports.stream_callbacks() {
            Some(imports) => {
                let module = wasmtime::Instance::new(&mut store, &host.trampolines, &imports)
                    .map_err(|e| start_failure(format!("cannot link the trampolines: {e:#}")))?;
                let stream = module
                    .get_typed_func(&mut store, "stream")
                    .map_err(|e| start_failure(format!("trampoline `stream`: {e:#}")))?;
                Some(Trampolines { stream })
            }
            None => None,
        };
        let root_id = 1;
        let live = Arc::new(Instance {
            store: futures_util::lock::Mutex::new(store),
            exports,
            root_id,
            host: host.clone(),
            plugin: spec.plugin.clone(),
            broken: AtomicBool::new(false),
            next_context: AtomicU32::new(root_id + 1),
            live: AtomicUsize::new(0),
            tick_generation: AtomicU64::new(0),
            memory_bytes: AtomicUsize::new(0),
            busy_since: AtomicU64::new(0),
            calls: host.calls.with_label_values(&[&spec.plugin]),
            trampolines,
            default_callbacks: OnceLock::new(),
            noted: AtomicU32::new(0),
        });
        let _ = cell.set(Arc::downgrade(&live));
        // Counted from here: dropping a failed start undoes the gauge in `Drop`.
        host.instances_created
            .with_label_values(&[&spec.plugin])
            .inc();
        host.instances.with_label_values(&[&spec.plugin]).inc();
        live.initialize(&instance, spec).await?;
        Ok(live)
    }

    async fn initialize(
        self: &Arc<Self>,
        instance: &wasmtime::Instance,
        spec: &InstanceSpec,
    ) -> Result<(), Failure> {
        let mut store = self.store.lock().await;
        let start = |detail: String| Failure {
            reason: FailureReason::Start,
            detail,
            stale: false,
        };
        // Reactor modules (`_initialize`) and command modules (`_start`) both get their start.
        for name in [GuestExport::Initialize, GuestExport::Start] {
            if let Some(func) = export::<(), ()>(instance, &mut store, name).map_err(start)? {
                self.invoke(&mut store, &func, (), self.root_id)
                    .map_err(|f| start(format!("`{name}` failed: {f}")))?;
                break;
            }
        }
        self.resolve_host_buffer(&mut store, instance)
            .map_err(|f| start(format!("`{}` failed: {f}", WeftExport::HostBuffer)))?;
        // weft's extension: the address of the word in which the guest notes the stream
        // callbacks that do nothing. A function of another shape under that name is not it.
        let noted = instance
            .get_func(&mut *store, WeftExport::DefaultCallbacks.name())
            .and_then(|func| func.typed::<(), u32>(&*store).ok());
        if let Some(func) = noted {
            let address = self
                .invoke(&mut store, &func, (), self.root_id)
                .map_err(|f| start(format!("`{}` failed: {f}", WeftExport::DefaultCallbacks)))?;
            let _ = self.default_callbacks.set(address);
            self.refresh_noted(&store);
        }
        if let Some(create) = &self.exports.on_context_create {
            self.invoke(&mut store, create, (self.root_id, 0), self.root_id)
                .map_err(|f| start(format!("creating the root context failed: {f}")))?;
        }
        if let Some(vm_start) = &self.exports.on_vm_start {
            let size = store.data().data.vm_configuration.len() as u32;
            let ok = self
                .invoke(&mut store, vm_start, (self.root_id, size), self.root_id)
                .map_err(|f| start(format!("proxy_on_vm_start failed: {f}")))?;
            if ok == 0 {
                return Err(start("proxy_on_vm_start returned false".into()));
            }
        }
        if let Some(configure) = &self.exports.on_configure {
            store.data_mut().data.last_error = None;
            let size = spec.configuration.len() as u32;
            let ok = self
                .invoke(&mut store, configure, (self.root_id, size), self.root_id)
                .map_err(|f| start(format!("proxy_on_configure failed: {f}")))?;
            if ok == 0 {
                // The plugin's own reason, when it logged one (the weft SDK always does).
                let detail = match store.data_mut().data.last_error.take() {
                    Some(reason) => format!("the plugin rejected its configuration: {reason}"),
                    None => "the plugin rejected its configuration (proxy_on_configure \
                             returned false)"
                        .into(),
                };
                return Err(start(detail));
            }
        }
        self.after_call(&mut store);
        Ok(())
    }

    /// weft's host buffer ([`weft_abi::HostBuffer`]): when the guest exports
    /// `weft_host_buffer`, calls it once and keeps the region in the store's data if a host
    /// function may write it; a wrong signature or a region that is not valid is ignored (the
    /// allocator serves, as on any host without the extension). A trap is the guest's failure.
    fn resolve_host_buffer(
        &self,
        store: &mut GuestStore,
        instance: &wasmtime::Instance,
    ) -> Result<(), Failure> {
        let name = WeftExport::HostBuffer;
        let Some(func) = instance.get_func(&mut *store, name.name()) else {
            return Ok(());
        };
        let func = match func.typed::<(), u64>(&*store) {
            Ok(func) => func,
            Err(error) => {
                tracing::debug!(plugin = %self.plugin, %error, "ignoring `{name}`: wrong signature");
                return Ok(());
            }
        };
        let bits = self.invoke(store, &func, (), self.root_id)?;
        let memory_len = self.exports.memory.data_size(&*store);
        match host_buffer_region(bits, memory_len) {
            Ok(region) => store.data_mut().data.host_buffer = Some(region),
            Err(reason) => {
                tracing::debug!(plugin = %self.plugin, bits, reason, "ignoring `{name}`");
            }
        }
        Ok(())
    }

    /// The host buffer host functions write into, if the guest has a valid one.
    #[cfg(test)]
    pub(crate) async fn host_buffer(&self) -> Option<weft_abi::HostBuffer> {
        let store = self.store.lock().await;
        store.data().data.host_buffer
    }
}

/// Resolves the exports the host calls; only the memory is required.
fn resolve_exports(
    instance: &wasmtime::Instance,
    store: &mut GuestStore,
) -> Result<Exports, String> {
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or("the module exports no memory")?;
    let allocate = match export(instance, store, GuestExport::OnMemoryAllocate)? {
        Some(f) => Some(f),
        None => export(instance, store, GuestExport::Malloc)?,
    };
    Ok(Exports {
        memory,
        allocate,
        on_context_create: export(instance, store, GuestExport::OnContextCreate)?,
        on_vm_start: export(instance, store, GuestExport::OnVmStart)?,
        on_configure: export(instance, store, GuestExport::OnConfigure)?,
        on_tick: export(instance, store, GuestExport::OnTick)?,
        on_queue_ready: export(instance, store, GuestExport::OnQueueReady)?,
        on_request_headers: export(instance, store, GuestExport::OnRequestHeaders)?,
        on_request_body: export(instance, store, GuestExport::OnRequestBody)?,
        on_request_trailers: export(instance, store, GuestExport::OnRequestTrailers)?,
        on_response_headers: export(instance, store, GuestExport::OnResponseHeaders)?,
        on_response_body: export(instance, store, GuestExport::OnResponseBody)?,
        on_response_trailers: export(instance, store, GuestExport::OnResponseTrailers)?,
        on_log: export(instance, store, GuestExport::OnLog)?,
        on_done: export(instance, store, GuestExport::OnDone)?,
        on_delete: export(instance, store, GuestExport::OnDelete)?,
        on_http_call_response: export(instance, store, GuestExport::OnHttpCallResponse)?,
        on_grpc_receive_initial_metadata: export(
            instance,
            store,
            GuestExport::OnGrpcReceiveInitialMetadata,
        )?,
        on_grpc_receive: export(instance, store, GuestExport::OnGrpcReceive)?,
        on_grpc_receive_trailing_metadata: export(
            instance,
            store,
            GuestExport::OnGrpcReceiveTrailingMetadata,
        )?,
        on_grpc_close: export(instance, store, GuestExport::OnGrpcClose)?,
    })
}
