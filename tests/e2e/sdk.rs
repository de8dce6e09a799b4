//! The filter author's story with the weft SDK, run for real: `weft plugin new` writes a crate,
//! its native unit test passes under plain `cargo test`, it builds to `wasm32-wasip1`, and the
//! proxy runs it from a YAML chain; `examples/hello-filter` does the same verbatim.
//!
//! The nested cargo builds use their own target directory under the workspace's `target/`
//! (never the one the running `cargo test` holds locked), so they are cached between runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use weft_e2e::client;
use weft_e2e::filters::{send, start};
use weft_e2e::resources::{Filter, Plugin, edge};
use weft_e2e::upstream::{Upstream, header_values};
use weft_host::scaffold::{SdkSource, new_plugin};

pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs `cargo ARGS` in `dir` with target directory `target`; panics with its output on
/// failure; returns its stdout and stderr.
pub(crate) fn cargo(dir: &Path, target: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(args).current_dir(dir);
    weft_test_artifacts::without_outer_cargo_env(&mut cmd).env("CARGO_TARGET_DIR", target);
    let output = cmd.output().expect("cargo runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "cargo {args:?} in {} failed:\n{text}",
        dir.display()
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_plugin_crate_tests_natively_builds_to_wasm_and_runs_in_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crate_dir = dir.path().join("e2e-filter");
    let sdk = SdkSource::Path(workspace().join("sdk"));
    new_plugin("e2e-filter", &crate_dir, &sdk).expect("crate written");
    let target = workspace().join("target").join("scaffold-e2e");

    let crate_dir2 = crate_dir.clone();
    let target2 = target.clone();
    let (tested, _) = tokio::task::spawn_blocking(move || {
        let tested = cargo(&crate_dir2, &target2, &["test"]);
        cargo(
            &crate_dir2,
            &target2,
            &["build", "--release", "--target", "wasm32-wasip1"],
        );
        (tested, ())
    })
    .await
    .expect("cargo task");
    assert!(
        tested.contains("adds_its_header_upstream_and_stamps_the_response ... ok"),
        "the generated unit test runs and passes:\n{tested}"
    );

    let wasm = target.join("wasm32-wasip1/release/e2e_filter.wasm");
    let up = Upstream::http1("web").await.expect("upstream");
    let plugin = Plugin::new("e2e-filter", &wasm.display().to_string());
    let filter = Filter::new("e2e-filter").config(r#"{value: "from-wasm"}"#);
    let weft = start(&edge(up.addr, &[plugin], [filter]), "the generated filter").await;
    let reply = send(
        weft.addr("public"),
        http::Version::HTTP_11,
        client::get("/x"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        header_values(&reply.json(), "x-e2e-filter"),
        ["from-wasm"],
        "the upstream sees the filter's header with its configured value"
    );
    assert_eq!(reply.header("x-filtered-by"), Some("e2e-filter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hello_filter_walkthrough_works_verbatim() {
    let example = workspace().join("examples/hello-filter");
    let target = workspace().join("target").join("hello-filter-e2e");
    let example2 = example.clone();
    let target2 = target.clone();
    tokio::task::spawn_blocking(move || {
        cargo(
            &example2,
            &target2,
            &["build", "--release", "--target", "wasm32-wasip1"],
        )
    })
    .await
    .expect("cargo task");

    // The walkthrough's own weft.yaml, with only the module path and the upstream moved to
    // where this test built and started them.
    let up = Upstream::http1("app").await.expect("upstream");
    let yaml = std::fs::read_to_string(example.join("weft.yaml")).expect("weft.yaml");
    let wasm = target.join("wasm32-wasip1/release/hello_filter.wasm");
    let yaml = yaml
        .replace(
            "../../target/wasm32-wasip1/release/hello_filter.wasm",
            &format!("file://{}", wasm.display()),
        )
        .replace("127.0.0.1:9001", &up.addr.to_string())
        .replace("127.0.0.1:8080", "127.0.0.1:0");
    assert!(yaml.contains("file://"), "the walkthrough's url was found");
    let weft = start(&yaml, "examples/hello-filter/weft.yaml").await;

    let reply = send(
        weft.addr("public"),
        http::Version::HTTP_11,
        client::get("/hello/filter"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hej from a weft filter\n");
    assert_eq!(up.requests(), 0, "answered by the filter itself");

    let reply = send(weft.addr("public"), http::Version::HTTP_2, client::get("/")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(header_values(&reply.json(), "x-hello"), ["hej"]);
    assert_eq!(reply.header("x-served-by"), Some("hello-filter"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let metrics = weft.metrics().await.expect("metrics");
    assert!(
        metrics.contains("hello_requests_total 2"),
        "the filter's counter is exported:\n{metrics}"
    );
}
