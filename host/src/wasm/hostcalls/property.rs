//! Properties (`proxy_get_property`, `proxy_set_property`): reads through
//! [`Properties`](crate::wasm::properties::Properties) for the stream the effective context is
//! on (or for the root context), writes into that stream's property map (or the root
//! context's) under the path's segments joined with `.` — how a filter sets
//! [`weft.upstream_cluster`](crate::wasm::properties::UPSTREAM_CLUSTER).
//!
//! An unknown path is `NotFound`; a path or value outside guest memory is
//! `InvalidMemoryAccess`. Setting a property always succeeds: Envoy answers `NotFound` without
//! a stream, which the Rust SDK turns into a panic, so weft keeps root-context values instead.

use bytes::Bytes;
use weft_abi::{HOST_MODULE, Status, property_segments, split_property_path};

use super::memory::{Ctx, HostLinker, HostResult, copy_to_guest, finish, slice, with_memory};
use crate::wasm::{context::HostData, properties::Properties};

/// Defines `proxy_get_property` and `proxy_set_property`.
pub(super) fn add_to_linker(linker: &mut HostLinker) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        "proxy_get_property",
        |caller: Ctx<'_>, path: u32, path_size: u32, ptr_ptr: u32, size_ptr: u32| {
            finish(get_property_abi(caller, path, path_size, ptr_ptr, size_ptr))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_set_property",
        |mut caller: Ctx<'_>, path: u32, path_size: u32, value: u32, value_size: u32| {
            finish(
                with_memory(&mut caller, |view, data| {
                    let path = slice(view, path, path_size)?;
                    let value = Bytes::copy_from_slice(slice(view, value, value_size)?);
                    set_property(data, path, value)
                })
                .and_then(|result| result),
            )
        },
    )?;
    Ok(())
}

fn get_property_abi(
    mut caller: Ctx<'_>,
    path: u32,
    path_size: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> HostResult {
    let value = with_memory(&mut caller, |view, data| {
        get_property(data, slice(view, path, path_size)?)
    })??;
    copy_to_guest(caller, &value, ptr_ptr, size_ptr)
}

/// `proxy_get_property`: the value at the NUL-separated `path`.
pub(super) fn get_property(data: &mut HostData, path: &[u8]) -> Result<Vec<u8>, Status> {
    // Paths are a few segments: split them on the stack.
    let mut short: [&[u8]; 4] = [&[]; 4];
    let mut rest = property_segments(path);
    let mut count = 0;
    for (slot, segment) in short.iter_mut().zip(rest.by_ref()) {
        *slot = segment;
        count += 1;
    }
    let long;
    let segments: &[&[u8]] = if count < short.len() || rest.next().is_none() {
        &short[..count]
    } else {
        long = split_property_path(path);
        &long
    };
    match data.current_stream_ref() {
        Some(stream) => Properties::for_stream(stream, &data.plugin).get(segments),
        None => Properties::for_root(&data.plugin, &data.root_properties).get(segments),
    }
}

/// `proxy_set_property`: stores `value` under the NUL-separated `path`, on the stream the
/// effective context is on, or on the root context.
pub(super) fn set_property(data: &mut HostData, path: &[u8], value: Bytes) -> Result<(), Status> {
    // The segments joined with `.`: the NULs between them replaced, in one copy (a trailing
    // NUL ends the path, as `property_segments` reads it).
    let path = path.strip_suffix(&[0]).unwrap_or(path);
    let dotted: Vec<u8> = path
        .iter()
        .map(|&b| if b == 0 { b'.' } else { b })
        .collect();
    let key = match String::from_utf8(dotted) {
        Ok(key) => key,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    match data.current_stream() {
        Some(stream) => stream.properties.insert(key, value),
        None => data.root_properties.insert(key, value),
    };
    Ok(())
}
