//! Discovery: one streaming call per proxy, in the xDS shape.
//!
//! A proxy's first [`DiscoveryRequest`] names its node; the control plane answers with the
//! current [`Snapshot`]. Every accepted change (apply, delete, a publish that moves a
//! `registry://NAME` plugin) is announced on a `watch` channel; each subscriber waits the
//! debounce interval after the first announcement it sees (so a burst of changes becomes one
//! push), then sends the newest snapshot with a fresh nonce. The proxy answers each snapshot
//! with its nonce: an empty `error_detail` ACKs it, anything else NACKs it. Both are recorded
//! per node for `Status`, and an ACK of a pushed change observes the convergence time.
//!
//! Snapshots are built once per version and shared by every subscriber.

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use weft_host::config::PluginSource;

use super::{metrics::Metrics, status};
use crate::{
    proto::{
        DiscoveryRequest, ModuleRef, ProxyStatus, Snapshot, StatusReply, StatusRequest,
        discovery_server::Discovery,
    },
    registry,
    resources::plugin_source,
    store::{self, RESOURCE_VERSION, Store, StoreError},
};

/// How many pushed snapshots a subscriber remembers, so a late ACK still finds its version.
const REMEMBERED_PUSHES: usize = 8;

/// An accepted change: the version it produced and when.
#[derive(Debug, Clone, Copy)]
struct ChangeEvent {
    version: u64,
    at: Instant,
}

/// What `Status` reports about one node.
#[derive(Debug, Clone, Default)]
struct ProxyState {
    connections: u32,
    applied_version: u64,
    last_nack_version: u64,
    last_nack_error: String,
    last_seen_unix_ms: u64,
}

/// A snapshot's content, built once per version.
#[derive(Debug)]
struct Content {
    version: u64,
    yaml: String,
    modules: Vec<ModuleRef>,
}

/// A snapshot sent to one subscriber.
struct Pushed {
    nonce: String,
    version: u64,
    /// When the change it carries was accepted; `None` for the snapshot sent on connect.
    changed_at: Option<Instant>,
}

/// Discovery's shared state: the change feed, every node's state and the snapshot cache.
pub(crate) struct Hub {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    debounce: Duration,
    changes: watch::Sender<ChangeEvent>,
    proxies: Mutex<BTreeMap<String, ProxyState>>,
    cache: Mutex<Option<Arc<Content>>>,
    /// Held while a snapshot is built, so a version is built once.
    building: tokio::sync::Mutex<()>,
    nonces: AtomicU64,
    shutdown: watch::Receiver<bool>,
    tasks: Mutex<JoinSet<()>>,
}

