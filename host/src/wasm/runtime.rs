//! The Wasm runtime: one `wasmtime::Engine` per process with weft's fixed choices, in one place.
//!
//! - **Synchronous calls with epoch interruption.** A guest call is a plain function call on
//!   the caller's thread: no fiber, no stack switch, no future per call. An epoch ticker thread
//!   advances the engine's epoch every [`EngineSettings::tick`]; at each tick of a call that has
//!   run for a whole tick, the tokio worker it runs on hands its queued tasks and I/O to another thread
//!   (`block_in_place`), so a guest that loops never stalls the requests behind it, and once the
//!   call has run past its deadline it traps. Deadlines are counted in ticks, so starting a call
//!   reads an atomic rather than the clock; a call traps between its deadline and three ticks
//!   later (one of them slack for a ticker thread that was late when the call began).
//! - **Memory caps.** The pooling allocator bounds the pool (instances, memory per instance);
//!   each store carries `StoreLimits` with its plugin's own cap, and a `memory.grow` past it
//!   fails inside the guest (returns -1), as the Wasm spec allows.
//! - **Compile once.** Modules are cached by the sha256 of their bytes.
//! - **Profiling.** With `WEFT_WASM_PERFMAP=1` in the environment, the engine writes
//!   `/tmp/perf-PID.map`, so `perf` (and scripts reading that map next to valgrind's output) can
//!   name the guests' JIT-compiled functions.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use weft_host::wasm::{EngineSettings, GuestLimits, GuestState, WasmRuntime};
//!
//! let runtime = WasmRuntime::new(EngineSettings::default())?;
//! let module = runtime.compile(br#"(module (func (export "answer") (result i32) i32.const 42))"#)?;
//! let limits = GuestLimits { deadline: Duration::from_millis(100), memory_bytes: 16 << 20 };
//! let mut store = runtime.store(GuestState::new(limits, ()));
//! let instance = wasmtime::Linker::new(runtime.engine()).instantiate(&mut store, &module.module)?;
//! let answer = instance.get_typed_func::<(), i32>(&mut store, "answer")?;
//! assert_eq!(runtime.call(&mut store, &answer, ())?, 42);
//! # Ok(())
//! # }
//! ```

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig, ProfilingStrategy,
    ResourceLimiter, Store, StoreContextMut, StoreLimits, StoreLimitsBuilder, TypedFunc,
    UpdateDeadline, WasmParams, WasmResults,
};

/// Address space reserved for each linear memory: all a 32-bit memory can address.
const MEMORY_RESERVATION: u64 = 1 << 32;

/// Guard pages past each reservation, for the constant offsets of guest loads and stores.
const MEMORY_GUARD: u64 = 32 << 20;

/// Engine-wide settings, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Instances that may exist at once (the pooling allocator's slots).
    pub max_instances: u32,
    /// The largest linear memory any instance may have; per-plugin caps are at most this.
    pub max_memory_bytes: usize,
    /// Epoch period: how often a running guest yields and its deadline is checked.
    pub tick: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            max_instances: 1000,
            max_memory_bytes: 256 << 20,
            tick: Duration::from_millis(5),
        }
    }
}

/// Limits of one guest (one plugin's instances).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Longest a single call into the guest may run.
    pub deadline: Duration,
    /// Largest linear memory of an instance.
    pub memory_bytes: usize,
}

/// A failure of the runtime or of a guest.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The module is not valid WebAssembly (or not for this engine).
    #[error("invalid module: {0}")]
    Invalid(String),
    /// A call ran past its deadline.
    #[error("guest call exceeded its deadline of {0:?}")]
    Deadline(Duration),
    /// The guest trapped (panic, unreachable, out-of-bounds access…).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The engine could not be set up.
    #[error("wasm engine: {0}")]
    Engine(String),
}

