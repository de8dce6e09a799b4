//! Unit tests for the runtime: compile-once caching, deadlines that trap without stalling the
//! other tasks of the worker the guest runs on, memory caps, traps as errors.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use wasmtime::{Linker, Store};

use super::*;

const LOOP: &str = r#"(module (func (export "spin") (loop br 0)))"#;
const GROW: &str = r#"(module (memory 1) (func (export "grow") (param i32) (result i32) local.get 0 memory.grow))"#;
const TRAP: &str = r#"(module (func (export "boom") unreachable))"#;

fn limits(deadline_ms: u64, memory_bytes: usize) -> GuestLimits {
    GuestLimits {
        deadline: Duration::from_millis(deadline_ms),
        memory_bytes,
    }
}

fn start(
    runtime: &WasmRuntime,
    wat: &str,
    limits: GuestLimits,
) -> (Store<GuestState<()>>, wasmtime::Instance) {
    let module = runtime.compile(wat.as_bytes()).expect("compiles");
    let mut store = runtime.store(GuestState::new(limits, ()));
    let instance = Linker::new(runtime.engine())
        .instantiate(&mut store, &module.module)
        .expect("instantiates");
    (store, instance)
}

fn runtime() -> Arc<WasmRuntime> {
    let settings = EngineSettings {
        max_instances: 16,
        max_memory_bytes: 16 << 20,
        tick: Duration::from_millis(5),
    };
    WasmRuntime::new(settings).expect("engine")
}

#[test]
fn modules_are_compiled_once_per_digest() {
    let runtime = runtime();
    let a = runtime.compile(LOOP.as_bytes()).expect("compiles");
    let b = runtime.compile(LOOP.as_bytes()).expect("compiles");
    assert!(
        wasmtime::Module::same(&a.module, &b.module),
        "the same bytes give the cached module"
    );
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(a.sha256_hex().len(), 64);
    let c = runtime.compile(TRAP.as_bytes()).expect("compiles");
    assert_ne!(a.sha256, c.sha256);
    assert_eq!(runtime.cached_modules(), 2);
}

#[test]
fn invalid_modules_are_errors() {
    let runtime = runtime();
    assert!(matches!(
        runtime.compile(b"\0asm garbage"),
        Err(WasmError::Invalid(_))
    ));
    assert!(matches!(
        runtime.compile(b"(module (func (export \"f\") (result i32)))"),
        Err(WasmError::Invalid(_))
    ));
    assert_eq!(runtime.cached_modules(), 0);
}

/// A guest that loops fails its own call at its deadline, and while it loops on the runtime's
/// only worker thread, the other tasks queued on that worker keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_looping_guest_hits_its_deadline_without_stalling_its_worker() {
    let runtime = runtime();
    let ticks = Arc::new(AtomicU64::new(0));
    let counter = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(2)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // The guest runs in a task, on the worker (the test's own thread is not one).
    let guest = {
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let (mut store, instance) = start(&runtime, LOOP, limits(150, 1 << 20));
            let spin = instance
                .get_typed_func::<(), ()>(&mut store, "spin")
                .expect("export");
            let started = Instant::now();
            let result = runtime.call(&mut store, &spin, ());
            (result, started.elapsed())
        })
    };
    let (result, took) = guest.await.expect("the guest task");
    counter.abort();
    assert!(
        matches!(result, Err(WasmError::Deadline(d)) if d == Duration::from_millis(150)),
        "{result:?}"
    );
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(600),
        "{took:?}"
    );
    // A guest that kept the worker would leave the counter at 0 (there is no other worker);
    // once the worker is handed to another thread, the counter runs every 2 ms or so.
    let ran = ticks.load(Ordering::Relaxed);
    assert!(
        ran >= 20,
        "the worker's other tasks kept running while the guest looped: {ran} runs"
    );
}

#[test]
fn memory_growth_stops_at_the_guest_cap() {
    let runtime = runtime();
    // 4 pages (256 KiB) allowed: one is there, three more fit, a fourth does not.
    let (mut store, instance) = start(&runtime, GROW, limits(100, 4 * 65536));
    let grow = instance
        .get_typed_func::<i32, i32>(&mut store, "grow")
        .expect("export");
    assert_eq!(
        runtime.call(&mut store, &grow, 3).expect("call"),
        1,
        "previous size in pages"
    );
    assert_eq!(
        runtime.call(&mut store, &grow, 1).expect("call"),
        -1,
        "past the cap the guest sees failure"
    );
}

