//! How fast a change reaches 1,000 proxies, and what each connected proxy costs the control
//! plane (issue 5's figure): one process simulating `PROXIES` proxies subscribed to one
//! control plane.
//!
//! ```text
//! cargo bench -p weft --bench convergence
//! PROXIES=1000 ROUNDS=10 cargo bench -p weft --bench convergence
//! ```
//!
//! The control plane is the real `weft control`, run as a child process over a temporary data
//! directory, so its memory (`VmRSS`, `VmHWM` of `/proc/PID/status`) is its own. The bench
//! applies a Cluster (of `ENDPOINTS` endpoints, 2 by default) and a Listener, then connects `PROXIES` simulated proxies (`sim-0000`, ...),
//! 50 at a time, each with its own gRPC connection and one `Discovery.Subscribe` stream, like
//! that many real proxies; a simulated proxy ACKs every snapshot as soon as it arrives and notes
//! when each version arrived. Then, `ROUNDS` times, it changes the port of the Cluster's
//! endpoints and:
//!
//! - per proxy: from just before `Resources.Apply` to the arrival of the snapshot carrying the
//!   new version (it is ACKed at once);
//! - per round: from the same instant until `Discovery.Status` (polled every 10 ms) reports every
//!   proxy connected with that version applied: all of them ACKed, as the control plane sees it.
//!
//! Memory per connected proxy is the growth of the control plane's RSS from "started, resources
//! applied, no proxy" to "every proxy connected and idle", divided by `PROXIES`. The report (with
//! the control plane's own `weft_control_convergence_seconds` histogram and the 2 s target's
//! PASS/FAIL) is printed and written as markdown to `bench/out/convergence-UNIXTIME.md`.

