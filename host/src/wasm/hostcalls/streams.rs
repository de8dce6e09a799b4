//! Stream control: `proxy_continue_stream`, `proxy_close_stream`, `proxy_send_local_response`,
//! `proxy_set_effective_context` and `proxy_done`.
//!
//! An action on the stream lent for the current call changes its [`StreamData`] in place (the
//! chain executor reads `resumed`, `closed` and `local_response` when the call returns). An
//! action on another live stream context of this instance — a root context's tick resuming a
//! paused request, say, after `proxy_set_effective_context` — travels as a [`StreamEvent`] to
//! the task that owns that stream. Without a stream, Envoy answers `Ok` and does nothing; so
//! does weft.
//!
//! Statuses follow Envoy: an unknown stream type is `BadArgument`; resuming the upstream side
//! of a TCP stream is `Unimplemented`, the downstream side (which an HTTP filter does not have)
//! `Ok`; closing either TCP side is `Ok`.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use weft_abi::{HOST_MODULE, MapLimits, Status, StreamType, decode_map_limited};

use super::memory::{Ctx, HostLinker, finish, read, read_string, state};
use crate::wasm::context::{HostData, LocalResponse, Side, StreamData, StreamEvent, StreamHandle};

/// Defines the five stream-control functions.
pub(super) fn add_to_linker(linker: &mut HostLinker) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        "proxy_continue_stream",
        |mut caller: Ctx<'_>, kind: u32| finish(continue_stream(state(&mut caller), kind)),
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_close_stream",
        |mut caller: Ctx<'_>, kind: u32| finish(close_stream(state(&mut caller), kind)),
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_send_local_response",
        |mut caller: Ctx<'_>,
         status: u32,
         details: u32,
         details_size: u32,
         body: u32,
         body_size: u32,
         headers: u32,
         headers_size: u32,
         grpc_status: i32| {
            finish((|| {
                let details = read_string(&mut caller, details, details_size)?;
                let body = read(&mut caller, body, body_size)?;
                let headers = read(&mut caller, headers, headers_size)?;
                let response =
                    local_response(status, details, Bytes::from(body), &headers, grpc_status)?;
                send_local_response(state(&mut caller), response);
                Ok::<_, Status>(())
            })())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_set_effective_context",
        |mut caller: Ctx<'_>, context: u32| {
            finish(set_effective_context(state(&mut caller), context))
        },
    )?;
    linker.func_wrap(HOST_MODULE, "proxy_done", |_caller: Ctx<'_>| {
        finish(Ok::<_, Status>(()))
    })?;
    Ok(())
}

/// The stream the effective context acts on.
enum Target<'a> {
    /// The stream lent for this call.
    Lent(&'a mut StreamData),
    /// Another live stream context of this instance.
    Other(StreamHandle),
    /// A root context (or a context that is gone).
    None,
}

fn target(data: &mut HostData) -> Target<'_> {
    let other = data.streams.get(&data.effective).cloned();
    match data.current_stream() {
        Some(stream) => Target::Lent(stream),
        None => other.map_or(Target::None, Target::Other),
    }
}

/// The HTTP side a stream type names, `None` for a TCP side (nothing to do for an HTTP
/// filter); `upstream` is what the upstream side answers when it is not `Ok` (Envoy:
/// `Unimplemented` to continue it). An unknown type is `BadArgument`.
fn side(kind: u32, upstream: Status) -> Result<Option<Side>, Status> {
    match StreamType::try_from(kind).map_err(|_| Status::BadArgument)? {
        StreamType::HttpRequest => Ok(Some(Side::Request)),
        StreamType::HttpResponse => Ok(Some(Side::Response)),
        StreamType::Downstream => Ok(None),
        StreamType::Upstream if upstream == Status::Ok => Ok(None),
        StreamType::Upstream => Err(upstream),
    }
}

/// `proxy_continue_stream`.
pub(super) fn continue_stream(data: &mut HostData, kind: u32) -> Result<(), Status> {
    let Some(side) = side(kind, Status::Unimplemented)? else {
        return Ok(());
    };
    match target(data) {
        Target::Lent(stream) => stream.resumed[side as usize] = true,
        Target::Other(handle) => {
            // A stream that ended meanwhile has nothing left to resume.
            let _ = handle.events.send(StreamEvent::Resume(side));
        }
        Target::None => {}
    }
    Ok(())
}

/// `proxy_close_stream`.
pub(super) fn close_stream(data: &mut HostData, kind: u32) -> Result<(), Status> {
    if side(kind, Status::Ok)?.is_none() {
        return Ok(());
    }
    match target(data) {
        Target::Lent(stream) => stream.closed = true,
        Target::Other(handle) => {
            let _ = handle.events.send(StreamEvent::Close);
        }
        Target::None => {}
    }
    Ok(())
}

/// The reply `proxy_send_local_response` asks for, or `BadArgument` for an invalid status code
/// or header.
pub(super) fn local_response(
    status: u32,
    details: String,
    body: Bytes,
    headers: &[u8],
    grpc_status: i32,
) -> Result<LocalResponse, Status> {
    let status = u16::try_from(status)
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(Status::BadArgument)?;
    let pairs = decode_map_limited(headers, MapLimits::ENVOY).map_err(|_| Status::BadArgument)?;
    let mut extra = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        if name.starts_with(b":") {
            // A reply's pseudo-headers are its own (`:status` is the status code).
            continue;
        }
        let name =
            HeaderName::from_bytes(&name.to_ascii_lowercase()).map_err(|_| Status::BadArgument)?;
        let value = HeaderValue::from_bytes(value).map_err(|_| Status::BadArgument)?;
        extra.push((name, value));
    }
    // The SDKs pass -1 for "no gRPC status"; like Envoy, anything outside 0..=16 is none.
    let grpc_status = u32::try_from(grpc_status).ok().filter(|&code| code <= 16);
    Ok(LocalResponse {
        status,
        headers: extra,
        body,
        details,
        grpc_status,
    })
}

/// `proxy_send_local_response`, once its arguments are read.
pub(super) fn send_local_response(data: &mut HostData, response: LocalResponse) {
    match target(data) {
        Target::Lent(stream) => stream.local_response = Some(response),
        Target::Other(handle) => {
            let _ = handle.events.send(StreamEvent::LocalResponse(response));
        }
        Target::None => {
            tracing::debug!(
                plugin = %data.plugin.name,
                status = %response.status,
                "local response from a context without a stream; ignored"
            );
        }
    }
}

/// `proxy_set_effective_context`: the root context, the lent stream or another live stream
/// context of this instance; anything else is `BadArgument`.
pub(super) fn set_effective_context(data: &mut HostData, context: u32) -> Result<(), Status> {
    let lent = data.stream.is_some() && data.stream_context != 0 && context == data.stream_context;
    if context == data.root_id || lent || data.streams.contains_key(&context) {
        data.effective = context;
        Ok(())
    } else {
        Err(Status::BadArgument)
    }
}
