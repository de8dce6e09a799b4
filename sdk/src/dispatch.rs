//! The proxy-wasm callbacks, routed to a [`Filter`]: one filter value per stream context, one
//! parsed configuration per root context, and the SDK's own bookkeeping (paused streams,
//! delays, callout tokens). [`export_filter!`](crate::export_filter) generates the exports
//! that call into here.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::rc::Rc;
use std::time::Duration;

use weft_abi::{Action, BufferType, LogLevel, StreamType};

use crate::error::Result;
use crate::ffi::host;
use crate::idmap::IdMap;
use crate::views::{CallResponse, Log, Request, Response};
use crate::{Filter, host as hostfns};

/// The SDK's bookkeeping of one module instance, for the test harness to swap in and out (in
/// Wasm, the thread-local below is the instance's for good).
#[derive(Default)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct Instance {
    core: Core,
}

#[derive(Default)]
struct Core {
    /// Which side each paused stream waits on.
    paused: IdMap<StreamType>,
    /// Delayed streams per root: (deadline in host nanoseconds, stream context).
    delays: IdMap<Vec<(u64, u32)>>,
    /// Callout token → the stream context that sent it.
    callouts: IdMap<u32>,
    /// Metric ids by name, then (type, id): defining is a host call, made once per name.
    metrics: HashMap<String, Vec<(u32, u32)>>,
}

/// A module's filters and configurations. [`export_filter!`](crate::export_filter) keeps one
/// in a static of the module's filter type (the test harness, one per harness), and hands it
/// to every callback: no lookup by type.
#[doc(hidden)]
pub struct Filters<F: Filter> {
    configs: IdMap<Rc<F::Config>>,
    /// Each stream context's filter and root context.
    streams: IdMap<Stream<F>>,
}

impl<F: Filter> Filters<F> {
    /// No configuration, no stream.
    pub const fn new() -> Self {
        Filters {
            configs: IdMap::with_hasher(BuildHasherDefault::new()),
            streams: IdMap::with_hasher(BuildHasherDefault::new()),
        }
    }
}

impl<F: Filter> Default for Filters<F> {
    fn default() -> Self {
        Self::new()
    }
}

struct Stream<F> {
    root: u32,
    filter: F,
}

thread_local! {
    /// The SDK's bookkeeping. Apart from the filters, so that a filter's own calls into the
    /// SDK (metrics, callouts) borrow it while a phase holds the filters.
    static CORE: RefCell<Core> = RefCell::new(Core::default());
    /// The stream context whose phase is running (0 between phases), apart from the
    /// instance's maps so that setting it costs no borrow.
    static CURRENT: Cell<u32> = const { Cell::new(0) };
}

/// Swaps this thread's instance state with `other` (the test harness keeps one per harness).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn swap_instance(other: &mut Instance) {
    CORE.with(|c| std::mem::swap(&mut *c.borrow_mut(), &mut other.core));
}

fn core<R>(f: impl FnOnce(&mut Core) -> R) -> R {
    CORE.with(|c| f(&mut c.borrow_mut()))
}

/// Runs `f` on `filters`. `None` when they are already in use: the host called back into the
/// module from inside a callback, which neither weft nor Envoy does; the callback is then
/// skipped.
fn filters<F: Filter, R>(
    filters: &RefCell<Filters<F>>,
    f: impl FnOnce(&mut Filters<F>) -> R,
) -> Option<R> {
    let mut filters = filters.try_borrow_mut().ok()?;
    Some(f(&mut filters))
}

/// Runs `f` on the filter of stream `ctx`, in place; with the filter's result, the stream's
/// root context. `None` for an unknown context.
fn with_filter<F: Filter, R>(
    all: &RefCell<Filters<F>>,
    ctx: u32,
    f: impl FnOnce(&mut F) -> R,
) -> Option<(R, u32)> {
    filters(all, |fs| {
        let stream = fs.streams.get_mut(&ctx)?;
        let previous = CURRENT.replace(ctx);
        let result = f(&mut stream.filter);
        CURRENT.set(previous);
        Some((result, stream.root))
    })
    .flatten()
}

