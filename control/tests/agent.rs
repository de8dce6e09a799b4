//! The proxy side of discovery: an in-process control plane feeding [`run_agent`], with real
//! traffic through the proxy to a small HTTP/1.1 upstream that echoes the request head.

use std::{net::SocketAddr, path::Path, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use weft_control::{
    agent::{AgentOptions, LAST_GOOD_FILE, run_agent},
    client::{self, Clients},
    proto::{ApplyRequest, ProxyStatus, PublishChunk, ReloadRequest, StatusRequest},
    server::{Running, ServeOptions, start},
};
use weft_test_artifacts::HEADERS_WASIP1;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WAIT: Duration = Duration::from_secs(20);

async fn start_control(data: &Path) -> Result<(Running, Clients), Box<dyn std::error::Error>> {
    let mut options = ServeOptions::new(([127, 0, 0, 1], 0).into(), data.to_owned());
    options.debounce = Duration::from_millis(20);
    let running = start(options).await?;
    let clients = client::connect(&format!("http://{}", running.addr), &running.token).await?;
    Ok((running, clients))
}

/// A free loopback port (bound, then released).
fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// An HTTP/1.1 upstream answering every request with its head as the body.
async fn echo_upstream() -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    head.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.write_all(&head).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok((addr, task))
}

/// One GET / through `proxy`; the whole answer, lowercased.
async fn get(proxy: SocketAddr) -> std::io::Result<String> {
    get_path(proxy, "/").await
}

/// One GET of `path` from `server`; the whole answer, lowercased.
async fn get_path(server: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut socket = TcpStream::connect(server).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    Ok(String::from_utf8_lossy(&answer).to_lowercase())
}

