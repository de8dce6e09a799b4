//! The proxy process: start from a config file, reload it all-or-nothing (file change, SIGHUP,
//! or a call), watch certificate files, and drain on shutdown.
//!
//! A reload parses and validates the whole file, builds the next [`Runtime`] (reusing unchanged
//! clusters and TLS state), binds any new listener sockets, and only then swaps. A failure at any
//! step leaves the running configuration untouched, logs why and counts
//! `weft_config_reloads_total{result="failure"}`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, RwLock, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::{net::TcpListener, sync::Mutex, task::JoinHandle};

use crate::{
    admin,
    config::{self, ConfigError},
    listener::ListenerHandle,
    metrics::Metrics,
    runtime::{self, Runtime, Shared},
    wasm::{EngineSettings, WasmHost},
};

/// How to run the proxy.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The YAML file of resources.
    pub config_path: PathBuf,
    /// Where the admin server listens; `None` runs without one.
    pub admin: Option<SocketAddr>,
    /// How long a drain waits for in-flight requests.
    pub drain_timeout: Duration,
    /// How often the config and certificate files are checked for changes.
    pub watch_interval: Duration,
    /// Most plugin instances alive at once (the Wasm pooling allocator's slots).
    pub wasm_instances: u32,
}

impl AppOptions {
    /// Defaults: no admin server, 5s drain, 1s file watch.
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        Self {
            config_path: config_path.into(),
            admin: None,
            drain_timeout: Duration::from_secs(5),
            watch_interval: Duration::from_secs(1),
            wasm_instances: EngineSettings::default().max_instances,
        }
    }
}