/// The id of metric `name` of type `kind`, defined through `define` the first time.
pub(crate) fn metric_id(
    kind: u32,
    name: &str,
    define: impl FnOnce() -> Result<u32>,
) -> Result<u32> {
    // Looked up by `&str`: a metric recorded on every request allocates nothing to find it.
    let known = core(|c| {
        c.metrics
            .get(name)
            .and_then(|ids| ids.iter().find(|(k, _)| *k == kind).map(|&(_, id)| id))
    });
    if let Some(id) = known {
        return Ok(id);
    }
    let id = define()?;
    core(|c| {
        c.metrics
            .entry(name.to_owned())
            .or_default()
            .push((kind, id))
    });
    Ok(id)
}

/// Records the callout `token` as sent by the running stream.
pub(crate) fn callout_sent(token: u32) {
    let current = CURRENT.get();
    if current != 0 {
        core(|c| c.callouts.insert(token, current));
    }
}

fn now_nanos() -> u64 {
    host(|h| h.current_time_nanos()).unwrap_or(0)
}

/// What a phase's result means for the host: `0` continue, `1` pause. `Continue`, what nearly
/// every phase returns, is answered inline; a hold or a failure out of line.
#[inline]
fn finish_phase(
    ctx: u32,
    root: u32,
    side: StreamType,
    result: Result<Action>,
    delay: Option<Duration>,
) -> u32 {
    match result {
        Ok(Action::Continue) => 0,
        Ok(Action::Pause) => hold(ctx, root, side, delay),
        Err(e) => fail(&e),
    }
}

/// Stream `ctx` paused on `side`: noted, and held for `delay` if it asked for one; `1`.
#[cold]
#[inline(never)]
fn hold(ctx: u32, root: u32, side: StreamType, delay: Option<Duration>) -> u32 {
    if let Some(delay) = delay {
        schedule(ctx, root, delay);
    }
    core(|c| c.paused.insert(ctx, side));
    1
}

/// A phase failed with `e`: logged and answered with a 500; `1`.
#[cold]
#[inline(never)]
fn fail(e: &crate::Error) -> u32 {
    hostfns::log(LogLevel::Error, &format!("filter error: {e}"));
    let body = format!("filter error: {e}\n");
    let _ = host(|h| {
        h.send_local_response(
            500,
            "weft_sdk_filter_error",
            body.as_bytes(),
            &[("content-type", b"text/plain".as_slice())],
        )
    });
    1
}

/// Holds stream `ctx` of root context `root` for `delay`.
fn schedule(ctx: u32, root: u32, delay: Duration) {
    let deadline = now_nanos().saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
    core(|c| c.delays.entry(root).or_default().push((deadline, ctx)));
    program_tick(root);
}

/// Sets the root's tick to fire at its earliest delay (or stops it).
fn program_tick(root: u32) {
    let earliest = core(|c| {
        c.delays
            .get(&root)
            .and_then(|d| d.iter().map(|(t, _)| *t).min())
    });
    let period = match earliest {
        None => 0,
        Some(deadline) => {
            let millis = deadline.saturating_sub(now_nanos()).div_ceil(1_000_000);
            u32::try_from(millis).unwrap_or(u32::MAX).max(1)
        }
    };
    let _ = host(|h| h.set_tick_period(period));
}

/// Stream `ctx`'s delay is over: its filter's `on_delay_elapsed` says whether it goes on.
fn delay_elapsed<F: Filter>(all: &RefCell<Filters<F>>, ctx: u32) {
    let mut request = Request::default();
    match with_filter(all, ctx, |f| f.on_delay_elapsed(&mut request)) {
        Some((Ok(Action::Continue), _)) | None => resume(ctx),
        Some((Ok(Action::Pause), root)) => {
            if let Some(delay) = request.delay {
                schedule(ctx, root, delay);
            }
        }
        Some((Err(e), _)) => {
            // Answered with the failure: no longer waiting.
            core(|c| c.paused.remove(&ctx));
            fail(&e);
        }
    }
}

