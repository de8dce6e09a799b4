//! Registry tests, on real redb files and real proxy-wasm modules (the test filters built by
//! `weft-test-artifacts`), with small WAT modules for what a filter must not be.

use std::{path::Path, sync::Arc};

use weft_test_artifacts::{HEADERS_WASIP1, PASSTHROUGH_UNKNOWN, PASSTHROUGH_WASIP1};

use super::*;
use crate::{resources::Resources, store::RedbStore};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn module(path: &str) -> Result<Vec<u8>, std::io::Error> {
    std::fs::read(path)
}

fn wat(text: &str) -> Result<Vec<u8>, wat::Error> {
    wat::parse_str(text)
}

/// The smallest module the registry accepts.
const MINIMAL: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0))"#;

fn open(dir: &Path) -> Result<Registry, StoreError> {
    Ok(Registry::new(Arc::new(RedbStore::open(dir)?)))
}

#[test]
fn publishes_real_filters_for_both_targets_and_gets_them_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let registry = open(dir.path())?;
    for (version, path) in [
        ("1.0.0", PASSTHROUGH_WASIP1),
        ("1.1.0", PASSTHROUGH_UNKNOWN),
    ] {
        let bytes = module(path)?;
        let published = registry.publish("passthrough", version, &bytes)?;
        assert!(published.created);
        assert_eq!(published.version.sha256, sha256_hex(&bytes));
        assert_eq!(published.version.size, bytes.len() as u64);
        assert!(published.version.published_at_ms > 0);
        let got = registry.get("passthrough", Some(version))?;
        assert_eq!(got, published.version);
        assert_eq!(registry.module(&got.sha256)?, bytes);
    }
    assert_eq!(registry.get("passthrough", None)?.version, "1.1.0");
    Ok(())
}

#[test]
fn republishing_the_same_bytes_is_idempotent() -> TestResult {
    let dir = tempfile::tempdir()?;
    let registry = open(dir.path())?;
    let bytes = module(PASSTHROUGH_WASIP1)?;
    let first = registry.publish("passthrough", "1.0.0", &bytes)?;
    let again = registry.publish("passthrough", "1.0.0", &bytes)?;
    assert!(!again.created);
    assert_eq!(again.version, first.version, "the original record stands");
    assert_eq!(registry.list()?[0].versions.len(), 1);
    Ok(())
}

#[test]
fn republishing_a_version_with_other_bytes_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let registry = open(dir.path())?;
    let first = registry.publish("filter", "1.0.0", &module(PASSTHROUGH_WASIP1)?)?;
    let other = module(HEADERS_WASIP1)?;
    match registry.publish("filter", "1.0.0", &other) {
        Err(e @ RegistryError::VersionExists { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("filter@1.0.0 is already published"),
                "{message}"
            );
            assert!(message.contains(&first.version.sha256), "{message}");
            assert!(message.contains("new version"), "{message}");
        }
        other => panic!("expected VersionExists, got {other:?}"),
    }
    assert_eq!(registry.get("filter", None)?.sha256, first.version.sha256);
    assert!(matches!(
        registry.module(&sha256_hex(&other)),
        Err(RegistryError::NotFound(_))
    ));
    Ok(())
}

#[test]
fn modules_are_stored_once_per_digest_and_removed_with_their_last_version() -> TestResult {
    let dir = tempfile::tempdir()?;
    let registry = open(dir.path())?;
    let bytes = module(PASSTHROUGH_WASIP1)?;
    let sha = registry.publish("one", "1", &bytes)?.version.sha256;
    registry.publish("two", "1", &bytes)?;
    registry.delete("one", "1")?;
    assert_eq!(registry.module(&sha)?, bytes, "still used by two@1");
    registry.delete("two", "1")?;
    assert!(matches!(
        registry.module(&sha),
        Err(RegistryError::NotFound(_))
    ));
    assert!(registry.list()?.is_empty());
    Ok(())
}

#[test]
fn modules_that_are_not_proxy_wasm_are_refused_and_not_stored() -> TestResult {
    let dir = tempfile::tempdir()?;
    let registry = open(dir.path())?;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"hello".to_vec(), "not a binary WebAssembly module"),
        (
            MINIMAL.as_bytes().to_vec(),
            "not a binary WebAssembly module",
        ),
        (b"\0asm\x01\0\0\0\xff".to_vec(), "does not compile"),
        (
            wat(r#"(module (func (export "run")))"#)?,
            "proxy_abi_version_0_2_1",
        ),
        (
            wat(
                r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))"#,
            )?,
            "an allocator (`proxy_on_memory_allocate` or `malloc`)",
        ),
        (
            wat(r#"(module (memory 1)
                 (func (export "proxy_abi_version_0_2_1"))
                 (func (export "malloc") (param i32) (result i32) i32.const 0))"#)?,
            "the memory `memory`",
        ),
    ];
    for (bytes, expected) in cases {
        match registry.publish("bad", "1.0.0", &bytes) {
            Err(e @ RegistryError::NotProxyWasm { .. }) => {
                let message = e.to_string();
                assert!(message.starts_with("bad@1.0.0 refused: "), "{message}");
                assert!(
                    message.contains(expected),
                    "{message} should say {expected}"
                );
            }
            other => panic!("expected NotProxyWasm for {expected}, got {other:?}"),
        }
    }
    assert!(registry.list()?.is_empty());
    // `malloc` is an allocator too, and the minimal module passes.
    let with_malloc = MINIMAL.replace("proxy_on_memory_allocate", "malloc");
    registry.publish("minimal", "1", &wat(&with_malloc)?)?;
    registry.publish("minimal", "2", &wat(MINIMAL)?)?;
    Ok(())
}

