//! The running configuration: one immutable [`Runtime`] per accepted config version, holding
//! live clusters and listener settings. Requests take a snapshot (`ArcSwap::load_full`) when they
//! start and finish on it, so a reload never changes a request mid-flight. [`prepare`] builds
//! the next runtime from a validated config, reusing whatever did not change.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, OnceLock, RwLock, atomic::AtomicBool},
    time::SystemTime,
};

use arc_swap::ArcSwap;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

use crate::{
    config::{Config, ConfigError, ListenerConfig, SourceMap},
    metrics::Metrics,
    tls::ServerTls,
    upstream::Cluster,
    wasm::{
        WasmHost,
        filter::{Chain, Filter, load_module},
    },
};

/// One configuration version, live.
pub struct Runtime {
    /// Increases by one with every accepted configuration.
    pub version: u64,
    /// When it was accepted.
    pub loaded_at: SystemTime,
    /// The resolved configuration.
    pub config: Arc<Config>,
    /// Live clusters by name.
    pub clusters: BTreeMap<Arc<str>, Arc<Cluster>>,
    /// Listener settings by name.
    pub listeners: BTreeMap<Arc<str>, Arc<ListenerRuntime>>,
    /// Live filter chains by name.
    pub chains: BTreeMap<Arc<str>, Arc<Chain>>,
    /// Whether building this runtime started anything new (a filter, a cluster): a reload of an
    /// unchanged file with unchanged modules has nothing to swap.
    pub changed: bool,
}

/// A listener's settings and the handles its hot path uses.
pub struct ListenerRuntime {
    /// The listener's configuration.
    pub config: Arc<ListenerConfig>,
    /// TLS termination, reloading certificates as their files change.
    pub tls: Option<ServerTls>,
    /// Metric handles resolved once.
    pub stats: Arc<ListenerStats>,
    /// The filter chain requests run through, if the listener names one.
    pub chain: Option<Arc<Chain>>,
}

/// Per-listener metric handles, resolved once instead of per request.
pub struct ListenerStats {
    /// Responses by status code.
    pub codes: CodeCounters,
    /// Open connections.
    pub cx_active: IntGauge,
    /// Accepted connections.
    pub cx_total: IntCounter,
    /// Connections refused at `maxConnections`.
    pub cx_overflow: IntCounter,
    /// Failed TLS handshakes.
    pub tls_errors: IntCounter,
    /// Request durations.
    pub duration: Histogram,
}

impl ListenerStats {
    /// Resolves the label handles of listener `name`.
    pub fn new(name: Arc<str>, metrics: &Metrics) -> Self {
        let label = [&*name];
        Self {
            cx_active: metrics.downstream_cx_active.with_label_values(&label),
            cx_total: metrics.downstream_cx_total.with_label_values(&label),
            cx_overflow: metrics.downstream_cx_overflow.with_label_values(&label),
            tls_errors: metrics.downstream_tls_errors.with_label_values(&label),
            duration: metrics.downstream_duration.with_label_values(&label),
            codes: CodeCounters::new(metrics.downstream_requests.clone(), name),
        }
    }
}

/// A `{NAME, code}` counter family with each code's handle resolved on first use, so counting a
/// response costs an atomic add rather than a label lookup.
pub struct CodeCounters {
    family: IntCounterVec,
    name: Arc<str>,
    slots: Box<[OnceLock<IntCounter>]>,
}