#[test]
fn a_trap_is_an_error_and_the_next_instance_is_fine() {
    let runtime = runtime();
    let (mut store, instance) = start(&runtime, TRAP, limits(100, 1 << 20));
    let boom = instance
        .get_typed_func::<(), ()>(&mut store, "boom")
        .expect("export");
    let result = runtime.call(&mut store, &boom, ());
    assert!(
        matches!(result, Err(WasmError::Trap(ref m)) if m.contains("unreachable")),
        "{result:?}"
    );
    // Instances come from the pool again and again.
    for _ in 0..50 {
        let (mut store, instance) = start(&runtime, GROW, limits(100, 1 << 20));
        let grow = instance
            .get_typed_func::<i32, i32>(&mut store, "grow")
            .expect("export");
        assert_eq!(runtime.call(&mut store, &grow, 0).expect("call"), 1);
    }
}

/// Filters written with the upstream proxy-wasm SDK, built for both targets, compile here; what
/// they import from `env` is exactly the ABI's host functions, and each exports the ABI version.
#[test]
fn real_sdk_filters_compile_for_both_targets() {
    let runtime = runtime();
    for (name, target, path) in weft_test_artifacts::ALL {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{name} for {target}: cannot read {path}: {e}"));
        let compiled = runtime
            .compile(&bytes)
            .unwrap_or_else(|e| panic!("{name} for {target}: {e}"));
        let module = &compiled.module;
        assert!(
            module
                .exports()
                .any(|e| e.name() == "proxy_abi_version_0_2_1"),
            "{name} for {target} exports the ABI version"
        );
        for import in module
            .imports()
            .filter(|i| i.module() == weft_abi::HOST_MODULE)
        {
            assert!(
                weft_abi::HOST_FUNCTIONS.contains(&import.name()),
                "{name} for {target} imports unknown env.{}",
                import.name()
            );
        }
    }
    assert_eq!(runtime.cached_modules(), weft_test_artifacts::ALL.len());
}

#[test]
fn a_deadline_passes_only_once_it_surely_elapsed() {
    let tick = Duration::from_millis(5);
    let deadline = Duration::from_millis(100);
    // Started at tick 10 (as read; the ticker may have been a tick late): 21 ticks later it
    // may have run only 100 ms minus a tick; 22 ticks, at least 100.
    assert!(!super::past_deadline(10, 10, deadline, tick));
    assert!(!super::past_deadline(10, 31, deadline, tick));
    assert!(super::past_deadline(10, 32, deadline, tick));
    // A deadline that is not a whole number of ticks rounds up.
    assert!(!super::past_deadline(0, 4, Duration::from_millis(12), tick));
    assert!(super::past_deadline(0, 5, Duration::from_millis(12), tick));
    // A tick counter read before the call's own start (never expected) is not past.
    assert!(!super::past_deadline(10, 9, deadline, tick));
}

#[test]
fn only_a_call_that_ran_a_whole_tick_hands_its_worker_off() {
    // Started within tick 10: at tick 11 it may have run a microsecond (a short call that
    // straddles the tick); at tick 12 it has run at least a whole tick.
    assert!(!super::is_long_call(10, 10));
    assert!(!super::is_long_call(10, 11));
    assert!(super::is_long_call(10, 12));
    assert!(super::is_long_call(10, 40));
    // A tick counter read before the call's own start (never expected) is not long.
    assert!(!super::is_long_call(10, 9));
}

#[test]
fn a_hand_off_waits_longer_at_each_tick_up_to_a_cap() {
    let wait = |ticks: u64| super::handoff_wait(10, 10 + ticks);
    assert_eq!(wait(2), super::HANDOFF_WAIT);
    assert_eq!(wait(3), super::HANDOFF_WAIT * 2);
    assert_eq!(wait(4), super::HANDOFF_WAIT * 4);
    assert_eq!(wait(5), super::HANDOFF_WAIT * 8);
    assert_eq!(wait(500), super::HANDOFF_WAIT * 8);
}
