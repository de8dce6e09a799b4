//! Shared data and shared queues: `proxy_get_shared_data`, `proxy_set_shared_data`,
//! `proxy_register_shared_queue`, `proxy_resolve_shared_queue`, `proxy_enqueue_shared_queue`
//! and `proxy_dequeue_shared_queue`, over the process-wide stores of
//! [`WasmHost`](crate::wasm::WasmHost) (semantics in [`crate::wasm::shared`]).
//!
//! Shared data is per VM id (the plugin's `vm_id`). A queue registered here notifies its owner —
//! this instance's root context, `proxy_on_queue_ready` — through a callback that holds the
//! instance weakly, so a retired instance is not kept alive by the queues it registered; the
//! next instance to register the same name takes the queue over.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use weft_abi::{HOST_MODULE, Status};

use super::memory::{
    Ctx, HostLinker, HostResult, copy_to_guest, finish, read, read_string, slice, state,
    with_memory, write_u32,
};
use crate::wasm::{
    context::{HostData, RootEvent},
    shared::QueueReady,
};

/// Defines the six shared-data and shared-queue functions.
pub(super) fn add_to_linker(linker: &mut HostLinker) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        "proxy_get_shared_data",
        |caller: Ctx<'_>, key: u32, key_size: u32, ptr_ptr: u32, size_ptr: u32, cas_ptr: u32| {
            finish(get_shared_data(
                caller, key, key_size, ptr_ptr, size_ptr, cas_ptr,
            ))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_set_shared_data",
        |mut caller: Ctx<'_>, key: u32, key_size: u32, value: u32, value_size: u32, cas: u32| {
            finish(
                with_memory(&mut caller, |view, data| {
                    let key = slice(view, key, key_size)?;
                    let value = Bytes::copy_from_slice(slice(view, value, value_size)?);
                    data.host
                        .shared_data
                        .set(&data.plugin.vm_id, key, value, cas)
                })
                .and_then(|result| result),
            )
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_register_shared_queue",
        |mut caller: Ctx<'_>, name: u32, name_size: u32, token_ptr: u32| {
            finish((|| {
                let name = read_string(&mut caller, name, name_size)?;
                let token = register_queue(state(&mut caller), &name);
                write_u32(&mut caller, token_ptr, token)
            })())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_resolve_shared_queue",
        |mut caller: Ctx<'_>,
         vm_id: u32,
         vm_id_size: u32,
         name: u32,
         name_size: u32,
         token_ptr: u32| {
            finish((|| {
                let vm_id = read_string(&mut caller, vm_id, vm_id_size)?;
                let name = read_string(&mut caller, name, name_size)?;
                let token = state(&mut caller)
                    .host
                    .queues
                    .resolve(&vm_id, &name)
                    .ok_or(Status::NotFound)?;
                write_u32(&mut caller, token_ptr, token)
            })())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_enqueue_shared_queue",
        |mut caller: Ctx<'_>, token: u32, value: u32, value_size: u32| {
            finish((|| {
                let value = read(&mut caller, value, value_size)?;
                state(&mut caller)
                    .host
                    .queues
                    .enqueue(token, Bytes::from(value))
            })())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_dequeue_shared_queue",
        |caller: Ctx<'_>, token: u32, ptr_ptr: u32, size_ptr: u32| {
            finish(dequeue(caller, token, ptr_ptr, size_ptr))
        },
    )?;
    Ok(())
}

fn get_shared_data(
    mut caller: Ctx<'_>,
    key: u32,
    key_size: u32,
    ptr_ptr: u32,
    size_ptr: u32,
    cas_ptr: u32,
) -> HostResult {
    let (value, cas) = with_memory(&mut caller, |view, data| {
        let key = slice(view, key, key_size)?;
        data.host.shared_data.get(&data.plugin.vm_id, key)
    })??;
    // The CAS first: `copy_to_guest` is the last thing a host function does.
    write_u32(&mut caller, cas_ptr, cas)?;
    copy_to_guest(caller, &value, ptr_ptr, size_ptr)
}

fn dequeue(mut caller: Ctx<'_>, token: u32, ptr_ptr: u32, size_ptr: u32) -> HostResult {
    let item = state(&mut caller).host.queues.dequeue(token)?;
    copy_to_guest(caller, &item, ptr_ptr, size_ptr)
}

/// `proxy_register_shared_queue`: registers (or takes over) queue `name` of this plugin's VM
/// id, with this instance's root context as its owner; returns the queue's token.
pub(super) fn register_queue(data: &mut HostData, name: &str) -> u32 {
    let cell = data.instance.clone();
    let owner: QueueReady = Arc::new(move |token| {
        // Enqueues come from host functions, on the runtime; never spawn outside one.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if let Some(instance) = cell.get().and_then(Weak::upgrade) {
            instance.spawn_root(RootEvent::QueueReady(token));
        }
    });
    data.host.queues.register(&data.plugin.vm_id, name, owner)
}
