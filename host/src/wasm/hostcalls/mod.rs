//! The proxy-wasm ABI v0.2.1 host functions: all 39 `env.proxy_*` functions, with the
//! signatures the upstream SDKs import and the statuses Envoy returns, plus the WASI preview 1
//! calls a `wasm32-wasip1` filter makes (see [`add_to_linker`]).
//!
//! Every host function acts for the *effective context* ([`HostData::effective`]): the stream
//! lent for the current call when that is the effective context
//! ([`HostData::current_stream`]), another live stream context of the instance (reached through
//! its [`StreamHandle`](super::context::StreamHandle) events), or the root context. Guest
//! input is never trusted: pointers are bounds-checked (`InvalidMemoryAccess`), numbers that
//! name no enum value are `BadArgument`, encoded maps are decoded with Envoy's limits; nothing a
//! guest passes makes the host panic. Only the guest's own allocator, called to hand it data,
//! and `proc_exit` trap.
//!
//! | family | functions | module |
//! |---|---|---|
//! | header maps | `proxy_{get,set}_header_map_pairs`, `proxy_{get,add,replace,remove}_header_map_value`, `proxy_get_header_map_size` | `maps` |
//! | buffers | `proxy_{get,set}_buffer_bytes`, `proxy_get_buffer_status` | `buffers` |
//! | properties | `proxy_{get,set}_property` | `property` |
//! | streams | `proxy_continue_stream`, `proxy_close_stream`, `proxy_send_local_response`, `proxy_set_effective_context`, `proxy_done` | `streams` |
//! | callouts | `proxy_http_call`, `proxy_grpc_{call,stream,send,cancel,close}`, `proxy_get_status` | `callouts` |
//! | shared state | `proxy_{get,set}_shared_data`, `proxy_{register,resolve,enqueue,dequeue}_shared_queue` | `shared` |
//! | metrics | `proxy_define_metric`, `proxy_{increment,record,get}_metric` | `metrics` |
//! | general | `proxy_log`, `proxy_get_log_level`, `proxy_get_current_time_nanoseconds`, `proxy_set_tick_period_milliseconds`, `proxy_call_foreign_function` | `general` |
//! | WASI | `fd_write`, clocks, `random_get`, environ/args, `proc_exit`, … | `wasi` |

use wasmtime::Linker;

use super::{context::HostData, runtime::GuestState};

mod buffers;
mod callouts;
mod general;
mod maps;
mod memory;
mod metrics;
mod property;
mod shared;
mod streams;
mod wasi;

pub(in crate::wasm) use memory::host_buffer_region;

/// Defines every host function a proxy-wasm filter may import in `linker`: the 39
/// `env.proxy_*` functions of ABI v0.2.1 ([`weft_abi::HOST_FUNCTIONS`]) and the WASI preview 1
/// functions of module `wasi_snapshot_preview1` that filters built for `wasm32-wasip1` import.
///
/// Functions that hand data to the guest write it into the guest's host buffer when it has one
/// (weft's extension, [`weft_abi::HostBuffer`]) and the data fits, else allocate it in guest
/// memory with the guest's allocator, called from inside the host function. Every host function
/// is synchronous, so guest calls need no fiber.
pub fn add_to_linker(linker: &mut Linker<GuestState<HostData>>) -> wasmtime::Result<()> {
    maps::add_to_linker(linker)?;
    buffers::add_to_linker(linker)?;
    property::add_to_linker(linker)?;
    streams::add_to_linker(linker)?;
    callouts::add_to_linker(linker)?;
    shared::add_to_linker(linker)?;
    metrics::add_to_linker(linker)?;
    general::add_to_linker(linker)?;
    wasi::add_to_linker(linker)?;
    Ok(())
}

#[cfg(test)]
pub(in crate::wasm) mod tests;
