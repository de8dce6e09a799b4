//! The simulated proxies: each its own gRPC connection and Subscribe stream, ACKing every
//! snapshot as it arrives; and waiting for `Discovery.Status` to show them all ACKed.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use weft_control::{
    client::{self, Clients},
    proto::{DiscoveryRequest, StatusReply, StatusRequest},
};

use crate::{CONNECT_CONCURRENCY, POLL, TIMEOUT};

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
pub(crate) struct Fleet {
    sims: Vec<Arc<Sim>>,
    failures: Arc<Mutex<Vec<String>>>,
    pub(crate) first_snapshot_bytes: Arc<AtomicUsize>,
    _tasks: JoinSet<()>,
}

impl Fleet {
    /// Starts `proxies` simulated proxies, [`CONNECT_CONCURRENCY`] connecting at once.
    pub(crate) fn connect(proxies: usize, url: &str, token: &str) -> Self {
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
    pub(crate) fn check(&self) -> anyhow::Result<()> {
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
    pub(crate) async fn wait_all_received(&self, version: u64) -> anyhow::Result<Vec<Instant>> {
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
    let (requests, mut snapshots) = clients.subscribe(&sim.node, 0).await.context("subscribe")?;
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
pub(crate) struct Acked {
    /// From the start instant to the poll that saw it.
    pub(crate) elapsed: Duration,
    /// How long each `Status` call of the wait took (request to reply).
    pub(crate) calls: Vec<Duration>,
}

/// Polls `Discovery.Status` every [`POLL`] until every simulated proxy is connected with
/// `version` (or newer) applied.
pub(crate) async fn wait_all_acked(
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