impl From<wasmtime::Error> for WasmError {
    fn from(error: wasmtime::Error) -> Self {
        if let Some(deadline) = error.downcast_ref::<DeadlineExceeded>() {
            return Self::Deadline(deadline.0);
        }
        Self::Trap(format!("{error:#}"))
    }
}

/// The error an epoch callback raises once a call is past its deadline.
#[derive(Debug)]
struct DeadlineExceeded(Duration);

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "deadline of {:?} exceeded", self.0)
    }
}

impl std::error::Error for DeadlineExceeded {}

/// A compiled module and its digest.
#[derive(Clone)]
pub struct CompiledModule {
    /// sha256 of the module's bytes.
    pub sha256: [u8; 32],
    /// The compiled module; cheap to clone.
    pub module: Module,
}

impl CompiledModule {
    /// The digest as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What every store carries: its limits, the running call's start, and the embedder's data.
pub struct GuestState<T> {
    limits: GuestLimits,
    limiter: Limiter,
    /// The epoch tick the running call started at.
    call_started: Option<u64>,
    /// The embedder's per-instance data (the proxy-wasm context state, later).
    pub data: T,
}

impl<T> GuestState<T> {
    /// State for a guest with `limits`.
    pub fn new(limits: GuestLimits, data: T) -> Self {
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            // The guest and its finish trampoline.
            .instances(2)
            .tables(4)
            .build();
        Self {
            limits,
            limiter: Limiter {
                inner: store_limits,
                memory_denied: false,
            },
            call_started: None,
            data,
        }
    }

    /// Whether a `memory.grow` was refused at the cap since the last call began.
    pub fn memory_denied(&self) -> bool {
        self.limiter.memory_denied
    }

    /// The guest's limits.
    pub fn limits(&self) -> GuestLimits {
        self.limits
    }
}

/// `StoreLimits`, remembering whether it refused to grow a memory: a trap right after a refusal
/// is the instance running out of memory.
struct Limiter {
    inner: StoreLimits,
    memory_denied: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.memory_denied = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// `1` makes the engine write a perf map of the guests' compiled functions.
const PERFMAP_ENV: &str = "WEFT_WASM_PERFMAP";

/// The process's Wasm engine and module cache.
pub struct WasmRuntime {
    engine: Engine,
    modules: Mutex<HashMap<[u8; 32], Module>>,
    /// Epoch ticks so far: a coarse clock that costs one load to read.
    ticks: Arc<AtomicU64>,
    settings: EngineSettings,
}

impl WasmRuntime {
    /// Builds the engine and starts its epoch ticker (which stops when the runtime is dropped).
    pub fn new(settings: EngineSettings) -> Result<Arc<Self>, WasmError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let mut pool = PoolingAllocationConfig::default();
        // Two core instances per plugin instance: the guest and its finish trampoline (which
        // has no memory or table of its own).
        pool.total_core_instances(settings.max_instances.saturating_mul(2))
            .total_memories(settings.max_instances)
            .total_tables(settings.max_instances)
            .max_memory_size(settings.max_memory_bytes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Each memory reserves the whole 32-bit address space, and a guard past it covers the
        // constant offsets compilers fold into loads and stores: then no guest access needs a
        // bounds check, the guard pages trap instead. With a smaller reservation every load and
        // store of every filter carries a compare and a Spectre-safe select. The reservation
        // is address space only (`PROT_NONE`); what an instance may use is still capped by
        // `max_memory_bytes` and its plugin's limit.
        config
            .memory_reservation(MEMORY_RESERVATION)
            .memory_guard_size(MEMORY_GUARD);
        if std::env::var_os(PERFMAP_ENV).is_some_and(|v| v == "1") {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| {
            WasmError::Engine(format!(
                "{e:#} ({} instance slots, each reserving {} MiB of address space)",
                settings.max_instances,
                (MEMORY_RESERVATION + MEMORY_GUARD) >> 20
            ))
        })?;
        let runtime = Arc::new(Self {
            engine,
            modules: Mutex::new(HashMap::new()),
            ticks: Arc::new(AtomicU64::new(1)),
            settings,
        });
        spawn_ticker(Arc::downgrade(&runtime));
        Ok(runtime)
    }

