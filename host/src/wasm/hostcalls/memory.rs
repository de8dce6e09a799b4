//! Guest memory for host functions: bounds-checked reads and writes of the caller's linear
//! memory, and handing data to the guest — in its host buffer (weft's extension,
//! [`HostBuffer`]) when it has one, else in memory the guest allocates itself.
//!
//! Every pointer and length comes from the guest, so nothing here trusts them: a range outside
//! the memory is [`Status::InvalidMemoryAccess`] (what proxy-wasm-cpp-host returns), never a
//! panic. Only the guest's own allocator may trap (or run past the call's deadline); that trap
//! is the guest's failure and is passed on as one.

use std::ops::Range;

use wasmtime::{Caller, Extern, Linker, Memory, TypedFunc};
use weft_abi::{GuestExport, HostBuffer, Status};

use crate::wasm::{context::HostData, runtime::GuestState};

/// The caller of a host function: the guest's store, with weft's per-instance state.
pub(super) type Ctx<'a> = Caller<'a, GuestState<HostData>>;

/// The linker host functions are defined in.
pub(super) type HostLinker = Linker<GuestState<HostData>>;

/// Why a host function did not succeed: a status the guest sees, or a trap that ends the call.
#[derive(Debug)]
pub(super) enum Fault {
    /// Returned to the guest as the function's `proxy_status_t`.
    Status(Status),
    /// Raised in the guest (its allocator trapped or ran out of time).
    Trap(wasmtime::Error),
}

impl Fault {
    /// The trap for a guest that tried to push host state past one of weft's limits.
    pub(super) fn limit(what: &str, limit: usize) -> Self {
        Self::Trap(wasmtime::Error::msg(format!(
            "the plugin exceeded the host's limit of {limit} bytes for {what}"
        )))
    }
}

/// Statuses compare by value; traps never compare equal.
impl PartialEq for Fault {
    fn eq(&self, other: &Self) -> bool {
        matches!((self, other), (Self::Status(a), Self::Status(b)) if a == b)
    }
}

impl From<Status> for Fault {
    fn from(status: Status) -> Self {
        Self::Status(status)
    }
}

/// What a host function's body produces.
pub(super) type HostResult<T = ()> = Result<T, Fault>;

/// The number a host function returns to the guest, or the trap it raises.
pub(super) fn finish<E: Into<Fault>>(result: Result<(), E>) -> wasmtime::Result<u32> {
    match result.map_err(Into::into) {
        Ok(()) => Ok(u32::from(Status::Ok)),
        Err(Fault::Status(status)) => Ok(u32::from(status)),
        Err(Fault::Trap(error)) => Err(error),
    }
}

/// The instance state of the caller.
pub(super) fn state<'c>(caller: &'c mut Ctx<'_>) -> &'c mut HostData {
    &mut caller.data_mut().data
}

/// The caller's linear memory: the resolved export, or (before the instance's exports are
/// resolved, e.g. in a start function) the `memory` export.
fn memory(caller: &mut Ctx<'_>) -> Result<Memory, Status> {
    if let Some(exports) = &caller.data().data.exports {
        return Ok(exports.memory);
    }
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(Status::InvalidMemoryAccess),
    }
}

/// `ptr..ptr + len` as indices, if it can be one.
fn range(ptr: u32, len: u32) -> Result<Range<usize>, Status> {
    let start = usize::try_from(ptr).map_err(|_| Status::InvalidMemoryAccess)?;
    let len = usize::try_from(len).map_err(|_| Status::InvalidMemoryAccess)?;
    let end = start.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    Ok(start..end)
}

/// The whole of the caller's linear memory, to read from in place.
pub(super) fn memory_view<'c>(caller: &'c mut Ctx<'_>) -> Result<&'c [u8], Status> {
    let memory = memory(caller)?;
    Ok(memory.data(&*caller))
}

/// Runs `f` on the caller's whole linear memory and its instance state at once, so a host
/// function reads the guest's arguments in place instead of copying them out first.
pub(super) fn with_memory<R>(
    caller: &mut Ctx<'_>,
    f: impl FnOnce(&[u8], &mut HostData) -> R,
) -> Result<R, Status> {
    let memory = memory(caller)?;
    let (view, state) = memory.data_and_store_mut(&mut *caller);
    Ok(f(view, &mut state.data))
}

