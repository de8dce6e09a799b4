//! Configuration reload, all-or-nothing: a file change picked up by the watcher switches
//! traffic and bumps the `/config_dump` version; a bad file (unknown field, dangling reference,
//! bad duration, busy listener address) is rejected with its file, line and field while the old
//! configuration keeps serving; listeners come and go with the file; requests in flight finish
//! on the configuration they started with; and clusters an update does not touch keep their
//! state.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use weft_e2e::client::{self, Reply};
use weft_e2e::upstream::Upstream;
use weft_e2e::wait_for;
use weft_e2e::weft::Weft;

/// Every network step of these tests is bounded by this.
const STEP: Duration = Duration::from_secs(3);

/// Runs `fut`, panicking with `what` if it takes longer than [`STEP`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {STEP:?}"))
}

/// Clusters `a` and `b` (one endpoint each), in block style so every field has its own line,
/// followed by `listeners`.
fn config(a: SocketAddr, b: SocketAddr, listeners: &[String]) -> String {
    let mut yaml = format!(
        r#"apiVersion: weft/v1
kind: Cluster
metadata:
  name: a
spec:
  endpoints: ["{a}"]
  connectTimeout: 500ms
  timeout: 3s
---
apiVersion: weft/v1
kind: Cluster
metadata:
  name: b
spec:
  endpoints: ["{b}"]
  connectTimeout: 500ms
  timeout: 3s
"#
    );
    for listener in listeners {
        yaml.push_str(listener);
    }
    yaml
}

/// A listener document named `name` on `address` sending everything to `cluster`.
fn listener(name: &str, address: &str, cluster: &str) -> String {
    format!(
        r#"---
apiVersion: weft/v1
kind: Listener
metadata:
  name: {name}
spec:
  address: "{address}"
  defaultCluster: {cluster}
"#
    )
}

/// `GET path` through listener `name`.
async fn get(weft: &Weft, name: &str, path: &str) -> Reply {
    within(
        &format!("GET {path} through {name}"),
        client::h1(weft.addr(name), client::get(path)),
    )
    .await
    .unwrap_or_else(|e| panic!("GET {path} through listener {name}: {e:#}"))
}

/// Which upstream answered a request through listener `name`.
async fn served_by(weft: &Weft, name: &str) -> String {
    let reply = get(weft, name, "/").await;
    assert_eq!(reply.status, 200, "through {name}: {}", reply.text());
    reply
        .header("x-upstream")
        .unwrap_or_else(|| panic!("a reply without x-upstream: {:?}", reply.headers))
        .to_owned()
}

/// The `version` field of `/config_dump`.
async fn dumped_version(weft: &Weft) -> String {
    let reply = weft
        .admin_get("/config_dump")
        .await
        .expect("GET /config_dump");
    assert_eq!(reply.status, 200, "/config_dump: {}", reply.text());
    reply.json()["version"]
        .as_str()
        .unwrap_or_else(|| panic!("/config_dump has no string version: {}", reply.text()))
        .to_owned()
}

