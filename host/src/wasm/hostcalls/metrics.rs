//! Metrics: `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric` and
//! `proxy_get_metric`, over [`PluginMetrics`](crate::wasm::metrics::PluginMetrics) (which holds
//! Envoy's semantics: ids carry their type, counters only grow, unknown ids are `NotFound`).
//! An unknown metric type is `BadArgument`.

use weft_abi::{HOST_MODULE, MetricType, Status};

use super::memory::{Ctx, HostLinker, finish, read_string, state, write_u32, write_u64};
use crate::wasm::metrics::PluginMetrics;

/// Defines the four metric functions.
pub(super) fn add_to_linker(linker: &mut HostLinker) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        "proxy_define_metric",
        |mut caller: Ctx<'_>, kind: u32, name: u32, name_size: u32, id_ptr: u32| {
            finish((|| {
                let kind = MetricType::try_from(kind).map_err(|_| Status::BadArgument)?;
                let name = read_string(&mut caller, name, name_size)?;
                let id = metrics(&mut caller).define(kind, &name)?;
                write_u32(&mut caller, id_ptr, id)
            })())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_increment_metric",
        |mut caller: Ctx<'_>, id: u32, offset: i64| {
            finish(metrics(&mut caller).increment(id, offset))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_record_metric",
        |mut caller: Ctx<'_>, id: u32, value: u64| finish(metrics(&mut caller).record(id, value)),
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_get_metric",
        |mut caller: Ctx<'_>, id: u32, value_ptr: u32| {
            finish((|| {
                let value = metrics(&mut caller).get(id)?;
                write_u64(&mut caller, value_ptr, value)
            })())
        },
    )?;
    Ok(())
}

/// The metrics plugins define, which the metric functions act on.
fn metrics<'c>(caller: &'c mut Ctx<'_>) -> &'c PluginMetrics {
    &state(caller).host.metrics
}
