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
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
};
use tokio_stream::wrappers::ReceiverStream;
use weft_control::{
    client::{self, Clients},
    proto::{ApplyRequest, DiscoveryRequest, StatusReply, StatusRequest},
    server::DEFAULT_DEBOUNCE,
    token::TOKEN_FILE,
};

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

/// The `weft control` child process; killed when dropped (also when the bench fails).
struct ControlPlane {
    child: Child,
    url: String,
    admin: SocketAddr,
    token: String,
    log: PathBuf,
    /// Holds the data directory and the log until the control plane is gone.
    _dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts `weft control` on two free loopback ports over a fresh data directory.
    fn spawn() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating the data directory")?;
        let (listen, admin) = (free_port()?, free_port()?);
        let log = dir.path().join("control.log");
        let log_file = std::fs::File::create(&log).context("creating the control plane's log")?;
        let child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("control")
            .args(["--listen", &listen.to_string()])
            .args(["--admin", &admin.to_string()])
            .arg("--data")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("opening the log")?)
            .stderr(log_file)
            .spawn()
            .context("spawning `weft control`")?;
        Ok(Self {
            child,
            url: format!("http://{listen}"),
            admin,
            token: String::new(),
            log,
            _dir: dir,
        })
    }

    /// Waits until the token exists and `Discovery.Status` answers; the clients of that call.
    async fn connect(&mut self) -> anyhow::Result<Clients> {
        let token_path = self.log.with_file_name("data").join(TOKEN_FILE);
        let deadline = Instant::now() + TIMEOUT;
        let mut last_error = String::from("not started");
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .try_wait()
                .context("checking the control plane")?
            {
                anyhow::bail!("`weft control` exited ({status}):\n{}", self.log_tail());
            }
            if let Ok(token) = std::fs::read_to_string(&token_path) {
                self.token = token.trim().to_owned();
                match client::connect(&self.url, &self.token).await {
                    Ok(mut clients) => match clients.discovery.status(StatusRequest {}).await {
                        Ok(_) => return Ok(clients),
                        Err(e) => last_error = e.to_string(),
                    },
                    Err(e) => last_error = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!(
            "`weft control` did not serve within {TIMEOUT:?} ({last_error}):\n{}",
            self.log_tail()
        )
    }

    /// Its memory now.
    fn memory(&self) -> anyhow::Result<Memory> {
        Memory::read(&PathBuf::from(format!("/proc/{}/status", self.child.id())))
    }

    /// The size of the files in its data directory.
    fn data_bytes(&self) -> u64 {
        std::fs::read_dir(self.log.with_file_name("data"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// `GET /stats/prometheus` on its admin address.
    async fn metrics(&self) -> anyhow::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(self.admin).await?;
        stream
            .write_all(b"GET /stats/prometheus HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
            _ => anyhow::bail!("unexpected answer: {response:.200}"),
        }
    }

    /// SIGTERM, then up to 5 s for a clean stop (the drop kills it otherwise).
    async fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id())
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of its log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free loopback port (bound, read, released: the child binds it right after).
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// A process's resident memory and threads, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// `VmRSS`, KiB.
    rss_kib: u64,
    /// `VmHWM` (peak RSS), KiB.
    hwm_kib: u64,
    /// `Threads` (tokio's workers and its blocking pool, which grows on demand).
    threads: u64,
}

impl Memory {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in {}", path.display()))
        };
        Ok(Self {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            threads: field("Threads:")?,
        })
    }
}

/// One simulated proxy: when each version arrived.
struct Sim {
    node: String,
    received: Mutex<Vec<(u64, Instant)>>,
}

impl Sim {
    /// When the first snapshot of at least `version` arrived.
    fn arrival(&self, version: u64) -> Option<Instant> {
        lock(&self.received)
            .iter()
            .find(|(v, _)| *v >= version)
            .map(|(_, at)| *at)
    }
}

/// The simulated proxies and their tasks (aborted when dropped).
struct Fleet {
    sims: Vec<Arc<Sim>>,
    failures: Arc<Mutex<Vec<String>>>,
    first_snapshot_bytes: Arc<AtomicUsize>,
    _tasks: JoinSet<()>,
}

