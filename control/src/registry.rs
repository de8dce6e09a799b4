//! The plugin registry: Wasm modules stored by sha256 and named `NAME@VERSION`.
//!
//! Publishing validates first — the bytes must be a binary Wasm module that compiles and
//! exports the proxy-wasm ABI (an ABI version marker, `memory`, and an allocator) — then stores
//! the bytes once per digest and the name in one transaction. Republishing a `NAME@VERSION`
//! with the same bytes is a no-op; with other bytes it is refused, so a version never changes
//! under a proxy that pinned it. A `Plugin` resource with `url: registry://NAME` follows the
//! newest published version of NAME; `registry://NAME@VERSION` pins one. A version a stored
//! `Plugin` refers to cannot be deleted.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use weft_control::{registry::Registry, store::RedbStore};
//!
//! let store = Arc::new(RedbStore::open("/var/lib/weft".as_ref())?);
//! let registry = Registry::new(store);
//! let published = registry.publish("hello", "1.0.0", &std::fs::read("hello.wasm")?)?;
//! println!("hello@1.0.0 is {}", published.version.sha256);
//! assert_eq!(registry.get("hello", None)?.version, "1.0.0");
//! # Ok(())
//! # }
//! ```

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, ExternType, Module};
use weft_abi::GuestExport;
use weft_host::config::PluginSource;

use crate::{
    resources::{chain_plugins, plugin_source},
    store::{self, ModuleVersion, PUBLISH_SEQUENCE, RESOURCE_VERSION, ReadTxn, Store, StoreError},
};

/// A registry failure, worded for the operator who caused it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The plugin name is not lowercase letters, digits and `-`.
    #[error(
        "invalid plugin name `{0}`: use lowercase letters, digits and `-`, starting with a letter or digit"
    )]
    InvalidName(String),
    /// The version label has characters outside `[0-9A-Za-z.+-]`.
    #[error("invalid version `{0}`: use letters, digits, `.`, `+` and `-` (e.g. 1.2.0)")]
    InvalidVersion(String),
    /// The bytes are not a proxy-wasm module.
    #[error("{name}@{version} refused: {reason}")]
    NotProxyWasm {
        /// Plugin name.
        name: String,
        /// Version.
        version: String,
        /// What is wrong with the module.
        reason: String,
    },
    /// `NAME@VERSION` exists with other bytes.
    #[error(
        "{name}@{version} is already published with sha256 {existing}; publish the new module (sha256 {offered}) under a new version"
    )]
    VersionExists {
        /// Plugin name.
        name: String,
        /// Version.
        version: String,
        /// Digest of the stored module.
        existing: String,
        /// Digest of the module offered.
        offered: String,
    },
    /// No such plugin, version or module.
    #[error("{0} is not in the registry")]
    NotFound(String),
    /// A reload of a plugin no stored `Plugin` refers to.
    #[error(
        "no Plugin resource refers to registry://{0}: nothing runs it, so there is nothing to reload"
    )]
    NotUsed(String),
    /// The version is referenced by stored resources.
    #[error("cannot delete {name}@{version}: {users}")]
    InUse {
        /// Plugin name.
        name: String,
        /// Version.
        version: String,
        /// The resources that refer to it, as a sentence.
        users: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The version record.
    pub version: ModuleVersion,
    /// `false` when exactly this module was already published under this name and version.
    pub created: bool,
    /// The resource version after the publish. A stored `Plugin` with `url: registry://NAME`
    /// follows the newest version, so a publish that moves one bumps the resource version:
    /// what proxies must run changed.
    pub resource_version: u64,
    /// Whether this publish moved a `registry://NAME` Plugin (and bumped the version).
    pub moved_plugins: bool,
}

/// The outcome of a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The newest version: what `registry://NAME` Plugins run after the reload.
    pub version: ModuleVersion,
    /// NAME's reload generation after this reload.
    pub generation: u64,
    /// The resource version carrying the reload.
    pub resource_version: u64,
    /// The `Plugin` resources that refer to NAME, sorted.
    pub plugins: Vec<String>,
}

/// The counter holding `name`'s reload generation.
pub fn reload_counter(name: &str) -> String {
    format!("reload/{name}")
}

/// The versions of one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersions {
    /// Plugin name.
    pub name: String,
    /// Versions sorted by semver when every one parses as semver, else in publish order.
    pub versions: Vec<ModuleVersion>,
}

/// The registry over a [`Store`].
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    engine: Engine,
}

