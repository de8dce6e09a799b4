//! Callouts: `proxy_http_call`, `proxy_grpc_call`, `proxy_grpc_stream`, `proxy_grpc_send`,
//! `proxy_grpc_cancel`, `proxy_grpc_close`, and `proxy_get_status`.
//!
//! A callout runs on a task of its own ([`callout`]); its answer comes back the way it was
//! asked for: a callout dispatched while the stream lent for the call was the effective
//! context is delivered to that stream ([`StreamEvent::HttpCall`], [`StreamEvent::Grpc`],
//! tagged with the filter's chain slot), one dispatched from a root context — or whose stream
//! is gone by then — to the instance's root context ([`RootEvent`] through
//! [`Instance::spawn_root`]). The task holds the instance weakly, so a retired instance is not
//! kept alive by its callouts.
//!
//! Statuses follow Envoy: an unknown cluster is `BadArgument` for HTTP and `ParseFailure` for
//! gRPC; HTTP headers without `:method`, `:path` and `:authority` are `BadArgument`; the token
//! pointer is checked before anything is sent, so a bad one never leaves an orphan call. An
//! unknown gRPC token is `NotFound`; `proxy_grpc_send` on a unary call is `BadArgument`.
//! A timeout of 0 means none of the guest's own (the HTTP callout is then bounded by the
//! longest timeout the ABI can express, `u32::MAX` ms).

use std::{sync::Weak, time::Duration};

use bytes::Bytes;
use tokio::sync::mpsc::{self, error::SendError};
use weft_abi::{HOST_MODULE, MapLimits, Status, decode_map_limited};

use super::memory::{
    Ctx, HostLinker, HostResult, copy_to_guest, finish, read, read_string, state, write_u32,
};
use crate::wasm::{
    callout::{self, CalloutResponse, GrpcOutbound, GrpcRequest},
    context::{EventSender, GrpcEvent, GrpcHandle, HostData, RootEvent, StreamEvent},
    instance::Instance,
};

/// Defines the seven callout functions.
pub(super) fn add_to_linker(linker: &mut HostLinker) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        "proxy_http_call",
        |mut caller: Ctx<'_>,
         upstream: u32,
         upstream_size: u32,
         headers: u32,
         headers_size: u32,
         body: u32,
         body_size: u32,
         trailers: u32,
         trailers_size: u32,
         timeout_ms: u32,
         token_ptr: u32| {
            finish((|| {
                let upstream = read_string(&mut caller, upstream, upstream_size)?;
                let headers = read(&mut caller, headers, headers_size)?;
                let body = read(&mut caller, body, body_size)?;
                let trailers = read(&mut caller, trailers, trailers_size)?;
                write_u32(&mut caller, token_ptr, 0)?;
                let call = HttpCall {
                    cluster: &upstream,
                    headers: &headers,
                    body: Bytes::from(body),
                    trailers: &trailers,
                    timeout_ms,
                };
                let token = dispatch_http(state(&mut caller), call)?;
                write_u32(&mut caller, token_ptr, token)
            })())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_grpc_call",
        |mut caller: Ctx<'_>,
         upstream: u32,
         upstream_size: u32,
         service: u32,
         service_size: u32,
         method: u32,
         method_size: u32,
         metadata: u32,
         metadata_size: u32,
         message: u32,
         message_size: u32,
         timeout_ms: u32,
         token_ptr: u32| {
            let args = GrpcArgs {
                upstream: (upstream, upstream_size),
                service: (service, service_size),
                method: (method, method_size),
                metadata: (metadata, metadata_size),
                message: Some((message, message_size)),
                timeout_ms,
            };
            finish(start_grpc(&mut caller, args, token_ptr))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_grpc_stream",
        |mut caller: Ctx<'_>,
         upstream: u32,
         upstream_size: u32,
         service: u32,
         service_size: u32,
         method: u32,
         method_size: u32,
         metadata: u32,
         metadata_size: u32,
         token_ptr: u32| {
            let args = GrpcArgs {
                upstream: (upstream, upstream_size),
                service: (service, service_size),
                method: (method, method_size),
                metadata: (metadata, metadata_size),
                message: None,
                timeout_ms: 0,
            };
            finish(start_grpc(&mut caller, args, token_ptr))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_grpc_send",
        |mut caller: Ctx<'_>, token: u32, message: u32, message_size: u32, end_stream: u32| {
            finish((|| {
                let message = read(&mut caller, message, message_size)?;
                grpc_send(
                    state(&mut caller),
                    token,
                    Bytes::from(message),
                    end_stream != 0,
                )
            })())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_grpc_cancel",
        |mut caller: Ctx<'_>, token: u32| finish(grpc_cancel(state(&mut caller), token)),
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_grpc_close",
        |mut caller: Ctx<'_>, token: u32| finish(grpc_close(state(&mut caller), token)),
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_get_status",
        |caller: Ctx<'_>, code_ptr: u32, ptr_ptr: u32, size_ptr: u32| {
            finish(get_status(caller, code_ptr, ptr_ptr, size_ptr))
        },
    )?;
    Ok(())
}