    /// The engine, for linkers and modules.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `bytes` (binary or text format), or returns the cached module with that digest.
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledModule, WasmError> {
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(module) = self
            .modules
            .lock()
            .ok()
            .and_then(|m| m.get(&sha256).cloned())
        {
            return Ok(CompiledModule { sha256, module });
        }
        let module =
            Module::new(&self.engine, bytes).map_err(|e| WasmError::Invalid(format!("{e:#}")))?;
        if let Ok(mut modules) = self.modules.lock() {
            modules.insert(sha256, module.clone());
        }
        Ok(CompiledModule { sha256, module })
    }

    /// Modules in the cache.
    pub fn cached_modules(&self) -> usize {
        self.modules.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// A store for one instance, with its memory cap and the deadline policy installed.
    pub fn store<T: Send + 'static>(&self, state: GuestState<T>) -> Store<GuestState<T>> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        let ticks = self.ticks.clone();
        let tick = self.settings.tick;
        store.epoch_deadline_callback(move |context: StoreContextMut<'_, GuestState<T>>| {
            let state = context.data();
            let now = ticks.load(Ordering::Relaxed);
            match state.call_started {
                Some(started) if past_deadline(started, now, state.limits.deadline, tick) => Err(
                    wasmtime::Error::new(DeadlineExceeded(state.limits.deadline)),
                ),
                // Still within its deadline, and running for a whole tick at least (the first
                // tick may come a moment after a short call began): it runs on, and the tasks
                // queued behind it on this worker move to another thread.
                Some(started) if is_long_call(started, now) => {
                    hand_off_worker(handoff_wait(started, now));
                    Ok(UpdateDeadline::Continue(1))
                }
                _ => Ok(UpdateDeadline::Continue(1)),
            }
        });
        store
    }

    /// Calls `func` with `params` under the guest's deadline.
    pub fn call<T, P, R>(
        &self,
        store: &mut Store<GuestState<T>>,
        func: &TypedFunc<P, R>,
        params: P,
    ) -> Result<R, WasmError>
    where
        P: WasmParams,
        R: WasmResults,
    {
        self.begin_call(store);
        let result = func.call(&mut *store, params);
        Self::end_call(store, result)
    }

    /// Arms the deadline for a guest call about to start on `store` (what [`call`](Self::call)
    /// does around the call, for callers that make the call themselves). Returns the tick
    /// the call starts at.
    pub fn begin_call<T>(&self, store: &mut Store<GuestState<T>>) -> u64 {
        let now = self.now_tick();
        let state = store.data_mut();
        state.call_started = Some(now);
        state.limiter.memory_denied = false;
        store.set_epoch_deadline(1);
        now
    }

    /// Disarms the deadline after a guest call on `store` and classifies its outcome.
    pub fn end_call<T, R>(
        store: &mut Store<GuestState<T>>,
        result: wasmtime::Result<R>,
    ) -> Result<R, WasmError> {
        store.data_mut().call_started = None;
        result.map_err(WasmError::from)
    }

