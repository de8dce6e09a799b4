//! The control plane's storage, behind the [`Store`] trait so a distributed backend (etcd) can
//! replace the embedded one.
//!
//! What is stored:
//! - **modules**: Wasm bytes by lowercase hex sha256, deduplicated;
//! - **module versions**: `NAME@VERSION` → [`ModuleVersion`] (digest, size, when, publish order);
//! - **resources**: `(kind, name)` → the YAML text of one document;
//! - **counters**: named `u64`s, such as the resource version ([`RESOURCE_VERSION`]);
//! - **values**: a small key/value for the API token and the like.
//!
//! Every access is a transaction: [`Store::read`] sees one consistent snapshot, and
//! [`Store::write`] applies all of its changes or none. A check and the write it guards (a
//! resource set validated against what is stored, then written with a version bump) go in one
//! write transaction, so two writers can never interleave between them. A backend may run a
//! write closure more than once (an optimistic etcd transaction retries on conflict), so the
//! closure must only act through the transaction it is given. [`write`] and [`read`] wrap the
//! trait's object-safe methods for closures that return a value or a domain error.
//!
//! ```
//! use weft_control::store::{self, MemoryStore, RESOURCE_VERSION, StoreError};
//!
//! let store = MemoryStore::new();
//! let version = store::write(&store, |txn| {
//!     txn.put_resource("Cluster", "web", "kind: Cluster\n")?;
//!     txn.bump_counter(RESOURCE_VERSION)
//! })?;
//! assert_eq!(version, 1);
//! let yaml = store::read(&store, |txn| txn.resource("Cluster", "web"))?;
//! assert_eq!(yaml.as_deref(), Some("kind: Cluster\n"));
//! # Ok::<(), StoreError>(())
//! ```

mod embedded;
mod memory;

use serde::{Deserialize, Serialize};

pub use embedded::RedbStore;
pub use memory::MemoryStore;

/// The counter holding the resource version: bumped by every accepted resource change.
pub const RESOURCE_VERSION: &str = "resources";

/// The counter numbering publishes, so "newest" never depends on clock resolution.
pub const PUBLISH_SEQUENCE: &str = "publishes";

/// A published module version: `name@version` and the module it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleVersion {
    /// The plugin name in the registry.
    pub name: String,
    /// The version label.
    pub version: String,
    /// sha256 of the module bytes, lowercase hex.
    pub sha256: String,
    /// Size of the module in bytes.
    pub size: u64,
    /// When it was published, milliseconds since the Unix epoch.
    pub published_at_ms: u64,
    /// Publish order across the whole registry: higher is newer.
    pub sequence: u64,
}

/// One stored resource document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    /// `Listener`, `Cluster`, `FilterChain` or `Plugin`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// The document's YAML text, as applied.
    pub yaml: String,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, a corrupt file, a lock held by another process…).
    #[error("store: {0}")]
    Backend(String),
    /// Stored data could not be decoded.
    #[error("store: corrupt record {key}: {detail}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A write closure gave up; the transaction was rolled back. Used by [`write`] to carry a
    /// domain error out of the closure; backends only pass it through.
    #[error("transaction aborted")]
    Aborted,
}