fn resume(ctx: u32) {
    if let Some(side) = core(|c| c.paused.remove(&ctx)) {
        let _ = host(|h| h.continue_stream(side));
    }
}

/// The callbacks, called by the exports [`export_filter!`](crate::export_filter) generates.
#[doc(hidden)]
pub mod exports {
    use super::*;

    /// `proxy_on_context_create`.
    pub fn on_context_create<F: Filter>(all: &RefCell<Filters<F>>, ctx: u32, parent: u32) {
        if parent == 0 {
            return;
        }
        filters(all, |fs| {
            if let Some(config) = fs.configs.get(&parent) {
                let filter = F::new(config);
                fs.streams.insert(
                    ctx,
                    Stream {
                        root: parent,
                        filter,
                    },
                );
            }
        });
    }

    /// `proxy_on_vm_start`.
    pub fn on_vm_start(_root: u32, _size: usize) -> u32 {
        1
    }

    /// `proxy_on_configure`: parses the configuration and runs [`Filter::configure`]; a bad
    /// one is logged with its field path and refused.
    pub fn on_configure<F: Filter>(all: &RefCell<Filters<F>>, root: u32, size: usize) -> u32 {
        // The module's filter type, for the word of default callbacks (a harness reused
        // across types makes a second one known here).
        crate::defaults::register::<F>();
        match crate::parse_config::<F>(&configuration(size)) {
            Ok(config) => {
                filters(all, |fs| fs.configs.insert(root, Rc::new(config)));
                1
            }
            Err(message) => {
                hostfns::log(
                    LogLevel::Error,
                    &format!("invalid configuration: {message}"),
                );
                0
            }
        }
    }

    fn configuration(size: usize) -> Vec<u8> {
        if size == 0 {
            return Vec::new();
        }
        host(|h| h.get_buffer(BufferType::PluginConfiguration, 0, size)).unwrap_or_default()
    }

    /// `proxy_on_request_headers`.
    pub fn on_request_headers<F: Filter>(
        all: &RefCell<Filters<F>>,
        ctx: u32,
        _headers: usize,
        end_of_stream: u32,
    ) -> u32 {
        let mut request = Request {
            body_size: 0,
            end_of_stream: end_of_stream != 0,
            delay: None,
        };
        match with_filter(all, ctx, |f| f.on_request_headers(&mut request)) {
            Some((result, root)) => {
                finish_phase(ctx, root, StreamType::HttpRequest, result, request.delay)
            }
            None => 0,
        }
    }

    /// `proxy_on_request_body`.
    pub fn on_request_body<F: Filter>(
        all: &RefCell<Filters<F>>,
        ctx: u32,
        size: usize,
        end_of_stream: u32,
    ) -> u32 {
        let mut request = Request {
            body_size: size,
            end_of_stream: end_of_stream != 0,
            delay: None,
        };
        match with_filter(all, ctx, |f| f.on_request_body(&mut request)) {
            Some((result, root)) => {
                finish_phase(ctx, root, StreamType::HttpRequest, result, request.delay)
            }
            None => 0,
        }
    }

    /// `proxy_on_response_headers`.
    pub fn on_response_headers<F: Filter>(
        all: &RefCell<Filters<F>>,
        ctx: u32,
        _headers: usize,
        end_of_stream: u32,
    ) -> u32 {
        let mut response = Response {
            body_size: 0,
            end_of_stream: end_of_stream != 0,
        };
        match with_filter(all, ctx, |f| f.on_response_headers(&mut response)) {
            Some((result, root)) => finish_phase(ctx, root, StreamType::HttpResponse, result, None),
            None => 0,
        }
    }

