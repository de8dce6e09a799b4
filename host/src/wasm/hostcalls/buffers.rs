//! Buffers (`proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`):
//! the request and response bodies of the stream the effective context is on, the body of the
//! callout answer being delivered, and the plugin and VM configurations.
//!
//! Behaviour follows proxy-wasm-cpp-host (`src/exports.cc`) and Envoy's `Buffer::copyFrom`:
//!
//! - An unknown buffer type is `BadArgument`; a buffer not available now (a body without a
//!   stream, a callout body outside a delivery, the network and foreign-function buffers weft
//!   does not have) is `NotFound`.
//! - Reads clamp `start` and `max_size` to the buffer (computed in 64 bits, so a guest asking
//!   for `usize::MAX` bytes gets the rest of the buffer); nothing left to read is `Ok` with
//!   address 0 and length 0.
//! - Writes: `start == 0 && length == 0` prepends, `start == 0 && length >= size` replaces,
//!   `start >= size` appends, anything else is `BadArgument`; read-only buffers (callout
//!   answers, configurations) are `BadArgument`. A body grown past [`MAX_BODY_BYTES`] traps:
//!   the chain's own, smaller buffer limit applies when the call returns, this one keeps a
//!   guest from exhausting host memory within a call.

use bytes::BytesMut;
use weft_abi::{BufferType, HOST_MODULE, Status};

use super::memory::{
    Ctx, Fault, HostLinker, HostResult, copy_to_guest, finish, read, state, write_u32,
};
use crate::wasm::context::HostData;

/// The largest body a guest may build with `proxy_set_buffer_bytes`.
pub(super) const MAX_BODY_BYTES: usize = 64 << 20;

/// Defines the three buffer functions.
pub(super) fn add_to_linker(linker: &mut HostLinker) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        "proxy_get_buffer_bytes",
        |caller: Ctx<'_>, kind: u32, start: u32, max_size: u32, ptr_ptr: u32, size_ptr: u32| {
            finish(get_bytes_abi(
                caller, kind, start, max_size, ptr_ptr, size_ptr,
            ))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_get_buffer_status",
        |mut caller: Ctx<'_>, kind: u32, length_ptr: u32, flags_ptr: u32| {
            finish(buffer_type(kind).and_then(|kind| {
                let length = length(state(&mut caller), kind)?;
                write_u32(&mut caller, length_ptr, length)?;
                write_u32(&mut caller, flags_ptr, 0)
            }))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_set_buffer_bytes",
        |mut caller: Ctx<'_>, kind: u32, start: u32, length: u32, data: u32, size: u32| {
            finish((|| -> HostResult {
                let kind = buffer_type(kind)?;
                // Availability first, then the guest's pointer, as proxy-wasm-cpp-host checks.
                buffer(state(&mut caller), kind)?;
                let bytes = read(&mut caller, data, size)?;
                set_bytes(state(&mut caller), kind, start, length, &bytes)
            })())
        },
    )?;
    Ok(())
}

fn buffer_type(raw: u32) -> Result<BufferType, Status> {
    BufferType::try_from(raw).map_err(|_| Status::BadArgument)
}

fn get_bytes_abi(
    mut caller: Ctx<'_>,
    kind: u32,
    start: u32,
    max_size: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> HostResult {
    let bytes = get_bytes(state(&mut caller), buffer_type(kind)?, start, max_size)?;
    copy_to_guest(caller, &bytes, ptr_ptr, size_ptr)
}

/// A buffer as host functions see it.
enum Buffer<'a> {
    /// A body the filter may change.
    Mutable(&'a mut BytesMut),
    /// Bytes the filter may only read.
    ReadOnly(&'a [u8]),
}

impl Buffer<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Buffer::Mutable(body) => body,
            Buffer::ReadOnly(bytes) => bytes,
        }
    }
}

fn buffer(data: &mut HostData, kind: BufferType) -> Result<Buffer<'_>, Status> {
    match kind {
        BufferType::HttpRequestBody => data
            .current_stream()
            .map(|s| Buffer::Mutable(&mut s.request_body))
            .ok_or(Status::NotFound),
        BufferType::HttpResponseBody => data
            .current_stream()
            .map(|s| Buffer::Mutable(&mut s.response_body))
            .ok_or(Status::NotFound),
        BufferType::HttpCallResponseBody | BufferType::GrpcReceiveBuffer => data
            .delivery
            .as_ref()
            .map(|d| Buffer::ReadOnly(&d.body))
            .ok_or(Status::NotFound),
        BufferType::PluginConfiguration => Ok(Buffer::ReadOnly(&data.configuration)),
        BufferType::VmConfiguration => Ok(Buffer::ReadOnly(&data.vm_configuration)),
        BufferType::DownstreamData | BufferType::UpstreamData | BufferType::CallData => {
            Err(Status::NotFound)
        }
    }
}

/// `proxy_get_buffer_status`: the buffer's length.
pub(super) fn length(data: &mut HostData, kind: BufferType) -> Result<u32, Status> {
    let buffer = buffer(data, kind)?;
    u32::try_from(buffer.bytes().len()).map_err(|_| Status::InternalFailure)
}

/// `proxy_get_buffer_bytes`: up to `max_size` bytes from `start`, clamped to the buffer.
pub(super) fn get_bytes(
    data: &mut HostData,
    kind: BufferType,
    start: u32,
    max_size: u32,
) -> Result<Vec<u8>, Status> {
    let buffer = buffer(data, kind)?;
    let bytes = buffer.bytes();
    // proxy-wasm-cpp-host works on 64-bit words, where 32-bit guest values never overflow.
    let start = u64::from(start);
    let end = start
        .checked_add(u64::from(max_size))
        .ok_or(Status::BadArgument)?;
    let len = bytes.len() as u64;
    if start >= len {
        return Ok(Vec::new());
    }
    let end = end.min(len);
    // Both bounds are at most `bytes.len()`, so they fit in usize.
    let range = usize::try_from(start).unwrap_or(usize::MAX)..usize::try_from(end).unwrap_or(0);
    Ok(bytes.get(range).map(<[u8]>::to_vec).unwrap_or_default())
}

/// What `proxy_set_buffer_bytes` does to a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    Prepend,
    Replace,
    Append,
}

/// `proxy_set_buffer_bytes`: prepend, replace or append, as Envoy's `Buffer::copyFrom`.
pub(super) fn set_bytes(
    data: &mut HostData,
    kind: BufferType,
    start: u32,
    length: u32,
    bytes: &[u8],
) -> HostResult {
    let Buffer::Mutable(body) = buffer(data, kind)? else {
        return Err(Status::BadArgument.into());
    };
    let size = body.len() as u64;
    let (start, length) = (u64::from(start), u64::from(length));
    let edit = if start == 0 && length == 0 {
        Edit::Prepend
    } else if start == 0 && length >= size {
        Edit::Replace
    } else if start >= size {
        Edit::Append
    } else {
        return Err(Status::BadArgument.into());
    };
    let kept = if edit == Edit::Replace { 0 } else { body.len() };
    if kept.saturating_add(bytes.len()) > MAX_BODY_BYTES {
        return Err(Fault::limit("a body", MAX_BODY_BYTES));
    }
    match edit {
        Edit::Prepend => {
            let mut joined = BytesMut::with_capacity(bytes.len() + body.len());
            joined.extend_from_slice(bytes);
            joined.extend_from_slice(body);
            *body = joined;
        }
        Edit::Replace => {
            body.clear();
            body.extend_from_slice(bytes);
        }
        Edit::Append => body.extend_from_slice(bytes),
    }
    Ok(())
}
