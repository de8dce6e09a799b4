//! The WASI preview 1 functions (module `wasi_snapshot_preview1`) a `wasm32-wasip1` filter
//! may import: what the proxy-wasm v0.2.1 spec requires, plus the few the Rust standard
//! library and wasi-libc reach for, answered as proxy-wasm-cpp-host answers them.
//!
//! - `fd_write` to stdout logs at `INFO`, to stderr at `ERROR` (target `weft::plugin`, field
//!   `plugin`), one trailing newline removed, at most [`MAX_LOG_WRITE`] bytes per call; any
//!   other descriptor is `BADF`.
//! - `clock_time_get` reads the realtime and monotonic clocks (others `NOTSUP`);
//!   `random_get` fills at most [`MAX_RANDOM_GET`] bytes (more is `INVAL`).
//! - There are no environment variables, arguments or preopened directories: the sizes are
//!   zero, `fd_prestat_get` is `BADF` (which ends wasi-libc's preopen scan), file operations
//!   are `BADF` or `NOTSUP`.
//! - `poll_oneoff` reports no events and succeeds, as Envoy does for Go's runtime;
//!   `sched_yield` succeeds; `proc_exit` traps: a filter has no process to exit.
//!
//! Pointers outside guest memory are `FAULT`.

use std::{sync::OnceLock, time::Instant};

use rand::RngCore;
use weft_abi::{
    LogLevel,
    wasi::{WASI_MODULE, WasiClockId, WasiErrno, WasiFd},
};

use super::{
    general::{log, now_nanos},
    memory::{Ctx, HostLinker, memory_view, slice, state, write, write_u32, write_u64},
};

/// The most bytes one `fd_write` logs; the rest is counted as written and dropped.
pub(super) const MAX_LOG_WRITE: usize = 64 << 10;

/// The most bytes one `random_get` fills (proxy-wasm-cpp-host's limit).
pub(super) const MAX_RANDOM_GET: u32 = 64 << 10;

const SUCCESS: u32 = WasiErrno::Success as u32;
const BADF: u32 = WasiErrno::Badf as u32;
const FAULT: u32 = WasiErrno::Fault as u32;
const INVAL: u32 = WasiErrno::Inval as u32;
const NOTSUP: u32 = WasiErrno::Notsup as u32;

/// Whether `fd` is stdin, stdout or stderr, the only descriptors a filter has.
fn is_stdio(fd: u32) -> bool {
    fd <= 2
}

/// Defines the WASI functions.
pub(super) fn add_to_linker(linker: &mut HostLinker) -> wasmtime::Result<()> {
    let m = WASI_MODULE;
    linker.func_wrap(m, "fd_write", fd_write)?;
    linker.func_wrap(
        m,
        "fd_read",
        |_: Ctx<'_>, fd: u32, _: u32, _: u32, _: u32| {
            if is_stdio(fd) { NOTSUP } else { BADF }
        },
    )?;
    linker.func_wrap(
        m,
        "fd_close",
        |_: Ctx<'_>, fd: u32| {
            if is_stdio(fd) { SUCCESS } else { BADF }
        },
    )?;
    linker.func_wrap(
        m,
        "fd_seek",
        |_: Ctx<'_>, fd: u32, _: i64, _: u32, _: u32| {
            if is_stdio(fd) { NOTSUP } else { BADF }
        },
    )?;
    linker.func_wrap(m, "fd_fdstat_get", fd_fdstat_get)?;
    linker.func_wrap(m, "fd_fdstat_set_flags", |_: Ctx<'_>, fd: u32, _: u32| {
        if is_stdio(fd) { NOTSUP } else { BADF }
    })?;
    linker.func_wrap(m, "fd_filestat_get", |_: Ctx<'_>, _: u32, _: u32| BADF)?;
    linker.func_wrap(m, "fd_prestat_get", |_: Ctx<'_>, _: u32, _: u32| BADF)?;
    linker.func_wrap(
        m,
        "fd_prestat_dir_name",
        |_: Ctx<'_>, _: u32, _: u32, _: u32| BADF,
    )?;
    linker.func_wrap(
        m,
        "path_open",
        |_: Ctx<'_>, _: u32, _: u32, _: u32, _: u32, _: u32, _: i64, _: i64, _: u32, _: u32| BADF,
    )?;
    linker.func_wrap(
        m,
        "path_filestat_get",
        |_: Ctx<'_>, _: u32, _: u32, _: u32, _: u32, _: u32| BADF,
    )?;
    linker.func_wrap(m, "clock_time_get", clock_time_get)?;
    linker.func_wrap(
        m,
        "clock_res_get",
        |mut caller: Ctx<'_>, id: u32, ptr: u32| {
            if WasiClockId::try_from(id).is_err() {
                return NOTSUP;
            }
            errno(write_u64(&mut caller, ptr, 1))
        },
    )?;
    linker.func_wrap(m, "random_get", random_get)?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(
            m,
            name,
            |mut caller: Ctx<'_>, count_ptr: u32, size_ptr: u32| {
                errno(
                    write_u32(&mut caller, count_ptr, 0)
                        .and_then(|()| write_u32(&mut caller, size_ptr, 0)),
                )
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(m, name, |_: Ctx<'_>, _: u32, _: u32| SUCCESS)?;
    }
    linker.func_wrap(
        m,
        "proc_exit",
        |caller: Ctx<'_>, code: u32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "plugin `{}` called proc_exit({code})",
                caller.data().data.plugin.name
            )))
        },
    )?;
    linker.func_wrap(m, "sched_yield", |_: Ctx<'_>| SUCCESS)?;
    linker.func_wrap(
        m,
        "poll_oneoff",
        |mut caller: Ctx<'_>, _: u32, _: u32, _: u32, nevents_ptr: u32| {
            errno(write_u32(&mut caller, nevents_ptr, 0))
        },
    )?;
    Ok(())
}

