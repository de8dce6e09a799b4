//! Issue 5's story, end to end, with real processes: `examples/hello-filter` built to Wasm,
//! `weft control` and two `weft proxy --control` started the way an operator starts them, the
//! filter published and chained, changed and published again while a load loop counts failed
//! requests, the control plane killed (the proxies keep serving) and restarted (its state
//! intact), and a broken chain applied (the proxies NACK it, `weft status` says so, and the
//! traffic is unchanged).
//!
//! The filter builds use their own target directory, `target/story-e2e` under the workspace
//! (never the one the running `cargo test` holds locked), so they are cached between runs.
//! Everything listens on 127.0.0.1; every process is killed when the test ends, pass or fail.
//!
//! The helpers live in `story/`: the filter builds, the processes and client commands, and
//! the traffic (upstream, requests, load loop).

#[path = "story/build.rs"]
mod build;
#[path = "story/processes.rs"]
mod processes;
#[path = "story/traffic.rs"]
mod traffic;

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    time::{Duration, Instant},
};

use build::build_filters;
use processes::{Client, Control, Proxy};
use traffic::{Load, Upstream, get};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// The chain's `greeting`: what the filter adds upstream as `x-hello`.
const GREETING: &str = "hej";

/// The `x-served-by` of each version of the filter.
const V1: &str = "hello-filter";
const V2: &str = "hello-filter-v2";

/// The two proxies' node names.
const NODES: [&str; 2] = ["edge-a", "edge-b"];