impl CodeCounters {
    /// Counters of `family` labelled `[name, code]`.
    pub fn new(family: IntCounterVec, name: Arc<str>) -> Self {
        Self {
            family,
            name,
            slots: (0..600).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one response with `code`.
    pub fn inc(&self, code: http::StatusCode) {
        let resolve = || self.family.with_label_values(&[&*self.name, code.as_str()]);
        match self.slots.get(usize::from(code.as_u16())) {
            Some(slot) => slot.get_or_init(resolve).inc(),
            None => resolve().inc(),
        }
    }
}

/// State shared by the data path, the admin server and the reloader.
pub struct Shared {
    /// The current runtime.
    pub runtime: ArcSwap<Runtime>,
    /// Process metrics.
    pub metrics: Metrics,
    /// Set once a drain began: `/ready` fails, new connections are refused.
    pub draining: AtomicBool,
    /// Bound addresses of the running listeners.
    pub bound: RwLock<BTreeMap<Arc<str>, SocketAddr>>,
    /// The file the configuration comes from.
    pub config_path: std::path::PathBuf,
    /// The Wasm engine and what plugins share.
    pub wasm: Arc<WasmHost>,
}

/// Builds the runtime for `config`. Clusters, listener TLS and filters whose configuration did
/// not change are carried over from `previous` (keeping pools, ejections, certificate state and
/// warm plugin instances). Every new filter is validated here: its module read, checked and
/// compiled, and one instance started with `on_configure` run — a plugin that rejects its
/// configuration rejects the whole update. Filters whose module digest is in `renew` are
/// built afresh even when unchanged (a plugin reload: new instances, `on_configure` again).
pub async fn prepare(
    config: Config,
    map: &SourceMap,
    previous: Option<&Runtime>,
    renew: &[[u8; 32]],
    metrics: &Metrics,
    wasm: &Arc<WasmHost>,
) -> Result<Runtime, ConfigError> {
    let mut changed = previous.is_none_or(|p| *p.config != config);
    let chains = prepare_chains(&config, map, previous, renew, wasm, &mut changed).await?;
    let mut clusters = BTreeMap::new();
    for (name, cluster) in &config.clusters {
        let reused = previous
            .and_then(|p| p.clusters.get(name))
            .filter(|c| c.config == *cluster)
            .cloned();
        let live = match reused {
            Some(live) => live,
            None => Arc::new(
                Cluster::new(cluster.clone(), metrics)
                    .map_err(|e| map.error("Cluster", name, "spec.tls", e.to_string()))?,
            ),
        };
        clusters.insert(name.clone(), live);
    }
    let mut listeners = BTreeMap::new();
    for (name, listener) in &config.listeners {
        let before = previous.and_then(|p| p.listeners.get(name));
        let tls = match &listener.tls {
            None => None,
            Some(spec) => match before
                .and_then(|b| b.tls.as_ref())
                .filter(|t| t.spec() == spec)
            {
                Some(same) => Some(same.clone()),
                None => Some(
                    ServerTls::load(spec)
                        .map_err(|e| map.error("Listener", name, "spec.tls", e.to_string()))?,
                ),
            },
        };
        let stats = match before {
            Some(b) => b.stats.clone(),
            None => Arc::new(ListenerStats::new(name.clone(), metrics)),
        };
        let chain = listener
            .filter_chain
            .as_ref()
            .and_then(|name| chains.get(name))
            .cloned();
        listeners.insert(
            name.clone(),
            Arc::new(ListenerRuntime {
                config: listener.clone(),
                tls,
                stats,
                chain,
            }),
        );
    }
    Ok(Runtime {
        version: previous.map_or(1, |p| p.version + 1),
        loaded_at: SystemTime::now(),
        config: Arc::new(config),
        clusters,
        listeners,
        chains,
        changed,
    })
}

/// Builds every filter chain, keeping filters whose plugin, configuration and module digest are
/// unchanged from `previous`, unless their digest is in `renew`.
async fn prepare_chains(
    config: &Config,
    map: &SourceMap,
    previous: Option<&Runtime>,
    renew: &[[u8; 32]],
    wasm: &Arc<WasmHost>,
    changed: &mut bool,
) -> Result<BTreeMap<Arc<str>, Arc<Chain>>, ConfigError> {
    let mut modules = BTreeMap::new();
    for (name, plugin) in &config.plugins {
        // Only plugins some chain runs are loaded.
        let used = config
            .filter_chains
            .values()
            .any(|c| c.filters.iter().any(|f| f.plugin == *name));
        if !used {
            continue;
        }
        // Reading, hashing and compiling a module takes milliseconds to seconds: off the
        // async workers, or guest calls parked on this worker would wait behind it (and could
        // miss their deadline) while traffic flows during a reload.
        let (host, spec) = (wasm.clone(), plugin.clone());
        let module = tokio::task::spawn_blocking(move || load_module(&host, &spec))
            .await
            .map_err(|e| {
                map.error(
                    "Plugin",
                    name,
                    "spec.url",
                    format!("loading the module failed: {e}"),
                )
            })?
            .map_err(|e| map.error("Plugin", name, e.field, e.message))?;
        modules.insert(name.clone(), module);
    }
    let reusable: Vec<Arc<Filter>> = previous
        .map(|p| {
            p.chains
                .values()
                .flat_map(|c| c.filters.iter().cloned())
                .collect()
        })
        .unwrap_or_default();
    let mut chains = BTreeMap::new();
    for (name, chain) in &config.filter_chains {
        let mut filters = Vec::with_capacity(chain.filters.len());
        for (index, filter) in chain.filters.iter().enumerate() {
            let (Some(plugin), Some(module)) = (
                config.plugins.get(&filter.plugin),
                modules.get(&filter.plugin),
            ) else {
                return Err(map.error(
                    "FilterChain",
                    name,
                    &format!("spec.filters[{index}].plugin"),
                    format!("no Plugin named `{}`", filter.plugin),
                ));
            };
            let kept = reusable
                .iter()
                .filter(|_| !renew.contains(&module.sha256))
                .find(|f| f.is_same(plugin, filter, &module.sha256))
                .cloned();
            let live = match kept {
                Some(live) => live,
                None => {
                    *changed = true;
                    Filter::build(wasm, plugin.clone(), filter.clone(), module)
                        .await
                        .map_err(|reason| {
                            map.error(
                                "FilterChain",
                                name,
                                &format!("spec.filters[{index}]"),
                                format!(
                                    "filter `{}` (plugin `{}`): {reason}",
                                    filter.name, filter.plugin
                                ),
                            )
                        })?
                }
            };
            filters.push(live);
        }
        chains.insert(
            name.clone(),
            Arc::new(Chain {
                name: name.clone(),
                filters,
            }),
        );
    }
    Ok(chains)
}