impl Fleet {
    /// Starts `proxies` simulated proxies, [`CONNECT_CONCURRENCY`] connecting at once.
    fn connect(proxies: usize, url: &str, token: &str) -> Self {
        let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let first_snapshot_bytes = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        let sims: Vec<Arc<Sim>> = (0..proxies)
            .map(|i| {
                Arc::new(Sim {
                    node: format!("sim-{i:04}"),
                    received: Mutex::new(Vec::new()),
                })
            })
            .collect();
        for sim in &sims {
            let (sim, gate, url, token) =
                (sim.clone(), gate.clone(), url.to_owned(), token.to_owned());
            let (failures, bytes) = (failures.clone(), first_snapshot_bytes.clone());
            tasks.spawn(async move {
                let Ok(permit) = gate.acquire_owned().await else {
                    return;
                };
                if let Err(e) = follow(&sim, &url, &token, permit, &bytes).await {
                    lock(&failures).push(format!("{}: {e:#}", sim.node));
                }
            });
        }
        Self {
            sims,
            failures,
            first_snapshot_bytes,
            _tasks: tasks,
        }
    }

    /// Fails if a simulated proxy lost its stream.
    fn check(&self) -> anyhow::Result<()> {
        let failures = lock(&self.failures);
        match failures.first() {
            Some(first) => anyhow::bail!(
                "{} simulated proxies failed; first: {first}",
                failures.len()
            ),
            None => Ok(()),
        }
    }