#[test]
fn large_modules_are_accepted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let registry = open(dir.path())?;
    let payload = "a".repeat(8 << 20);
    let text = MINIMAL.replace(
        "(memory (export \"memory\") 1)",
        &format!("(memory (export \"memory\") 200) (data (i32.const 0) \"{payload}\")"),
    );
    let bytes = wat(&text)?;
    assert!(bytes.len() > 8 << 20);
    let published = registry.publish("big", "1.0.0", &bytes)?;
    drop(registry);
    let registry = open(dir.path())?;
    assert_eq!(registry.module(&published.version.sha256)?, bytes);
    Ok(())
}

#[test]
fn names_and_versions_are_checked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let registry = open(dir.path())?;
    let bytes = wat(MINIMAL)?;
    for name in [
        "",
        "Hello",
        "hello_world",
        "-hello",
        "hello-",
        "a/b",
        "héllo",
    ] {
        assert!(
            matches!(
                registry.publish(name, "1.0.0", &bytes),
                Err(RegistryError::InvalidName(_))
            ),
            "{name:?}"
        );
    }
    for version in ["", "1.0 ", "1/0", "v1@2", "1_0"] {
        assert!(
            matches!(
                registry.publish("hello", version, &bytes),
                Err(RegistryError::InvalidVersion(_))
            ),
            "{version:?}"
        );
    }
    for (name, version) in [
        ("hello", "1.0.0"),
        ("hello-2", "1.0.0-rc.1+build.5"),
        ("x9", "v2"),
    ] {
        registry.publish(name, version, &bytes)?;
    }
    Ok(())
}

#[test]
fn list_sorts_by_semver_when_it_can_and_keeps_publish_order_otherwise() -> TestResult {
    let dir = tempfile::tempdir()?;
    let registry = open(dir.path())?;
    let bytes = wat(MINIMAL)?;
    for version in ["1.10.0", "1.2.0", "1.2.0-rc.1", "0.9.0"] {
        registry.publish("semver", version, &bytes)?;
    }
    for version in ["beta", "alpha", "1.0.0"] {
        registry.publish("labels", version, &bytes)?;
    }
    let list = registry.list()?;
    let names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["labels", "semver"]);
    let versions =
        |i: usize| -> Vec<String> { list[i].versions.iter().map(|v| v.version.clone()).collect() };
    assert_eq!(versions(0), ["beta", "alpha", "1.0.0"]);
    assert_eq!(versions(1), ["0.9.0", "1.2.0-rc.1", "1.2.0", "1.10.0"]);
    // Latest is the newest published, not the highest.
    assert_eq!(registry.get("semver", None)?.version, "0.9.0");
    assert!(matches!(
        registry.get("semver", Some("2.0.0")),
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(
        registry.get("nothing", None),
        Err(RegistryError::NotFound(_))
    ));
    Ok(())
}

const CHAIN: &str = "\
apiVersion: weft/v1
kind: FilterChain
metadata: {name: edge}
spec:
  filters:
    - plugin: hello
";

