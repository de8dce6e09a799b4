//! The embedded [`Store`]: one `redb` database file, `DIR/weft.redb`. redb is a pure-Rust,
//! crash-safe (copy-on-write B-trees, checksummed commits) single-file database with
//! serialisable write transactions, so every [`Store::write_txn`] is one redb write
//! transaction, durable when it returns. One process holds the file at a time: a second
//! `weft control` on the same `--data` is refused at open.

use std::path::{Path, PathBuf};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use super::{
    ModuleVersion, ReadTxn, Store, StoreError, StoredResource, WriteTxn, decode_version,
    encode_version,
};

/// Module bytes by lowercase hex sha256.
const MODULES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("modules");
/// Module version records (JSON) by (name, version).
const VERSIONS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("module_versions");
/// Resource YAML by (kind, name).
const RESOURCES: TableDefinition<'_, (&str, &str), &str> = TableDefinition::new("resources");
/// Named counters.
const COUNTERS: TableDefinition<'_, &str, u64> = TableDefinition::new("counters");
/// Small values by key.
const VALUES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("values");

/// The file name of the database inside the data directory.
pub const DATABASE_FILE: &str = "weft.redb";

/// A [`Store`] in a redb file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (creating if needed) the store in `dir`: the directory is created, then
    /// `DIR/weft.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(DATABASE_FILE);
        let db = Database::create(&path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        let store = Self { db, path };
        // Every table exists from the start, so read transactions never meet a missing one.
        let txn = store.db.begin_write().map_err(backend)?;
        txn.open_table(MODULES).map_err(backend)?;
        txn.open_table(VERSIONS).map_err(backend)?;
        txn.open_table(RESOURCES).map_err(backend)?;
        txn.open_table(COUNTERS).map_err(backend)?;
        txn.open_table(VALUES).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store for RedbStore {
    fn read_txn(
        &self,
        f: &mut dyn FnMut(&dyn ReadTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let txn = Reader(self.db.begin_read().map_err(backend)?);
        f(&txn)
    }

    fn write_txn(
        &self,
        f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut txn = Writer(self.db.begin_write().map_err(backend)?);
        // On `Err` the transaction is dropped, which aborts it.
        f(&mut txn)?;
        txn.0.commit().map_err(backend)
    }
}

fn backend(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(error.into().to_string())
}

struct Reader(ReadTransaction);
struct Writer(WriteTransaction);

/// Implements [`ReadTxn`] for a transaction wrapper whose `.0.open_table` gives a readable table.
macro_rules! impl_read_txn {
    ($txn:ty) => {
        impl ReadTxn for $txn {
            fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let table = self.0.open_table(MODULES).map_err(backend)?;
                let found = table.get(sha256).map_err(backend)?;
                Ok(found.map(|v| v.value().to_vec()))
            }

            fn has_module(&self, sha256: &str) -> Result<bool, StoreError> {
                let table = self.0.open_table(MODULES).map_err(backend)?;
                Ok(table.get(sha256).map_err(backend)?.is_some())
            }

            fn module_version(
                &self,
                name: &str,
                version: &str,
            ) -> Result<Option<ModuleVersion>, StoreError> {
                let table = self.0.open_table(VERSIONS).map_err(backend)?;
                let found = table.get((name, version)).map_err(backend)?;
                found
                    .map(|v| decode_version(name, version, v.value()))
                    .transpose()
            }

            fn module_versions(
                &self,
                name: Option<&str>,
            ) -> Result<Vec<ModuleVersion>, StoreError> {
                let table = self.0.open_table(VERSIONS).map_err(backend)?;
                let mut versions = Vec::new();
                for entry in table.iter().map_err(backend)? {
                    let (key, value) = entry.map_err(backend)?;
                    let (n, v) = key.value();
                    if name.is_none_or(|name| name == n) {
                        versions.push(decode_version(n, v, value.value())?);
                    }
                }
                versions.sort_by_key(|v| v.sequence);
                Ok(versions)
            }

            fn resource(&self, kind: &str, name: &str) -> Result<Option<String>, StoreError> {
                let table = self.0.open_table(RESOURCES).map_err(backend)?;
                let found = table.get((kind, name)).map_err(backend)?;
                Ok(found.map(|v| v.value().to_owned()))
            }

            fn resources(&self, kind: Option<&str>) -> Result<Vec<StoredResource>, StoreError> {
                let table = self.0.open_table(RESOURCES).map_err(backend)?;
                let mut resources = Vec::new();
                for entry in table.iter().map_err(backend)? {
                    let (key, value) = entry.map_err(backend)?;
                    let (k, n) = key.value();
                    if kind.is_none_or(|kind| kind == k) {
                        resources.push(StoredResource {
                            kind: k.to_owned(),
                            name: n.to_owned(),
                            yaml: value.value().to_owned(),
                        });
                    }
                }
                Ok(resources)
            }

            fn counter(&self, name: &str) -> Result<u64, StoreError> {
                let table = self.0.open_table(COUNTERS).map_err(backend)?;
                let found = table.get(name).map_err(backend)?;
                Ok(found.map_or(0, |v| v.value()))
            }

            fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let table = self.0.open_table(VALUES).map_err(backend)?;
                let found = table.get(key).map_err(backend)?;
                Ok(found.map(|v| v.value().to_vec()))
            }
        }
    };
}

