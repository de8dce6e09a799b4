//! What a plugin instance's host functions see: [`HostData`] (one per instance, in its wasmtime
//! store) and [`StreamData`] (one per request, shared by every filter of the chain and lent to
//! an instance for the duration of each call into it).
//!
//! A request's headers, bodies and trailers live in its `StreamData`; the chain executor moves
//! it into the store of the filter it calls (`HostData::stream`) and takes it back when the call
//! returns, so host functions work on plain owned data with no locks. Anything a host function
//! cannot do inline — resuming a stream that is not the one being called, delivering a callout's
//! response later — travels as a [`StreamEvent`] to the task that owns the stream.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
    sync::{
        Arc, OnceLock, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use tokio::sync::mpsc::{self, error::SendError};
use wasmtime::{Memory, TypedFunc};

use super::{
    callout::CalloutResponse,
    header_names::HeaderNames,
    host::WasmHost,
    instance::Instance,
    properties::{PluginIdentity, PropertyMap},
};
use crate::http::proxy::Downstream;

/// Which side of a stream an event or action is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The request (downstream → upstream).
    Request,
    /// The response (upstream → downstream).
    Response,
}

impl Side {
    /// `request` or `response`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }
}

/// Something that happened to a stream outside a call on it.
#[derive(Debug)]
pub enum StreamEvent {
    /// An HTTP callout dispatched by the filter in `slot` completed (or failed: no headers).
    HttpCall {
        /// The chain position of the filter that dispatched it.
        slot: usize,
        /// Its token.
        token: u32,
        /// What came back.
        response: CalloutResponse,
    },
    /// A gRPC call or stream dispatched by the filter in `slot` produced something.
    Grpc {
        /// The chain position of the filter that dispatched it.
        slot: usize,
        /// Its token.
        token: u32,
        /// What happened.
        event: GrpcEvent,
    },
    /// `proxy_continue_stream` from another context (a root context's tick, say).
    Resume(Side),
    /// `proxy_send_local_response` from another context.
    LocalResponse(LocalResponse),
    /// `proxy_close_stream` from another context.
    Close,
}

/// Something for an instance's root context, run by a task of its own
/// ([`Instance::spawn_root`]).
#[derive(Debug)]
pub enum RootEvent {
    /// The tick period elapsed (`proxy_on_tick`).
    Tick,
    /// An item was enqueued on a queue the root context registered (`proxy_on_queue_ready`).
    QueueReady(u32),
    /// An HTTP callout the root context dispatched (or whose stream is gone) completed.
    HttpCall {
        /// Its token.
        token: u32,
        /// What came back.
        response: CalloutResponse,
    },
    /// A gRPC call or stream the root context opened produced something.
    Grpc {
        /// Its token.
        token: u32,
        /// What happened.
        event: GrpcEvent,
    },
}

/// A stream's event queue: any number of senders (callouts, other contexts), one receiver (the
/// stream's own task). Cheaper to make than a channel — one small allocation per request, no
/// block of slots — since most streams never see an event.
pub fn event_queue() -> (EventSender, EventReceiver) {
    let queue = Arc::new(EventQueue::default());
    (EventSender(queue.clone()), EventReceiver(queue))
}

#[derive(Default)]
struct EventQueue {
    items: std::sync::Mutex<VecDeque<StreamEvent>>,
    ready: tokio::sync::Notify,
    closed: AtomicBool,
}

/// Sends events to a stream.
#[derive(Clone)]
pub struct EventSender(Arc<EventQueue>);

impl EventSender {
    /// Queues `event`; gives it back when the stream is gone.
    pub fn send(&self, event: StreamEvent) -> Result<(), SendError<StreamEvent>> {
        if self.0.closed.load(Ordering::Acquire) {
            return Err(SendError(event));
        }
        match self.0.items.lock() {
            Ok(mut items) => items.push_back(event),
            Err(_) => return Err(SendError(event)),
        }
        self.0.ready.notify_one();
        Ok(())
    }
}

impl std::fmt::Debug for EventSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSender")
    }
}

/// The stream's end of its event queue.
pub struct EventReceiver(Arc<EventQueue>);

impl EventReceiver {
    /// The next event, waiting for one.
    pub async fn recv(&mut self) -> StreamEvent {
        loop {
            if let Some(event) = self.try_recv() {
                return event;
            }
            // `notify_one` stores a permit when nobody waits, so an event queued between the
            // check above and this wait is not missed.
            self.0.ready.notified().await;
        }
    }

    /// The next event, if one is queued.
    pub fn try_recv(&mut self) -> Option<StreamEvent> {
        self.0.items.lock().ok()?.pop_front()
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        if let Ok(mut items) = self.0.items.lock() {
            items.clear();
        }
    }
}