    /// Waits until every simulated proxy received `version` (or newer); when each did.
    async fn wait_all_received(&self, version: u64) -> anyhow::Result<Vec<Instant>> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            self.check()?;
            let arrivals: Vec<Instant> = self
                .sims
                .iter()
                .filter_map(|s| s.arrival(version))
                .collect();
            if arrivals.len() == self.sims.len() {
                return Ok(arrivals);
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "only {} of {} simulated proxies received version {version} within {TIMEOUT:?}",
                    arrivals.len(),
                    self.sims.len()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// One simulated proxy's life: its own connection, one Subscribe stream, an immediate ACK of
/// every snapshot. Releases `permit` once the first snapshot arrived.
async fn follow(
    sim: &Sim,
    url: &str,
    token: &str,
    permit: OwnedSemaphorePermit,
    first_bytes: &AtomicUsize,
) -> anyhow::Result<()> {
    let mut clients = client::connect(url, token).await?;
    let (requests, outbound) = mpsc::channel(4);
    requests
        .send(DiscoveryRequest {
            node: sim.node.clone(),
            version_info: 0,
            response_nonce: String::new(),
            error_detail: String::new(),
        })
        .await?;
    let mut snapshots = clients
        .discovery
        .subscribe(ReceiverStream::new(outbound))
        .await
        .context("subscribe")?
        .into_inner();
    let mut permit = Some(permit);
    while let Some(snapshot) = snapshots.message().await.context("discovery stream")? {
        let at = Instant::now();
        lock(&sim.received).push((snapshot.version, at));
        requests
            .send(DiscoveryRequest {
                node: sim.node.clone(),
                version_info: snapshot.version,
                response_nonce: snapshot.nonce,
                error_detail: String::new(),
            })
            .await?;
        if permit.take().is_some() {
            first_bytes.store(snapshot.yaml.len(), Ordering::Relaxed);
        }
    }
    anyhow::bail!("the control plane ended the discovery stream")
}

/// What `Discovery.Status` said once every simulated proxy was connected and ACKed.
struct Acked {
    /// From the start instant to the poll that saw it.
    elapsed: Duration,
    /// How long each `Status` call of the wait took (request to reply).
    calls: Vec<Duration>,
}

/// Polls `Discovery.Status` every [`POLL`] until every simulated proxy is connected with
/// `version` (or newer) applied.
async fn wait_all_acked(
    clients: &mut Clients,
    fleet: &Fleet,
    version: u64,
    since: Instant,
) -> anyhow::Result<Acked> {
    let deadline = Instant::now() + TIMEOUT;
    let mut calls = Vec::new();
    loop {
        let call = Instant::now();
        let reply: StatusReply = clients
            .discovery
            .status(StatusRequest {})
            .await
            .context("Discovery.Status")?
            .into_inner();
        calls.push(call.elapsed());
        let elapsed = since.elapsed();
        let acked = reply
            .proxies
            .iter()
            .filter(|p| p.node.starts_with("sim-") && p.connected && p.applied_version >= version)
            .count();
        if acked == fleet.sims.len() {
            return Ok(Acked { elapsed, calls });
        }
        fleet.check()?;
        if Instant::now() > deadline {
            anyhow::bail!(
                "Status: only {acked} of {} simulated proxies ACKed version {version} within {TIMEOUT:?}",
                fleet.sims.len()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One round's figures.
struct Round {
    version: u64,
    /// The `Resources.Apply` call.
    apply: Duration,
    /// Until `Status` showed every proxy ACKed.
    all_acked: Duration,
    /// The `Status` calls of that wait, each from request to reply.
    status_calls: Vec<Duration>,
    /// Each proxy's convergence (arrival of the new version − the instant before Apply).
    per_proxy: Vec<Duration>,
}

/// Everything measured.
struct Report {
    settings: Settings,
    snapshot_bytes: usize,
    connect_time: Duration,
    idle: Memory,
    connected: Memory,
    after: Memory,
    /// The data directory's size after the rounds.
    data_bytes: u64,
    /// After the rounds and [`THREADS_IDLE`].
    rested: Memory,
    bench_idle: Memory,
    bench_connected: Memory,
    results: Vec<Round>,
    metrics: String,
}

impl Report {
    fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut all: Vec<Duration> = self
            .results
            .iter()
            .flat_map(|r| r.per_proxy.iter().copied())
            .collect();
        all.sort();
        let mut acked: Vec<Duration> = self.results.iter().map(|r| r.all_acked).collect();
        acked.sort();
        let mut apply: Vec<Duration> = self.results.iter().map(|r| r.apply).collect();
        apply.sort();
        let worst = all
            .last()
            .copied()
            .unwrap_or_default()
            .max(acked.last().copied().unwrap_or_default());
        let verdict = if worst <= TARGET { "PASS" } else { "FAIL" };
        let n = self.settings.proxies as f64;
        let per_proxy_kib = (self.connected.rss_kib as f64 - self.idle.rss_kib as f64) / n;
        let bench_per_proxy_kib =
            (self.bench_connected.rss_kib as f64 - self.bench_idle.rss_kib as f64) / n;

        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Control-plane convergence: {} proxies, {} rounds\n",
            self.settings.proxies, self.settings.rounds
        );
        let _ = writeln!(
            out,
            "`PROXIES={} ROUNDS={} ENDPOINTS={} cargo bench -p weft --bench convergence` — weft {}, \
             unix time {}, {} CPUs, RLIMIT_NOFILE {}.\n",
            self.settings.proxies,
            self.settings.rounds,
            self.settings.endpoints,
            git_commit(),
            unix_time(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            self.settings.fds,
        );
        let _ = writeln!(
            out,
            "`weft control` in a child process (debounce {} ms, the default); {} simulated proxies \
             in the bench process, each with its own gRPC connection and Subscribe stream, ACKing \
             every snapshot on arrival; a snapshot is {} bytes of YAML (a Cluster of {} endpoints and \
             a Listener). Connecting all of them ({CONNECT_CONCURRENCY} at a time) until Status \
             showed every one ACKed took {}. Each round changes the port of the Cluster's \
             endpoints.\n",
            DEFAULT_DEBOUNCE.as_millis(),
            self.settings.proxies,
            self.snapshot_bytes,
            self.settings.endpoints,
            ms(self.connect_time),
        );
        let _ = writeln!(
            out,
            "| from `Resources.Apply` (t0 just before the call) | p50 | p99 | max |"
        );
        let _ = writeln!(out, "|---|---|---|---|");
        let row = |out: &mut String, what: &str, sorted: &[Duration]| {
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} |",
                ms(percentile(sorted, 0.50)),
                ms(percentile(sorted, 0.99)),
                ms(sorted.last().copied().unwrap_or_default()),
            );
        };
        row(
            &mut out,
            &format!(
                "each proxy received (and ACKed) the new version ({} samples)",
                all.len()
            ),
            &all,
        );
        row(
            &mut out,
            &format!(
                "all {} ACKed, as `Discovery.Status` reports (per round, polled every {} ms)",
                self.settings.proxies,
                POLL.as_millis()
            ),
            &acked,
        );
        row(
            &mut out,
            "the `Resources.Apply` call itself (per round)",
            &apply,
        );
        let mut calls: Vec<Duration> = self
            .results
            .iter()
            .flat_map(|r| r.status_calls.iter().copied())
            .collect();
        calls.sort();
        row(
            &mut out,
            &format!(
                "one `Discovery.Status` call, request to reply ({} calls)",
                calls.len()
            ),
            &calls,
        );
        let _ = writeln!(
            out,
            "\nA per-proxy time is taken when the snapshot arrives in the simulated proxy, which \
             ACKs it at once. \"All ACKed\" is taken when the reply of the first `Status` call \
             showing every proxy ACKed arrives: it includes that call (the last row) and up \
             to {} ms of polling.\n\n\
             **Target: every proxy converged within {} s — {verdict}** (slowest: {}, the larger \
             of the slowest proxy and the slowest \"all ACKed\").\n",
            POLL.as_millis(),
            TARGET.as_secs(),
            ms(worst)
        );

        let _ = writeln!(
            out,
            "| control plane (`/proc/PID/status`) | VmRSS | VmHWM (peak) | threads |"
        );
        let _ = writeln!(out, "|---|---|---|---|");
        for (what, m) in [
            ("started, resources applied, no proxy", self.idle),
            (
                &*format!("{} proxies connected, idle", self.settings.proxies),
                self.connected,
            ),
            (
                &*format!("after {} rounds", self.settings.rounds),
                self.after,
            ),
            (
                &*format!(
                    "then {} s idle (idle blocking-pool threads have exited)",
                    THREADS_IDLE.as_secs()
                ),
                self.rested,
            ),
        ] {
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} |",
                mib(m.rss_kib),
                mib(m.hwm_kib),
                m.threads
            );
        }
        let _ = writeln!(
            out,
            "\n**Per connected proxy: {per_proxy_kib:.1} KiB** of control-plane RSS \
             ((connected − no proxy) ÷ {}). The simulator (this process) grew by \
             {bench_per_proxy_kib:.1} KiB per proxy. The data directory (the store) holds \
             {:.1} MiB after the rounds.\n",
            self.settings.proxies,
            self.data_bytes as f64 / 1024.0 / 1024.0,
        );

        let _ = writeln!(
            out,
            "| round | version | apply | proxies p50 | p99 | max | all ACKed (Status) |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for (i, round) in self.results.iter().enumerate() {
            let mut sorted = round.per_proxy.clone();
            sorted.sort();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                i + 1,
                round.version,
                ms(round.apply),
                ms(percentile(&sorted, 0.50)),
                ms(percentile(&sorted, 0.99)),
                ms(sorted.last().copied().unwrap_or_default()),
                ms(round.all_acked),
            );
        }
        let _ = writeln!(out, "\n{}", histogram_summary(&self.metrics));
        out
    }
}

