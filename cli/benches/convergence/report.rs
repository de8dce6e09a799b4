//! The report: percentiles, the memory table, the control plane's own histogram, as markdown
//! printed and written to `bench/out/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use weft_control::server::DEFAULT_DEBOUNCE;

use crate::{CONNECT_CONCURRENCY, POLL, Settings, TARGET, THREADS_IDLE, control::Memory};

/// One round's figures.
pub(crate) struct Round {
    pub(crate) version: u64,
    /// The `Resources.Apply` call.
    pub(crate) apply: Duration,
    /// Until `Status` showed every proxy ACKed.
    pub(crate) all_acked: Duration,
    /// The `Status` calls of that wait, each from request to reply.
    pub(crate) status_calls: Vec<Duration>,
    /// Each proxy's convergence (arrival of the new version − the instant before Apply).
    pub(crate) per_proxy: Vec<Duration>,
}

/// Everything measured.
pub(crate) struct Report {
    pub(crate) settings: Settings,
    pub(crate) snapshot_bytes: usize,
    pub(crate) connect_time: Duration,
    pub(crate) idle: Memory,
    pub(crate) connected: Memory,
    pub(crate) after: Memory,
    /// The data directory's size after the rounds.
    pub(crate) data_bytes: u64,
    /// After the rounds and [`THREADS_IDLE`].
    pub(crate) rested: Memory,
    pub(crate) bench_idle: Memory,
    pub(crate) bench_connected: Memory,
    pub(crate) results: Vec<Round>,
    pub(crate) metrics: String,
}

impl Report {
    pub(crate) fn markdown(&self) -> String {
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
pub(crate) fn write_report(report: &str) -> anyhow::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = manifest.parent().unwrap_or(manifest).join("bench/out");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("convergence-{}.md", unix_time()));
    std::fs::write(&path, report).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
