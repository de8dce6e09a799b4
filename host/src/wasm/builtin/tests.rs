//! Unit tests for built-in plugins: every crate of `plugins/` is shipped and loads as
//! `builtin://NAME` (its pin checked against the embedded bytes), and an unknown name says
//! which built-in plugins there are.

use std::{path::Path, sync::Arc, time::Duration};

use prometheus::Registry;
use sha2::{Digest, Sha256};

use super::*;
use crate::{
    config::resolved::{PluginConfig, PluginSource},
    wasm::{EngineSettings, WasmHost, filter::load_module},
};

fn host() -> Arc<WasmHost> {
    let settings = EngineSettings {
        max_instances: 16,
        max_memory_bytes: 16 << 20,
        tick: Duration::from_millis(5),
    };
    WasmHost::new(settings, &Registry::new()).expect("host")
}

fn plugin(source: PluginSource, sha256: Option<String>) -> PluginConfig {
    PluginConfig {
        name: "p".into(),
        source,
        sha256,
        deadline: Duration::from_secs(1),
        memory_limit: 16 << 20,
    }
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn every_plugin_crate_is_shipped_as_a_builtin() {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let mut expected: Vec<String> = std::fs::read_dir(&plugins)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().join("Cargo.toml").is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    expected.sort();
    assert_eq!(builtins().collect::<Vec<_>>(), expected);
}

#[test]
fn every_builtin_loads_by_name_and_honours_its_pin() {
    let host = host();
    for name in builtins() {
        let bytes = builtin_module(name).expect("listed");
        let source = PluginSource::Builtin(name.to_owned());
        let module = load_module(&host, &plugin(source.clone(), Some(hex(bytes))))
            .unwrap_or_else(|e| panic!("builtin://{name}: {}", e.message));
        assert_eq!(module.sha256_hex(), hex(bytes));
        let cached = host.runtime.cached_modules();
        load_module(&host, &plugin(source.clone(), None)).expect("again");
        assert_eq!(
            host.runtime.cached_modules(),
            cached,
            "compiled once, cached by digest"
        );
        let wrong = load_module(&host, &plugin(source, Some("0".repeat(64))))
            .err()
            .expect("a wrong pin is rejected");
        assert_eq!(wrong.field, "spec.sha256", "builtin://{name}");
    }
}

/// Built with weft-sdk, every built-in plugin tells the host which stream callbacks it leaves
/// at their no-op defaults.
#[test]
fn every_builtin_exports_its_default_callbacks() {
    let host = host();
    for name in builtins() {
        let bytes = builtin_module(name).expect("listed");
        let compiled = host.runtime.compile(bytes).expect("compiles");
        let export = compiled
            .module
            .exports()
            .find(|e| e.name() == weft_abi::DEFAULT_CALLBACKS_EXPORT);
        assert!(
            export.is_some_and(|e| matches!(e.ty(), wasmtime::ExternType::Func(_))),
            "builtin://{name} exports {}",
            weft_abi::DEFAULT_CALLBACKS_EXPORT
        );
    }
}

#[test]
fn an_unknown_builtin_names_the_ones_there_are() {
    let host = host();
    let error = load_module(
        &host,
        &plugin(PluginSource::Builtin("no-such-plugin".into()), None),
    )
    .err()
    .expect("an unknown builtin is rejected");
    assert_eq!(error.field, "spec.url");
    assert!(
        error.message.contains("`no-such-plugin`"),
        "{}",
        error.message
    );
    for name in builtins() {
        assert!(
            error.message.contains(&format!("`{name}`")),
            "{}",
            error.message
        );
    }
    if builtins().len() == 0 {
        assert!(
            error.message.contains("none in this build"),
            "{}",
            error.message
        );
    }
    let registry = load_module(
        &host,
        &plugin(
            PluginSource::Registry {
                name: "auth".into(),
                version: None,
            },
            None,
        ),
    )
    .err()
    .expect("registry plugins still need a control plane");
    assert_eq!(registry.field, "spec.url");
}

#[test]
fn every_builtin_exports_its_host_buffer() {
    let host = host();
    let name = weft_abi::WeftExport::HostBuffer.name();
    for builtin in builtins() {
        let source = PluginSource::Builtin(builtin.to_owned());
        let module = load_module(&host, &plugin(source, None))
            .unwrap_or_else(|e| panic!("builtin://{builtin}: {}", e.message));
        let export = module
            .module
            .get_export(name)
            .and_then(|export| export.func().cloned())
            .unwrap_or_else(|| panic!("builtin://{builtin} does not export {name}"));
        assert_eq!(export.params().len(), 0, "builtin://{builtin}");
        assert!(
            matches!(
                export.results().collect::<Vec<_>>()[..],
                [wasmtime::ValType::I64]
            ),
            "builtin://{builtin}: {name} returns {export}"
        );
    }
}