impl Registry {
    /// A registry validating modules with a default engine.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_engine(store, Engine::default())
    }

    /// A registry validating modules with `engine` (e.g. the proxy's, when both run in one
    /// process).
    pub fn with_engine(store: Arc<dyn Store>, engine: Engine) -> Self {
        Self { store, engine }
    }

    /// The store behind the registry.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Validates and publishes `bytes` as `name@version`. Compiling takes time: call it off
    /// the async executor (`spawn_blocking`).
    pub fn publish(
        &self,
        name: &str,
        version: &str,
        bytes: &[u8],
    ) -> Result<Published, RegistryError> {
        validate_name(name)?;
        validate_version(version)?;
        check_proxy_wasm(&self.engine, bytes).map_err(|reason| RegistryError::NotProxyWasm {
            name: name.to_owned(),
            version: version.to_owned(),
            reason,
        })?;
        let sha256 = sha256_hex(bytes);
        let published_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        store::write(&*self.store, |txn| {
            if let Some(existing) = txn.module_version(name, version)? {
                if existing.sha256 == sha256 {
                    return Ok(Published {
                        version: existing,
                        created: false,
                        resource_version: txn.counter(RESOURCE_VERSION)?,
                        moved_plugins: false,
                    });
                }
                return Err(RegistryError::VersionExists {
                    name: name.to_owned(),
                    version: version.to_owned(),
                    existing: existing.sha256,
                    offered: sha256.clone(),
                });
            }
            if !txn.has_module(&sha256)? {
                txn.put_module(&sha256, bytes)?;
            }
            let record = ModuleVersion {
                name: name.to_owned(),
                version: version.to_owned(),
                sha256: sha256.clone(),
                size: bytes.len() as u64,
                published_at_ms,
                sequence: txn.bump_counter(PUBLISH_SEQUENCE)?,
            };
            txn.put_module_version(&record)?;
            let moved_plugins = follows_newest(txn, name)?;
            let resource_version = if moved_plugins {
                txn.bump_counter(RESOURCE_VERSION)?
            } else {
                txn.counter(RESOURCE_VERSION)?
            };
            Ok(Published {
                version: record,
                created: true,
                resource_version,
                moved_plugins,
            })
        })
    }

    /// Every plugin, by name.
    pub fn list(&self) -> Result<Vec<PluginVersions>, RegistryError> {
        let all = store::read(&*self.store, |txn| {
            txn.module_versions(None).map_err(RegistryError::from)
        })?;
        let mut names: Vec<String> = all.iter().map(|v| v.name.clone()).collect();
        names.sort();
        names.dedup();
        Ok(names
            .into_iter()
            .map(|name| {
                let versions = all.iter().filter(|v| v.name == name).cloned().collect();
                PluginVersions {
                    versions: sort_versions(versions),
                    name,
                }
            })
            .collect())
    }

    /// One version of `name`: `version`, or the newest published when `None`.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<ModuleVersion, RegistryError> {
        store::read(&*self.store, |txn| {
            resolve(txn, name, version)?.ok_or_else(|| not_found(name, version))
        })
    }

    /// The module bytes with this digest (lowercase hex sha256).
    pub fn module(&self, sha256: &str) -> Result<Vec<u8>, RegistryError> {
        store::read(&*self.store, |txn| {
            txn.module(sha256)?
                .ok_or_else(|| RegistryError::NotFound(format!("module sha256 {sha256}")))
        })
    }

    /// Makes every proxy re-instantiate `name`: bumps its reload generation and the resource
    /// version in one transaction. Refused when `name` has no published version or no stored
    /// `Plugin` refers to it.
    pub fn reload(&self, name: &str) -> Result<Reloaded, RegistryError> {
        validate_name(name)?;
        store::write(&*self.store, |txn| {
            let newest = resolve(txn, name, None)?.ok_or_else(|| not_found(name, None))?;
            let mut plugins: Vec<String> = txn
                .resources(Some("Plugin"))?
                .into_iter()
                .filter(|plugin| {
                    matches!(
                        plugin_source(&plugin.yaml),
                        Some(PluginSource::Registry { name: n, .. }) if n == name
                    )
                })
                .map(|plugin| plugin.name)
                .collect();
            if plugins.is_empty() {
                return Err(RegistryError::NotUsed(name.to_owned()));
            }
            plugins.sort();
            Ok(Reloaded {
                version: newest,
                generation: txn.bump_counter(&reload_counter(name))?,
                resource_version: txn.bump_counter(RESOURCE_VERSION)?,
                plugins,
            })
        })
    }

    /// Deletes `name@version`, refused while a stored `Plugin` refers to it (pinned, or
    /// following the newest when this is the newest). The bytes go when no version uses them.
    pub fn delete(&self, name: &str, version: &str) -> Result<ModuleVersion, RegistryError> {
        store::write(&*self.store, |txn| {
            let record = txn
                .module_version(name, version)?
                .ok_or_else(|| not_found(name, Some(version)))?;
            let users = users_of(txn, &record)?;
            if !users.is_empty() {
                return Err(RegistryError::InUse {
                    name: name.to_owned(),
                    version: version.to_owned(),
                    users: users.join("; "),
                });
            }
            txn.delete_module_version(name, version)?;
            let shared = txn
                .module_versions(None)?
                .iter()
                .any(|v| v.sha256 == record.sha256);
            if !shared {
                txn.delete_module(&record.sha256)?;
            }
            Ok(record)
        })
    }
}

/// The version `registry://name[@version]` names now: the pinned one, or the newest published.
pub fn resolve(
    txn: &dyn ReadTxn,
    name: &str,
    version: Option<&str>,
) -> Result<Option<ModuleVersion>, StoreError> {
    match version {
        Some(version) => txn.module_version(name, version),
        None => Ok(txn
            .module_versions(Some(name))?
            .into_iter()
            .max_by_key(|v| v.sequence)),
    }
}

