//! The rest of the ABI: logging (`proxy_log`, `proxy_get_log_level`), time
//! (`proxy_get_current_time_nanoseconds`), timers (`proxy_set_tick_period_milliseconds`) and
//! foreign functions (`proxy_call_foreign_function`, of which weft has none: `NotFound`).
//!
//! A plugin's log line is a `tracing` event with target `weft::plugin`, the plugin's name in
//! field `plugin`, at the plugin's level (`Critical` as `ERROR`). A `Critical` line also marks
//! the current call as a panic ([`HostData::panicked`]): the Rust SDK's panic hook logs the
//! panic at `Critical` just before the module traps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weft_abi::{HOST_MODULE, LogLevel, Status};

use super::memory::{Ctx, HostLinker, finish, read, read_string, state, write_u32, write_u64};
use crate::wasm::context::HostData;

/// The `tracing` target of plugin log lines.
pub(super) const LOG_TARGET: &str = "weft::plugin";

/// Defines the logging, time, timer and foreign-function functions.
pub(super) fn add_to_linker(linker: &mut HostLinker) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        "proxy_log",
        |mut caller: Ctx<'_>, level: u32, message: u32, message_size: u32| {
            finish((|| {
                let level = LogLevel::try_from(level).map_err(|_| Status::BadArgument)?;
                let message = read_string(&mut caller, message, message_size)?;
                log(state(&mut caller), level, &message);
                Ok::<_, Status>(())
            })())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_get_log_level",
        |mut caller: Ctx<'_>, level_ptr: u32| {
            let level = state(&mut caller).host.log_level;
            finish(write_u32(&mut caller, level_ptr, u32::from(level)))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_get_current_time_nanoseconds",
        |mut caller: Ctx<'_>, time_ptr: u32| finish(write_u64(&mut caller, time_ptr, now_nanos())),
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_set_tick_period_milliseconds",
        |mut caller: Ctx<'_>, period_ms: u32| {
            set_tick_period(state(&mut caller), period_ms);
            finish(Ok::<_, Status>(()))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_call_foreign_function",
        |mut caller: Ctx<'_>,
         name: u32,
         name_size: u32,
         arguments: u32,
         arguments_size: u32,
         _results_ptr: u32,
         _results_size_ptr: u32| {
            finish((|| {
                read(&mut caller, name, name_size)?;
                read(&mut caller, arguments, arguments_size)?;
                Err::<(), _>(Status::NotFound)
            })())
        },
    )?;
    Ok(())
}

/// Wall-clock time in nanoseconds since the Unix epoch (0 before it, saturated far after).
pub(super) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The longest error line kept for a refused configuration's message, in characters.
const MAX_KEPT_ERROR: usize = 500;

/// `proxy_log`, once the message is read.
pub(super) fn log(data: &mut HostData, level: LogLevel, message: &str) {
    if matches!(level, LogLevel::Error | LogLevel::Critical) {
        let mut line: String = message.chars().take(MAX_KEPT_ERROR).collect();
        if line.len() < message.len() {
            line.push('…');
        }
        data.last_error = Some(line);
    }
    let plugin = data.plugin.name.as_str();
    match level {
        LogLevel::Trace => tracing::trace!(target: LOG_TARGET, plugin, "{message}"),
        LogLevel::Debug => tracing::debug!(target: LOG_TARGET, plugin, "{message}"),
        LogLevel::Info => tracing::info!(target: LOG_TARGET, plugin, "{message}"),
        LogLevel::Warn => tracing::warn!(target: LOG_TARGET, plugin, "{message}"),
        LogLevel::Error => tracing::error!(target: LOG_TARGET, plugin, "{message}"),
        LogLevel::Critical => {
            tracing::error!(target: LOG_TARGET, plugin, critical = true, "{message}");
            data.panicked = true;
        }
    }
}

/// `proxy_set_tick_period_milliseconds`: 0 stops the timer.
pub(super) fn set_tick_period(data: &mut HostData, period_ms: u32) {
    data.tick_period = Some(Duration::from_millis(u64::from(period_ms)));
    data.tick_changed = true;
}
