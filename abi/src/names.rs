//! The names that link a module to its host: the 39 `proxy_*` functions the host exports
//! ([`HostFunction`], [`HOST_FUNCTIONS`]) and the 31 functions a module may export for the
//! host to call ([`GuestExport`], [`GUEST_EXPORTS`]) — and weft's one extension,
//! [`DEFAULT_CALLBACKS_EXPORT`].
//!
//! Both lists are the v0.2.1 spec's, in its order (`proxy-wasm/spec`,
//! `abi-versions/v0.2.1/README.md`, "Functions exposed by the host" and "Callbacks exposed by
//! the Wasm module"). Every host function is required — a module built with the Rust SDK
//! imports 37 of them even when it calls few — while every guest export is optional.
//!
//! weft's own extensions add guest exports outside the spec ([`WeftExport`],
//! [`WEFT_EXPORTS`]): optional too, and never called by other hosts.

/// The import module of every `proxy_*` host function (what `extern "C"` blocks get in Rust
/// and C when compiled to wasm32 without a `wasm_import_module`).
pub const HOST_MODULE: &str = "env";

/// Defines a name enum from rows `Variant => "name",`, with `ALL`, `name`, `from_name` and a
/// `[&str; N]` constant of the names in table order.
macro_rules! name_table {
    (
        $(#[$meta:meta])*
        pub enum $ty:ident;
        $(#[$cmeta:meta])*
        pub const $names:ident: [&str; $n:literal];
        {
            $(
                $(#[$vmeta:meta])*
                $variant:ident => $name:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $ty {
            $(
                $(#[$vmeta])*
                $variant,
            )+
        }

        $(#[$cmeta])*
        pub const $names: [&str; $n] = [$($name),+];

        impl $ty {
            /// Every value, in the table's order (the spec's, for the v0.2.1 names).
            pub const ALL: [$ty; $n] = [$($ty::$variant),+];

            /// The function's name as it appears in the module's imports or exports.
            pub const fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }

            /// The value with this name, if any.
            pub fn from_name(name: &str) -> Option<$ty> {
                match name {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }

        impl ::core::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

name_table! {
    /// One of the 39 `proxy_*` functions a v0.2.1 host exports (in module [`HOST_MODULE`]).
    pub enum HostFunction;
    /// The names of the 39 `proxy_*` host functions of v0.2.1, in the spec's order.
    pub const HOST_FUNCTIONS: [&str; 39];
    {
        /// Finishes a context whose `proxy_on_done` returned false.
        Done => "proxy_done",
        /// Makes another context the one later host calls act on.
        SetEffectiveContext => "proxy_set_effective_context",
        /// Logs a message at a [`LogLevel`](crate::LogLevel).
        Log => "proxy_log",
        /// Returns the host's current [`LogLevel`](crate::LogLevel).
        GetLogLevel => "proxy_get_log_level",
        /// Returns wall-clock time in nanoseconds since the Unix epoch.
        GetCurrentTimeNanoseconds => "proxy_get_current_time_nanoseconds",
        /// Sets the period of `proxy_on_tick` for the calling root context.
        SetTickPeriodMilliseconds => "proxy_set_tick_period_milliseconds",
        /// Replaces a range of a [`BufferType`](crate::BufferType) buffer.
        SetBufferBytes => "proxy_set_buffer_bytes",
        /// Reads a range of a [`BufferType`](crate::BufferType) buffer.
        GetBufferBytes => "proxy_get_buffer_bytes",
        /// Returns the size of a buffer.
        GetBufferStatus => "proxy_get_buffer_status",
        /// Returns the size of a header map.
        GetHeaderMapSize => "proxy_get_header_map_size",
        /// Returns a whole header map, [encoded](crate::encode_map).
        GetHeaderMapPairs => "proxy_get_header_map_pairs",
        /// Replaces a whole header map with an [encoded](crate::decode_map) one.
        SetHeaderMapPairs => "proxy_set_header_map_pairs",
        /// Returns the value of one header.
        GetHeaderMapValue => "proxy_get_header_map_value",
        /// Adds a header value.
        AddHeaderMapValue => "proxy_add_header_map_value",
        /// Replaces a header's values with one value.
        ReplaceHeaderMapValue => "proxy_replace_header_map_value",
        /// Removes a header.
        RemoveHeaderMapValue => "proxy_remove_header_map_value",
        /// Resumes a paused [`StreamType`](crate::StreamType) stream.
        ContinueStream => "proxy_continue_stream",
        /// Closes a stream.
        CloseStream => "proxy_close_stream",
        /// Returns the status of the last callout answer (code and message).
        GetStatus => "proxy_get_status",
        /// Answers the request at once with a local response.
        SendLocalResponse => "proxy_send_local_response",
        /// Sends an HTTP callout to a cluster.
        HttpCall => "proxy_http_call",
        /// Sends a unary gRPC callout.
        GrpcCall => "proxy_grpc_call",
        /// Opens a gRPC stream.
        GrpcStream => "proxy_grpc_stream",
        /// Sends a message on a gRPC stream.
        GrpcSend => "proxy_grpc_send",
        /// Cancels a gRPC call or stream.
        GrpcCancel => "proxy_grpc_cancel",
        /// Closes a gRPC call or stream.
        GrpcClose => "proxy_grpc_close",
        /// Writes process-wide shared data, with compare-and-swap.
        SetSharedData => "proxy_set_shared_data",
        /// Reads process-wide shared data and its CAS token.
        GetSharedData => "proxy_get_shared_data",
        /// Registers a shared queue owned by the calling VM.
        RegisterSharedQueue => "proxy_register_shared_queue",
        /// Finds a shared queue by VM id and name.
        ResolveSharedQueue => "proxy_resolve_shared_queue",
        /// Appends to a shared queue.
        EnqueueSharedQueue => "proxy_enqueue_shared_queue",
        /// Takes the oldest item of a shared queue.
        DequeueSharedQueue => "proxy_dequeue_shared_queue",
        /// Defines a [`MetricType`](crate::MetricType) metric and returns its id.
        DefineMetric => "proxy_define_metric",
        /// Sets a gauge or records a histogram value.
        RecordMetric => "proxy_record_metric",
        /// Adds to a counter or gauge.
        IncrementMetric => "proxy_increment_metric",
        /// Reads a metric's value.
        GetMetric => "proxy_get_metric",
        /// Reads a property by its [path](crate::split_property_path).
        GetProperty => "proxy_get_property",
        /// Sets a property by its path.
        SetProperty => "proxy_set_property",
        /// Calls a host-defined foreign function by name.
        CallForeignFunction => "proxy_call_foreign_function",
    }
}

name_table! {
    /// One of the 31 functions a v0.2.1 module may export for the host to call.
    pub enum GuestExport;
    /// The names of the 31 functions a v0.2.1 module may export, in the spec's order.
    pub const GUEST_EXPORTS: [&str; 31];
    {
        /// Marker export advertising ABI v0.2.1; never called.
        AbiVersion => "proxy_abi_version_0_2_1",
        /// WASI reactor initialiser, called first when present.
        Initialize => "_initialize",
        /// Called after `_initialize`, only when `_initialize` is exported.
        Main => "main",
        /// WASI command entry, called only when `_initialize` is not exported.
        Start => "_start",
        /// Allocates guest memory for data the host hands over.
        OnMemoryAllocate => "proxy_on_memory_allocate",
        /// Deprecated allocator, used only when `proxy_on_memory_allocate` is absent.
        Malloc => "malloc",
        /// Creates a root context (parent id 0) or a stream context.
        OnContextCreate => "proxy_on_context_create",
        /// Asks a context to finish; returns whether it is done.
        OnDone => "proxy_on_done",
        /// Lets a stream context log after the stream ends.
        OnLog => "proxy_on_log",
        /// Deletes a context.
        OnDelete => "proxy_on_delete",
        /// Starts the VM with its configuration; returns success.
        OnVmStart => "proxy_on_vm_start",
        /// Configures a root context with its plugin configuration; returns success.
        OnConfigure => "proxy_on_configure",
        /// Timer tick of a root context.
        OnTick => "proxy_on_tick",
        /// A new TCP connection.
        OnNewConnection => "proxy_on_new_connection",
        /// Data from the downstream TCP peer.
        OnDownstreamData => "proxy_on_downstream_data",
        /// The downstream TCP connection closed.
        OnDownstreamConnectionClose => "proxy_on_downstream_connection_close",
        /// Data from the upstream TCP peer.
        OnUpstreamData => "proxy_on_upstream_data",
        /// The upstream TCP connection closed.
        OnUpstreamConnectionClose => "proxy_on_upstream_connection_close",
        /// HTTP request headers arrived.
        OnRequestHeaders => "proxy_on_request_headers",
        /// A chunk of HTTP request body arrived.
        OnRequestBody => "proxy_on_request_body",
        /// HTTP request trailers arrived.
        OnRequestTrailers => "proxy_on_request_trailers",
        /// HTTP response headers arrived.
        OnResponseHeaders => "proxy_on_response_headers",
        /// A chunk of HTTP response body arrived.
        OnResponseBody => "proxy_on_response_body",
        /// HTTP response trailers arrived.
        OnResponseTrailers => "proxy_on_response_trailers",
        /// An HTTP callout was answered (delivered to the root context).
        OnHttpCallResponse => "proxy_on_http_call_response",
        /// Initial metadata of a gRPC callout arrived.
        OnGrpcReceiveInitialMetadata => "proxy_on_grpc_receive_initial_metadata",
        /// A gRPC message arrived.
        OnGrpcReceive => "proxy_on_grpc_receive",
        /// Trailing metadata of a gRPC callout arrived.
        OnGrpcReceiveTrailingMetadata => "proxy_on_grpc_receive_trailing_metadata",
        /// A gRPC call or stream closed.
        OnGrpcClose => "proxy_on_grpc_close",
        /// A shared queue this root context registered has items.
        OnQueueReady => "proxy_on_queue_ready",
        /// A foreign function called back into the module.
        OnForeignFunction => "proxy_on_foreign_function",
    }
}

/// weft's extension to the guest exports (not in the spec; Envoy and other hosts ignore it): a
/// module built with weft-sdk exports `weft_default_callbacks_v1() -> i32`, the address in its
/// linear memory of a little-endian `u32` in which bit [`StreamCallback::bit`] is set once the
/// guest knows that callback to be a no-op that returns `Continue` (its filter type keeps the
/// SDK's default). The host reads the word before each stream phase and does not enter the
/// guest for a callback whose bit is set, as if the module did not export it. Bits are only
/// ever set, never cleared.
pub const DEFAULT_CALLBACKS_EXPORT: &str = "weft_default_callbacks_v1";

/// A stream callback the host may skip, by its bit in the word behind
/// [`DEFAULT_CALLBACKS_EXPORT`]. The numbers are part of that contract: never renumber them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum StreamCallback {
    /// `proxy_on_request_headers`.
    RequestHeaders = 0,
    /// `proxy_on_request_body`.
    RequestBody = 1,
    /// `proxy_on_request_trailers`.
    RequestTrailers = 2,
    /// `proxy_on_response_headers`.
    ResponseHeaders = 3,
    /// `proxy_on_response_body`.
    ResponseBody = 4,
    /// `proxy_on_response_trailers`.
    ResponseTrailers = 5,
    /// `proxy_on_log`: a host that knows it does nothing still ends the stream with
    /// `proxy_on_done` and `proxy_on_delete`.
    Log = 6,
}

impl StreamCallback {
    /// Every value, in bit order.
    pub const ALL: [StreamCallback; 7] = [
        StreamCallback::RequestHeaders,
        StreamCallback::RequestBody,
        StreamCallback::RequestTrailers,
        StreamCallback::ResponseHeaders,
        StreamCallback::ResponseBody,
        StreamCallback::ResponseTrailers,
        StreamCallback::Log,
    ];

    /// The callback's bit in the word behind [`DEFAULT_CALLBACKS_EXPORT`].
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// The guest export this is.
    pub const fn export(self) -> GuestExport {
        match self {
            StreamCallback::RequestHeaders => GuestExport::OnRequestHeaders,
            StreamCallback::RequestBody => GuestExport::OnRequestBody,
            StreamCallback::RequestTrailers => GuestExport::OnRequestTrailers,
            StreamCallback::ResponseHeaders => GuestExport::OnResponseHeaders,
            StreamCallback::ResponseBody => GuestExport::OnResponseBody,
            StreamCallback::ResponseTrailers => GuestExport::OnResponseTrailers,
            StreamCallback::Log => GuestExport::OnLog,
        }
    }
}

#[cfg(test)]
mod tests;

name_table! {
    /// A function outside ABI v0.2.1 that a module may export for a weft host: an optional
    /// extension that other hosts (Envoy) never call. The weft SDK exports each of them.
    pub enum WeftExport;
    /// The names of weft's own optional guest exports.
    pub const WEFT_EXPORTS: [&str; 2];
    {
        /// `() -> i64`: where the module's [host buffer](crate::HostBuffer) lies.
        HostBuffer => "weft_host_buffer",
        /// `() -> i32`: where the word of [`StreamCallback`] bits lies (see
        /// [`DEFAULT_CALLBACKS_EXPORT`]).
        DefaultCallbacks => "weft_default_callbacks_v1",
    }
}
