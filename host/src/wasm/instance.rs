//! One running plugin instance: a wasmtime store with the module instantiated, its root context
//! created and configured, and the calls the chain executor and the root-context tasks make
//! into it.
//!
//! An instance serves many streams, one call at a time (its store sits behind an async mutex,
//! the way an Envoy worker's VM serves the worker's streams). A call that traps, panics, runs
//! past its deadline or breaches the memory cap marks the instance broken: its pool drops it,
//! the streams on it fail per their filter's `failStrategy`, and the next request gets a fresh
//! instance.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use wasmtime::{Store, TypedFunc, WasmParams, WasmResults};
use weft_abi::StreamCallback;

use super::{
    context::{Exports, GrpcEvent, HostData, Side, StreamData, StreamHandle},
    host::{FailureReason, StreamOp, WasmHost},
    properties::PluginIdentity,
    runtime::{GuestLimits, GuestState, WasmError, WasmRuntime},
};

mod deliver;
mod start;

/// A store holding one instance.
pub type GuestStore = Store<GuestState<HostData>>;

/// Why a call into a guest failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The kind, as the failure metric counts it.
    pub reason: FailureReason,
    /// What happened, for logs and the 503 body.
    pub detail: String,
    /// The instance had already failed before this call: the call never ran.
    pub stale: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

/// What a fresh instance needs.
pub struct InstanceSpec {
    /// Plugin resource name, for metrics.
    pub plugin: Arc<str>,
    /// Names the guest sees as properties.
    pub identity: Arc<PluginIdentity>,
    /// The plugin configuration handed to `proxy_on_configure`.
    pub configuration: Bytes,
    /// Deadline and memory cap.
    pub limits: GuestLimits,
}

/// A call the chain executor makes on a stream context.
#[derive(Debug)]
pub enum StreamCall {
    /// `proxy_on_context_create(context, root)`.
    Create {
        /// The stream may give up this instance while a long call holds it (and try another).
        may_move: bool,
    },
    /// `proxy_on_context_create` then `proxy_on_request_headers`, in one trip when the guest
    /// has the trampolines.
    Start {
        /// As for `Create`.
        may_move: bool,
        /// Number of request headers.
        headers: u32,
        /// No body follows.
        end_of_stream: bool,
    },
    /// `proxy_on_request_headers` / `proxy_on_response_headers`.
    Headers {
        /// Which side's headers.
        side: Side,
        /// Number of headers.
        headers: u32,
        /// No body follows.
        end_of_stream: bool,
    },
    /// `proxy_on_request_body` / `proxy_on_response_body`.
    Body {
        /// Which side's body.
        side: Side,
        /// Bytes in the body buffer.
        size: u32,
        /// Last chunk.
        end_of_stream: bool,
    },
    /// `proxy_on_request_trailers` / `proxy_on_response_trailers`.
    Trailers {
        /// Which side's trailers.
        side: Side,
        /// Number of trailers.
        trailers: u32,
    },
    /// `proxy_on_delete`.
    Delete,
    /// `proxy_on_done`, `proxy_on_log` and `proxy_on_delete`: the end of a stream context.
    Finish,
    /// `proxy_on_http_call_response` on the root context, with the stream lent.
    HttpCallResponse {
        /// The callout's token.
        token: u32,
        /// What came back.
        response: Box<super::callout::CalloutResponse>,
    },
    /// A gRPC callback on the root context, with the stream lent.
    Grpc {
        /// The call's token.
        token: u32,
        /// What happened.
        event: Box<GrpcEvent>,
    },
}

impl StreamCall {
    /// The phase callback this call runs, for the headers, body and trailers phases.
    fn callback(&self) -> Option<StreamCallback> {
        let (side, request, response) = match self {
            StreamCall::Headers { side, .. } => (
                side,
                StreamCallback::RequestHeaders,
                StreamCallback::ResponseHeaders,
            ),
            StreamCall::Body { side, .. } => (
                side,
                StreamCallback::RequestBody,
                StreamCallback::ResponseBody,
            ),
            StreamCall::Trailers { side, .. } => (
                side,
                StreamCallback::RequestTrailers,
                StreamCallback::ResponseTrailers,
            ),
            _ => return None,
        };
        Some(match side {
            Side::Request => request,
            Side::Response => response,
        })
    }
}

/// The arguments of the trampolines' `stream` export: op, context and the op's three.
type StreamArgs = (u32, u32, u32, u32, u32);

/// What a [`StreamCall`] comes down to (see [`Instance::plan`]).
enum Plan<'e> {
    /// Nothing to call (the guest noted the callback as a no-op): this value.
    Done(u32),
    /// The trampolines' `stream` export with these arguments: every call a stream makes on a
    /// guest that exports every stream callback.
    Stream(&'e TypedFunc<StreamArgs, u32>, StreamArgs),
    /// Callout answers, and every call on a guest without the trampolines:
    /// [`Instance::dispatch`].
    Other(StreamCall),
}

