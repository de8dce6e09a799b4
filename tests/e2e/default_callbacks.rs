//! weft does not enter a weft-sdk filter for the phases it leaves at their no-op defaults
//! (`weft_abi::DEFAULT_CALLBACKS_EXPORT`), and enters it as before for the phases it
//! overrides. Guest entries are counted by `weft_plugin_calls_total`: `builtin://router`
//! overrides only the request headers; a probe filter built here with the SDK overrides only
//! the response body and counts the chunks it sees. A module noting `on_log` (bit 6) still has
//! its stream ended (`proxy_on_done`, `proxy_on_delete`), without `proxy_on_log`.

use weft_e2e::client;
use weft_e2e::filters::{STEP, VERSIONS, send, start};
use weft_e2e::resources::{Filter, Plugin, edge};
use weft_e2e::upstream::Upstream;
use weft_e2e::weft::Weft;
use weft_host::scaffold::{SdkSource, new_plugin};

use crate::sdk::{cargo, workspace};

/// The probe: every phase but the response body left at the SDK's default.
const PROBE: &str = r#"//! Counts the response body phases it runs and the chunks they carry.

use std::rc::Rc;

use serde::Deserialize;
use weft_sdk::{Action, Counter, Filter, Response, Result};

#[derive(Deserialize)]
pub struct Config {}

pub struct Probe;

impl Filter for Probe {
    type Config = Config;

    fn new(_: &Rc<Config>) -> Self {
        Probe
    }

    fn on_response_body(&mut self, response: &mut Response) -> Result<Action> {
        Counter::define("probe_body_calls_total")?.increment(1)?;
        if !response.body()?.is_empty() {
            Counter::define("probe_body_chunks_total")?.increment(1)?;
        }
        Ok(Action::Continue)
    }
}

weft_sdk::export_filter!(Probe);
"#;

/// Chunks `/stream/3` answers with.
const CHUNKS: f64 = 3.0;

async fn metric(weft: &Weft, prefix: &str) -> f64 {
    weft.metric(prefix).await.unwrap_or(0.0)
}

async fn calls(weft: &Weft, plugin: &str) -> f64 {
    metric(
        weft,
        &format!("weft_plugin_calls_total{{plugin=\"{plugin}\"}}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_left_at_their_default_are_skipped_and_overridden_ones_run_for_every_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crate_dir = dir.path().join("skip-probe");
    let sdk = SdkSource::Path(workspace().join("sdk"));
    new_plugin("skip-probe", &crate_dir, &sdk).expect("crate written");
    std::fs::write(crate_dir.join("src/lib.rs"), PROBE).expect("probe source");
    // The scaffold test's target directory: the same dependencies, built once.
    let target = workspace().join("target").join("scaffold-e2e");
    let (crate_dir2, target2) = (crate_dir.clone(), target.clone());
    tokio::task::spawn_blocking(move || {
        cargo(
            &crate_dir2,
            &target2,
            &["build", "--release", "--target", "wasm32-wasip1"],
        )
    })
    .await
    .expect("cargo task");
    let wasm = target.join("wasm32-wasip1/release/skip_probe.wasm");

    let up = Upstream::http1("web").await.expect("upstream");
    let plugins = [
        Plugin::new("router", "").url("builtin://router"),
        Plugin::new("probe", &wasm.display().to_string()),
    ];
    let filters = [
        Filter::new("router").config("{routes: [{cluster: web}]}"),
        Filter::new("probe"),
    ];
    let weft = start(&edge(up.addr, &plugins, filters), "router and probe").await;

    // One request at a time: each one's contexts are gone (and its calls counted) once its
    // chunked body ended, so every request runs on each filter's first instance. The first
    // request runs each default once, which tells the host about it.
    let mut before = None;
    for i in 0..6 {
        let version = VERSIONS[i % 2];
        let reply = send(weft.addr("public"), version, client::get("/stream/3")).await;
        assert_eq!(reply.status, 200, "{version:?}: {}", reply.text());
        assert_eq!(reply.text(), "chunk\n".repeat(3), "{version:?}");
        let now = (
            calls(&weft, "router").await,
            calls(&weft, "probe").await,
            metric(&weft, "probe_body_calls_total").await,
            metric(&weft, "probe_body_chunks_total").await,
        );
        if let Some((router, probe, body_calls, chunks)) = before {
            assert_eq!(
                now.0 - router,
                2.0,
                "request {i}: the router is entered to create its context with the request \
                 headers and to end it, never for the response"
            );
            assert_eq!(
                now.3 - chunks,
                CHUNKS,
                "request {i}: the probe saw every chunk"
            );
            assert!(now.2 - body_calls >= CHUNKS, "request {i}");
            assert_eq!(
                now.1 - probe,
                2.0 + (now.2 - body_calls),
                "request {i}: the probe is entered for its context and each body phase, not \
                 for the response headers"
            );
        }
        before = Some(now);
    }
    assert_eq!(
        metric(
            &weft,
            "weft_plugin_instances_created_total{plugin=\"router\"}"
        )
        .await,
        1.0,
        "one instance served every request"
    );
    assert_eq!(up.requests(), 6);
}

/// A hand-written guest whose every stream callback passes and whose `proxy_on_log` traps, with
/// `WORD` as its word of default callbacks.
const LOG_TRAP: &str = r#"(module
  (memory (export "memory") 1)
  (data (i32.const 16) "WORD")
  (global $deleted (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "weft_default_callbacks_v1") (result i32) (i32.const 16))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_trailers") (param i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32) unreachable)
  (func (export "proxy_on_delete") (param i32)))
"#;

/// Serves four requests through the [`LOG_TRAP`] guest with default-callbacks word `word`
/// (four bytes as WAT string escapes), and waits for `expected` trap failures at their streams'
/// ends (which run after the responses went out); returns the count then.
async fn log_trap_failures(word: &str, expected: f64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log-trap.wat");
    std::fs::write(&path, LOG_TRAP.replace("WORD", word)).expect("module written");
    let up = Upstream::http1("web").await.expect("upstream");
    let plugins = [Plugin::new("logtrap", &path.display().to_string())];
    let weft = start(
        &edge(up.addr, &plugins, [Filter::new("logtrap")]),
        "a guest whose on_log traps",
    )
    .await;
    for i in 0..4 {
        let version = VERSIONS[i % 2];
        let reply = send(weft.addr("public"), version, client::get("/")).await;
        assert_eq!(reply.status, 200, "{version:?}: {}", reply.text());
    }
    assert_eq!(up.requests(), 4);
    let failures = r#"weft_plugin_failures_total{plugin="logtrap",reason="trap"}"#;
    let counted = || async { metric(&weft, failures).await };
    weft_e2e::wait_for(|| async { counted().await == expected }, STEP).await;
    // Time for a failure that should not come to be counted all the same.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    counted().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_notes_its_on_log_ends_its_streams_without_it() {
    assert_eq!(
        log_trap_failures("\\40\\00\\00\\00", 0.0).await,
        0.0,
        "bit 6 set: proxy_on_log is never entered"
    );
    assert_eq!(
        log_trap_failures("\\00\\00\\00\\00", 4.0).await,
        4.0,
        "bit 6 clear: every stream's end enters proxy_on_log, which traps"
    );
}