/// A gRPC callout's progress, delivered to the guest in order.
#[derive(Debug)]
pub enum GrpcEvent {
    /// Response headers (`proxy_on_grpc_receive_initial_metadata`).
    InitialMetadata(Vec<(Bytes, Bytes)>),
    /// One message (`proxy_on_grpc_receive`).
    Message(Bytes),
    /// Trailers (`proxy_on_grpc_receive_trailing_metadata`).
    TrailingMetadata(Vec<(Bytes, Bytes)>),
    /// The call ended with a gRPC status and message (`proxy_on_grpc_close`).
    Close {
        /// gRPC status code.
        status: u32,
        /// `grpc-message`.
        message: Bytes,
    },
}

/// A reply a filter asked for with `proxy_send_local_response`.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    /// Status code.
    pub status: StatusCode,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body.
    pub body: Bytes,
    /// The filter's reason (`details`), for logs.
    pub details: String,
    /// `grpc-status` to add, when the filter gave one.
    pub grpc_status: Option<u32>,
}

/// The response as filters see it.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// `:status`.
    pub status: StatusCode,
    /// Headers (hop-by-hop already removed).
    pub headers: HeaderMap,
}

/// One request as the filters see it: every mutable piece of the stream.
pub struct StreamData {
    /// The connection it arrived on.
    pub downstream: Arc<Downstream>,
    /// When it started.
    pub started: SystemTime,
    /// Protocol version of the downstream request.
    pub version: Version,
    /// `:method`.
    pub method: Method,
    /// `:scheme`.
    pub scheme: &'static str,
    /// `:authority` (the `Host` header on HTTP/1.1; kept out of `request_headers`).
    pub authority: HeaderValue,
    /// `:path`, with the query.
    pub path: Bytes,
    /// Request headers without pseudo-headers and without `Host`.
    pub request_headers: HeaderMap,
    /// Request trailers, once they arrived.
    pub request_trailers: Option<HeaderMap>,
    /// The request body the current call sees (`HttpRequestBody`).
    pub request_body: BytesMut,
    /// The response head, once it arrived (or a local reply's).
    pub response: Option<ResponseHead>,
    /// Response trailers, once they arrived.
    pub response_trailers: Option<HeaderMap>,
    /// The response body the current call sees (`HttpResponseBody`).
    pub response_body: BytesMut,
    /// Values filters stored with `proxy_set_property`, by dotted path.
    pub properties: PropertyMap,
    /// Request body bytes received from the client so far (`request.size`).
    pub request_body_bytes: u64,
    /// Response body bytes passed on to the client so far (`response.size`).
    pub response_body_bytes: u64,
    /// The cluster the request was routed to, once routed (`xds.cluster_name`).
    pub cluster: Option<Arc<str>>,
    /// How long the request took, once it ended (`request.duration`).
    pub duration: Option<Duration>,
    /// A local reply asked for during the current call.
    pub local_response: Option<LocalResponse>,
    /// `proxy_continue_stream` was called for the request / response during the current call.
    pub resumed: [bool; 2],
    /// `proxy_close_stream` was called.
    pub closed: bool,
    /// Where callouts and other contexts send this stream's events.
    pub events: EventSender,
}

impl StreamData {
    /// Clears the per-call signals before a call.
    pub fn clear_signals(&mut self) {
        self.resumed = [false; 2];
    }

    /// The body buffer of `side` the current call sees.
    pub fn body_mut(&mut self, side: Side) -> &mut BytesMut {
        match side {
            Side::Request => &mut self.request_body,
            Side::Response => &mut self.response_body,
        }
    }

    /// The trailers of `side`, once they arrived.
    pub fn trailers_mut(&mut self, side: Side) -> &mut Option<HeaderMap> {
        match side {
            Side::Request => &mut self.request_trailers,
            Side::Response => &mut self.response_trailers,
        }
    }

    /// Whether `proxy_continue_stream(side)` was called during the last call.
    pub fn resumed(&self, side: Side) -> bool {
        self.resumed[side as usize]
    }
}

/// `proxy_on_http_call_response(context, token, headers, body_size, trailers)`.
pub type CallResponseParams = (u32, u32, u32, u32, u32);

