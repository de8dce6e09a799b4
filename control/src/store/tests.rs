//! Store tests: the same contract checked against both backends, plus what only the embedded
//! one has (a reopen loses nothing, one process per file).

use super::*;

fn version(name: &str, version: &str, sha256: &str, sequence: u64) -> ModuleVersion {
    ModuleVersion {
        name: name.into(),
        version: version.into(),
        sha256: sha256.into(),
        size: 3,
        published_at_ms: 1_700_000_000_000,
        sequence,
    }
}

/// Writes one of everything.
fn fill(store: &dyn Store) -> Result<(), StoreError> {
    write(store, |txn| {
        txn.put_module("aa", b"abc")?;
        txn.put_module_version(&version("hello", "1.0.0", "aa", 1))?;
        txn.put_module_version(&version("hello", "0.9.0", "aa", 2))?;
        txn.put_module_version(&version("other", "1", "aa", 3))?;
        txn.put_resource("Cluster", "web", "kind: Cluster\n")?;
        txn.put_resource("Cluster", "api", "kind: Cluster # api\n")?;
        txn.put_resource("Plugin", "auth", "kind: Plugin\n")?;
        txn.bump_counter(RESOURCE_VERSION)?;
        txn.bump_counter(RESOURCE_VERSION)?;
        txn.put_value("token", b"secret")?;
        Ok(())
    })
}

/// Checks what `fill` wrote.
fn check_filled(store: &dyn Store) -> Result<(), StoreError> {
    read(store, |txn| {
        assert_eq!(txn.module("aa")?.as_deref(), Some(&b"abc"[..]));
        assert!(txn.has_module("aa")?);
        assert!(!txn.has_module("bb")?);
        assert_eq!(txn.module("bb")?, None);
        assert_eq!(
            txn.module_version("hello", "1.0.0")?,
            Some(version("hello", "1.0.0", "aa", 1))
        );
        assert_eq!(txn.module_version("hello", "2.0.0")?, None);
        let hello: Vec<String> = txn
            .module_versions(Some("hello"))?
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(hello, ["1.0.0", "0.9.0"], "publish order");
        assert_eq!(txn.module_versions(None)?.len(), 3);
        assert_eq!(
            txn.resource("Cluster", "web")?.as_deref(),
            Some("kind: Cluster\n")
        );
        let clusters: Vec<String> = txn
            .resources(Some("Cluster"))?
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(clusters, ["api", "web"], "sorted by name");
        assert_eq!(txn.resources(None)?.len(), 3);
        assert_eq!(txn.counter(RESOURCE_VERSION)?, 2);
        assert_eq!(txn.counter("never")?, 0);
        assert_eq!(txn.value("token")?.as_deref(), Some(&b"secret"[..]));
        Ok(())
    })
}

fn contract(store: &dyn Store) -> Result<(), StoreError> {
    fill(store)?;
    check_filled(store)?;

    // Deletes report whether there was something to delete.
    write(store, |txn| {
        assert!(txn.delete_module_version("other", "1")?);
        assert!(!txn.delete_module_version("other", "1")?);
        assert!(txn.delete_resource("Cluster", "api")?);
        assert!(!txn.delete_resource("Cluster", "api")?);
        assert!(txn.delete_value("token")?);
        assert!(!txn.delete_value("token")?);
        assert!(txn.delete_module("aa")?);
        assert!(!txn.delete_module("aa")?);
        Ok::<_, StoreError>(())
    })?;
    read(store, |txn| {
        assert_eq!(txn.module_versions(None)?.len(), 2);
        assert_eq!(txn.resources(None)?.len(), 2);
        assert_eq!(txn.value("token")?, None);
        assert!(!txn.has_module("aa")?);
        Ok::<_, StoreError>(())
    })
}

/// A closure that fails leaves nothing behind, and its own error comes back.
fn rollback(store: &dyn Store) -> Result<(), StoreError> {
    #[derive(Debug, PartialEq)]
    enum Refused {
        Yes,
        Store,
    }
    impl From<StoreError> for Refused {
        fn from(_: StoreError) -> Self {
            Refused::Store
        }
    }
    let result: Result<(), Refused> = write(store, |txn| {
        txn.put_resource("Cluster", "half", "x")?;
        txn.bump_counter(RESOURCE_VERSION)?;
        txn.put_module("cc", b"x")?;
        Err(Refused::Yes)
    });
    assert_eq!(result, Err(Refused::Yes));
    read(store, |txn| {
        assert_eq!(txn.resource("Cluster", "half")?, None);
        assert_eq!(txn.counter(RESOURCE_VERSION)?, 0);
        assert!(!txn.has_module("cc")?);
        Ok(())
    })
}

#[test]
fn memory_store_keeps_the_contract() -> Result<(), StoreError> {
    contract(&MemoryStore::new())
}

#[test]
fn redb_store_keeps_the_contract() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Backend(e.to_string()))?;
    contract(&RedbStore::open(dir.path())?)
}

#[test]
fn memory_store_rolls_back_a_failed_write() -> Result<(), StoreError> {
    rollback(&MemoryStore::new())
}

#[test]
fn redb_store_rolls_back_a_failed_write() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Backend(e.to_string()))?;
    rollback(&RedbStore::open(dir.path())?)
}

#[test]
fn redb_store_reopened_loses_nothing() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Backend(e.to_string()))?;
    let data = dir.path().join("data");
    {
        let store = RedbStore::open(&data)?;
        assert_eq!(store.path(), data.join("weft.redb"));
        fill(&store)?;
    }
    let store = RedbStore::open(&data)?;
    check_filled(&store)?;
    // Counters continue from where they were.
    let next = write(&store, |txn| txn.bump_counter(RESOURCE_VERSION))?;
    assert_eq!(next, 3);
    Ok(())
}

#[test]
fn redb_store_is_held_by_one_opener() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Backend(e.to_string()))?;
    let _first = RedbStore::open(dir.path())?;
    match RedbStore::open(dir.path()) {
        Ok(_) => panic!("a second open of the same file must be refused"),
        Err(e) => assert!(e.to_string().contains("weft.redb"), "{e}"),
    }
    Ok(())
}

#[test]
fn stores_are_object_safe_and_shareable() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn Store>();
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(MemoryStore::new());
    let version = write(&*store, |txn| txn.bump_counter(RESOURCE_VERSION));
    assert_eq!(version.ok(), Some(1));
}