/// One plugin instance.
pub struct Instance {
    store: futures_util::lock::Mutex<GuestStore>,
    exports: Exports,
    root_id: u32,
    host: Arc<WasmHost>,
    plugin: Arc<str>,
    broken: AtomicBool,
    next_context: AtomicU32,
    /// Stream contexts alive on this instance (the pool balances on it).
    live: AtomicUsize,
    /// Bumped whenever the tick period changes, so an older ticker task stops.
    tick_generation: AtomicU64,
    memory_bytes: AtomicUsize,
    /// The engine tick the running call started at; 0 when no call runs.
    busy_since: AtomicU64,
    /// `weft_plugin_calls_total` for this plugin, resolved once.
    calls: prometheus::IntCounter,
    /// The trampolines' exports, when the guest exports every callback they call.
    trampolines: Option<Trampolines>,
    /// Where in the guest's memory it notes the stream callbacks that do nothing (weft's
    /// extension [`weft_abi::DEFAULT_CALLBACKS_EXPORT`]; weft-sdk modules have it). Set once, at start.
    default_callbacks: OnceLock<u32>,
    /// That word as the last call into the guest left it, read without the store: a phase
    /// whose bit is set is answered `Continue` without locking the instance at all. The guest
    /// only ever adds bits, so a stale copy at worst enters the guest for nothing.
    noted: AtomicU32,
}

/// The trampolines' export (see [`WasmHost::trampolines`]).
struct Trampolines {
    stream: TypedFunc<StreamArgs, u32>,
}

impl Instance {
    /// Whether a failure has retired this instance.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Whether a call has been running on this instance for more than a few ticks (a guest
    /// looping towards its deadline): new streams should not queue behind it.
    pub fn is_stuck(&self) -> bool {
        let since = self.busy_since.load(Ordering::Relaxed);
        since != 0 && self.host.runtime.now_tick().saturating_sub(since) >= 4
    }

    /// Stream contexts alive on this instance.
    pub fn live_streams(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Linear memory of the instance, bytes (as of its last call).
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes.load(Ordering::Relaxed)
    }

