//! The `weft` binary as an operator runs it: bad configuration is refused with file, line and
//! field and a non-zero exit; SIGHUP reloads; SIGTERM drains in-flight requests and exits 0.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener as StdListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A port that was free a moment ago (the binary binds it itself).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A weft process, killed on drop.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn start(config: &Path, admin: u16) -> Proxy {
    let child = Command::new(WEFT)
        .args(["proxy", "--config"])
        .arg(config)
        .args([
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--watch-interval",
            "1h",
            "--drain-timeout",
            "5s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("weft starts");
    let proxy = Proxy(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(admin, "/ready").is_none_or(|r| !r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "weft did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy
}

/// One HTTP/1.1 GET with `Connection: close`; the raw response.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

/// An upstream answering every request with `body` after `delay`.
async fn upstream(body: &'static str, delay: Duration) -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = socket.local_addr().expect("upstream address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

fn config(listen: u16, upstream: SocketAddr) -> String {
    format!(
        "apiVersion: weft/v1\nkind: Cluster\nmetadata: {{name: app}}\nspec:\n  endpoints: [\"{upstream}\"]\n---\n\
         apiVersion: weft/v1\nkind: Listener\nmetadata: {{name: public}}\nspec:\n  address: 127.0.0.1:{listen}\n  defaultCluster: app\n"
    )
}

#[test]
fn a_bad_config_is_refused_with_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weft.yaml");
    let text = config(free_port(), "127.0.0.1:1".parse().expect("addr"))
        .replace("defaultCluster: app", "defaultCluster: ap");
    std::fs::write(&path, text).expect("write config");
    let output = Command::new(WEFT)
        .args(["proxy", "--config"])
        .arg(&path)
        .output()
        .expect("weft runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "weft: {}:12: field `spec.defaultCluster`: no Cluster named `ap`",
        path.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn unknown_flags_and_missing_files_fail_with_one_line() {
    let output = Command::new(WEFT)
        .args(["proxy", "--config", "/nonexistent/weft.yaml"])
        .output()
        .expect("weft runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/weft.yaml: cannot read the file"),
        "{stderr}"
    );
    let output = Command::new(WEFT)
        .args(["proxy", "--confg", "x"])
        .output()
        .expect("weft runs");
    assert_ne!(output.status.code(), Some(0));
    let help = Command::new(WEFT)
        .args(["proxy", "--help"])
        .output()
        .expect("weft runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--config", "--admin", "--drain-timeout", "--watch-interval"] {
        assert!(help.contains(flag), "--help documents {flag}: {help}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_sigterm_drains_in_flight_requests() {
    let first = upstream("first", Duration::ZERO).await;
    let slow = upstream("second", Duration::from_millis(700)).await;
    let (listen, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weft.yaml");
    std::fs::write(&path, config(listen, first)).expect("write config");
    let proxy = tokio::task::spawn_blocking({
        let path = path.clone();
        move || start(&path, admin)
    })
    .await
    .expect("start");

    let answer = tokio::task::spawn_blocking(move || get(listen, "/"))
        .await
        .expect("join");
    assert!(answer.is_some_and(|r| r.ends_with("first")));

    // The file changes, but only SIGHUP (the watcher is off) makes weft read it.
    std::fs::write(&path, config(listen, slow)).expect("rewrite config");
    signal(&proxy.0, "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let dump = tokio::task::spawn_blocking(move || get(admin, "/config_dump"))
            .await
            .expect("join")
            .unwrap_or_default();
        if dump.contains("\"version\": \"2\"") {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload: {dump}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A slow request is in flight when SIGTERM arrives: it completes, then the process exits 0.
    let in_flight = tokio::task::spawn_blocking(move || get(listen, "/slow"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&proxy.0, "TERM");
    let answer = in_flight
        .await
        .expect("join")
        .expect("the in-flight request is answered");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("second"),
        "{answer}"
    );
    let mut proxy = proxy;
    let status = tokio::task::spawn_blocking(move || proxy.0.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(
        status.success(),
        "weft exits cleanly after draining: {status}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", listen)).is_err(),
        "nothing listens after the drain"
    );
}