/// The calls into a guest, resolved once per instance. Every export but the allocator is
/// optional: a module that does not export a callback — or notes it as a no-op, see
/// [`weft_abi::DEFAULT_CALLBACKS_EXPORT`] — behaves as if it returned "continue".
#[derive(Clone)]
pub struct Exports {
    /// The instance's linear memory.
    pub memory: Memory,
    /// `proxy_on_memory_allocate` (or `malloc`).
    pub allocate: Option<TypedFunc<u32, u32>>,
    /// `proxy_on_context_create(context, parent)`.
    pub on_context_create: Option<TypedFunc<(u32, u32), ()>>,
    /// `proxy_on_vm_start(root, vm_configuration_size)`.
    pub on_vm_start: Option<TypedFunc<(u32, u32), u32>>,
    /// `proxy_on_configure(root, plugin_configuration_size)`.
    pub on_configure: Option<TypedFunc<(u32, u32), u32>>,
    /// `proxy_on_tick(root)`.
    pub on_tick: Option<TypedFunc<u32, ()>>,
    /// `proxy_on_queue_ready(root, queue)`.
    pub on_queue_ready: Option<TypedFunc<(u32, u32), ()>>,
    /// `proxy_on_request_headers(context, headers, end_of_stream)`.
    pub on_request_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    /// `proxy_on_request_body(context, size, end_of_stream)`.
    pub on_request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    /// `proxy_on_request_trailers(context, trailers)`.
    pub on_request_trailers: Option<TypedFunc<(u32, u32), u32>>,
    /// `proxy_on_response_headers(context, headers, end_of_stream)`.
    pub on_response_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    /// `proxy_on_response_body(context, size, end_of_stream)`.
    pub on_response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    /// `proxy_on_response_trailers(context, trailers)`.
    pub on_response_trailers: Option<TypedFunc<(u32, u32), u32>>,
    /// `proxy_on_log(context)`.
    pub on_log: Option<TypedFunc<u32, ()>>,
    /// `proxy_on_done(context)`.
    pub on_done: Option<TypedFunc<u32, u32>>,
    /// `proxy_on_delete(context)`.
    pub on_delete: Option<TypedFunc<u32, ()>>,
    /// `proxy_on_http_call_response(context, token, headers, body_size, trailers)`.
    pub on_http_call_response: Option<TypedFunc<CallResponseParams, ()>>,
    /// `proxy_on_grpc_receive_initial_metadata(context, token, headers)`.
    pub on_grpc_receive_initial_metadata: Option<TypedFunc<(u32, u32, u32), ()>>,
    /// `proxy_on_grpc_receive(context, token, size)`.
    pub on_grpc_receive: Option<TypedFunc<(u32, u32, u32), ()>>,
    /// `proxy_on_grpc_receive_trailing_metadata(context, token, trailers)`.
    pub on_grpc_receive_trailing_metadata: Option<TypedFunc<(u32, u32, u32), ()>>,
    /// `proxy_on_grpc_close(context, token, status)`.
    pub on_grpc_close: Option<TypedFunc<(u32, u32, u32), ()>>,
}

impl Exports {
    /// The stream callbacks in the order the trampolines import them (see
    /// [`super::host::WasmHost::trampolines`]), if the guest exports every one.
    pub fn stream_callbacks(&self) -> Option<[wasmtime::Extern; 10]> {
        Some([
            (*self.on_context_create.as_ref()?.func()).into(),
            (*self.on_request_headers.as_ref()?.func()).into(),
            (*self.on_request_body.as_ref()?.func()).into(),
            (*self.on_request_trailers.as_ref()?.func()).into(),
            (*self.on_response_headers.as_ref()?.func()).into(),
            (*self.on_response_body.as_ref()?.func()).into(),
            (*self.on_response_trailers.as_ref()?.func()).into(),
            (*self.on_done.as_ref()?.func()).into(),
            (*self.on_log.as_ref()?.func()).into(),
            (*self.on_delete.as_ref()?.func()).into(),
        ])
    }
}

/// Where a stream context of this instance sends its events, and the chain slot it has.
#[derive(Clone)]
pub struct StreamHandle {
    /// The stream's event channel.
    pub events: EventSender,
    /// The filter's position in the stream's chain.
    pub slot: usize,
}

/// Hashes context ids as themselves: they are small, unique, host-assigned integers, so the
/// per-stream registry costs no SipHash rounds.
#[derive(Default)]
pub struct ContextIdHasher(u64);