/// The bytes at `ptr..ptr + len` of `view`, if they are inside it.
pub(super) fn slice(view: &[u8], ptr: u32, len: u32) -> Result<&[u8], Status> {
    view.get(range(ptr, len)?)
        .ok_or(Status::InvalidMemoryAccess)
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(super) fn read(caller: &mut Ctx<'_>, ptr: u32, len: u32) -> Result<Vec<u8>, Status> {
    let memory = memory(caller)?;
    let range = range(ptr, len)?;
    memory
        .data(&*caller)
        .get(range)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

/// Copies `bytes` into guest memory at `ptr`.
pub(super) fn write(caller: &mut Ctx<'_>, ptr: u32, bytes: &[u8]) -> Result<(), Status> {
    let memory = memory(caller)?;
    put(memory.data_mut(&mut *caller), ptr, bytes)
}

/// Copies `bytes` into `view` at `ptr`, if they fit inside it.
fn put(view: &mut [u8], ptr: u32, bytes: &[u8]) -> Result<(), Status> {
    let len = u32::try_from(bytes.len()).map_err(|_| Status::InvalidMemoryAccess)?;
    view.get_mut(range(ptr, len)?)
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian `u32` (a pointer, a size, a status code…) at `ptr`.
pub(super) fn write_u32(caller: &mut Ctx<'_>, ptr: u32, value: u32) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian `u64` at `ptr`.
pub(super) fn write_u64(caller: &mut Ctx<'_>, ptr: u32, value: u64) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// The guest's allocator: `proxy_on_memory_allocate`, else `malloc`.
fn allocator(caller: &mut Ctx<'_>) -> Option<TypedFunc<u32, u32>> {
    if let Some(exports) = &caller.data().data.exports {
        return exports.allocate.clone();
    }
    [GuestExport::OnMemoryAllocate, GuestExport::Malloc]
        .into_iter()
        .find_map(|name| match caller.get_export(name.name()) {
            Some(Extern::Func(func)) => func.typed::<u32, u32>(&*caller).ok(),
            _ => None,
        })
}

/// Allocates `size` bytes in the guest with its own allocator. A guest without one, or one
/// that answers 0, gets `InvalidMemoryAccess`, as from proxy-wasm-cpp-host.
pub(super) fn allocate(caller: &mut Ctx<'_>, size: u32) -> HostResult<u32> {
    let allocate = allocator(caller).ok_or(Status::InvalidMemoryAccess)?;
    let ptr = allocate.call(&mut *caller, size).map_err(Fault::Trap)?;
    if ptr == 0 {
        return Err(Status::InvalidMemoryAccess.into());
    }
    Ok(ptr)
}

/// Hands `bytes` to the guest and writes their address at `ptr_ptr` and their length at
/// `size_ptr`: into the guest's host buffer
/// ([`HostData::host_buffer`](crate::wasm::context::HostData::host_buffer)) when it has one and
/// they fit, else into memory from its allocator. Empty data is address 0 and length 0 without
/// either, as proxy-wasm-cpp-host's `copyToPointerSize` does.
///
/// It takes the caller by value, so it is the last thing a host function does and no host call
/// can write the host buffer twice: the guest reads what one call returned before it makes the
/// next one, which is all the buffer's contract asks of it. A host function that ever needs
/// to return two pieces of data must hand the first through [`allocate`] instead.
pub(super) fn copy_to_guest(
    mut caller: Ctx<'_>,
    bytes: &[u8],
    ptr_ptr: u32,
    size_ptr: u32,
) -> HostResult {
    let size = u32::try_from(bytes.len()).map_err(|_| Status::InvalidMemoryAccess)?;
    let ptr = if size == 0 {
        0
    } else {
        match host_buffer(&caller, size) {
            Some(ptr) => ptr,
            None => allocate(&mut caller, size)?,
        }
    };
    // One view of the memory (as it is after an allocation, which may have grown it) for the
    // three writes, each bounds-checked: a host buffer inside memory at the start stays so
    // (memory never shrinks), but nothing here relies on it.
    let memory = memory(&mut caller)?;
    let view = memory.data_mut(&mut caller);
    if size != 0 {
        put(view, ptr, bytes)?;
    }
    put(view, ptr_ptr, &ptr.to_le_bytes())?;
    put(view, size_ptr, &size.to_le_bytes())?;
    Ok(())
}

/// Where `size` bytes go in the guest's host buffer (its start), if it has one and they fit.
fn host_buffer(caller: &Ctx<'_>, size: u32) -> Option<u32> {
    let region = caller.data().data.host_buffer?;
    region.contains(region.ptr, size).then_some(region.ptr)
}

/// The host buffer `weft_host_buffer` returned (`bits`), if a host may write it in a linear
/// memory of `memory_len` bytes: not empty, at most [`HostBuffer::MAX_LEN`] bytes, not at
/// address 0 (which means "no data" in the ABI) and wholly inside the memory. `Err` says why
/// not.
pub(in crate::wasm) fn host_buffer_region(
    bits: u64,
    memory_len: usize,
) -> Result<HostBuffer, &'static str> {
    let region = HostBuffer::from_bits(bits);
    if region.len == 0 {
        return Err("the host buffer is empty");
    }
    if region.len > HostBuffer::MAX_LEN {
        return Err("the host buffer is longer than 64 KiB");
    }
    if region.ptr == 0 {
        return Err("the host buffer starts at address 0");
    }
    let end = u64::from(region.ptr) + u64::from(region.len);
    if !usize::try_from(end).is_ok_and(|end| end <= memory_len) {
        return Err("the host buffer is not inside linear memory");
    }
    Ok(region)
}

/// Reads a UTF-8 string from guest memory; invalid UTF-8 is replaced, never an error.
pub(super) fn read_string(caller: &mut Ctx<'_>, ptr: u32, len: u32) -> Result<String, Status> {
    let bytes = read(caller, ptr, len)?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}