    /// `proxy_on_response_body`.
    pub fn on_response_body<F: Filter>(
        all: &RefCell<Filters<F>>,
        ctx: u32,
        size: usize,
        end_of_stream: u32,
    ) -> u32 {
        let mut response = Response {
            body_size: size,
            end_of_stream: end_of_stream != 0,
        };
        match with_filter(all, ctx, |f| f.on_response_body(&mut response)) {
            Some((result, root)) => finish_phase(ctx, root, StreamType::HttpResponse, result, None),
            None => 0,
        }
    }

    /// `proxy_on_request_trailers` / `proxy_on_response_trailers`: trailers pass.
    pub fn on_trailers(_ctx: u32, _count: usize) -> u32 {
        0
    }

    /// `proxy_on_log`.
    pub fn on_log<F: Filter>(all: &RefCell<Filters<F>>, ctx: u32) {
        with_filter(all, ctx, |f| f.on_log(&Log::default()));
    }

    /// `proxy_on_done`.
    pub fn on_done(_ctx: u32) -> u32 {
        1
    }

    /// `proxy_on_delete`.
    pub fn on_delete<F: Filter>(all: &RefCell<Filters<F>>, ctx: u32) {
        // A stream context has a root; only a root context has a configuration and delays of
        // its own. Paused streams and callouts are always stream contexts.
        match filters(all, |fs| fs.streams.remove(&ctx).map(|s| s.root)).flatten() {
            Some(root) => core(|c| {
                // Most streams were never paused, delayed or calling out: no lookups then.
                if !c.paused.is_empty() {
                    c.paused.remove(&ctx);
                }
                if !c.delays.is_empty()
                    && let Some(delays) = c.delays.get_mut(&root)
                {
                    delays.retain(|(_, s)| *s != ctx);
                }
                if !c.callouts.is_empty() {
                    c.callouts.retain(|_, s| *s != ctx);
                }
            }),
            None => {
                filters(all, |fs| fs.configs.remove(&ctx));
                core(|c| c.delays.remove(&ctx));
            }
        }
    }

    /// `proxy_on_tick`: delayed streams whose time has come go on, unless their filter's
    /// [`Filter::on_delay_elapsed`] holds or answers them.
    pub fn on_tick<F: Filter>(all: &RefCell<Filters<F>>, root: u32) {
        let now = now_nanos();
        let due: Vec<u32> = core(|c| {
            let Some(delays) = c.delays.get_mut(&root) else {
                return Vec::new();
            };
            let due = delays
                .iter()
                .filter(|(t, _)| *t <= now)
                .map(|(_, s)| *s)
                .collect();
            delays.retain(|(t, _)| *t > now);
            due
        });
        for ctx in due {
            if host(|h| h.set_effective_context(ctx)).is_ok() {
                delay_elapsed(all, ctx);
            }
        }
        let _ = host(|h| h.set_effective_context(root));
        program_tick(root);
    }

    /// `proxy_on_http_call_response`: the answer goes to the stream that sent the call.
    pub fn on_http_call_response<F: Filter>(
        all: &RefCell<Filters<F>>,
        _root: u32,
        token: u32,
        headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(ctx) = core(|c| c.callouts.remove(&token)) else {
            return;
        };
        if host(|h| h.set_effective_context(ctx)).is_err() {
            return;
        }
        let response = match CallResponse::read(headers, body_size) {
            Ok(response) => response,
            Err(e) => {
                hostfns::log(LogLevel::Warn, &format!("reading callout answer: {e}"));
                CallResponse::default()
            }
        };
        let mut request = Request::default();
        let result = with_filter(all, ctx, |f| {
            f.on_http_call_response(&mut request, token, response)
        });
        match result {
            Some((Ok(Action::Continue), _)) => resume(ctx),
            Some((Ok(Action::Pause), root)) => {
                if let Some(delay) = request.delay {
                    schedule(ctx, root, delay);
                }
            }
            Some((Err(e), _)) => {
                // Answered with the failure: no longer waiting.
                core(|c| c.paused.remove(&ctx));
                fail(&e);
            }
            None => {}
        }
    }