/// Waits until a request through `proxy` is answered 200 with the filter's header.
async fn wait_filtered(proxy: SocketAddr) -> Result<String, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = get(proxy).await;
        if let Ok(answer) = &last
            && answer.starts_with("http/1.1 200")
            && answer.contains("x-filtered-by: headers")
        {
            return Ok(answer.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no filtered answer through {proxy}: {last:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `node`'s status satisfies `pred`.
async fn wait_status(
    clients: &mut Clients,
    node: &str,
    pred: impl Fn(&ProxyStatus) -> bool,
) -> Result<ProxyStatus, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = clients
            .discovery
            .status(StatusRequest {})
            .await?
            .into_inner();
        let found = reply.proxies.into_iter().find(|p| p.node == node);
        if let Some(status) = &found
            && pred(status)
        {
            return Ok(status.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("status of {node} never matched: {found:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish_headers(clients: &mut Clients) -> TestResult {
    let bytes = std::fs::read(HEADERS_WASIP1)?;
    let chunks = vec![PublishChunk {
        name: "headers".into(),
        version: "1.0.0".into(),
        data: bytes,
    }];
    clients.registry.publish(tokio_stream::iter(chunks)).await?;
    Ok(())
}

async fn apply(clients: &mut Clients, yaml: &str) -> Result<u64, Box<dyn std::error::Error>> {
    Ok(clients
        .resources
        .apply(ApplyRequest {
            yaml: yaml.to_owned(),
        })
        .await?
        .into_inner()
        .version)
}

fn chain(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "\
apiVersion: weft/v1
kind: Cluster
metadata: {{name: web}}
spec:
  endpoints: [\"{upstream}\"]
---
apiVersion: weft/v1
kind: Plugin
metadata: {{name: headers}}
spec:
  url: registry://headers
---
apiVersion: weft/v1
kind: FilterChain
metadata: {{name: edge}}
spec:
  filters:
    - plugin: headers
---
apiVersion: weft/v1
kind: Listener
metadata: {{name: public}}
spec:
  address: {listen}
  filterChain: edge
  defaultCluster: web
"
    )
}

/// A second listener on `busy`, a port the test holds: valid for the control plane, but the
/// proxy cannot bind it, so it must NACK.
fn unbindable(busy: SocketAddr) -> String {
    format!(
        "\
apiVersion: weft/v1
kind: Listener
metadata: {{name: second}}
spec:
  address: {busy}
  filterChain: edge
  defaultCluster: web
"
    )
}

fn spawn_agent(options: AgentOptions) -> (oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run_agent(options, async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

fn agent_options(control: &str, token: &str, cache: &Path) -> AgentOptions {
    let mut options = AgentOptions::new(control, "edge-1", token, cache);
    options.app.watch_interval = Duration::from_millis(100);
    options.app.drain_timeout = Duration::from_millis(200);
    options.backoff_max = Duration::from_millis(500);
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_fed_by_the_control_plane_applies_nacks_and_outlives_it() -> TestResult {
    let data = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let (running, mut clients) = start_control(data.path()).await?;
    let (upstream, _upstream_task) = echo_upstream().await?;
    let listen = free_port()?;
    publish_headers(&mut clients).await?;
    let good = apply(&mut clients, &chain(listen, upstream)).await?;

    let control = format!("http://{}", running.addr);
    let (stop, agent) = spawn_agent(agent_options(&control, &running.token, cache.path()));

    let answer = wait_filtered(listen).await?;
    assert!(answer.contains("host: test"), "{answer}");
    let status = wait_status(&mut clients, "edge-1", |s| s.applied_version == good).await?;
    assert!(status.connected);
    assert_eq!(status.last_nack_version, 0);
    let modules = std::fs::read_dir(cache.path().join("modules"))?.count();
    assert_eq!(modules, 1, "one cached module");
    assert!(cache.path().join(LAST_GOOD_FILE).exists());

    // A chain the control plane accepts but the proxy cannot run: NACKed, traffic unchanged.
    let held = std::net::TcpListener::bind("127.0.0.1:0")?;
    let broken = apply(&mut clients, &unbindable(held.local_addr()?)).await?;
    assert!(broken > good);
    let status = wait_status(&mut clients, "edge-1", |s| s.last_nack_version == broken).await?;
    assert_eq!(status.applied_version, good);
    assert!(
        status.last_nack_error.contains("cannot bind"),
        "{}",
        status.last_nack_error
    );
    wait_filtered(listen).await?;
    let last_good = std::fs::read_to_string(cache.path().join(LAST_GOOD_FILE))?;
    assert!(!last_good.contains("second"), "{last_good}");

    // The control plane goes away: traffic continues.
    running.shutdown().await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    for _ in 0..5 {
        wait_filtered(listen).await?;
    }
    assert!(!agent.is_finished());

    let _ = stop.send(());
    tokio::time::timeout(WAIT, agent).await???;
    drop(held);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_the_control_plane_is_down_serves_the_last_good_snapshot() -> TestResult {
    let data = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let (running, mut clients) = start_control(data.path()).await?;
    let (upstream, _upstream_task) = echo_upstream().await?;
    let listen = free_port()?;
    publish_headers(&mut clients).await?;
    let good = apply(&mut clients, &chain(listen, upstream)).await?;
    let control = format!("http://{}", running.addr);
    let token = running.token.clone();

    let (stop, agent) = spawn_agent(agent_options(&control, &token, cache.path()));
    wait_filtered(listen).await?;
    wait_status(&mut clients, "edge-1", |s| s.applied_version == good).await?;
    let _ = stop.send(());
    tokio::time::timeout(WAIT, agent).await???;
    running.shutdown().await?;

    // The control plane is down; a new agent over the same cache serves the last good snapshot.
    let (stop, agent) = spawn_agent(agent_options(&control, &token, cache.path()));
    wait_filtered(listen).await?;

    // And it reconnects when the control plane is back (same data directory, same address).
    let mut options = ServeOptions::new(running_addr(&control)?, data.path().to_owned());
    options.debounce = Duration::from_millis(20);
    let restarted = start(options).await?;
    let mut clients = client::connect(&control, &restarted.token).await?;
    let status = wait_status(&mut clients, "edge-1", |s| s.connected).await?;
    assert_eq!(status.applied_version, good);
    wait_filtered(listen).await?;

    let _ = stop.send(());
    tokio::time::timeout(WAIT, agent).await???;
    restarted.shutdown().await?;
    Ok(())
}

/// `weft_plugin_reloads_total{plugin="headers"}` on the proxy's admin server: how many times
/// the `headers` filter was built.
async fn headers_builds(admin: SocketAddr) -> Result<u64, Box<dyn std::error::Error>> {
    let stats = get_path(admin, "/stats/prometheus").await?;
    let line = stats
        .lines()
        .find(|l| l.starts_with("weft_plugin_reloads_total{plugin=\"headers\"}"))
        .ok_or_else(|| format!("no reload counter for `headers` in {stats}"))?;
    Ok(line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("unreadable counter line {line}"))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reload_replaces_the_filter_on_the_proxy_and_is_acked() -> TestResult {
    let data = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let (running, mut clients) = start_control(data.path()).await?;
    let (upstream, _upstream_task) = echo_upstream().await?;
    let listen = free_port()?;
    publish_headers(&mut clients).await?;
    let applied = apply(&mut clients, &chain(listen, upstream)).await?;

    let control = format!("http://{}", running.addr);
    let mut options = agent_options(&control, &running.token, cache.path());
    let admin = free_port()?;
    options.app.admin = Some(admin);
    let (stop, agent) = spawn_agent(options);
    wait_filtered(listen).await?;
    wait_status(&mut clients, "edge-1", |s| s.applied_version == applied).await?;
    let before = headers_builds(admin).await?;

    // Nothing changed but the reload: the proxy still builds the filter afresh, and ACKs.
    let reply = clients
        .registry
        .reload(ReloadRequest {
            name: "headers".into(),
        })
        .await?
        .into_inner();
    assert!(reply.version > applied);
    assert_eq!(reply.plugins, ["headers"]);
    assert_eq!(reply.module.map(|m| m.version).as_deref(), Some("1.0.0"));
    wait_status(&mut clients, "edge-1", |s| {
        s.applied_version == reply.version
    })
    .await?;
    assert_eq!(headers_builds(admin).await?, before + 1);
    wait_filtered(listen).await?;

    // An unchanged snapshot (an apply of the same documents) rebuilds nothing.
    let same = apply(&mut clients, &chain(listen, upstream)).await?;
    assert_eq!(same, reply.version, "applying the same set changes nothing");
    assert_eq!(headers_builds(admin).await?, before + 1);

    let _ = stop.send(());
    tokio::time::timeout(WAIT, agent).await???;
    running.shutdown().await?;
    Ok(())
}

fn running_addr(control: &str) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    Ok(control.trim_start_matches("http://").parse()?)
}