/// A running proxy.
pub struct App {
    core: Arc<Core>,
    admin_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

struct Core {
    shared: Arc<Shared>,
    options: AppOptions,
    state: Mutex<State>,
}

struct State {
    listeners: BTreeMap<Arc<str>, ListenerHandle>,
    /// The file content of the running configuration (or of the last rejected attempt), so the
    /// watcher reloads once per change rather than once per tick.
    last_seen: Option<Vec<u8>>,
    /// Modification stamps of the plugin module files the running configuration (or the last
    /// rejected attempt) read: a module rebuilt in place is a reload too.
    modules_seen: Vec<ModuleStamp>,
}

/// A module file and what its metadata said.
type ModuleStamp = (PathBuf, Option<(std::time::SystemTime, u64)>);

/// The stamps of every `file://` plugin module of `config`.
fn module_stamps(config: &config::Config) -> Vec<ModuleStamp> {
    config
        .plugins
        .values()
        .filter_map(|p| match &p.source {
            config::resolved::PluginSource::File(path) => Some(path.clone()),
            _ => None,
        })
        .map(|path| {
            let stamp = stamp(&path);
            (path, stamp)
        })
        .collect()
}

fn stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl App {
    /// Loads the configuration, binds every listener and the admin server, and starts serving.
    pub async fn start(options: AppOptions) -> anyhow::Result<App> {
        let metrics = Metrics::new();
        let (config, map) = config::load_file(&options.config_path).map_err(anyhow::Error::new)?;
        let engine = EngineSettings {
            max_instances: options.wasm_instances,
            ..EngineSettings::default()
        };
        let wasm = WasmHost::new(engine, metrics.registry()).context(
            "cannot start the Wasm engine (where address space is limited, lower `weft proxy \
             --wasm-instances`)",
        )?;
        let first = runtime::prepare(config, &map, None, &[], &metrics, &wasm)
            .await
            .map_err(anyhow::Error::new)?;
        wasm.clusters.store(Arc::new(first.clusters.clone()));
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(first),
            metrics,
            draining: Default::default(),
            bound: RwLock::new(BTreeMap::new()),
            config_path: options.config_path.clone(),
            wasm,
        });
        let core = Arc::new(Core {
            shared: shared.clone(),
            options: options.clone(),
            state: Mutex::new(State {
                listeners: BTreeMap::new(),
                last_seen: std::fs::read(&options.config_path).ok(),
                modules_seen: Vec::new(),
            }),
        });
        {
            let runtime = shared.runtime.load_full();
            let mut state = core.state.lock().await;
            state.modules_seen = module_stamps(&runtime.config);
            for (name, listener) in &runtime.config.listeners {
                let socket = TcpListener::bind(listener.address).await.with_context(|| {
                    format!("cannot bind listener `{name}` on {}", listener.address)
                })?;
                core.serve_listener(&mut state, name.clone(), socket, listener.address)?;
            }
            core.publish_addresses(&state);
        }
        let mut tasks = Vec::new();
        let admin_addr = match options.admin {
            None => None,
            Some(addr) => {
                let socket = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind the admin server on {addr}"))?;
                let local = socket.local_addr()?;
                tracing::info!(address = %local, "admin server listening");
                tasks.push(tokio::spawn(admin::serve(socket, shared.clone())));
                Some(local)
            }
        };
        tasks.push(tokio::spawn(watch(core.clone())));
        tracing::info!(version = 1, file = %options.config_path.display(), "configuration loaded");
        Ok(App {
            core,
            admin_addr,
            tasks,
        })
    }

    /// Where listener `name` is bound.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.core.shared.bound.read().ok()?.get(name).copied()
    }

    /// Where the admin server is bound.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The running configuration version.
    pub fn config_version(&self) -> u64 {
        self.core.shared.runtime.load().version
    }

    /// Re-reads the configuration file. `Ok(true)`: a new configuration is serving;
    /// `Ok(false)`: nothing changed; `Err`: rejected, the running configuration keeps serving.
    pub async fn reload(&self) -> Result<bool, ConfigError> {
        self.core.reload(&[]).await
    }

    /// Re-reads the configuration file like [`App::reload`], and also replaces every filter
    /// running a module whose sha256 is in `renew`, unchanged or not: fresh instances, their
    /// `on_configure` run again, all-or-nothing like any update. A plugin reload uses this.
    pub async fn reload_renewing(&self, renew: &[[u8; 32]]) -> Result<bool, ConfigError> {
        self.core.reload(renew).await
    }

    /// Stops accepting, asks every connection to finish (GOAWAY on HTTP/2, `Connection: close`
    /// on HTTP/1.1), and waits for in-flight requests up to the drain timeout.
    pub async fn drain(&self) {
        let shared = &self.core.shared;
        shared.draining.store(true, Ordering::Relaxed);
        let state = self.core.state.lock().await;
        for handle in state.listeners.values() {
            handle.stop();
        }
        let deadline = tokio::time::Instant::now() + self.core.options.drain_timeout;
        loop {
            let open: usize = state
                .listeners
                .values()
                .map(ListenerHandle::open_connections)
                .sum();
            if open == 0 {
                tracing::info!("drained");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(open, "drain timeout: closing remaining connections");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(state) = self.core.state.try_lock() {
            for handle in state.listeners.values() {
                handle.stop();
            }
        }
    }
}

impl Core {
    async fn reload(&self, renew: &[[u8; 32]]) -> Result<bool, ConfigError> {
        let mut state = self.state.lock().await;
        let path = &self.options.config_path;
        state.last_seen = std::fs::read(path).ok();
        let result = self.try_reload(&mut state, renew).await;
        state.modules_seen = match config::load_file(path) {
            Ok((config, _)) => module_stamps(&config),
            Err(_) => module_stamps(&self.shared.runtime.load().config),
        };
        let metrics = &self.shared.metrics;
        match &result {
            Ok(true) => {
                metrics.config_reloads.with_label_values(&["success"]).inc();
                tracing::info!(version = self.shared.runtime.load().version, file = %path.display(), "configuration reloaded");
            }
            Ok(false) => tracing::debug!(file = %path.display(), "configuration unchanged"),
            Err(e) => {
                metrics.config_reloads.with_label_values(&["failure"]).inc();
                tracing::error!(error = %e, "configuration rejected; the previous configuration keeps serving");
            }
        }
        result
    }

    async fn try_reload(&self, state: &mut State, renew: &[[u8; 32]]) -> Result<bool, ConfigError> {
        let (config, map) = config::load_file(&self.options.config_path)?;
        let current = self.shared.runtime.load_full();
        let wasm = &self.shared.wasm;
        let next = runtime::prepare(
            config,
            &map,
            Some(&current),
            renew,
            &self.shared.metrics,
            wasm,
        )
        .await?;
        if !next.changed {
            return Ok(false);
        }

        // Bind what is new before touching anything, so a busy port rejects the whole update.
        let mut bound = Vec::new();
        for (name, listener) in &next.config.listeners {
            let unchanged = state
                .listeners
                .get(name)
                .is_some_and(|h| h.configured == listener.address);
            if unchanged {
                continue;
            }
            let socket = TcpListener::bind(listener.address).await.map_err(|e| {
                map.error(
                    "Listener",
                    name,
                    "spec.address",
                    format!("cannot bind {}: {e}", listener.address),
                )
            })?;
            bound.push((name.clone(), listener.address, socket));
        }

        // Commit.
        let next = Arc::new(next);
        wasm.clusters.store(Arc::new(next.clusters.clone()));
        self.shared.runtime.store(next.clone());
        let keep: Vec<Arc<str>> = next.config.listeners.keys().cloned().collect();
        state.listeners.retain(|name, handle| {
            let kept = keep.contains(name) && !bound.iter().any(|(n, _, _)| n == name);
            if !kept {
                tracing::info!(listener = %name, "listener removed; draining its connections");
                handle.stop();
            }
            kept
        });
        for (name, configured, socket) in bound {
            if let Err(e) = self.serve_listener(state, name.clone(), socket, configured) {
                tracing::error!(listener = %name, error = %e, "cannot start listener");
            }
        }
        self.publish_addresses(state);
        Ok(true)
    }

    /// Starts accepting on a bound socket and records the listener as running.
    fn serve_listener(
        &self,
        state: &mut State,
        name: Arc<str>,
        socket: TcpListener,
        configured: SocketAddr,
    ) -> std::io::Result<()> {
        let handle = ListenerHandle::spawn(
            self.shared.clone(),
            name.clone(),
            socket,
            configured,
            self.options.drain_timeout,
        )?;
        let tls = self
            .shared
            .runtime
            .load()
            .listeners
            .get(&name)
            .is_some_and(|l| l.tls.is_some());
        tracing::info!(listener = %name, address = %handle.local_addr, tls, "listening");
        state.listeners.insert(name, handle);
        Ok(())
    }

    fn publish_addresses(&self, state: &State) {
        if let Ok(mut bound) = self.shared.bound.write() {
            *bound = state
                .listeners
                .iter()
                .map(|(name, h)| (name.clone(), h.local_addr))
                .collect();
        }
    }

    /// Reloads certificates whose files changed, on every listener that terminates TLS.
    async fn reload_certificates(&self) {
        let runtime: Arc<Runtime> = self.shared.runtime.load_full();
        for (name, listener) in &runtime.listeners {
            let Some(tls) = listener.tls.clone() else {
                continue;
            };
            let result = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
            let metrics = &self.shared.metrics;
            match result {
                Ok(Ok(true)) => {
                    metrics
                        .tls_reloads
                        .with_label_values(&[name, "success"])
                        .inc();
                    tracing::info!(listener = %name, "certificates reloaded");
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    metrics
                        .tls_reloads
                        .with_label_values(&[name, "failure"])
                        .inc();
                    tracing::error!(listener = %name, error = %e, "certificate reload failed; the previous certificates keep serving");
                }
                Err(e) => {
                    tracing::error!(listener = %name, error = %e, "certificate reload task failed")
                }
            }
        }
    }
}

/// Polls the config file and the certificate files for changes.
async fn watch(core: Arc<Core>) {
    let mut tick = tokio::time::interval(core.options.watch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let content = tokio::fs::read(&core.options.config_path).await.ok();
        let changed = content.is_some() && {
            let state = core.state.lock().await;
            state.last_seen != content
                || state
                    .modules_seen
                    .iter()
                    .any(|(path, seen)| stamp(path) != *seen)
        };
        if changed {
            let _ = core.reload(&[]).await;
        }
        core.reload_certificates().await;
    }
}
