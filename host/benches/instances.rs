//! What a plugin instance costs: creation time and memory per instance, for the `passthrough`
//! test filter (the module the filter benchmark of `bench/run.sh` runs) built for both wasm
//! targets.
//!
//! ```text
//! cargo bench -p weft-host --bench instances
//! INSTANCE_STARTS=500 INSTANCES_HELD=200 cargo bench -p weft-host --bench instances
//! ```
//!
//! For each target it measures, with the engine settings `weft proxy` uses by default:
//! - `compile`: compiling the module (once per module and process; cached by sha256);
//! - `instantiate_pre`: linking it against the host functions (once per filter and config version);
//! - `start`: `Instance::start` — what a filter's pool does when it grows (`Filter::acquire`):
//!   instantiate in the pooling allocator, run `_initialize`, create the root context, run
//!   `proxy_on_vm_start` and `proxy_on_configure`. `INSTANCE_STARTS` sequential starts, each
//!   instance dropped before the next (so its pool slot is recycled), after a few unmeasured ones;
//! - `linear memory`: the instance's linear memory after start (`Instance::memory_bytes`);
//! - `rss per instance`: growth of the process's resident memory (`VmRSS` of
//!   `/proc/self/status`) while `INSTANCES_HELD` started instances are alive, divided by their
//!   number — what each live instance really costs (touched linear-memory pages, tables, the
//!   store and the host's per-instance state);
//! - `start (held)`: the start time of those held instances, each into a fresh pool slot.
//!
//! Besides the table, one `result key=value ...` line per target is printed for scripts.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use weft_host::wasm::{
    EngineSettings, GuestLimits, WasmHost,
    instance::{Instance, InstanceSpec},
    properties::PluginIdentity,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let starts = env_count("INSTANCE_STARTS", 200);
    let held = env_count("INSTANCES_HELD", 100);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let host = WasmHost::new(EngineSettings::default(), &prometheus::Registry::new())?;
        println!(
            "plugin instances of `passthrough`: {starts} sequential starts, {held} held at once \
             (EngineSettings::default(), {} CPUs)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        for (target, path) in [
            ("wasm32-wasip1", weft_test_artifacts::PASSTHROUGH_WASIP1),
            (
                "wasm32-unknown-unknown",
                weft_test_artifacts::PASSTHROUGH_UNKNOWN,
            ),
        ] {
            measure(&host, target, path, starts, held).await?;
        }
        Ok(())
    })
}

async fn measure(
    host: &Arc<WasmHost>,
    target: &str,
    path: &str,
    starts: usize,
    held: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
    let begin = Instant::now();
    let module = host.runtime.compile(&bytes)?;
    let compile = begin.elapsed();
    let begin = Instant::now();
    let pre = host.linker.instantiate_pre(&module.module)?;
    let instantiate_pre = begin.elapsed();
    let spec = InstanceSpec {
        plugin: format!("passthrough-{target}").into(),
        identity: Arc::new(PluginIdentity {
            name: "passthrough".into(),
            root_id: String::new(),
            vm_id: format!("passthrough-{target}"),
        }),
        configuration: Bytes::new(),
        limits: GuestLimits {
            // The Plugin defaults of the configuration (`deadline: 100ms`, `memoryLimit: 64Mi`).
            deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
        },
    };
    let start = async || {
        Instance::start(host, &pre, &spec)
            .await
            .map_err(|failure| format!("starting an instance failed: {failure}"))
    };

    // Sequential starts, each instance dropped before the next one.
    for _ in 0..10 {
        drop(start().await?);
    }
    let mut times = Vec::with_capacity(starts);
    let mut memory = 0;
    for _ in 0..starts {
        let begin = Instant::now();
        let instance = start().await?;
        times.push(begin.elapsed());
        memory = instance.memory_bytes();
        drop(instance);
    }

    // Many live instances at once: resident memory per instance.
    let rss_before = rss_bytes()?;
    let mut live = Vec::with_capacity(held);
    let mut held_times = Vec::with_capacity(held);
    for _ in 0..held {
        let begin = Instant::now();
        live.push(start().await?);
        held_times.push(begin.elapsed());
    }
    let rss_after = rss_bytes()?;
    let rss_per_instance = rss_after.saturating_sub(rss_before) as f64 / held.max(1) as f64;
    drop(live);

    let t = Summary::of(&mut times);
    let h = Summary::of(&mut held_times);
    println!();
    println!("{target}: {path} ({} bytes)", bytes.len());
    println!(
        "  compile                 {:>10}  (once per module)",
        fmt(compile)
    );
    println!(
        "  instantiate_pre         {:>10}  (once per filter)",
        fmt(instantiate_pre)
    );
    println!(
        "  start                   median {}  p99 {}  mean {}  min {}  max {}  (n={starts})",
        fmt(t.median),
        fmt(t.p99),
        fmt(t.mean),
        fmt(t.min),
        fmt(t.max)
    );
    println!(
        "  start (held)            median {}  p99 {}  (n={held}, each into a fresh slot)",
        fmt(h.median),
        fmt(h.p99)
    );
    println!(
        "  linear memory           {:>10.1} KiB per instance ({} pages of 64 KiB)",
        memory as f64 / 1024.0,
        memory / 65536
    );
    println!(
        "  rss per instance        {:>10.1} KiB  ({held} held: VmRSS {:.1} -> {:.1} MiB)",
        rss_per_instance / 1024.0,
        rss_before as f64 / (1 << 20) as f64,
        rss_after as f64 / (1 << 20) as f64
    );
    println!(
        "result target={target} module_bytes={} compile_us={:.0} instantiate_pre_us={:.1} \
         start_us_median={:.1} start_us_p99={:.1} start_us_mean={:.1} start_held_us_median={:.1} \
         start_held_us_p99={:.1} linear_memory_bytes={memory} rss_bytes_per_instance={:.0}",
        bytes.len(),
        micros(compile),
        micros(instantiate_pre),
        micros(t.median),
        micros(t.p99),
        micros(t.mean),
        micros(h.median),
        micros(h.p99),
        rss_per_instance
    );
    Ok(())
}

/// Order statistics of a sample.
struct Summary {
    median: Duration,
    p99: Duration,
    mean: Duration,
    min: Duration,
    max: Duration,
}

impl Summary {
    fn of(sample: &mut [Duration]) -> Summary {
        sample.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * sample.len() as f64).ceil() as usize).clamp(1, sample.len().max(1));
            sample.get(rank - 1).copied().unwrap_or_default()
        };
        let total: Duration = sample.iter().sum();
        Summary {
            median: at(0.5),
            p99: at(0.99),
            mean: total / u32::try_from(sample.len().max(1)).unwrap_or(u32::MAX),
            min: sample.first().copied().unwrap_or_default(),
            max: sample.last().copied().unwrap_or_default(),
        }
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn fmt(d: Duration) -> String {
    let us = micros(d);
    if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.1}us")
    }
}

/// Resident memory of this process, from `VmRSS` in `/proc/self/status`.
fn rss_bytes() -> Result<usize, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<usize>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(default)
}