    /// Counts a stream that is about to start on this instance (the pool balances on it; the
    /// stream's `Delete` undoes it).
    pub fn reserve(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    /// Undoes [`reserve`](Self::reserve) for a stream that did not start here after all.
    pub fn release(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// A fresh context id for a stream.
    pub fn new_context(&self) -> u32 {
        self.next_context.fetch_add(1, Ordering::Relaxed)
    }

    /// Calls `func` under the deadline with `effective` as the effective context; a failure
    /// retires the instance and is counted.
    fn invoke<P, R>(
        &self,
        store: &mut GuestStore,
        func: &TypedFunc<P, R>,
        params: P,
        effective: u32,
    ) -> Result<R, Failure>
    where
        P: WasmParams + Sync,
        R: WasmResults + Sync,
    {
        self.begin_call(store, effective)?;
        let result = func.call(&mut *store, params);
        self.end_call(store, result)
    }

    /// Everything before a guest call: refuses on a broken instance, sets the effective
    /// context, arms the deadline, marks the instance busy.
    fn begin_call(&self, store: &mut GuestStore, effective: u32) -> Result<(), Failure> {
        if self.is_broken() {
            return Err(Failure {
                reason: FailureReason::Trap,
                detail: "the instance failed earlier".into(),
                stale: true,
            });
        }
        {
            let data = &mut store.data_mut().data;
            data.effective = effective;
            data.panicked = false;
        }
        store.data_mut().data.pending_calls += 1;
        let started = self.host.runtime.begin_call(store);
        self.busy_since.store(started, Ordering::Relaxed);
        Ok(())
    }

    /// Everything after a guest call: a failure classified, counted and the instance retired.
    fn end_call<R>(
        &self,
        store: &mut GuestStore,
        result: wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        self.busy_since.store(0, Ordering::Relaxed);
        let error = match WasmRuntime::end_call(store, result) {
            Ok(result) => return Ok(result),
            Err(error) => error,
        };
        let state = store.data();
        let reason = match &error {
            WasmError::Deadline(_) => FailureReason::Deadline,
            _ if state.memory_denied() => FailureReason::Memory,
            _ if state.data.panicked => FailureReason::Panic,
            _ => FailureReason::Trap,
        };
        let detail = match reason {
            FailureReason::Memory => format!(
                "out of memory (limit {} bytes): {error}",
                state.limits().memory_bytes
            ),
            _ => error.to_string(),
        };
        self.retire(reason, &detail);
        Err(Failure {
            reason,
            detail,
            stale: false,
        })
    }

    /// Marks the instance broken and counts the failure (once).
    fn retire(&self, reason: FailureReason, detail: &str) {
        if !self.broken.swap(true, Ordering::Relaxed) {
            tracing::warn!(plugin = %self.plugin, reason = reason.as_str(), %detail, "plugin instance failed; it will be replaced");
            self.host.count_failure(&self.plugin, reason);
            // Stop its ticker.
            self.tick_generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Work left by a call: a changed tick period starts (or stops) the ticker.
    fn after_call(self: &Arc<Self>, store: &mut GuestStore) {
        self.after_phase(store);
        self.track_memory(store);
        self.count_calls(store);
    }

    /// Adds the calls made since the last time to `weft_plugin_calls_total`.
    fn count_calls(&self, store: &mut GuestStore) {
        let calls = std::mem::take(&mut store.data_mut().data.pending_calls);
        if calls > 0 {
            self.calls.inc_by(calls);
        }
    }

    /// What every call leaves: a changed tick period starts (or stops) the ticker.
    fn after_phase(self: &Arc<Self>, store: &mut GuestStore) {
        let data = &mut store.data_mut().data;
        if std::mem::take(&mut data.tick_changed) {
            let period = data.tick_period.unwrap_or(Duration::ZERO);
            self.start_ticker(period);
        }
    }

    /// Brings `weft_plugin_memory_bytes` up to the instance's memory size (linear memory only
    /// grows, so checking after a stream's first and last calls misses nothing for long).
    fn track_memory(&self, store: &mut GuestStore) {
        let data = &store.data().data;
        if let Some(memory) = data.exports.as_ref().map(|e| e.memory) {
            let size = memory.data_size(&*store);
            let before = self.memory_bytes.swap(size, Ordering::Relaxed);
            if size != before {
                self.host
                    .memory
                    .with_label_values(&[&self.plugin])
                    .add(size as i64 - before as i64);
            }
        }
    }

    /// Runs a call on a stream context `context` of this instance, lending it `stream` for the
    /// call, once the instance is free: what [`try_stream_call`](Self::try_stream_call) leaves
    /// while another call holds it. Returns the callback's return value (the action for phase
    /// callbacks; 0 when the module does not export the callback or noted it as a no-op).
    pub async fn stream_call(
        self: &Arc<Self>,
        stream: &mut Option<Box<StreamData>>,
        context: u32,
        slot: usize,
        call: StreamCall,
    ) -> Result<u32, Failure> {
        let mut store = self.lock_contended(&call).await?;
        self.locked_stream_call(&mut store, stream, context, slot, call)
    }

    /// A call on a stream context without waiting: made at once (guest calls are synchronous),
    /// or `Err(call)` back while another call holds the instance, for
    /// [`stream_call`](Self::stream_call). The common case, uncontended, builds no future.
    pub fn try_stream_call(
        self: &Arc<Self>,
        stream: &mut Option<Box<StreamData>>,
        context: u32,
        slot: usize,
        call: StreamCall,
    ) -> Result<Result<u32, Failure>, StreamCall> {
        if call.callback().is_some_and(|c| self.skips(c)) {
            return Ok(Ok(0));
        }
        match self.store.try_lock() {
            Some(mut store) => Ok(self.locked_stream_call(&mut store, stream, context, slot, call)),
            None => Err(call),
        }
    }

    /// A stream call on the locked `store`.
    fn locked_stream_call(
        self: &Arc<Self>,
        store: &mut GuestStore,
        stream: &mut Option<Box<StreamData>>,
        context: u32,
        slot: usize,
        call: StreamCall,
    ) -> Result<u32, Failure> {
        {
            let data = &mut store.data_mut().data;
            data.stream = stream.take();
            data.stream_context = context;
            data.stream_slot = slot;
            if let Some(stream) = data.stream.as_deref_mut() {
                stream.clear_signals();
            }
        }
        // Phases in the middle of a stream skip the memory gauge: its first and last calls
        // keep it current.
        let middle = matches!(
            call,
            StreamCall::Headers { .. } | StreamCall::Body { .. } | StreamCall::Trailers { .. }
        );
        let result = match self.plan(store, context, slot, call) {
            Plan::Done(value) => Ok(value),
            Plan::Stream(f, args) => self.invoke(store, f, args, context),
            Plan::Other(call) => self.dispatch(store, context, call),
        };
        // The guest may have noted a default during the call.
        self.refresh_noted(store);
        {
            let data = &mut store.data_mut().data;
            *stream = data.stream.take();
            data.stream_context = 0;
            data.delivery = None;
        }
        if middle {
            self.after_phase(store);
        } else {
            self.after_call(store);
        }
        result
    }

    /// Waits for the store another call holds. A stream that has not started here yet does
    /// not queue behind a guest stuck in a long call: it gives up the instance (`stale`) and
    /// its filter picks another.
    async fn lock_contended(
        &self,
        call: &StreamCall,
    ) -> Result<futures_util::lock::MutexGuard<'_, GuestStore>, Failure> {
        let may_move = matches!(
            call,
            StreamCall::Create { may_move: true } | StreamCall::Start { may_move: true, .. }
        );
        if !may_move {
            return Ok(self.store.lock().await);
        }
        let tick = self.host.runtime.settings().tick;
        loop {
            tokio::select! {
                store = self.store.lock() => return Ok(store),
                () = tokio::time::sleep(tick) => {
                    if self.is_stuck() || self.is_broken() {
                        self.release();
                        return Err(Failure {
                            reason: FailureReason::Trap,
                            detail: "the instance is busy in a long call".into(),
                            stale: true,
                        });
                    }
                }
            }
        }
    }

    /// What `call` comes down to: for the calls every stream makes on a guest with the
    /// trampolines, the arguments of their one export (found without awaiting anything); the
    /// rest go through [`dispatch`](Self::dispatch).
    fn plan<'e>(
        &'e self,
        store: &mut GuestStore,
        context: u32,
        slot: usize,
        call: StreamCall,
    ) -> Plan<'e> {
        let flag = |b: bool| u32::from(b);
        match &call {
            StreamCall::Create { .. } | StreamCall::Start { .. } => {
                let data = &mut store.data_mut().data;
                if let Some(events) = data.stream.as_ref().map(|s| s.events.clone()) {
                    data.streams.insert(context, StreamHandle { events, slot });
                }
            }
            StreamCall::Delete | StreamCall::Finish => {
                store.data_mut().data.streams.remove(&context);
                self.live.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        let callback = call.callback();
        if callback.is_some_and(|c| self.skips(c)) {
            return Plan::Done(0);
        }
        let Some(t) = &self.trampolines else {
            return Plan::Other(call);
        };
        let (op, a, b, c) = match (call, callback.and_then(StreamOp::phase)) {
            (
                StreamCall::Start {
                    headers,
                    end_of_stream,
                    ..
                },
                _,
            ) => (StreamOp::Start, self.root_id, headers, flag(end_of_stream)),
            (
                StreamCall::Headers {
                    headers,
                    end_of_stream,
                    ..
                },
                Some(op),
            ) => (op, headers, flag(end_of_stream), 0),
            (
                StreamCall::Body {
                    size,
                    end_of_stream,
                    ..
                },
                Some(op),
            ) => (op, size, flag(end_of_stream), 0),
            (StreamCall::Trailers { trailers, .. }, Some(op)) => (op, trailers, 0, 0),
            (StreamCall::Finish, _) => {
                let skip_log = self.skips(StreamCallback::Log);
                (StreamOp::Finish, u32::from(skip_log), 0, 0)
            }
            (StreamCall::Delete, _) => (StreamOp::Delete, 0, 0, 0),
            (call, _) => return Plan::Other(call),
        };
        Plan::Stream(&t.stream, (op as u32, context, a, b, c))
    }

    /// Whether the guest noted `callback` as one that does nothing and returns `Continue`
    /// ([`weft_abi::DEFAULT_CALLBACKS_EXPORT`]), as of its last call: no guest call, and no
    /// lock on the store. The chain then sees what a module without the callback gives:
    /// `Continue`. A broken instance is called as before, so that the stream learns of the
    /// failure.
    fn skips(&self, callback: StreamCallback) -> bool {
        !self.is_broken() && self.noted.load(Ordering::Relaxed) & callback.bit() != 0
    }

    /// Copies the guest's word into [`noted`](Self::noted) after a call into it.
    fn refresh_noted(&self, store: &GuestStore) {
        if let Some(word) = self.noted_word(store) {
            self.noted.store(word, Ordering::Relaxed);
        }
    }

    /// The guest's word of noted callbacks, if it has one inside its memory.
    fn noted_word(&self, store: &GuestStore) -> Option<u32> {
        let start = *self.default_callbacks.get()? as usize;
        let bytes = self
            .exports
            .memory
            .data(store)
            .get(start..start.checked_add(4)?)?;
        <[u8; 4]>::try_from(bytes).ok().map(u32::from_le_bytes)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let calls = std::mem::take(&mut self.store.get_mut().data_mut().data.pending_calls);
        self.calls.inc_by(calls);
        self.tick_generation.fetch_add(1, Ordering::Relaxed);
        self.host.instances.with_label_values(&[&self.plugin]).dec();
        self.host
            .memory
            .with_label_values(&[&self.plugin])
            .sub(self.memory_bytes.load(Ordering::Relaxed) as i64);
        for (_, grpc) in self.store.get_mut().data_mut().data.grpc.drain() {
            grpc.abort.abort();
        }
    }
}
