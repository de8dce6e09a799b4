//! Plugin configuration weft refuses, all-or-nothing: a filter whose `on_configure` returns
//! false, a module that is missing, is not Wasm or does not match its `sha256` pin, a chain
//! naming an unknown plugin, and out-of-range `deadline` / `memoryLimit`. A reload is rejected
//! saying why (file, line and field where the YAML is at fault) and counted, while the old chain
//! keeps serving; the same file refuses to start a proxy.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use weft_e2e::client;
use weft_e2e::filters::{STEP, module, start, step};
use weft_e2e::resources::{Filter, Plugin, edge, line_of};
use weft_e2e::upstream::{Upstream, header_values};
use weft_e2e::weft::Weft;
use weft_e2e::within;
use weft_test_artifacts::TARGETS;

/// `headers` as filter `name` (plus an unused `broken` plugin resource).
fn good(up: SocketAddr, target: &str, name: &str) -> String {
    let headers = Plugin::new("headers", module("headers", target));
    with_headers(up, target, headers, name)
}

/// Plugin `headers` as given, run as filter `name` (plus an unused `broken` plugin resource).
fn with_headers(up: SocketAddr, target: &str, headers: Plugin, name: &str) -> String {
    let broken = Plugin::new("broken", module("broken", target));
    edge(up, &[headers, broken], [Filter::new("headers").named(name)])
}