/// Reads within one transaction.
pub trait ReadTxn {
    /// The module with this digest.
    fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Whether a module with this digest is stored.
    fn has_module(&self, sha256: &str) -> Result<bool, StoreError>;
    /// One module version.
    fn module_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<ModuleVersion>, StoreError>;
    /// The versions of `name`, or of every name, in publish order.
    fn module_versions(&self, name: Option<&str>) -> Result<Vec<ModuleVersion>, StoreError>;
    /// One resource's YAML.
    fn resource(&self, kind: &str, name: &str) -> Result<Option<String>, StoreError>;
    /// The resources of `kind`, or of every kind, sorted by kind then name.
    fn resources(&self, kind: Option<&str>) -> Result<Vec<StoredResource>, StoreError>;
    /// A counter's value; 0 if it was never bumped.
    fn counter(&self, name: &str) -> Result<u64, StoreError>;
    /// A small value by key.
    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Reads and writes within one transaction.
pub trait WriteTxn: ReadTxn {
    /// Stores module bytes under their digest (the caller computed it).
    fn put_module(&mut self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// Removes a module's bytes; `false` if there were none.
    fn delete_module(&mut self, sha256: &str) -> Result<bool, StoreError>;
    /// Creates or replaces a module version.
    fn put_module_version(&mut self, version: &ModuleVersion) -> Result<(), StoreError>;
    /// Removes a module version; `false` if there was none.
    fn delete_module_version(&mut self, name: &str, version: &str) -> Result<bool, StoreError>;
    /// Creates or replaces a resource.
    fn put_resource(&mut self, kind: &str, name: &str, yaml: &str) -> Result<(), StoreError>;
    /// Removes a resource; `false` if there was none.
    fn delete_resource(&mut self, kind: &str, name: &str) -> Result<bool, StoreError>;
    /// Adds one to a counter and returns the new value.
    fn bump_counter(&mut self, name: &str) -> Result<u64, StoreError>;
    /// Sets a small value.
    fn put_value(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Removes a small value; `false` if there was none.
    fn delete_value(&mut self, key: &str) -> Result<bool, StoreError>;
}

/// A transactional store. Object safe: the control plane holds an `Arc<dyn Store>`.
pub trait Store: Send + Sync {
    /// Runs `f` against one consistent snapshot.
    fn read_txn(
        &self,
        f: &mut dyn FnMut(&dyn ReadTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Runs `f` in a write transaction: committed when `f` returns `Ok`, rolled back (nothing
    /// changed) when it returns `Err`. `f` may run more than once.
    fn write_txn(
        &self,
        f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}

/// Runs `f` in a read transaction and returns its result; `E` carries store errors.
pub fn read<S, T, E, F>(store: &S, mut f: F) -> Result<T, E>
where
    S: Store + ?Sized,
    E: From<StoreError>,
    F: FnMut(&dyn ReadTxn) -> Result<T, E>,
{
    let mut outcome: Option<Result<T, E>> = None;
    let result = store.read_txn(&mut |txn| match f(txn) {
        Ok(value) => {
            outcome = Some(Ok(value));
            Ok(())
        }
        Err(e) => {
            outcome = Some(Err(e));
            Err(StoreError::Aborted)
        }
    });
    finish(result, outcome)
}

/// Runs `f` in a write transaction and returns its result. When `f` fails, the transaction is
/// rolled back and its error returned: a rejected change changes nothing.
pub fn write<S, T, E, F>(store: &S, mut f: F) -> Result<T, E>
where
    S: Store + ?Sized,
    E: From<StoreError>,
    F: FnMut(&mut dyn WriteTxn) -> Result<T, E>,
{
    let mut outcome: Option<Result<T, E>> = None;
    let result = store.write_txn(&mut |txn| match f(txn) {
        Ok(value) => {
            outcome = Some(Ok(value));
            Ok(())
        }
        Err(e) => {
            outcome = Some(Err(e));
            Err(StoreError::Aborted)
        }
    });
    finish(result, outcome)
}

fn finish<T, E: From<StoreError>>(
    result: Result<(), StoreError>,
    outcome: Option<Result<T, E>>,
) -> Result<T, E> {
    match (result, outcome) {
        // Committed: the closure's last run is the one that counts.
        (Ok(()), Some(Ok(value))) => Ok(value),
        // The closure failed: its own error, not the `Aborted` that carried it out.
        (Err(StoreError::Aborted), Some(Err(e))) => Err(e),
        (Err(e), _) => Err(e.into()),
        (Ok(()), _) => Err(StoreError::Backend("the transaction ran no closure".into()).into()),
    }
}

/// Encodes a module version record.
fn encode_version(version: &ModuleVersion) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(version).map_err(|e| StoreError::Backend(format!("encode: {e}")))
}

/// Decodes a module version record stored under `name@version`.
fn decode_version(name: &str, version: &str, bytes: &[u8]) -> Result<ModuleVersion, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("module version {name}@{version}"),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