async fn upstreams() -> (Upstream, Upstream) {
    let a = Upstream::http1("a").await.expect("starting upstream a");
    let b = Upstream::http1("b").await.expect("starting upstream b");
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_switches_the_default_cluster() {
    let (a, b) = upstreams().await;
    let weft = Weft::start(&config(
        a.addr,
        b.addr,
        &[listener("public", "127.0.0.1:0", "a")],
    ))
    .await
    .expect("weft starts");
    assert_eq!(served_by(&weft, "public").await, "a");
    assert_eq!(dumped_version(&weft).await, "1");

    // Only the file changes: the watcher (every 100 ms) must pick it up on its own.
    weft.rewrite_config(&config(
        a.addr,
        b.addr,
        &[listener("public", "127.0.0.1:0", "b")],
    ))
    .await
    .expect("rewriting the config file");
    let switched = wait_for(
        || async {
            client::h1(weft.addr("public"), client::get("/"))
                .await
                .is_ok_and(|r| r.header("x-upstream") == Some("b"))
        },
        Duration::from_secs(3),
    )
    .await;
    assert!(
        switched,
        "requests should reach upstream b after the file changed"
    );
    assert_eq!(served_by(&weft, "public").await, "b");
    assert_eq!(dumped_version(&weft).await, "2");
    assert_eq!(
        weft.metric(r#"weft_config_reloads_total{result="success"}"#)
            .await,
        Some(1.0),
        "one successful reload"
    );
    assert_eq!(
        weft.metric(r#"weft_config_reloads_total{result="failure"}"#)
            .await,
        None,
        "no failed reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reloads_are_rejected_naming_file_line_and_field() {
    let (a, b) = upstreams().await;
    let good = config(a.addr, b.addr, &[listener("public", "127.0.0.1:0", "a")]);
    let weft = Weft::start(&good).await.expect("weft starts");
    assert_eq!(served_by(&weft, "public").await, "a");

    let switch_to_b = |text: &str| text.replace("defaultCluster: a", "defaultCluster: b");
    let cases = [
        (
            "an unknown field",
            switch_to_b(&good).replace(
                "  defaultCluster: b",
                "  defaultCluster: b\n  defaultClustr: b",
            ),
            "defaultClustr:",
            "spec.defaultClustr",
        ),
        (
            "a dangling reference",
            good.replace("defaultCluster: a", "defaultCluster: c"),
            "defaultCluster: c",
            "spec.defaultCluster",
        ),
        (
            "a bad duration",
            switch_to_b(&good).replacen("connectTimeout: 500ms", "connectTimeout: soon", 1),
            "connectTimeout: soon",
            "spec.connectTimeout",
        ),
    ];
    let file = weft.config_path.display().to_string();
    for (what, text, marker, field) in cases {
        let line = text
            .lines()
            .position(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("test bug: {marker:?} is not in the config"))
            + 1;
        weft.rewrite_config(&text)
            .await
            .expect("rewriting the config file");
        let error = match weft.app.reload().await {
            Ok(changed) => panic!("a file with {what} was accepted (changed: {changed})"),
            Err(e) => e.to_string(),
        };
        assert!(
            error.contains(&format!("{file}:{line}")),
            "the error for {what} should name {file}:{line}: {error}"
        );
        assert!(
            error.contains(field),
            "the error for {what} should name the field {field}: {error}"
        );
        assert_eq!(
            served_by(&weft, "public").await,
            "a",
            "after a rejected file with {what}, traffic stays on the old config"
        );
        assert_eq!(dumped_version(&weft).await, "1", "after {what}");
        assert_eq!(weft.app.config_version(), 1, "after {what}");
    }
    let failures = weft
        .metric(r#"weft_config_reloads_total{result="failure"}"#)
        .await;
    assert!(
        failures.is_some_and(|f| f >= 3.0),
        "every rejection is counted, got {failures:?}"
    );
    assert_eq!(
        weft.metric(r#"weft_config_reloads_total{result="success"}"#)
            .await,
        None,
        "nothing was accepted yet"
    );

    // A fixed file is accepted.
    let version = weft
        .apply_config(&switch_to_b(&good))
        .await
        .expect("the fixed file is accepted");
    assert_eq!(version, 2);
    assert_eq!(served_by(&weft, "public").await, "b");
    assert_eq!(dumped_version(&weft).await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_start_and_stop_with_the_file() {
    let (a, b) = upstreams().await;
    let weft = Weft::start(&config(
        a.addr,
        b.addr,
        &[listener("public", "127.0.0.1:0", "a")],
    ))
    .await
    .expect("weft starts");
    assert!(weft.app.listener_addr("extra").is_none());

    weft.apply_config(&config(
        a.addr,
        b.addr,
        &[
            listener("public", "127.0.0.1:0", "a"),
            listener("extra", "127.0.0.1:0", "b"),
        ],
    ))
    .await
    .expect("adding a listener is accepted");
    assert_eq!(
        served_by(&weft, "extra").await,
        "b",
        "the new listener serves"
    );
    assert_eq!(
        served_by(&weft, "public").await,
        "a",
        "the old one still does"
    );
    let public = weft.addr("public");

    weft.apply_config(&config(
        a.addr,
        b.addr,
        &[listener("extra", "127.0.0.1:0", "b")],
    ))
    .await
    .expect("removing a listener is accepted");
    assert!(
        weft.app.listener_addr("public").is_none(),
        "a removed listener has no address"
    );
    let refused = wait_for(
        || async {
            tokio::time::timeout(
                Duration::from_millis(500),
                client::h1(public, client::get("/")),
            )
            .await
            .map_or(true, |result| result.is_err())
        },
        Duration::from_secs(2),
    )
    .await;
    assert!(
        refused,
        "the removed listener's address {public} must stop accepting requests"
    );
    assert_eq!(
        served_by(&weft, "extra").await,
        "b",
        "the remaining listener serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_listener_address_rejects_the_whole_update() {
    let (a, b) = upstreams().await;
    let weft = Weft::start(&config(
        a.addr,
        b.addr,
        &[listener("public", "127.0.0.1:0", "a")],
    ))
    .await
    .expect("weft starts");
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a blocker socket");
    let busy = blocker.local_addr().expect("the blocker's address");

    weft.rewrite_config(&config(
        a.addr,
        b.addr,
        &[
            listener("public", "127.0.0.1:0", "b"),
            listener("extra", &busy.to_string(), "b"),
        ],
    ))
    .await
    .expect("rewriting the config file");
    let error = match weft.app.reload().await {
        Ok(changed) => panic!("a listener on busy {busy} was accepted (changed: {changed})"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("spec.address"),
        "the error should name spec.address: {error}"
    );
    assert!(
        error.contains(&busy.to_string()),
        "the error should name the busy address {busy}: {error}"
    );
    assert_eq!(
        served_by(&weft, "public").await,
        "a",
        "the defaultCluster switch in the rejected file must not take effect"
    );
    assert!(
        weft.app.listener_addr("extra").is_none(),
        "the listener of the rejected file must not exist"
    );
    assert_eq!(weft.app.config_version(), 1);
    assert_eq!(dumped_version(&weft).await, "1");
    drop(blocker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_their_config() {
    let (a, b) = upstreams().await;
    let weft = Weft::start(&config(
        a.addr,
        b.addr,
        &[listener("public", "127.0.0.1:0", "a")],
    ))
    .await
    .expect("weft starts");
    let addr = weft.addr("public");
    let slow = tokio::spawn(client::h1(addr, client::get("/delay/800")));
    let arrived = wait_for(|| async { a.requests() == 1 }, Duration::from_secs(2)).await;
    assert!(arrived, "the slow request should reach upstream a");

    weft.apply_config(&config(
        a.addr,
        b.addr,
        &[listener("public", "127.0.0.1:0", "b")],
    ))
    .await
    .expect("switching to b is accepted");
    assert!(
        !slow.is_finished(),
        "test precondition: the slow request is still in flight after the switch"
    );
    assert_eq!(
        served_by(&weft, "public").await,
        "b",
        "new requests go to b"
    );

    let reply = within("the in-flight request", slow)
        .await
        .expect("the request task")
        .expect("the in-flight request completes across the reload");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("x-upstream"),
        Some("a"),
        "the in-flight request finishes on the config it started with"
    );
    assert_eq!(a.requests(), 1, "only the slow request went to a");
}

/// The `/clusters` line `cluster::addr::stat::VALUE`, as the value.
async fn cluster_stat(weft: &Weft, cluster: &str, addr: SocketAddr, stat: &str) -> String {
    let reply = weft.admin_get("/clusters").await.expect("GET /clusters");
    assert_eq!(reply.status, 200, "/clusters: {}", reply.text());
    let prefix = format!("{cluster}::{addr}::{stat}::");
    let text = reply.text();
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("/clusters has no {prefix} line:\n{text}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_state_survives_an_unrelated_reload() {
    let (a, b) = upstreams().await;
    let weft = Weft::start(&config(
        a.addr,
        b.addr,
        &[listener("public", "127.0.0.1:0", "a")],
    ))
    .await
    .expect("weft starts");
    for _ in 0..3 {
        assert_eq!(served_by(&weft, "public").await, "a");
    }
    assert_eq!(cluster_stat(&weft, "a", a.addr, "rq_total").await, "3");

    // Only the Listener changes (a limit); both clusters are untouched.
    let mut changed = listener("public", "127.0.0.1:0", "a");
    changed.push_str("  limits:\n    idleTimeout: 60s\n");
    weft.apply_config(&config(a.addr, b.addr, &[changed]))
        .await
        .expect("the listener change is accepted");
    assert_eq!(
        cluster_stat(&weft, "a", a.addr, "health_flags").await,
        "healthy"
    );
    assert_eq!(
        cluster_stat(&weft, "a", a.addr, "rq_total").await,
        "3",
        "an unrelated reload must not reset the cluster's counters"
    );
    assert_eq!(
        cluster_stat(&weft, "b", b.addr, "health_flags").await,
        "healthy"
    );
    for _ in 0..2 {
        assert_eq!(served_by(&weft, "public").await, "a");
    }
    assert_eq!(
        cluster_stat(&weft, "a", a.addr, "rq_total").await,
        "5",
        "the cluster keeps counting after the reload"
    );
}
