//! The client commands as an operator runs them: the real `weft` binary against a control
//! plane started in this process on 127.0.0.1:0 over a temporary data directory.

use std::{
    path::Path,
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use weft_control::{
    client,
    proto::{DiscoveryRequest, StatusRequest},
    server::{Running, ServeOptions, start},
};
use weft_test_artifacts::PASSTHROUGH_WASIP1;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A chain running the `hello` plugin, which follows the newest published version.
const CHAIN: &str = include_str!("../../control/tests/fixtures/chain.yaml");

/// A listener whose chain does not exist.
const DANGLING: &str = include_str!("../../control/tests/fixtures/dangling.yaml");

/// Runs `weft ARGS --control URL --token TOKEN` in `dir` (so no ./weft-data/token is found
/// by accident) with the WEFT_* variables cleared.
async fn weft(running: &Running, token: &str, dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(WEFT);
    command
        .args(args)
        .args(["--control", &format!("http://{}", running.addr)])
        .args(["--token", token])
        .current_dir(dir)
        .env_remove("WEFT_CONTROL")
        .env_remove("WEFT_TOKEN");
    tokio::task::spawn_blocking(move || command.output().expect("weft runs"))
        .await
        .expect("join")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_list_apply_get_and_refusals_through_the_binary() {
    let data = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let running = start(ServeOptions::new(
        ([127, 0, 0, 1], 0).into(),
        data.path().to_owned(),
    ))
    .await
    .expect("control plane starts");
    let token = running.token.clone();
    let dir = work.path();

    let wasm = PASSTHROUGH_WASIP1;
    let published = weft(
        &running,
        &token,
        dir,
        &["plugin", "publish", "hello", wasm, "--version", "1.0.0"],
    )
    .await;
    assert!(published.status.success(), "{}", stderr(&published));
    assert!(
        stdout(&published).contains("published hello@1.0.0 sha256:"),
        "{}",
        stdout(&published)
    );

    let list = weft(&running, &token, dir, &["plugin", "list"]).await;
    assert!(list.status.success(), "{}", stderr(&list));
    let line = stdout(&list)
        .lines()
        .find(|l| l.starts_with("hello "))
        .map(str::to_owned);
    assert!(
        line.is_some_and(|l| l.contains("1.0.0")),
        "{}",
        stdout(&list)
    );

    let chain = dir.join("chain.yaml");
    std::fs::write(&chain, CHAIN).expect("write chain");
    let chain = chain.to_string_lossy().into_owned();
    let applied = weft(&running, &token, dir, &["apply", "-f", &chain]).await;
    assert!(applied.status.success(), "{}", stderr(&applied));
    let out = stdout(&applied);
    let version = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("version "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(version.is_some_and(|v| v > 0), "{out}");
    assert!(out.contains("Plugin/hello created"), "{out}");

    let got = weft(
        &running,
        &token,
        dir,
        &["get", "plugin", "hello", "-o", "json"],
    )
    .await;
    assert!(got.status.success(), "{}", stderr(&got));
    let json: serde_json::Value = serde_json::from_slice(&got.stdout).expect("get prints JSON");
    assert_eq!(json["spec"]["url"], "registry://hello", "{json}");
    let all = weft(&running, &token, dir, &["get", "plugin", "-o", "json"]).await;
    let all: serde_json::Value = serde_json::from_slice(&all.stdout).expect("a JSON array");
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");

    let dangling = dir.join("dangling.yaml");
    std::fs::write(&dangling, DANGLING).expect("write dangling");
    let dangling = dangling.to_string_lossy().into_owned();
    let refused = weft(&running, &token, dir, &["apply", "-f", &dangling]).await;
    assert_eq!(refused.status.code(), Some(1));
    let err = stderr(&refused);
    assert!(
        err.starts_with(&format!("weft: apply {dangling}: invalid argument: "))
            && err.contains("missing"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");

    let status = weft(&running, &token, dir, &["status"]).await;
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(stdout(&status).contains("NODE"), "{}", stdout(&status));

    let wrong = weft(&running, "not-the-token", dir, &["plugin", "list"]).await;
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("unauthenticated"),
        "{}",
        stderr(&wrong)
    );

    running.shutdown().await.expect("shutdown");
}

/// A simulated proxy on its own Subscribe call: ACKs every snapshot, or NACKs with `boom`
/// while `nack` is set. Ends when the task is aborted.
fn simulated_proxy(
    running: &Running,
    node: &'static str,
    nack: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let url = format!("http://{}", running.addr);
    let token = running.token.clone();
    tokio::spawn(async move {
        let mut clients = client::connect(&url, &token).await.expect("connects");
        let (requests, mut snapshots) = clients.subscribe(node, 0).await.expect("subscribes");
        let mut running_version = 0;
        while let Ok(Some(snapshot)) = snapshots.message().await {
            let refuse = nack.load(Ordering::SeqCst);
            if !refuse {
                running_version = snapshot.version;
            }
            let answer = DiscoveryRequest {
                node: node.into(),
                version_info: running_version,
                response_nonce: snapshot.nonce,
                error_detail: if refuse { "boom".into() } else { String::new() },
            };
            if requests.send(answer).await.is_err() {
                return;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_reload_waits_for_every_proxy_and_names_the_one_that_nacked() {
    let data = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let mut options = ServeOptions::new(([127, 0, 0, 1], 0).into(), data.path().to_owned());
    options.debounce = Duration::from_millis(20);
    let running = start(options).await.expect("control plane starts");
    let token = running.token.clone();
    let dir = work.path();
    let wasm = PASSTHROUGH_WASIP1;
    let args = ["plugin", "publish", "hello", wasm, "--version", "1.0.0"];
    assert!(weft(&running, &token, dir, &args).await.status.success());

    let unused = weft(&running, &token, dir, &["plugin", "reload", "hello"]).await;
    assert_eq!(unused.status.code(), Some(1));
    assert!(
        stderr(&unused).starts_with(
            "weft: reload hello: failed precondition: no Plugin resource refers to registry://hello"
        ),
        "{}",
        stderr(&unused)
    );

    let chain = dir.join("chain.yaml");
    std::fs::write(&chain, CHAIN).expect("write chain");
    let chain = chain.to_string_lossy().into_owned();
    assert!(
        weft(&running, &token, dir, &["apply", "-f", &chain])
            .await
            .status
            .success()
    );
    let alone = weft(&running, &token, dir, &["plugin", "reload", "hello"]).await;
    assert!(alone.status.success(), "{}", stderr(&alone));
    assert!(
        stdout(&alone).contains("no proxy is connected"),
        "{}",
        stdout(&alone)
    );

    let nack = Arc::new(AtomicBool::new(false));
    let proxies = [
        simulated_proxy(&running, "edge-a", Arc::new(AtomicBool::new(false))),
        simulated_proxy(&running, "edge-b", nack.clone()),
    ];
    let mut clients = client::connect(&format!("http://{}", running.addr), &token)
        .await
        .expect("connects");
    for _ in 0..500 {
        let status = clients
            .discovery
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        let acked = status
            .proxies
            .iter()
            .filter(|p| p.connected && p.applied_version == status.version)
            .count();
        if acked == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let reloaded = weft(&running, &token, dir, &["plugin", "reload", "hello"]).await;
    assert!(reloaded.status.success(), "{}", stderr(&reloaded));
    let out = stdout(&reloaded);
    for node in ["edge-a", "edge-b"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(node) && l.contains("ACK")),
            "{out}"
        );
    }
    assert!(out.contains("reloaded hello@1.0.0 (sha256:"), "{out}");
    assert!(out.contains("on 2 proxies"), "{out}");

    nack.store(true, Ordering::SeqCst);
    let refused = weft(&running, &token, dir, &["plugin", "reload", "hello"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    let err = stderr(&refused);
    assert!(
        err.contains("proxy `edge-b` NACKed version") && err.trim_end().ends_with(": boom"),
        "{err}"
    );

    for proxy in proxies {
        proxy.abort();
    }
    running.shutdown().await.expect("shutdown");
}

#[test]
fn an_unreachable_control_plane_is_one_line_and_a_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let output = Command::new(WEFT)
        .args(["status", "--control", &format!("http://127.0.0.1:{port}")])
        .args(["--token", "t"])
        .output()
        .expect("weft runs");
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.starts_with("weft: cannot reach the control plane at http://127.0.0.1:"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

#[test]
fn help_documents_every_client_flag() {
    for command in [
        &["control"][..],
        &["plugin", "publish"],
        &["plugin", "list"],
        &["plugin", "reload"],
        &["apply"],
        &["get"],
        &["delete"],
        &["status"],
    ] {
        let output = Command::new(WEFT)
            .args(command)
            .arg("--help")
            .output()
            .expect("weft runs");
        let help = stdout(&output);
        let flags: &[&str] = match command {
            ["control"] => &["--listen", "--data", "--admin"],
            ["plugin", "publish"] => &["--version", "--control", "--token", "WEFT_TOKEN"],
            ["apply"] => &["-f", "--control", "--token"],
            ["get"] => &["--output", "--control", "--token"],
            _ => &["--control", "--token", "WEFT_CONTROL"],
        };
        for flag in flags {
            assert!(
                help.contains(flag),
                "{command:?} --help documents {flag}: {help}"
            );
        }
    }
}