impl Hub {
    /// A hub over `store`, whose resources are at `version` now.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        version: u64,
        debounce: Duration,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let (changes, _) = watch::channel(ChangeEvent {
            version,
            at: Instant::now(),
        });
        Self {
            store,
            metrics,
            debounce,
            changes,
            proxies: Mutex::new(BTreeMap::new()),
            cache: Mutex::new(None),
            building: tokio::sync::Mutex::new(()),
            nonces: AtomicU64::new(0),
            shutdown,
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// Announces an accepted change that produced `version`.
    pub(crate) fn changed(&self, version: u64) {
        let at = Instant::now();
        self.changes.send_if_modified(|current| {
            if version > current.version {
                *current = ChangeEvent { version, at };
                true
            } else {
                false
            }
        });
    }

    /// The newest version announced.
    pub(crate) fn version(&self) -> u64 {
        self.changes.borrow().version
    }

    /// Waits for every subscriber task to end (after shutdown was signalled).
    pub(crate) async fn join_subscribers(&self) {
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        while tasks.join_next().await.is_some() {}
    }

    /// The newest snapshot content, from the cache when it is current. One subscriber builds
    /// it; the others whose push falls due meanwhile wait for that build instead of reading
    /// the store again.
    async fn content(&self) -> Result<Arc<Content>, Status> {
        let wanted = self.version();
        if let Some(cached) = self.cached(wanted) {
            return Ok(cached);
        }
        let _building = self.building.lock().await;
        if let Some(cached) = self.cached(wanted) {
            return Ok(cached);
        }
        let store = self.store.clone();
        let built = Arc::new(
            status::blocking(move || build_content(&*store).map_err(status::store)).await?,
        );
        let mut cache = lock(&self.cache);
        match cache.as_ref() {
            Some(cached) if cached.version >= built.version => Ok(cached.clone()),
            _ => {
                *cache = Some(built.clone());
                Ok(built)
            }
        }
    }

    /// The cached content when it is at least `version`.
    fn cached(&self, version: u64) -> Option<Arc<Content>> {
        lock(&self.cache)
            .as_ref()
            .filter(|cached| cached.version >= version)
            .cloned()
    }

    fn next_nonce(&self) -> String {
        format!("{:x}", self.nonces.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn update(&self, node: &str, f: impl FnOnce(&mut ProxyState)) {
        let mut proxies = lock(&self.proxies);
        let state = proxies.entry(node.to_owned()).or_default();
        state.last_seen_unix_ms = now_unix_ms();
        f(state);
    }

    /// Records an ACK or NACK of one of `pushed`.
    fn answer(&self, node: &str, request: &DiscoveryRequest, pushed: &[Pushed]) {
        let Some(push) = pushed.iter().find(|p| p.nonce == request.response_nonce) else {
            tracing::debug!(node, nonce = %request.response_nonce, "answer to an unknown nonce ignored");
            self.update(node, |_| ());
            return;
        };
        if request.error_detail.is_empty() {
            self.update(node, |state| state.applied_version = push.version);
            if let Some(at) = push.changed_at {
                self.metrics.converged(at.elapsed());
            }
            tracing::debug!(node, version = push.version, "ACK");
        } else {
            self.update(node, |state| {
                state.applied_version = request.version_info;
                state.last_nack_version = push.version;
                state.last_nack_error = request.error_detail.clone();
            });
            self.metrics.rejections.inc();
            tracing::warn!(node, version = push.version, error = %request.error_detail, "NACK");
        }
    }

    fn status(&self) -> StatusReply {
        let proxies = lock(&self.proxies)
            .iter()
            .map(|(node, state)| ProxyStatus {
                node: node.clone(),
                connected: state.connections > 0,
                applied_version: state.applied_version,
                last_nack_version: state.last_nack_version,
                last_nack_error: state.last_nack_error.clone(),
                last_seen_unix_ms: state.last_seen_unix_ms,
            })
            .collect();
        StatusReply {
            proxies,
            version: self.version(),
        }
    }
}

/// A node's open Subscribe call; closing it (drop) updates the node and the gauge.
struct Connection<'a> {
    hub: &'a Hub,
    node: String,
}

impl<'a> Connection<'a> {
    fn open(hub: &'a Hub, node: String, version_info: u64) -> Self {
        hub.update(&node, |state| {
            state.connections += 1;
            if version_info > 0 {
                state.applied_version = version_info;
            }
        });
        hub.metrics.connected.inc();
        tracing::info!(node = %node, version_info, "proxy subscribed");
        Self { hub, node }
    }
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.hub.update(&self.node, |state| {
            state.connections = state.connections.saturating_sub(1);
        });
        self.hub.metrics.connected.dec();
        tracing::info!(node = %self.node, "proxy unsubscribed");
    }
}

/// One subscriber: sends the current snapshot, then pushes changes and records answers until
/// the proxy hangs up or the control plane shuts down.
async fn subscribe(
    hub: Arc<Hub>,
    mut inbound: Streaming<DiscoveryRequest>,
    out: mpsc::Sender<Result<Snapshot, Status>>,
) {
    let mut shutdown = hub.shutdown.clone();
    let first = tokio::select! {
        () = stopped(&mut shutdown) => return,
        first = inbound.message() => first,
    };
    let first = match first {
        Ok(Some(first)) => first,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(error = %e, "subscriber left before naming its node");
            return;
        }
    };
    if first.node.is_empty() {
        let refusal = Status::invalid_argument(
            "the first DiscoveryRequest must name the proxy's node (field `node`)",
        );
        let _ = out.send(Err(refusal)).await;
        return;
    }
    let connection = Connection::open(&hub, first.node, first.version_info);
    let node = connection.node.as_str();
    let mut changes = hub.changes.subscribe();
    changes.borrow_and_update();
    let mut pushed: Vec<Pushed> = Vec::new();
    if !push(&hub, &out, &mut pushed, None, &mut shutdown).await {
        return;
    }
    let mut push_at: Option<tokio::time::Instant> = None;
    let mut changed_at: Option<Instant> = None;
    loop {
        let deadline = async {
            match push_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stopped(&mut shutdown) => return,
            request = inbound.message() => match request {
                Ok(Some(request)) => hub.answer(node, &request, &pushed),
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(node, error = %e, "subscriber stream failed");
                    return;
                }
            },
            announced = changes.changed() => {
                if announced.is_err() {
                    return;
                }
                let event = *changes.borrow_and_update();
                changed_at.get_or_insert(event.at);
                push_at.get_or_insert_with(|| tokio::time::Instant::now() + hub.debounce);
            },
            () = deadline => {
                push_at = None;
                let at = changed_at.take();
                let newest_sent = pushed.last().map_or(0, |p| p.version);
                if hub.version() > newest_sent
                    && !push(&hub, &out, &mut pushed, at, &mut shutdown).await
                {
                    return;
                }
            },
        }
    }
}

