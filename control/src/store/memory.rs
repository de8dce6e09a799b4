//! An in-memory [`Store`] for tests and throwaway control planes: the whole state behind one
//! mutex; a write transaction works on a copy (module bytes shared, not copied) that replaces
//! the state only when the transaction commits.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use super::{ModuleVersion, ReadTxn, Store, StoreError, StoredResource, WriteTxn};

/// A [`Store`] that keeps everything in memory and loses it on drop.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Clone, Default)]
struct State {
    modules: BTreeMap<String, Arc<[u8]>>,
    versions: BTreeMap<(String, String), ModuleVersion>,
    resources: BTreeMap<(String, String), String>,
    counters: BTreeMap<String, u64>,
    values: BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Backend("the in-memory store is poisoned".into()))
    }
}

impl Store for MemoryStore {
    fn read_txn(
        &self,
        f: &mut dyn FnMut(&dyn ReadTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let state = self.lock()?;
        f(&*state)
    }

    fn write_txn(
        &self,
        f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        let mut draft = state.clone();
        f(&mut draft)?;
        *state = draft;
        Ok(())
    }
}

impl ReadTxn for State {
    fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.modules.get(sha256).map(|bytes| bytes.to_vec()))
    }

    fn has_module(&self, sha256: &str) -> Result<bool, StoreError> {
        Ok(self.modules.contains_key(sha256))
    }

    fn module_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<ModuleVersion>, StoreError> {
        Ok(self
            .versions
            .get(&(name.to_owned(), version.to_owned()))
            .cloned())
    }

    fn module_versions(&self, name: Option<&str>) -> Result<Vec<ModuleVersion>, StoreError> {
        let mut versions: Vec<ModuleVersion> = self
            .versions
            .values()
            .filter(|v| name.is_none_or(|n| v.name == n))
            .cloned()
            .collect();
        versions.sort_by_key(|v| v.sequence);
        Ok(versions)
    }

    fn resource(&self, kind: &str, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .resources
            .get(&(kind.to_owned(), name.to_owned()))
            .cloned())
    }

    fn resources(&self, kind: Option<&str>) -> Result<Vec<StoredResource>, StoreError> {
        Ok(self
            .resources
            .iter()
            .filter(|((k, _), _)| kind.is_none_or(|kind| k == kind))
            .map(|((kind, name), yaml)| StoredResource {
                kind: kind.clone(),
                name: name.clone(),
                yaml: yaml.clone(),
            })
            .collect())
    }

    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self.counters.get(name).copied().unwrap_or(0))
    }

    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.values.get(key).cloned())
    }
}

impl WriteTxn for State {
    fn put_module(&mut self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.modules.insert(sha256.to_owned(), bytes.into());
        Ok(())
    }

    fn delete_module(&mut self, sha256: &str) -> Result<bool, StoreError> {
        Ok(self.modules.remove(sha256).is_some())
    }

    fn put_module_version(&mut self, version: &ModuleVersion) -> Result<(), StoreError> {
        self.versions.insert(
            (version.name.clone(), version.version.clone()),
            version.clone(),
        );
        Ok(())
    }

    fn delete_module_version(&mut self, name: &str, version: &str) -> Result<bool, StoreError> {
        Ok(self
            .versions
            .remove(&(name.to_owned(), version.to_owned()))
            .is_some())
    }

    fn put_resource(&mut self, kind: &str, name: &str, yaml: &str) -> Result<(), StoreError> {
        self.resources
            .insert((kind.to_owned(), name.to_owned()), yaml.to_owned());
        Ok(())
    }

    fn delete_resource(&mut self, kind: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .resources
            .remove(&(kind.to_owned(), name.to_owned()))
            .is_some())
    }

    fn bump_counter(&mut self, name: &str) -> Result<u64, StoreError> {
        let counter = self.counters.entry(name.to_owned()).or_insert(0);
        *counter += 1;
        Ok(*counter)
    }

    fn put_value(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.values.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete_value(&mut self, key: &str) -> Result<bool, StoreError> {
        Ok(self.values.remove(key).is_some())
    }
}