/// `SUCCESS`, or `FAULT` for a pointer outside guest memory.
fn errno<E>(result: Result<(), E>) -> u32 {
    if result.is_ok() { SUCCESS } else { FAULT }
}

/// `fd_write(fd, iovs, iovs_len, nwritten_ptr)`: stdout and stderr become log lines.
fn fd_write(mut caller: Ctx<'_>, fd: u32, iovs: u32, iovs_len: u32, nwritten_ptr: u32) -> u32 {
    let level = match WasiFd::try_from(fd) {
        Ok(WasiFd::Stdout) => LogLevel::Info,
        Ok(WasiFd::Stderr) => LogLevel::Error,
        Err(_) => return BADF,
    };
    let Some(table_len) = iovs_len.checked_mul(8) else {
        return FAULT;
    };
    let (text, written) = {
        let Ok(view) = memory_view(&mut caller) else {
            return FAULT;
        };
        let Ok(table) = slice(view, iovs, table_len) else {
            return FAULT;
        };
        let mut text = Vec::new();
        let mut written = 0u64;
        for iovec in table.chunks_exact(8) {
            let ptr = u32::from_le_bytes([iovec[0], iovec[1], iovec[2], iovec[3]]);
            let len = u32::from_le_bytes([iovec[4], iovec[5], iovec[6], iovec[7]]);
            let Ok(bytes) = slice(view, ptr, len) else {
                return FAULT;
            };
            let room = MAX_LOG_WRITE.saturating_sub(text.len());
            text.extend_from_slice(&bytes[..bytes.len().min(room)]);
            written += u64::from(len);
        }
        (text, written)
    };
    let Ok(written) = u32::try_from(written) else {
        return FAULT;
    };
    let line = text.strip_suffix(b"\n").unwrap_or(&text);
    if !line.is_empty() {
        log(state(&mut caller), level, &String::from_utf8_lossy(line));
    }
    errno(write_u32(&mut caller, nwritten_ptr, written))
}

/// `fd_fdstat_get(fd, stat_ptr)`: stdout and stderr are write-only descriptors.
fn fd_fdstat_get(mut caller: Ctx<'_>, fd: u32, stat_ptr: u32) -> u32 {
    if WasiFd::try_from(fd).is_err() {
        return BADF;
    }
    // `fdstat`: filetype (u8) and flags (u16) in the first word, then the base and
    // inheriting rights; the only right is FD_WRITE (bit 6), as proxy-wasm-cpp-host reports.
    let mut stat = [0u8; 24];
    stat[8..16].copy_from_slice(&64u64.to_le_bytes());
    errno(write(&mut caller, stat_ptr, &stat))
}

/// `clock_time_get(id, precision, time_ptr)`.
fn clock_time_get(mut caller: Ctx<'_>, id: u32, _precision: u64, time_ptr: u32) -> u32 {
    let now = match WasiClockId::try_from(id) {
        Ok(WasiClockId::Realtime) => now_nanos(),
        Ok(WasiClockId::Monotonic) => monotonic_nanos(),
        Err(_) => return NOTSUP,
    };
    errno(write_u64(&mut caller, time_ptr, now))
}

/// Nanoseconds on a monotonic clock that starts with the first reading.
fn monotonic_nanos() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `random_get(buf, len)`.
fn random_get(mut caller: Ctx<'_>, buf: u32, len: u32) -> u32 {
    if len > MAX_RANDOM_GET {
        return INVAL;
    }
    if len == 0 {
        return SUCCESS;
    }
    let mut bytes = vec![0u8; len as usize];
    rand::rng().fill_bytes(&mut bytes);
    errno(write(&mut caller, buf, &bytes))
}
