//! Every artifact is there, is a wasm module, and has the proxy-wasm ABI's shape.

use std::collections::BTreeSet;

use crate::wasm::{HEADER, Kind, Module};
use crate::{ALL, TARGETS};

/// The filters of `tests/programs`; a new one belongs here too.
const FILTERS: [&str; 11] = [
    "body",
    "broken",
    "callout",
    "grpc",
    "headers",
    "metrics",
    "passthrough",
    "properties",
    "route",
    "shared",
    "tick",
];

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn parse(path: &str) -> Module {
    Module::parse(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_filter_is_built_for_both_targets() {
    let expected: BTreeSet<(&str, &str)> = FILTERS
        .iter()
        .flat_map(|&name| TARGETS.iter().map(move |&target| (name, target)))
        .collect();
    let built: BTreeSet<(&str, &str)> = ALL.iter().map(|&(n, t, _)| (n, t)).collect();
    assert_eq!(built, expected);
    assert_eq!(ALL.len(), expected.len(), "no duplicates");
    for &(name, target, path) in ALL {
        assert!(
            std::path::Path::new(path).is_file(),
            "{name} for {target}: {path} is missing"
        );
        assert!(path.contains(target) && path.ends_with(&format!("/{name}.wasm")));
    }
}

#[test]
fn constants_and_lookup_agree() {
    assert_eq!(
        crate::path("headers", "wasm32-wasip1"),
        Some(crate::HEADERS_WASIP1)
    );
    assert_eq!(
        crate::path("headers", "wasm32-unknown-unknown"),
        Some(crate::HEADERS_UNKNOWN)
    );
    assert_eq!(crate::path("headers", "x86_64-unknown-linux-gnu"), None);
    assert_eq!(crate::path("nonesuch", "wasm32-wasip1"), None);
    assert_ne!(crate::BROKEN_WASIP1, crate::BROKEN_UNKNOWN);
}

#[test]
fn every_artifact_is_a_version_1_wasm_module() {
    for &(_, _, path) in ALL {
        let bytes = read(path);
        assert_eq!(
            bytes.get(..8),
            Some(&HEADER[..]),
            "{path}: magic and version"
        );
    }
}

#[test]
fn every_artifact_exports_the_proxy_wasm_abi() {
    for &(name, target, path) in ALL {
        let module = parse(path);
        for export in [
            "proxy_abi_version_0_2_1",
            "proxy_on_context_create",
            "proxy_on_request_headers",
            "proxy_on_configure",
            "proxy_on_done",
            "proxy_on_delete",
            "_initialize",
        ] {
            assert!(
                module.exports_func(export),
                "{name}/{target} lacks {export}"
            );
        }
        assert!(
            module
                .exports
                .contains(&("memory".to_owned(), Kind::Memory)),
            "{name}/{target} exports no memory"
        );
        // The SDK's allocator is `malloc` on wasm32-unknown-unknown and
        // `proxy_on_memory_allocate` on WASI; a host must look for both (as Envoy does).
        let allocator = match target {
            "wasm32-unknown-unknown" => "malloc",
            _ => "proxy_on_memory_allocate",
        };
        assert!(
            module.exports_func(allocator),
            "{name}/{target} lacks {allocator}"
        );
    }
}

#[test]
fn imports_are_proxy_wasm_and_only_wasi_on_wasip1() {
    for &(name, target, path) in ALL {
        let module = parse(path);
        let proxy = module
            .imports
            .iter()
            .filter(|(m, f, k)| m == "env" && f.starts_with("proxy_") && *k == Kind::Func)
            .count();
        assert!(proxy > 0, "{name}/{target} imports no env.proxy_* function");
        let wasi = module
            .imports
            .iter()
            .filter(|(m, _, k)| m == "wasi_snapshot_preview1" && *k == Kind::Func)
            .count();
        match target {
            "wasm32-wasip1" => assert!(wasi > 0, "{name}/{target} imports no WASI function"),
            _ => assert_eq!(wasi, 0, "{name}/{target} imports WASI"),
        }
        for (module_name, field, kind) in &module.imports {
            assert!(
                (module_name == "env" && field.starts_with("proxy_"))
                    || module_name == "wasi_snapshot_preview1",
                "{name}/{target} imports {module_name}.{field} ({kind:?}), which no proxy-wasm \
                 host provides"
            );
        }
    }
}

#[test]
fn imports_and_exports_are_names_of_abi_v0_2_1() {
    for &(name, target, path) in ALL {
        let module = parse(path);
        for (module_name, field, _) in &module.imports {
            let known = match module_name.as_str() {
                weft_abi::HOST_MODULE => weft_abi::HOST_FUNCTIONS.contains(&field.as_str()),
                weft_abi::wasi::WASI_MODULE => {
                    weft_abi::wasi::WASI_FUNCTIONS.contains(&field.as_str())
                }
                _ => false,
            };
            assert!(
                known,
                "{name}/{target} imports {module_name}.{field}, not in weft_abi"
            );
        }
        for (export, kind) in &module.exports {
            if *kind == Kind::Func {
                assert!(
                    weft_abi::GUEST_EXPORTS.contains(&export.as_str()),
                    "{name}/{target} exports function {export}, not in weft_abi::GUEST_EXPORTS"
                );
            }
        }
    }
}

/// The SDK's dispatcher links most host functions into every module, whatever it calls; the
/// metric and log functions are linked only when a filter uses them, so these show that a
/// filter does what its docs say.
#[test]
fn metric_and_log_functions_are_imported_only_where_used() {
    let imports = |path| -> BTreeSet<String> {
        parse(path)
            .imports
            .into_iter()
            .map(|(_, field, _)| field)
            .collect()
    };
    let metrics = imports(crate::METRICS_WASIP1);
    for function in [
        "proxy_define_metric",
        "proxy_increment_metric",
        "proxy_record_metric",
        "proxy_get_metric",
    ] {
        assert!(metrics.contains(function), "metrics lacks {function}");
    }
    for path in [
        crate::CALLOUT_WASIP1,
        crate::TICK_WASIP1,
        crate::BROKEN_WASIP1,
    ] {
        assert!(imports(path).contains("proxy_log"), "{path} does not log");
    }
    let passthrough = imports(crate::PASSTHROUGH_UNKNOWN);
    assert!(!passthrough.contains("proxy_log"));
    assert!(!passthrough.contains("proxy_define_metric"));
}

#[test]
fn reader_handles_multi_byte_lebs_and_rejects_junk() {
    // (import "env" "f" (func (type 0))) and (export "x" (func 200)), 200 as a 2-byte LEB.
    let mut module = HEADER.to_vec();
    module.extend([2, 9, 1, 3, b'e', b'n', b'v', 1, b'f', 0, 0]);
    module.extend([7, 6, 1, 1, b'x', 0, 0xc8, 0x01]);
    let parsed = Module::parse(&module).expect("a valid module");
    assert_eq!(
        parsed.imports,
        vec![("env".to_owned(), "f".to_owned(), Kind::Func)]
    );
    assert!(parsed.exports_func("x"));

    assert!(
        Module::parse(b"\0asm\x0d\0\x01\0").is_err(),
        "component version"
    );
    assert!(Module::parse(b"not wasm").is_err());
    let mut truncated = module.clone();
    truncated.pop();
    assert!(Module::parse(&truncated).is_err());
}