use std::{
    path::Path,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use weft_control::proto::ApplyRequest;

use crate::{
    control::{ControlPlane, Memory},
    fleet::{Fleet, wait_all_acked},
    report::{Report, Round, write_report},
};

mod control;
mod fleet;
mod report;

/// The issue's target: every proxy converged within this.
const TARGET: Duration = Duration::from_secs(2);
/// Simulated proxies connecting (and waiting for their first snapshot) at once.
const CONNECT_CONCURRENCY: usize = 50;
/// How often `Discovery.Status` is polled while waiting for every ACK.
const POLL: Duration = Duration::from_millis(10);
/// The pause between rounds (well over the debounce, so each round is one push).
const BETWEEN_ROUNDS: Duration = Duration::from_millis(500);
/// How long the fleet is left idle before its memory is read.
const SETTLE: Duration = Duration::from_secs(1);
/// How long the fleet is left idle after the rounds before memory is read again: more than
/// the 10 s after which tokio ends an idle blocking-pool thread (the control plane reads the
/// store in `spawn_blocking`).
const THREADS_IDLE: Duration = Duration::from_secs(12);
/// Longest wait for the control plane to start, the fleet to connect, or a round to converge.
const TIMEOUT: Duration = Duration::from_secs(120);
/// File descriptors the bench needs besides one per simulated proxy (and the control plane
/// besides one per connection).
const SPARE_FDS: u64 = 256;

/// The base resources: a Cluster of `endpoints` endpoints, whose port each round changes, and
/// a Listener.
fn resources(endpoints: usize, port: u32) -> String {
    let endpoints: Vec<String> = (0..endpoints)
        .map(|i| format!("\"10.0.{}.{}:{port}\"", i / 250, i % 250 + 1))
        .collect();
    let endpoints = endpoints.join(", ");
    format!(
        "apiVersion: weft/v1
kind: Cluster
metadata: {{name: backend}}
spec:
  endpoints: [{endpoints}]
---
apiVersion: weft/v1
kind: Listener
metadata: {{name: public}}
spec:
  address: 0.0.0.0:8080
  defaultCluster: backend
"
    )
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench` (and any filter): there are no arguments to take.
    let proxies = env_count("PROXIES", 1000)?;
    let settings = Settings {
        proxies,
        rounds: env_count("ROUNDS", 10)?,
        endpoints: env_count("ENDPOINTS", 2)?,
        fds: raise_fd_limit(proxies)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(run(settings))?;
    println!("{report}");
    let path = write_report(&report)?;
    println!("report written to {}", path.display());
    Ok(())
}

/// What to run, from the environment.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// `PROXIES`: simulated proxies.
    proxies: usize,
    /// `ROUNDS`: changes applied and timed.
    rounds: usize,
    /// `ENDPOINTS`: endpoints of the Cluster (the snapshot's size grows with them).
    endpoints: usize,
    /// The soft `RLIMIT_NOFILE` in force.
    fds: u64,
}

/// `NAME` from the environment as a positive count, `default` when unset.
fn env_count(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => anyhow::bail!("{name}={text}: expected a positive whole number"),
        },
        Err(_) => Ok(default),
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one when `proxies` connections would not fit
/// (the control plane, spawned afterwards, inherits it). Returns the soft limit in force.
fn raise_fd_limit(proxies: usize) -> anyhow::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let needed = u64::try_from(proxies).unwrap_or(u64::MAX) + SPARE_FDS;
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return Ok(soft);
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard < needed {
        anyhow::bail!(
            "{proxies} proxies need about {needed} file descriptors in this process (and as many \
             in the control plane), but RLIMIT_NOFILE's hard limit is {hard}: raise it \
             (`ulimit -Hn`, limits.conf) or lower PROXIES"
        );
    }
    let mut raised = limit;
    raised.current = limit.maximum;
    setrlimit(Resource::Nofile, raised)
        .with_context(|| format!("cannot raise RLIMIT_NOFILE from {soft} to {hard}"))?;
    Ok(hard)
}

/// The whole benchmark; returns the report as markdown.
async fn run(settings: Settings) -> anyhow::Result<String> {
    let Settings {
        proxies,
        rounds,
        endpoints,
        ..
    } = settings;
    let mut control = ControlPlane::spawn()?;
    let mut admin = control.connect().await?;
    let base = admin
        .resources
        .apply(ApplyRequest {
            yaml: resources(endpoints, 9000),
        })
        .await
        .context("applying the base resources")?
        .into_inner()
        .version;
    tokio::time::sleep(SETTLE).await;
    let idle = control.memory()?;
    let bench_idle = Memory::read(Path::new("/proc/self/status"))?;

    let begin = Instant::now();
    let fleet = Fleet::connect(proxies, &control.url, &control.token);
    fleet.wait_all_received(base).await?;
    wait_all_acked(&mut admin, &fleet, base, begin).await?;
    let connect_time = begin.elapsed();
    let snapshot_bytes = fleet.first_snapshot_bytes.load(Ordering::Relaxed);
    tokio::time::sleep(SETTLE).await;
    fleet.check()?;
    let connected = control.memory()?;
    let bench_connected = Memory::read(Path::new("/proc/self/status"))?;

    let mut results = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        // A new port each round (kept a valid port however many rounds run).
        let port = 9000 + u32::try_from(round % 50_000).unwrap_or(0);
        let t0 = Instant::now();
        let reply = admin
            .resources
            .apply(ApplyRequest {
                yaml: resources(endpoints, port),
            })
            .await
            .with_context(|| format!("round {round}: apply"))?
            .into_inner();
        let apply = t0.elapsed();
        let version = reply.version;
        anyhow::ensure!(
            version > results.last().map_or(base, |r: &Round| r.version),
            "round {round}: the apply did not bump the version ({version})"
        );
        let acked = wait_all_acked(&mut admin, &fleet, version, t0).await?;
        let received = fleet.wait_all_received(version).await?;
        results.push(Round {
            version,
            apply,
            all_acked: acked.elapsed,
            status_calls: acked.calls,
            per_proxy: received
                .into_iter()
                .map(|at| at.saturating_duration_since(t0))
                .collect(),
        });
        tokio::time::sleep(BETWEEN_ROUNDS).await;
    }
    fleet.check()?;
    let after = control.memory()?;
    let data_bytes = control.data_bytes();
    tokio::time::sleep(THREADS_IDLE).await;
    let rested = control.memory()?;
    let metrics = control
        .metrics()
        .await
        .unwrap_or_else(|e| format!("# unavailable: {e:#}\n"));
    drop(fleet);
    control.stop().await;

    Ok(Report {
        settings,
        snapshot_bytes,
        connect_time,
        idle,
        connected,
        after,
        data_bytes,
        rested,
        bench_idle,
        bench_connected,
        results,
        metrics,
    }
    .markdown())
}