/// The filter name requests through `public` run with; panics unless the request succeeds.
async fn served_by(weft: &Weft) -> Vec<String> {
    let public = weft.addr("public");
    let reply = step("GET / through public", client::h1(public, client::get("/"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    header_values(&reply.json(), "x-filtered-by")
}

/// Writes `yaml` and reloads; panics if it is accepted, else returns the error text.
async fn rejected_reload(weft: &Weft, yaml: &str, what: &str) -> String {
    weft.rewrite_config(yaml)
        .await
        .expect("rewriting the config file");
    match within(STEP, &format!("reloading {what}"), weft.app.reload()).await {
        Ok(changed) => panic!("a config with {what} was accepted (changed: {changed})"),
        Err(e) => e.to_string(),
    }
}

/// Starts a proxy on `yaml`; panics if it starts, else returns the error text.
async fn rejected_start(yaml: &str, what: &str) -> String {
    match within(STEP, &format!("starting with {what}"), Weft::start(yaml)).await {
        Ok(_) => panic!("weft started with {what}"),
        Err(e) => format!("{e:#}"),
    }
}

/// After a rejection: still version 1, still filter `a`, at least `failures` rejections
/// counted (the file watcher may have tried the same file too).
async fn still_serving_the_old_chain(weft: &Weft, failures: f64, what: &str) {
    assert_eq!(weft.app.config_version(), 1, "after {what}");
    assert_eq!(
        served_by(weft).await,
        ["a"],
        "after the rejected config with {what}, the old chain keeps serving"
    );
    let counted = weft
        .metric(r#"weft_config_reloads_total{result="failure"}"#)
        .await;
    assert!(
        counted.is_some_and(|n| n >= failures),
        "every rejection is counted: after {what}, {counted:?} (want at least {failures})"
    );
}

/// Each of `cases` — what is wrong, the config, a text on the line at fault, the field at
/// fault — is rejected on reload naming the file, line and field, is counted, and leaves the
/// old chain serving; and refuses to start a proxy, naming the line and field.
async fn each_rejected(weft: &Weft, cases: &[(&str, String, &str, &str)]) {
    let file = weft.config_path.display().to_string();
    for (n, &(what, ref yaml, marker, field)) in cases.iter().enumerate() {
        let line = line_of(yaml, marker);
        let error = rejected_reload(weft, yaml, what).await;
        assert!(
            error.contains(&format!("{file}:{line}")) && error.contains(field),
            "the error for {what} names {file}:{line} and {field}: {error}"
        );
        still_serving_the_old_chain(weft, (n + 1) as f64, what).await;

        let error = rejected_start(yaml, what).await;
        assert!(
            error.contains(&format!("weft.yaml:{line}")) && error.contains(field),
            "the startup error for {what} names weft.yaml:{line} and {field}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_refusing_its_config_rejects_the_update() {
    for target in TARGETS {
        let up = Upstream::http1("web").await.expect("upstream");
        let weft = start(&good(up.addr, target, "a"), "the good config").await;
        assert_eq!(served_by(&weft).await, ["a"], "{target}");

        let cases = [
            ("on_configure returning false", "{mode: reject}"),
            (
                "a config the filter does not understand",
                "{mode: sideways}",
            ),
        ];
        // The rest of each update renames the headers filter: none of it may take effect.
        let picky = |config: &str| {
            let plugins = [
                Plugin::new("headers", module("headers", target)),
                Plugin::new("broken", module("broken", target)),
            ];
            let filters = [
                Filter::new("headers").named("b"),
                Filter::new("broken").named("picky").config(config),
            ];
            edge(up.addr, &plugins, filters)
        };
        for (n, (what, config)) in cases.into_iter().enumerate() {
            let what = format!("{target}: {what}");
            let bad = picky(config);
            let line = line_of(&bad, "- plugin: broken");
            let file = weft.config_path.display().to_string();
            let error = rejected_reload(&weft, &bad, &what).await;
            assert!(
                error.contains("picky")
                    && error.contains(&format!("{file}:{line}"))
                    && error.contains("spec.filters[1]"),
                "the error for {what} names the filter that refused, {file}:{line} and \
                 spec.filters[1]: {error}"
            );
            still_serving_the_old_chain(&weft, (n + 1) as f64, &what).await;

            let error = rejected_start(&bad, &what).await;
            assert!(
                error.contains("picky"),
                "the startup error for {what} names the filter that refused: {error}"
            );
        }

        // The same filter with a config it accepts goes in.
        let fixed = picky("{mode: none}");
        let what = format!("{target}: applying the fixed config");
        let version = step(&what, weft.apply_config(&fixed)).await;
        assert_eq!(version, 2, "{target}");
        assert_eq!(served_by(&weft).await, ["b"], "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_module_rejects_the_update() {
    let target = TARGETS[0];
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = start(&good(up.addr, target, "a"), "the good config").await;
    assert_eq!(served_by(&weft).await, ["a"]);

    let modules = tempfile::tempdir().expect("a directory for modules");
    let missing = modules.path().join("missing.wasm").display().to_string();
    let junk = modules.path().join("junk.wasm");
    std::fs::write(&junk, b"this is not a WebAssembly module\n").expect("writing junk.wasm");
    let junk = junk.display().to_string();
    let headers = module("headers", target);
    let digest = Sha256::digest(std::fs::read(headers).expect("reading headers.wasm"));
    let digest: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let wrong = "0".repeat(64);

    // Each bad config also renames the filter to `b`, so a partial update would show.
    let with = |headers: Plugin| with_headers(up.addr, target, headers, "b");
    let cases = [
        (
            "a module file that does not exist",
            with(Plugin::new("headers", &missing)),
            missing.as_str(),
            "spec.url",
        ),
        (
            "a module file that is not Wasm",
            with(Plugin::new("headers", &junk)),
            junk.as_str(),
            "spec.url",
        ),
        (
            "a module that does not match its sha256 pin",
            with(Plugin::new("headers", headers).sha256(&wrong)),
            wrong.as_str(),
            "spec.sha256",
        ),
    ];
    each_rejected(&weft, &cases).await;

    // The right pin is accepted.
    let pinned = with(Plugin::new("headers", headers).sha256(&digest));
    let what = "applying the module's own sha256 as a pin";
    let version = step(what, weft.apply_config(&pinned)).await;
    assert_eq!(version, 2);
    assert_eq!(served_by(&weft).await, ["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plugin_fields_are_rejected_naming_file_line_and_field() {
    let target = TARGETS[0];
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = start(&good(up.addr, target, "a"), "the good config").await;
    let headers = module("headers", target);
    let with = |headers: Plugin| with_headers(up.addr, target, headers, "b");
    let cases = [
        (
            "a filter naming an unknown plugin",
            edge(
                up.addr,
                &[Plugin::new("headers", headers)],
                [Filter::new("headers").named("b"), Filter::new("nosuch")],
            ),
            "- plugin: nosuch",
            "spec.filters[1].plugin",
        ),
        (
            "a zero deadline",
            with(Plugin::new("headers", headers).deadline("0s")),
            "deadline: 0s",
            "spec.deadline",
        ),
        (
            "a 1Gi memory limit",
            with(Plugin::new("headers", headers).memory_limit("1Gi")),
            "memoryLimit: 1Gi",
            "spec.memoryLimit",
        ),
    ];
    each_rejected(&weft, &cases).await;
}