    /// `proxy_on_memory_allocate`.
    pub fn on_memory_allocate(size: usize) -> *mut u8 {
        crate::ffi::allocate(size)
    }

    /// `weft_host_buffer` (weft's extension, see [`weft_abi::HostBuffer`]).
    pub fn host_buffer() -> u64 {
        crate::ffi::host_buffer()
    }
}

/// Generates the proxy-wasm v0.2.1 exports of a module whose filter is `$filter` (a type
/// implementing [`Filter`](crate::Filter)). Use it once, in the filter crate's `lib.rs`.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        const _: () = {
            use $crate::__private as sdk;

            ::std::thread_local! {
                /// The module's filters (on `wasm32` without threads, a plain static).
                static FILTERS: ::core::cell::RefCell<sdk::Filters<$filter>> =
                    const { ::core::cell::RefCell::new(sdk::Filters::new()) };
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_abi_version_0_2_1() {}

            #[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
            #[unsafe(no_mangle)]
            pub extern "C" fn _initialize() {
                sdk::initialize()
            }

            // weft's extension (`weft_abi::DEFAULT_CALLBACKS_EXPORT`, the same name): where
            // the module notes the stream callbacks its filter leaves at their no-op defaults.
            #[unsafe(no_mangle)]
            pub extern "C" fn weft_default_callbacks_v1() -> *const u32 {
                sdk::default_callbacks()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
                sdk::on_memory_allocate(size)
            }

            // weft's host buffer (`weft_abi::HostBuffer`, named by `WeftExport::HostBuffer`);
            // other hosts never call it.
            #[unsafe(no_mangle)]
            pub extern "C" fn weft_host_buffer() -> u64 {
                sdk::host_buffer()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_context_create(ctx: u32, parent: u32) {
                FILTERS.with(|all| sdk::on_context_create(all, ctx, parent))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_vm_start(root: u32, size: usize) -> u32 {
                sdk::on_vm_start(root, size)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_configure(root: u32, size: usize) -> u32 {
                FILTERS.with(|all| sdk::on_configure(all, root, size))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_tick(root: u32) {
                FILTERS.with(|all| sdk::on_tick(all, root))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_request_headers(ctx: u32, n: usize, eos: u32) -> u32 {
                FILTERS.with(|all| sdk::on_request_headers(all, ctx, n, eos))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_request_body(ctx: u32, size: usize, eos: u32) -> u32 {
                FILTERS.with(|all| sdk::on_request_body(all, ctx, size, eos))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_request_trailers(ctx: u32, n: usize) -> u32 {
                sdk::on_trailers(ctx, n)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_response_headers(ctx: u32, n: usize, eos: u32) -> u32 {
                FILTERS.with(|all| sdk::on_response_headers(all, ctx, n, eos))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_response_body(ctx: u32, size: usize, eos: u32) -> u32 {
                FILTERS.with(|all| sdk::on_response_body(all, ctx, size, eos))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_response_trailers(ctx: u32, n: usize) -> u32 {
                sdk::on_trailers(ctx, n)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_http_call_response(
                root: u32,
                token: u32,
                headers: usize,
                body: usize,
                trailers: usize,
            ) {
                FILTERS.with(|all| {
                    sdk::on_http_call_response(all, root, token, headers, body, trailers)
                })
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_log(ctx: u32) {
                FILTERS.with(|all| sdk::on_log(all, ctx))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_done(ctx: u32) -> u32 {
                sdk::on_done(ctx)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_delete(ctx: u32) {
                FILTERS.with(|all| sdk::on_delete(all, ctx))
            }
        };
    };
}