fn get_status(mut caller: Ctx<'_>, code_ptr: u32, ptr_ptr: u32, size_ptr: u32) -> HostResult {
    let (code, message) = state(&mut caller).status.clone();
    write_u32(&mut caller, code_ptr, code)?;
    copy_to_guest(caller, &message, ptr_ptr, size_ptr)
}

/// The arguments of `proxy_grpc_call` and `proxy_grpc_stream` as the guest passes them: each
/// a `(pointer, size)` in its memory.
struct GrpcArgs {
    upstream: (u32, u32),
    service: (u32, u32),
    method: (u32, u32),
    metadata: (u32, u32),
    /// The request message of a unary call; `None` opens a stream.
    message: Option<(u32, u32)>,
    /// Timeout in milliseconds; 0 for none.
    timeout_ms: u32,
}

/// `proxy_grpc_call` and `proxy_grpc_stream`: reads the call from guest memory, clears the
/// token first (so a bad token pointer fails before anything is sent), dispatches the call
/// and writes its token.
fn start_grpc(caller: &mut Ctx<'_>, args: GrpcArgs, token_ptr: u32) -> Result<(), Status> {
    let upstream = read_string(caller, args.upstream.0, args.upstream.1)?;
    let service = read(caller, args.service.0, args.service.1)?;
    let method = read(caller, args.method.0, args.method.1)?;
    let metadata = read(caller, args.metadata.0, args.metadata.1)?;
    let message = match args.message {
        Some((ptr, size)) => Some(Bytes::from(read(caller, ptr, size)?)),
        None => None,
    };
    write_u32(caller, token_ptr, 0)?;
    let call = GrpcCall {
        cluster: &upstream,
        service,
        method,
        metadata: &metadata,
        message,
        timeout_ms: args.timeout_ms,
    };
    let token = dispatch_grpc(state(caller), call)?;
    write_u32(caller, token_ptr, token)
}

/// Where a callout's answers go.
enum Route {
    /// To the stream the callout was made on, for the filter in `slot`.
    Stream { events: EventSender, slot: usize },
    /// To the instance's root context.
    Root,
}

/// The receiver of a callout's answers, captured when it is dispatched.
struct Recipient {
    route: Route,
    instance: Option<Weak<Instance>>,
}

impl Recipient {
    fn capture(data: &mut HostData) -> Self {
        let instance = data.instance.get().cloned();
        let slot = data.stream_slot;
        let route = match data.current_stream() {
            Some(stream) => Route::Stream {
                events: stream.events.clone(),
                slot,
            },
            None => Route::Root,
        };
        Self { route, instance }
    }

    fn root(&self, event: RootEvent) {
        if let Some(instance) = self.instance.as_ref().and_then(Weak::upgrade) {
            instance.spawn_root(event);
        }
    }

    fn http(self, token: u32, response: CalloutResponse) {
        let response = match &self.route {
            Route::Stream { events, slot } => {
                let event = StreamEvent::HttpCall {
                    slot: *slot,
                    token,
                    response,
                };
                match events.send(event) {
                    Ok(()) => return,
                    Err(SendError(StreamEvent::HttpCall { response, .. })) => response,
                    Err(_) => return,
                }
            }
            Route::Root => response,
        };
        self.root(RootEvent::HttpCall { token, response });
    }

    fn grpc(&mut self, token: u32, event: GrpcEvent) {
        let event = match &self.route {
            Route::Stream { events, slot } => {
                match events.send(StreamEvent::Grpc {
                    slot: *slot,
                    token,
                    event,
                }) {
                    Ok(()) => return,
                    // The stream is gone: the rest of the call goes to the root context.
                    Err(SendError(StreamEvent::Grpc { event, .. })) => {
                        self.route = Route::Root;
                        event
                    }
                    Err(_) => return,
                }
            }
            Route::Root => event,
        };
        self.root(RootEvent::Grpc { token, event });
    }
}

/// An encoded map from the guest as owned pairs with lowercase keys.
fn owned_pairs(encoded: &[u8]) -> Option<Vec<(Bytes, Bytes)>> {
    let pairs = decode_map_limited(encoded, MapLimits::ENVOY).ok()?;
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| {
                (
                    Bytes::from(k.to_ascii_lowercase()),
                    Bytes::copy_from_slice(v),
                )
            })
            .collect(),
    )
}

fn runtime() -> Result<tokio::runtime::Handle, Status> {
    tokio::runtime::Handle::try_current().map_err(|_| Status::InternalFailure)
}