/// The control plane's `weft_control_convergence_seconds` (accepted change → each ACK) and
/// push counter, from its metrics text.
fn histogram_summary(metrics: &str) -> String {
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let mut buckets: Vec<(String, f64)> = Vec::new();
    let (mut sum, mut count, mut pushes) = (None, None, None);
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("weft_control_convergence_seconds_bucket{le=\"") {
            if let (Some((le, _)), Some(v)) = (rest.split_once('"'), value(line)) {
                buckets.push((le.to_owned(), v));
            }
        } else if line.starts_with("weft_control_convergence_seconds_sum ") {
            sum = value(line);
        } else if line.starts_with("weft_control_convergence_seconds_count ") {
            count = value(line);
        } else if line.starts_with("weft_control_pushes_total ") {
            pushes = value(line);
        }
    }
    let (Some(sum), Some(count)) = (sum, count) else {
        return "The control plane's convergence histogram was not available.".to_owned();
    };
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, v)| *v >= q * count)
            .map_or_else(|| "?".to_owned(), |(le, _)| format!("≤ {le} s"))
    };
    format!(
        "The control plane's own `weft_control_convergence_seconds` (accepted change → each ACK, \
         from `/stats/prometheus`): {count} ACKs, mean {:.1} ms, p50 {}, p99 {} (bucket bounds); \
         `weft_control_pushes_total` {}.",
        if count > 0.0 {
            sum / count * 1000.0
        } else {
            0.0
        },
        quantile(0.50),
        quantile(0.99),
        pushes.map_or_else(|| "?".to_owned(), |p| p.to_string()),
    )
}

/// Nearest-rank percentile of `sorted`.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The checked-out commit, when git can tell.
fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "(unknown commit)".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

/// Writes `report` to `bench/out/convergence-UNIXTIME.md` (`bench/out` is gitignored).
fn write_report(report: &str) -> anyhow::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = manifest.parent().unwrap_or(manifest).join("bench/out");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("convergence-{}.md", unix_time()));
    std::fs::write(&path, report).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