/// How long a process gets to come up, a change to reach both proxies, or a proxy to
/// reconnect (its backoff is capped at 5 s).
const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn the_operators_story_with_real_processes() {
    let started = Instant::now();
    let filters = build_filters();
    let built = started.elapsed();
    eprintln!("[story] filters built in {built:.1?}");
    let story = Instant::now();

    // Declared first so it is removed last, after every process in it was killed.
    let work = tempfile::tempdir().expect("a work directory");
    let dir = work.path();
    let data = dir.join("control-data");
    let upstream = Upstream::start();
    let (control_port, control_admin) = (free_port(), free_port());

    // 3. The control plane; its token is in DATA/token.
    let mut control = Control::start(dir, &data, control_port, control_admin);
    let client = Client {
        url: format!("http://127.0.0.1:{control_port}"),
        token: control.token.clone(),
        dir: dir.to_owned(),
    };

    // 4. Two proxies following it, with nothing to serve yet.
    let mut proxies = NODES.map(|node| Proxy::start(node, dir, &client));

    // 5. Publish the filter, apply the chain; both proxies serve it.
    let published = client.ok(
        &["plugin", "publish", "hello", path(&filters.v1)],
        &["--version", "1.0.0"],
    );
    assert!(
        published.contains("published hello@1.0.0 sha256:"),
        "{published}"
    );
    let chain = chain_yaml(upstream.addr);
    let v1_version = client.apply("chain.yaml", &chain);
    let ports = proxies.each_mut().map(|proxy| proxy.listener_port());
    for (node, port) in NODES.iter().zip(ports) {
        wait_until(&format!("{node} serves the v1 filter"), PATIENCE, || {
            filter_effect(port, V1)
        });
    }
    client.wait_for_status("both proxies ACKed the chain", |node| {
        node.connected && node.applied == v1_version
    });
    eprintln!(
        "[story] both proxies serve v1 after {:.1?}",
        story.elapsed()
    );

    // 6. From now on, requests flow through both proxies continuously.
    let load = Load::start(&[(NODES[0], ports[0]), (NODES[1], ports[1])]);

    // 7. v2 of the filter: publish, reload; both proxies serve it.
    let published = client.ok(
        &["plugin", "publish", "hello", path(&filters.v2)],
        &["--version", "2.0.0"],
    );
    let v2_version = resource_version(&published);
    assert!(
        v2_version > v1_version,
        "a publish that moves `registry://hello` bumps the version: {published}"
    );
    // `weft plugin reload` returns once every proxy ACKed: v2 answers at once on both.
    let reloaded = client.ok(&["plugin", "reload", "hello"], &["--timeout", "20s"]);
    for node in NODES {
        assert!(
            reloaded
                .lines()
                .any(|line| line.starts_with(node) && line.contains("ACK")),
            "one ACK line for {node}: {reloaded}"
        );
    }
    assert!(
        reloaded.contains("reloaded hello@2.0.0") && reloaded.contains("on 2 proxies"),
        "{reloaded}"
    );
    for port in ports {
        if let Err(seen) = filter_effect(port, V2) {
            panic!("after `weft plugin reload`, v2 answers at once: {seen}");
        }
    }
    for (node, port) in NODES.iter().zip(ports) {
        wait_until(&format!("{node} serves the v2 filter"), PATIENCE, || {
            filter_effect(port, V2)
        });
    }
    // The reload bumped the version again (the proxies re-instantiate the plugin).
    let acked = client.wait_for_status("both proxies ACKed v2", |node| {
        node.connected && node.applied > v2_version
    });
    let serving = acked[NODES[0]].applied;
    assert_eq!(
        acked[NODES[1]].applied, serving,
        "both proxies run the same version"
    );
    eprintln!(
        "[story] both proxies serve v2 after {:.1?}",
        story.elapsed()
    );

    // SIGHUP re-reads a file-configured proxy; one fed by the control plane has nothing to
    // re-read, and must not die of it (SIGHUP's default action).
    proxies[0].process.signal("HUP");
    std::thread::sleep(Duration::from_millis(200));
    proxies[0].process.assert_running();
    if let Err(seen) = filter_effect(ports[0], V2) {
        panic!("after SIGHUP, edge-a still serves v2: {seen}");
    }

    // 8. The control plane dies (SIGKILL: no clean shutdown); the proxies keep serving.
    control.process.kill();
    for port in ports {
        if let Err(seen) = filter_effect(port, V2) {
            panic!("without the control plane, the proxy still serves v2: {seen}");
        }
    }
    let before = NODES.map(|node| load.ok(node));
    for (node, before) in NODES.iter().zip(before) {
        wait_until(
            &format!("{node} answers 100 more requests without the control plane"),
            PATIENCE,
            || match load.ok(node) {
                now if now >= before + 100 => Ok(()),
                now => Err(format!("{} more", now - before)),
            },
        );
    }

    // It comes back on the same port and data: same token, same resources, same registry,
    // and both proxies reconnect.
    let control_log = control.process.log();
    drop(control);
    let control = Control::start(dir, &data, control_port, control_admin);
    assert_eq!(control.token, client.token, "the token survives a restart");
    let got = client.ok(&["get", "filterchain", "edge"], &["-o", "json"]);
    let got: serde_json::Value = serde_json::from_str(&got).expect("`weft get -o json` is JSON");
    assert_eq!(got["spec"]["filters"][0]["plugin"], "hello", "{got}");
    assert_eq!(
        got["spec"]["filters"][0]["config"]["greeting"], GREETING,
        "{got}"
    );
    let plugins = client.ok(&["plugin", "list"], &[]);
    for version in ["1.0.0", "2.0.0"] {
        assert!(
            plugins.lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.first() == Some(&"hello") && fields.get(1) == Some(&version)
            }),
            "hello {version} is still published: {plugins}"
        );
    }
    client.wait_for_status("both proxies reconnected", |node| {
        node.connected && node.applied == serving
    });
    eprintln!(
        "[story] control plane restarted and both proxies reconnected after {:.1?}",
        story.elapsed()
    );

    // 9. A chain the control plane accepts (it validates resources, not what a plugin makes of
    // its configuration) but the filter refuses (`greeting` must be a string): both proxies
    // NACK it with the filter's reason and keep serving v2.
    let broken = chain.replace(
        &format!("greeting: {GREETING}"),
        "greeting: 42  # not a string",
    );
    assert_ne!(broken, chain, "the chain's greeting was found");
    let broken_version = client.apply("broken.yaml", &broken);
    let nacks = client.wait_for_status("both proxies NACKed the broken chain", |node| {
        node.connected
            && node.applied == serving
            && node
                .last_nack
                .starts_with(&format!("version {broken_version}:"))
    });
    for node in NODES {
        let nack = &nacks[node].last_nack;
        assert!(
            nack.contains("the plugin rejected its configuration") && nack.contains("greeting"),
            "{node}'s NACK gives the filter's reason: {nack}"
        );
        assert!(
            nack.contains("FilterChain `edge` (line ")
                && nack.contains(&format!(
                    "of snapshot version {broken_version}), field `spec.filters[0]`"
                ))
                && !nack.contains("snapshot.yaml"),
            "{node}'s NACK names the resource as the operator applied it: {nack}"
        );
    }
    for port in ports {
        if let Err(seen) = filter_effect(port, V2) {
            panic!("after the NACK, v2 with its good greeting still answers: {seen}");
        }
    }

    // 10. Not one request failed along the way.
    let tally = load.stop();
    eprintln!(
        "[story] {} requests succeeded, {} failed; the story took {:.1?} after the builds",
        tally.ok,
        tally.failed,
        story.elapsed()
    );
    assert_eq!(
        tally.failed,
        0,
        "no request failed; the first failures: {:#?}\ncontrol plane log before the kill:\n{control_log}\n{}",
        tally.failures,
        proxies
            .iter()
            .map(|p| format!("{} log:\n{}", p.node, p.process.log()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        tally.ok >= 500,
        "the load loop ran: {} requests succeeded",
        tally.ok
    );
    drop(control);
}

/// The story's resources: the `hello` plugin following the newest published version, a chain
/// running it with [`GREETING`], the upstream, and a listener on port 0 (both proxies get the
/// same snapshot, so each picks its own port).
fn chain_yaml(upstream: SocketAddr) -> String {
    format!(
        "apiVersion: weft/v1
kind: Plugin
metadata: {{name: hello}}
spec:
  url: registry://hello
---
apiVersion: weft/v1
kind: FilterChain
metadata: {{name: edge}}
spec:
  filters:
    - plugin: hello
      config:
        greeting: {GREETING}
---
apiVersion: weft/v1
kind: Cluster
metadata: {{name: web}}
spec:
  endpoints: [\"{upstream}\"]
---
apiVersion: weft/v1
kind: Listener
metadata: {{name: public}}
spec:
  address: 127.0.0.1:0
  filterChain: edge
  defaultCluster: web
"
    )
}

/// `Ok` when a request through the proxy on `port` shows the filter at work: 200, the
/// upstream saw `x-hello: GREETING`, and the response says `x-served-by: SERVED_BY`.
fn filter_effect(port: u16, served_by: &str) -> Result<(), String> {
    let reply = get(port, "/")?;
    let saw = reply.header("x-upstream-saw-hello");
    let by = reply.header("x-served-by");
    if reply.status == 200 && saw == Some(GREETING) && by == Some(served_by) {
        Ok(())
    } else {
        Err(format!(
            "status {}, upstream saw x-hello {saw:?}, x-served-by {by:?} (want {served_by:?})",
            reply.status
        ))
    }
}

/// The version a publish reports (`...; resource version N`).
fn resource_version(published: &str) -> u64 {
    published
        .trim_end()
        .rsplit_once("resource version ")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("the publish names the resource version: {published}"))
}

fn path(file: &Path) -> &str {
    file.to_str().expect("a UTF-8 path")
}

/// A port that was free a moment ago (the process given it binds it itself).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `check` every 50 ms until it returns `Ok`, for at most `timeout`; panics naming
/// `what` and the last `Err` (what was seen instead).
fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("waited {timeout:?} until {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