/// Sends the newest snapshot; `false` when the subscriber is gone (or shutdown began).
async fn push(
    hub: &Hub,
    out: &mpsc::Sender<Result<Snapshot, Status>>,
    pushed: &mut Vec<Pushed>,
    changed_at: Option<Instant>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let content = match hub.content().await {
        Ok(content) => content,
        Err(status) => {
            let _ = out.send(Err(status)).await;
            return false;
        }
    };
    let nonce = hub.next_nonce();
    let snapshot = Snapshot {
        version: content.version,
        nonce: nonce.clone(),
        yaml: content.yaml.clone(),
        modules: content.modules.clone(),
    };
    let sent = tokio::select! {
        () = stopped(shutdown) => false,
        sent = out.send(Ok(snapshot)) => sent.is_ok(),
    };
    if sent {
        hub.metrics.pushes.inc();
        pushed.push(Pushed {
            nonce,
            version: content.version,
            changed_at,
        });
        if pushed.len() > REMEMBERED_PUSHES {
            pushed.remove(0);
        }
    }
    sent
}

/// Reads every resource and resolves every `registry://` plugin, in one transaction.
fn build_content(store: &dyn Store) -> Result<Content, StoreError> {
    store::read(store, |txn| {
        let version = txn.counter(RESOURCE_VERSION)?;
        let mut yaml = String::new();
        let mut modules: Vec<ModuleRef> = Vec::new();
        for resource in txn.resources(None)? {
            if !yaml.is_empty() {
                yaml.push_str("---\n");
            }
            yaml.push_str(&resource.yaml);
            if !yaml.ends_with('\n') {
                yaml.push('\n');
            }
            if resource.kind != "Plugin" {
                continue;
            }
            let Some(PluginSource::Registry { name, version }) = plugin_source(&resource.yaml)
            else {
                continue;
            };
            let url = match &version {
                Some(v) => format!("registry://{name}@{v}"),
                None => format!("registry://{name}"),
            };
            if modules.iter().any(|m| m.url == url) {
                continue;
            }
            // Apply refuses a plugin whose module is not published, and delete refuses to
            // remove one in use, so every url resolves.
            if let Some(found) = registry::resolve(txn, &name, version.as_deref())? {
                modules.push(ModuleRef {
                    generation: txn.counter(&registry::reload_counter(&name))?,
                    name: found.name,
                    version: found.version,
                    sha256: found.sha256,
                    size: found.size,
                    url,
                });
            }
        }
        Ok(Content {
            version,
            yaml,
            modules,
        })
    })
}

/// Completes when shutdown begins (holding no borrow of the flag, so it can be selected on).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `Discovery` gRPC service.
pub(crate) struct DiscoveryService {
    pub(crate) hub: Arc<Hub>,
}

/// The stream of snapshots one subscriber receives.
type SnapshotStream = Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type SubscribeStream = SnapshotStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if *self.hub.shutdown.borrow() {
            return Err(Status::unavailable("the control plane is shutting down"));
        }
        let (out, receiver) = mpsc::channel(4);
        let hub = self.hub.clone();
        let inbound = request.into_inner();
        let mut tasks = lock(&self.hub.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(subscribe(hub, inbound, out));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(self.hub.status()))
    }
}