/// Whether a stored `Plugin` follows the newest version of `name` (`url: registry://NAME`).
fn follows_newest(txn: &dyn ReadTxn, name: &str) -> Result<bool, StoreError> {
    Ok(txn.resources(Some("Plugin"))?.iter().any(|plugin| {
        matches!(
            plugin_source(&plugin.yaml),
            Some(PluginSource::Registry { name: n, version: None }) if n == name
        )
    }))
}

/// The stored resources that keep `record` alive, each as a phrase.
fn users_of(txn: &dyn ReadTxn, record: &ModuleVersion) -> Result<Vec<String>, StoreError> {
    let newest = resolve(txn, &record.name, None)?;
    let is_newest = newest.is_some_and(|n| n.version == record.version);
    let chains = txn.resources(Some("FilterChain"))?;
    let mut users = Vec::new();
    for plugin in txn.resources(Some("Plugin"))? {
        let Some(PluginSource::Registry { name, version }) = plugin_source(&plugin.yaml) else {
            continue;
        };
        let url = match &version {
            Some(v) => format!("registry://{name}@{v}"),
            None => format!("registry://{name}"),
        };
        let refers = name == record.name
            && match &version {
                Some(v) => *v == record.version,
                None => is_newest,
            };
        if !refers {
            continue;
        }
        let mut phrase = format!("Plugin `{}` refers to it ({url})", plugin.name);
        let used_by: Vec<String> = chains
            .iter()
            .filter(|chain| chain_plugins(&chain.yaml).contains(&plugin.name))
            .map(|chain| format!("`{}`", chain.name))
            .collect();
        if !used_by.is_empty() {
            phrase.push_str(&format!(", used by FilterChain {}", used_by.join(", ")));
        }
        users.push(phrase);
    }
    Ok(users)
}

fn not_found(name: &str, version: Option<&str>) -> RegistryError {
    RegistryError::NotFound(match version {
        Some(version) => format!("plugin {name}@{version}"),
        None => format!("plugin `{name}`"),
    })
}

/// Sorts by semver when every version parses as one; otherwise keeps publish order.
fn sort_versions(mut versions: Vec<ModuleVersion>) -> Vec<ModuleVersion> {
    versions.sort_by_key(|v| v.sequence);
    let parsed: Option<Vec<semver::Version>> = versions
        .iter()
        .map(|v| semver::Version::parse(&v.version).ok())
        .collect();
    if let Some(parsed) = parsed {
        let mut pairs: Vec<(semver::Version, ModuleVersion)> =
            parsed.into_iter().zip(versions).collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        return pairs.into_iter().map(|(_, v)| v).collect();
    }
    versions
}

/// Checks a plugin name: lowercase letters, digits and `-`, at most 63 characters, not
/// starting or ending with `-` (a DNS label, so it fits in URLs and metric labels).
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidName(name.to_owned()))
    }
}

/// Checks a version label: `[0-9A-Za-z.+-]+`, at most 128 characters.
pub fn validate_version(version: &str) -> Result<(), RegistryError> {
    let ok = !version.is_empty()
        && version.len() <= 128
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidVersion(version.to_owned()))
    }
}

/// lowercase hex sha256 of `bytes`: a module's address in the registry.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks that `bytes` is a binary core Wasm module that compiles on `engine` and exports the
/// proxy-wasm ABI: the version marker (`proxy_abi_version_0_2_1`, or `_0_2_0`, which the proxy
/// also loads), a `memory`, and an allocator (`proxy_on_memory_allocate` or `malloc`).
/// `Err` says what is missing.
pub fn check_proxy_wasm(engine: &Engine, bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(b"\0asm") {
        return Err("not a binary WebAssembly module (no `\\0asm` header)".into());
    }
    let module = Module::from_binary(engine, bytes)
        .map_err(|e| format!("the module does not compile: {e:#}"))?;
    let has_func = |name: &str| {
        module
            .exports()
            .any(|e| e.name() == name && matches!(e.ty(), ExternType::Func(_)))
    };
    let mut missing = Vec::new();
    if !has_func(GuestExport::AbiVersion.name()) && !has_func("proxy_abi_version_0_2_0") {
        missing.push(format!(
            "the ABI version function `{}`",
            GuestExport::AbiVersion.name()
        ));
    }
    let has_memory = module
        .exports()
        .any(|e| e.name() == "memory" && matches!(e.ty(), ExternType::Memory(_)));
    if !has_memory {
        missing.push("the memory `memory`".to_owned());
    }
    if !has_func(GuestExport::OnMemoryAllocate.name()) && !has_func(GuestExport::Malloc.name()) {
        missing.push(format!(
            "an allocator (`{}` or `{}`)",
            GuestExport::OnMemoryAllocate.name(),
            GuestExport::Malloc.name()
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "not a proxy-wasm filter: the module does not export {}",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests;