/// The arguments of `proxy_http_call`, read from the guest.
pub(super) struct HttpCall<'a> {
    /// Cluster name.
    pub(super) cluster: &'a str,
    /// Encoded request headers.
    pub(super) headers: &'a [u8],
    /// Request body.
    pub(super) body: Bytes,
    /// Encoded request trailers.
    pub(super) trailers: &'a [u8],
    /// Timeout in milliseconds; 0 for none.
    pub(super) timeout_ms: u32,
}

/// `proxy_http_call`: validates the call, starts it, and returns its token.
pub(super) fn dispatch_http(data: &mut HostData, call: HttpCall<'_>) -> Result<u32, Status> {
    let cluster = data
        .host
        .clusters
        .load()
        .get(call.cluster)
        .cloned()
        .ok_or(Status::BadArgument)?;
    let headers = owned_pairs(call.headers).ok_or(Status::BadArgument)?;
    let trailers = owned_pairs(call.trailers).ok_or(Status::BadArgument)?;
    if !callout::validate_http_call_headers(&headers) {
        return Err(Status::BadArgument);
    }
    let runtime = runtime()?;
    let timeout = match call.timeout_ms {
        0 => Duration::from_millis(u64::from(u32::MAX)),
        ms => Duration::from_millis(u64::from(ms)),
    };
    let token = data.token();
    let recipient = Recipient::capture(data);
    let body = call.body;
    runtime.spawn(async move {
        let response = callout::http_call(cluster, headers, body, trailers, timeout).await;
        recipient.http(token, response);
    });
    Ok(token)
}

/// The arguments of `proxy_grpc_call` and `proxy_grpc_stream`, read from the guest.
pub(super) struct GrpcCall<'a> {
    /// Cluster name.
    pub(super) cluster: &'a str,
    /// Service name.
    pub(super) service: Vec<u8>,
    /// Method name.
    pub(super) method: Vec<u8>,
    /// Encoded initial metadata.
    pub(super) metadata: &'a [u8],
    /// The request message of a unary call; `None` opens a stream.
    pub(super) message: Option<Bytes>,
    /// Timeout in milliseconds; 0 for none.
    pub(super) timeout_ms: u32,
}

/// `proxy_grpc_call` and `proxy_grpc_stream`: starts the call and returns its token.
pub(super) fn dispatch_grpc(data: &mut HostData, call: GrpcCall<'_>) -> Result<u32, Status> {
    let cluster = data
        .host
        .clusters
        .load()
        .get(call.cluster)
        .cloned()
        .ok_or(Status::ParseFailure)?;
    let initial_metadata = owned_pairs(call.metadata).ok_or(Status::ParseFailure)?;
    let runtime = runtime()?;
    let request = GrpcRequest {
        service: Bytes::from(call.service),
        method: Bytes::from(call.method),
        initial_metadata,
        timeout: (call.timeout_ms != 0).then(|| Duration::from_millis(u64::from(call.timeout_ms))),
    };
    let token = data.token();
    let mut recipient = Recipient::capture(data);
    let deliver = move |event| recipient.grpc(token, event);
    let (send, task) = match call.message {
        Some(message) => (
            None,
            runtime.spawn(callout::grpc_call(cluster, request, message, deliver)),
        ),
        None => {
            let (send, outbound) = mpsc::unbounded_channel();
            let task = runtime.spawn(callout::grpc_stream(cluster, request, outbound, deliver));
            (Some(send), task)
        }
    };
    data.grpc.insert(
        token,
        GrpcHandle {
            send,
            abort: task.abort_handle(),
        },
    );
    Ok(token)
}

/// `proxy_grpc_send`: one message on an open stream, then the end of the request when asked.
pub(super) fn grpc_send(
    data: &mut HostData,
    token: u32,
    message: Bytes,
    end_stream: bool,
) -> Result<(), Status> {
    let handle = data.grpc.get(&token).ok_or(Status::NotFound)?;
    let send = handle.send.as_ref().ok_or(Status::BadArgument)?;
    // A stream that already ended takes nothing more; Envoy answers Ok all the same.
    let _ = send.send(GrpcOutbound::Message(message));
    if end_stream {
        let _ = send.send(GrpcOutbound::End);
    }
    Ok(())
}

/// `proxy_grpc_cancel`: stops the call or stream now; nothing more is delivered.
pub(super) fn grpc_cancel(data: &mut HostData, token: u32) -> Result<(), Status> {
    let handle = data.grpc.remove(&token).ok_or(Status::NotFound)?;
    handle.abort.abort();
    Ok(())
}

/// `proxy_grpc_close`: a unary call is cancelled; a stream's request ends (the response may
/// still arrive, and its close removes the handle).
pub(super) fn grpc_close(data: &mut HostData, token: u32) -> Result<(), Status> {
    let handle = data.grpc.get(&token).ok_or(Status::NotFound)?;
    match &handle.send {
        Some(send) => {
            let _ = send.send(GrpcOutbound::End);
        }
        None => {
            if let Some(handle) = data.grpc.remove(&token) {
                handle.abort.abort();
            }
        }
    }
    Ok(())
}
