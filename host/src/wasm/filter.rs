//! Filters as a configuration version runs them: a [`Filter`] is one entry of a chain — a
//! compiled module pre-instantiated against the host functions, its configuration, its limits
//! and a pool of live instances — and a [`Chain`] is a listener's ordered filters.
//!
//! Building a filter is the validation a reload needs: the module is read (sha256 pin checked),
//! compiled (cached by digest), checked for the proxy-wasm ABI, pre-instantiated, and one
//! instance is started with `on_configure` run — a rejected configuration fails the build. That
//! instance then serves, so the first request after a swap pays nothing.
//!
//! The pool: a stream stays on the instance it started on (its context lives in that
//! instance's memory). A new stream takes the pooled instance with the fewest live streams, and
//! a new instance is started when every instance is busy and the pool is below its size
//! (one per worker thread by default) — the way Envoy runs one VM per worker, without tying an
//! instance to a thread. An instance stuck in a long call (a guest looping towards its
//! deadline) is passed over, and the pool grows past its size (up to four times) rather than
//! queue new streams behind it. A broken instance leaves the pool at once.

use std::{
    borrow::Cow,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use wasmtime::InstancePre;
use weft_abi::GuestExport;

use super::{
    builtin::{builtin_module, describe_builtins},
    context::HostData,
    host::{FailureReason, WasmHost},
    instance::{Failure, Instance, InstanceSpec},
    properties::PluginIdentity,
    runtime::{CompiledModule, GuestLimits, GuestState},
};
use crate::config::resolved::{FailStrategy, FilterConfig, PluginConfig, PluginSource};

/// One filter of a chain, live.
pub struct Filter {
    /// The filter's configuration.
    pub config: FilterConfig,
    /// The plugin it runs.
    pub plugin: Arc<PluginConfig>,
    /// The module's sha256.
    pub sha256: [u8; 32],
    host: Arc<WasmHost>,
    pre: InstancePre<GuestState<HostData>>,
    spec: InstanceSpec,
    pool: Mutex<Vec<Arc<Instance>>>,
    pool_size: usize,
}

impl Filter {
    /// Builds the filter and starts its first instance (running `on_configure`). `Err` is the
    /// reason, for a configuration error.
    pub async fn build(
        host: &Arc<WasmHost>,
        plugin: Arc<PluginConfig>,
        config: FilterConfig,
        module: &CompiledModule,
    ) -> Result<Arc<Filter>, String> {
        let pre = host
            .linker
            .instantiate_pre(&module.module)
            .map_err(|e| format!("cannot link the module: {e:#}"))?;
        let spec = InstanceSpec {
            plugin: plugin.name.clone(),
            identity: Arc::new(PluginIdentity {
                name: config.name.to_string(),
                root_id: String::new(),
                vm_id: plugin.name.to_string(),
            }),
            configuration: Bytes::copy_from_slice(config.config_json.as_bytes()),
            limits: GuestLimits {
                deadline: plugin.deadline,
                memory_bytes: plugin.memory_limit,
            },
        };
        host.reloads.with_label_values(&[&plugin.name]).inc();
        let first = Instance::start(host, &pre, &spec)
            .await
            .map_err(|failure| failure.detail)?;
        Ok(Arc::new(Filter {
            config,
            plugin,
            sha256: module.sha256,
            host: host.clone(),
            pre,
            spec,
            pool: Mutex::new(vec![first]),
            pool_size: default_pool_size(),
        }))
    }

    /// Whether this filter runs exactly `plugin` and `config` on the module `sha256`, so a new
    /// configuration version can keep it (and its warm instances).
    pub fn is_same(&self, plugin: &PluginConfig, config: &FilterConfig, sha256: &[u8; 32]) -> bool {
        *self.plugin == *plugin && self.config == *config && self.sha256 == *sha256
    }

    /// The instance a new stream should run on.
    pub async fn acquire(&self) -> Result<Arc<Instance>, Failure> {
        let chosen = {
            let mut pool = self.pool.lock().map_err(|_| Failure {
                reason: FailureReason::Start,
                detail: "instance pool poisoned".into(),
                stale: false,
            })?;
            pool.retain(|i| !i.is_broken());
            let best = pool
                .iter()
                .filter(|i| !i.is_stuck())
                .min_by_key(|i| i.live_streams())
                .cloned();
            let chosen = match best {
                Some(instance) if instance.live_streams() == 0 || pool.len() >= self.pool_size => {
                    Some(instance)
                }
                // Every instance is busy: grow the pool; past its hard cap, share.
                _ if pool.len() >= self.pool_size * 4 => {
                    pool.iter().min_by_key(|i| i.live_streams()).cloned()
                }
                _ => None,
            };
            // Reserved under the lock, so concurrent streams spread over the pool instead of
            // piling onto the instance that looked idle to all of them.
            if let Some(instance) = &chosen {
                instance.reserve();
            }
            chosen
        };
        if let Some(instance) = chosen {
            return Ok(instance);
        }
        // Boxed: the rare path keeps the common one's future small.
        let fresh = Box::pin(Instance::start(&self.host, &self.pre, &self.spec))
            .await
            .inspect_err(|failure| {
                self.host
                    .count_failure(&self.plugin.name, FailureReason::Start);
                tracing::error!(plugin = %self.plugin.name, filter = %self.config.name, %failure, "cannot start a plugin instance");
            })?;
        fresh.reserve();
        if let Ok(mut pool) = self.pool.lock() {
            pool.push(fresh.clone());
        }
        Ok(fresh)
    }

    /// Live instances in the pool.
    pub fn instances(&self) -> usize {
        self.pool.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// The filter's failure strategy.
    pub fn fail_strategy(&self) -> FailStrategy {
        self.config.fail_strategy
    }
}

/// How many instances a filter's pool grows to: one per worker thread.
fn default_pool_size() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// A listener's filter chain, live.
pub struct Chain {
    /// The chain's name.
    pub name: Arc<str>,
    /// Filters in request order.
    pub filters: Vec<Arc<Filter>>,
}

/// Why a plugin's module cannot be used, and the `Plugin` field to blame.
#[derive(Debug, Clone)]
pub struct ModuleError {
    /// `spec.url` or `spec.sha256`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl From<String> for ModuleError {
    fn from(message: String) -> Self {
        Self {
            field: "spec.url",
            message,
        }
    }
}

/// Reads and compiles a plugin's module — a file, or a built-in plugin's embedded bytes
/// (`builtin://NAME`) — checking the sha256 pin and the proxy-wasm ABI export.
pub fn load_module(host: &WasmHost, plugin: &PluginConfig) -> Result<CompiledModule, ModuleError> {
    let bytes: Cow<'static, [u8]> = match &plugin.source {
        PluginSource::File(path) => std::fs::read(path)
            .map_err(|e| format!("cannot read module {}: {e}", path.display()))?
            .into(),
        PluginSource::Builtin(name) => builtin_module(name)
            .ok_or_else(|| {
                format!(
                    "no built-in plugin named `{name}`; the built-in plugins are: {}",
                    describe_builtins()
                )
            })?
            .into(),
        PluginSource::Registry { name, .. } => {
            return Err(format!(
                "`{name}` is a registry plugin; registry plugins need a control plane"
            )
            .into());
        }
    };
    let module = host
        .runtime
        .compile(&bytes)
        .map_err(|e| format!("not a valid Wasm module: {e}"))?;
    if let Some(pin) = &plugin.sha256
        && *pin != module.sha256_hex()
    {
        return Err(ModuleError {
            field: "spec.sha256",
            message: format!(
                "sha256 mismatch: the module is {}, the pin is {pin}",
                module.sha256_hex()
            ),
        });
    }
    let abi = module.module.exports().any(|e| {
        e.name() == GuestExport::AbiVersion.name() || e.name() == "proxy_abi_version_0_2_0"
    });
    if !abi {
        return Err(format!(
            "not a proxy-wasm filter: the module exports no `{}`",
            GuestExport::AbiVersion.name()
        )
        .into());
    }
    Ok(module)
}