impl Hasher for ContextIdHasher {
    fn finish(&self) -> u64 {
        // Spread the low bits into the high ones hashbrown uses for its control bytes.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}

/// The callout answer being delivered by the current call (`HttpCallResponse*` buffers and
/// maps, `GrpcReceiveBuffer`, gRPC metadata).
#[derive(Debug, Default)]
pub struct Delivery {
    /// `HttpCallResponseHeaders` / `GrpcReceiveInitialMetadata`.
    pub headers: Vec<(Bytes, Bytes)>,
    /// `HttpCallResponseTrailers` / `GrpcReceiveTrailingMetadata`.
    pub trailers: Vec<(Bytes, Bytes)>,
    /// `HttpCallResponseBody` / `GrpcReceiveBuffer`.
    pub body: Bytes,
}

/// A gRPC call or stream the guest opened, by token.
pub struct GrpcHandle {
    /// Messages to send on a stream (`proxy_grpc_send`); `None` for a unary call.
    pub send: Option<mpsc::UnboundedSender<super::callout::GrpcOutbound>>,
    /// Aborts the call (`proxy_grpc_cancel`).
    pub abort: tokio::task::AbortHandle,
}

/// The state of one plugin instance, reachable from every host function through its store.
pub struct HostData {
    /// Process-wide services: shared data, queues, metrics, clusters for callouts.
    pub host: Arc<WasmHost>,
    /// The filter this instance runs: names for properties and logs.
    pub plugin: Arc<PluginIdentity>,
    /// The plugin configuration (`PluginConfiguration` buffer).
    pub configuration: Bytes,
    /// The VM configuration (`VmConfiguration` buffer).
    pub vm_configuration: Bytes,
    /// The guest's exports, once instantiated.
    pub exports: Option<Exports>,
    /// The guest's host buffer (weft's extension, [`weft_abi::HostBuffer`]), where host
    /// functions write the data they return when it fits, instead of calling the guest's
    /// allocator. Set when the guest exports a valid one, after its start function.
    pub host_buffer: Option<weft_abi::HostBuffer>,
    /// The root context's id.
    pub root_id: u32,
    /// The context host functions act for (`proxy_set_effective_context`).
    pub effective: u32,
    /// The stream lent for the current call, and the context id this instance knows it by.
    pub stream: Option<Box<StreamData>>,
    /// The context id of `stream` in this instance.
    pub stream_context: u32,
    /// Live stream contexts of this instance, so a root context can resume or answer them.
    pub streams: HashMap<u32, StreamHandle, BuildHasherDefault<ContextIdHasher>>,
    /// The callout answer the current call delivers.
    pub delivery: Option<Delivery>,
    /// `proxy_get_status` after a gRPC close: code and message.
    pub status: (u32, Bytes),
    /// The tick period the root context asked for; `Some(ZERO)` stops ticking.
    pub tick_period: Option<Duration>,
    /// Set when `tick_period` changed during the current call.
    pub tick_changed: bool,
    /// Guest calls not yet added to `weft_plugin_calls_total`: counted here, under the store's
    /// lock, and added at a stream's first and last calls (one atomic add per stream rather
    /// than one per call, on a counter every worker shares).
    pub pending_calls: u64,
    /// Next callout token.
    pub next_token: u32,
    /// Open gRPC calls and streams by token.
    pub grpc: HashMap<u32, GrpcHandle>,
    /// Properties set outside any stream (on the root context).
    pub root_properties: PropertyMap,
    /// A `Critical` log line (the SDK's panic hook) was written during the current call.
    pub panicked: bool,
    /// The last `Error` or `Critical` line the guest logged: why it refused its configuration.
    pub last_error: Option<String>,
    /// The chain position of the filter `stream` is lent to (events from callouts carry it).
    pub stream_slot: usize,
    /// The header names the guest has used, parsed once.
    pub header_names: HeaderNames,
    /// A handle on the instance itself, filled once it exists: callouts from the root context,
    /// queue notifications and ticks reach the instance through it.
    pub instance: Arc<OnceLock<Weak<Instance>>>,
}

impl HostData {
    /// State for a fresh instance of `plugin`.
    pub fn new(
        host: Arc<WasmHost>,
        plugin: Arc<PluginIdentity>,
        configuration: Bytes,
        vm_configuration: Bytes,
    ) -> Self {
        Self {
            host,
            plugin,
            configuration,
            vm_configuration,
            exports: None,
            host_buffer: None,
            root_id: 1,
            effective: 1,
            stream: None,
            stream_context: 0,
            streams: HashMap::default(),
            delivery: None,
            status: (0, Bytes::new()),
            tick_period: None,
            tick_changed: false,
            pending_calls: 0,
            next_token: 0,
            grpc: HashMap::new(),
            root_properties: PropertyMap::default(),
            panicked: false,
            last_error: None,
            stream_slot: 0,
            header_names: HeaderNames::default(),
            instance: Arc::new(OnceLock::new()),
        }
    }

    /// The stream the effective context acts on, if the effective context is the stream lent
    /// for this call.
    pub fn current_stream(&mut self) -> Option<&mut StreamData> {
        if self.on_stream() {
            self.stream.as_deref_mut()
        } else {
            None
        }
    }

    /// [`HostData::current_stream`], to read.
    pub fn current_stream_ref(&self) -> Option<&StreamData> {
        if self.on_stream() {
            self.stream.as_deref()
        } else {
            None
        }
    }

    fn on_stream(&self) -> bool {
        self.effective == self.stream_context && self.stream_context != 0
    }

    /// The instance, if it is still alive.
    pub fn instance(&self) -> Option<Arc<Instance>> {
        self.instance.get().and_then(Weak::upgrade)
    }

    /// A fresh callout token (never 0).
    pub fn token(&mut self) -> u32 {
        self.next_token = self.next_token.wrapping_add(1).max(1);
        self.next_token
    }
}