impl_read_txn!(Reader);
impl_read_txn!(Writer);

impl WriteTxn for Writer {
    fn put_module(&mut self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let mut table = self.0.open_table(MODULES).map_err(backend)?;
        table.insert(sha256, bytes).map_err(backend)?;
        Ok(())
    }

    fn delete_module(&mut self, sha256: &str) -> Result<bool, StoreError> {
        let mut table = self.0.open_table(MODULES).map_err(backend)?;
        Ok(table.remove(sha256).map_err(backend)?.is_some())
    }

    fn put_module_version(&mut self, version: &ModuleVersion) -> Result<(), StoreError> {
        let record = encode_version(version)?;
        let mut table = self.0.open_table(VERSIONS).map_err(backend)?;
        table
            .insert(
                (version.name.as_str(), version.version.as_str()),
                record.as_slice(),
            )
            .map_err(backend)?;
        Ok(())
    }

    fn delete_module_version(&mut self, name: &str, version: &str) -> Result<bool, StoreError> {
        let mut table = self.0.open_table(VERSIONS).map_err(backend)?;
        Ok(table.remove((name, version)).map_err(backend)?.is_some())
    }

    fn put_resource(&mut self, kind: &str, name: &str, yaml: &str) -> Result<(), StoreError> {
        let mut table = self.0.open_table(RESOURCES).map_err(backend)?;
        table.insert((kind, name), yaml).map_err(backend)?;
        Ok(())
    }

    fn delete_resource(&mut self, kind: &str, name: &str) -> Result<bool, StoreError> {
        let mut table = self.0.open_table(RESOURCES).map_err(backend)?;
        Ok(table.remove((kind, name)).map_err(backend)?.is_some())
    }

    fn bump_counter(&mut self, name: &str) -> Result<u64, StoreError> {
        let mut table = self.0.open_table(COUNTERS).map_err(backend)?;
        let current = table.get(name).map_err(backend)?.map_or(0, |v| v.value());
        let next = current.checked_add(1).ok_or_else(|| StoreError::Corrupt {
            key: format!("counter {name}"),
            detail: "overflow".into(),
        })?;
        table.insert(name, next).map_err(backend)?;
        Ok(next)
    }

    fn put_value(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut table = self.0.open_table(VALUES).map_err(backend)?;
        table.insert(key, value).map_err(backend)?;
        Ok(())
    }

    fn delete_value(&mut self, key: &str) -> Result<bool, StoreError> {
        let mut table = self.0.open_table(VALUES).map_err(backend)?;
        Ok(table.remove(key).map_err(backend)?.is_some())
    }
}