#[test]
fn a_pinned_version_cannot_be_deleted_while_a_plugin_uses_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path())?);
    let registry = Registry::new(store.clone());
    let resources = Resources::new(store);
    let bytes = module(PASSTHROUGH_WASIP1)?;
    registry.publish("hello", "1.0.0", &bytes)?;
    registry.publish("hello", "2.0.0", &wat(MINIMAL)?)?;
    resources.apply(&format!(
        "apiVersion: weft/v1\nkind: Plugin\nmetadata: {{name: hello}}\nspec: {{url: \"registry://hello@1.0.0\"}}\n---\n{CHAIN}"
    ))?;
    match registry.delete("hello", "1.0.0") {
        Err(e @ RegistryError::InUse { .. }) => {
            let message = e.to_string();
            assert_eq!(
                message,
                "cannot delete hello@1.0.0: Plugin `hello` refers to it (registry://hello@1.0.0), used by FilterChain `edge`"
            );
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert_eq!(
        registry.get("hello", Some("1.0.0"))?.sha256,
        sha256_hex(&bytes)
    );
    // The newest is not pinned by anyone: it can go.
    registry.delete("hello", "2.0.0")?;
    // Once the plugin moves off the version, it can go too.
    resources.delete("FilterChain", "edge")?;
    resources.delete("Plugin", "hello")?;
    registry.delete("hello", "1.0.0")?;
    Ok(())
}

#[test]
fn the_newest_version_cannot_be_deleted_while_a_plugin_follows_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path())?);
    let registry = Registry::new(store.clone());
    let resources = Resources::new(store);
    registry.publish("hello", "1.0.0", &module(PASSTHROUGH_WASIP1)?)?;
    registry.publish("hello", "2.0.0", &wat(MINIMAL)?)?;
    resources.apply(
        "apiVersion: weft/v1\nkind: Plugin\nmetadata: {name: greeter}\nspec: {url: \"registry://hello\"}\n",
    )?;
    match registry.delete("hello", "2.0.0") {
        Err(e @ RegistryError::InUse { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("Plugin `greeter` refers to it (registry://hello)"),
                "{message}"
            );
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    // An older version is not what the plugin follows.
    registry.delete("hello", "1.0.0")?;
    assert!(matches!(
        registry.delete("hello", "1.0.0"),
        Err(RegistryError::NotFound(_))
    ));
    Ok(())
}

#[test]
fn a_reopened_registry_has_everything() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bytes = module(PASSTHROUGH_WASIP1)?;
    let published = open(dir.path())?.publish("hello", "1.0.0", &bytes)?;
    let registry = open(dir.path())?;
    assert_eq!(registry.get("hello", None)?, published.version);
    assert_eq!(registry.module(&published.version.sha256)?, bytes);
    // Publish order continues after a restart.
    let next = registry.publish("hello", "0.1.0", &wat(MINIMAL)?)?;
    assert!(next.version.sequence > published.version.sequence);
    assert_eq!(registry.get("hello", None)?.version, "0.1.0");
    Ok(())
}

#[test]
fn publishing_a_version_a_plugin_follows_bumps_the_resource_version() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path())?);
    let registry = Registry::new(store.clone());
    let resources = Resources::new(store);
    let first = registry.publish("hello", "1.0.0", &module(PASSTHROUGH_WASIP1)?)?;
    assert!(!first.moved_plugins);
    assert_eq!(first.resource_version, 0);
    resources.apply(
        "apiVersion: weft/v1\nkind: Plugin\nmetadata: {name: greeter}\nspec: {url: \"registry://hello\"}\n",
    )?;
    let second = registry.publish("hello", "2.0.0", &wat(MINIMAL)?)?;
    assert!(second.moved_plugins);
    assert_eq!(second.resource_version, 2);
    assert_eq!(resources.version()?, 2);
    // Republishing is no move; another plugin's publish moves nothing.
    let again = registry.publish("hello", "2.0.0", &wat(MINIMAL)?)?;
    assert!(!again.moved_plugins);
    let other = registry.publish("other", "1.0.0", &wat(MINIMAL)?)?;
    assert!(!other.moved_plugins);
    assert_eq!(resources.version()?, 2);
    Ok(())
}

#[test]
fn a_reload_names_every_plugin_of_the_module_and_bumps_its_generation() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path())?);
    let registry = Registry::new(store.clone());
    let resources = Resources::new(store.clone());
    registry.publish("hello", "1.0.0", &module(PASSTHROUGH_WASIP1)?)?;
    registry.publish("hello", "2.0.0", &wat(MINIMAL)?)?;
    let applied = resources.apply(&format!(
        "apiVersion: weft/v1\nkind: Plugin\nmetadata: {{name: pinned}}\nspec: {{url: \"registry://hello@1.0.0\"}}\n---\napiVersion: weft/v1\nkind: Plugin\nmetadata: {{name: hello}}\nspec: {{url: \"registry://hello\"}}\n---\n{CHAIN}"
    ))?;
    let first = registry.reload("hello")?;
    assert_eq!(first.version.version, "2.0.0", "the newest version");
    assert_eq!(first.plugins, ["hello", "pinned"]);
    assert_eq!(first.generation, 1);
    assert_eq!(first.resource_version, applied.version + 1);
    let second = registry.reload("hello")?;
    assert_eq!(second.generation, 2);
    assert_eq!(second.resource_version, applied.version + 2);
    assert_eq!(
        store::read(&*store, |txn| txn.counter(&reload_counter("hello")))?,
        2
    );
    assert!(matches!(
        registry.reload("Hello"),
        Err(RegistryError::InvalidName(_))
    ));
    assert!(matches!(
        registry.reload("absent"),
        Err(RegistryError::NotFound(_))
    ));
    Ok(())
}