    /// Epoch ticks since the engine started (never 0): a coarse clock in units of
    /// [`EngineSettings::tick`].
    pub fn now_tick(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// The engine settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }
}

/// Whether a call that started at tick `started` has run past `deadline` at tick `now`. Ticks
/// come at least `tick` apart, and the call began somewhere within its first tick — or within
/// the next one, when the ticker thread was late on a loaded machine and the count it read was
/// a tick behind — so it has surely run `deadline` once more than `ceil(deadline / tick) + 1`
/// ticks have passed.
fn past_deadline(started: u64, now: u64, deadline: Duration, tick: Duration) -> bool {
    let tick_ns = tick.as_nanos().max(1);
    let ticks = deadline.as_nanos().div_ceil(tick_ns) + 1;
    u128::from(now.saturating_sub(started)) > ticks
}

/// Ticks since its start after which a call surely ran a whole tick (it began somewhere within
/// its first one) and hands its worker off: 5–10 ms with the default tick. Earlier, a call that
/// merely straddles a tick — one in a thousand short calls — would pay for a hand-off.
const LONG_CALL_TICKS: u64 = 2;

/// Whether a call that started at tick `started` has surely run a whole tick at tick `now`.
fn is_long_call(started: u64, now: u64) -> bool {
    now.saturating_sub(started) >= LONG_CALL_TICKS
}

/// How long a guest that has run for a whole tick waits, at its first hand-off, for another
/// thread to take over its tokio worker: long enough for a parked blocking-pool thread to wake
/// up on an idle machine.
const HANDOFF_WAIT: Duration = Duration::from_micros(200);

/// The wait of a hand-off at tick `now` of a call that started at tick `started`: it doubles at
/// each tick the call is still running, up to 8× [`HANDOFF_WAIT`] — on a loaded machine the new
/// thread may be late, and then the worker is still this one's at the next tick. Once it has
/// moved, the waits only slow a call that is past a whole tick already (at most a third of it).
fn handoff_wait(started: u64, now: u64) -> Duration {
    let attempt = now.saturating_sub(started).saturating_sub(LONG_CALL_TICKS);
    HANDOFF_WAIT * (1u32 << attempt.min(3))
}

/// Called on a guest's thread at each tick of a long call: when it runs on a worker of a
/// multi-thread tokio runtime, the worker's run queue and I/O driver go to another thread
/// (`block_in_place`), so the requests queued behind the guest keep flowing while it runs on
/// to its deadline; this thread leaves the worker pool when the call is over. Guest calls
/// are synchronous — no fiber and no stack switch per call — and this is what keeps them from
/// stalling a worker. Outside a multi-thread runtime (a current-thread runtime, a plain
/// thread) the guest runs on where it is.
fn hand_off_worker(wait: Duration) {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        // The new thread takes the worker while this one waits; if it is late, the worker
        // comes back here and the next tick tries again, waiting longer.
        tokio::task::block_in_place(|| std::thread::sleep(wait));
    }
}

/// Advances the engine's epoch every tick until the runtime is gone.
fn spawn_ticker(runtime: Weak<WasmRuntime>) {
    let tick = runtime
        .upgrade()
        .map_or(Duration::from_millis(10), |r| r.settings.tick);
    let spawned = std::thread::Builder::new()
        .name("weft-wasm-epoch".into())
        .spawn(move || {
            // Ticks follow the clock, not the sleeps: on a loaded machine a sleep overruns, and
            // counting wake-ups would stretch every deadline by as much (a 4 s deadline took
            // 6.6 s with the cores saturated). A late wake-up counts every tick it missed.
            let epoch = Instant::now();
            let tick_ns = tick.as_nanos().max(1);
            while let Some(runtime) = runtime.upgrade() {
                let elapsed =
                    u64::try_from(epoch.elapsed().as_nanos() / tick_ns).unwrap_or(u64::MAX);
                // The tick first: a guest interrupted by this epoch sees its tick.
                runtime
                    .ticks
                    .fetch_max(elapsed.saturating_add(1), Ordering::Relaxed);
                runtime.engine.increment_epoch();
                drop(runtime);
                let next = u32::try_from(elapsed.saturating_add(1))
                    .ok()
                    .and_then(|n| tick.checked_mul(n))
                    .unwrap_or(Duration::MAX);
                std::thread::sleep(next.saturating_sub(epoch.elapsed()));
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the wasm epoch ticker; guest deadlines will not be enforced");
    }
}

#[cfg(test)]
mod tests;
