//! The client commands as an operator runs them: the real `weft` binary against a control
//! plane started in this process on 127.0.0.1:0 over a temporary data directory.

use std::{
    path::Path,
    process::{Command, Output},
};

use weft_control::server::{Running, ServeOptions, start};
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
