//! The admin server on loopback, with Envoy's paths: `/ready` (LIVE, then 503 once draining),
//! `/stats/prometheus` (request counters by listener, cluster and code, active connections, the
//! request duration histogram), `/config_dump` (version and the resolved configuration in the
//! YAML's own spelling), `/clusters` and `/listeners` (Envoy's text format and `?format=json`,
//! with real bound ports), 404 for unknown paths and 405 for writes to read-only endpoints.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use weft_e2e::client::{self, H1Conn};
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

/// Cluster `web` over `endpoints` and listener `public` sending to it.
fn config(endpoints: &[SocketAddr]) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"apiVersion: weft/v1
kind: Cluster
metadata: {{name: web}}
spec:
  endpoints: [{}]
  connectTimeout: 250ms
  timeout: 2s
---
apiVersion: weft/v1
kind: Listener
metadata: {{name: public}}
spec:
  address: "127.0.0.1:0"
  defaultCluster: web
"#,
        endpoints.join(", ")
    )
}

async fn start(endpoints: &[SocketAddr]) -> Weft {
    Weft::start(&config(endpoints)).await.expect("weft starts")
}

async fn admin_get(weft: &Weft, path: &str) -> weft_e2e::client::Reply {
    within(
        &format!("GET {path} on the admin server"),
        weft.admin_get(path),
    )
    .await
    .unwrap_or_else(|e| panic!("GET {path} on the admin server: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_live_until_drain() {
    let up = Upstream::http1("web").await.expect("starting upstream web");
    let weft = start(&[up.addr]).await;
    let reply = admin_get(&weft, "/ready").await;
    assert_eq!(reply.status, 200, "/ready before drain: {}", reply.text());
    assert_eq!(reply.text().trim(), "LIVE");

    within("draining weft", weft.app.drain()).await;
    let reply = admin_get(&weft, "/ready").await;
    assert_eq!(
        reply.status,
        503,
        "/ready must fail once draining, so load balancers stop sending: {}",
        reply.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_counts_requests_connections_and_durations() {
    let up = Upstream::http1("web").await.expect("starting upstream web");
    let weft = start(&[up.addr]).await;
    const REQUESTS: usize = 3;
    let mut conn = within("connecting to public", H1Conn::connect(weft.addr("public")))
        .await
        .expect("a keep-alive connection to the listener");
    for i in 0..REQUESTS {
        let reply = within("a request", conn.get(&format!("/r{i}")))
            .await
            .expect("a request through the listener");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let reply = admin_get(&weft, "/stats/prometheus").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "Prometheus text format: {:?}",
        reply.header("content-type")
    );

    let n = REQUESTS as f64;
    let downstream = r#"weft_downstream_requests_total{code="200",listener="public"}"#;
    assert_eq!(weft.metric(downstream).await, Some(n), "{downstream}");
    let upstream = r#"weft_upstream_requests_total{cluster="web",code="200"}"#;
    assert_eq!(weft.metric(upstream).await, Some(n), "{upstream}");
    let active = r#"weft_downstream_cx_active{listener="public"}"#;
    assert_eq!(
        weft.metric(active).await,
        Some(1.0),
        "{active}: the kept-alive connection is open"
    );
    // The histogram observes when the response body ends, a moment after the client has it.
    let count = r#"weft_downstream_request_duration_seconds_count{listener="public"}"#;
    let inf = r#"weft_downstream_request_duration_seconds_bucket{listener="public",le="+Inf"}"#;
    let observed = wait_for(
        || async { weft.metric(count).await == Some(n) },
        Duration::from_secs(2),
    )
    .await;
    assert!(
        observed,
        "{count} = {:?}, want {n}",
        weft.metric(count).await
    );
    assert_eq!(weft.metric(inf).await, Some(n), "{inf}");
    let text = weft.metrics().await.expect("scraping /stats/prometheus");
    assert!(
        text.contains("# TYPE weft_downstream_request_duration_seconds histogram"),
        "the duration is a histogram:\n{text}"
    );

    drop(conn);
    let closed = wait_for(
        || async { weft.metric(active).await == Some(0.0) },
        Duration::from_secs(2),
    )
    .await;
    assert!(
        closed,
        "{active} should drop to 0 once the client left, got {:?}",
        weft.metric(active).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_shows_version_and_resolved_config() {
    let up = Upstream::http1("web").await.expect("starting upstream web");
    let weft = start(&[up.addr]).await;
    let reply = admin_get(&weft, "/config_dump").await;
    assert_eq!(reply.status, 200, "/config_dump: {}", reply.text());
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.contains("json")),
        "content-type {:?}",
        reply.header("content-type")
    );
    let dump = reply.json();
    assert_eq!(dump["version"], "1", "{dump:#}");
    let config = &dump["config"];
    let web = &config["clusters"]["web"];
    assert_eq!(
        web["connectTimeout"], "250ms",
        "durations as written: {dump:#}"
    );
    assert_eq!(
        web["loadBalancer"], "ROUND_ROBIN",
        "defaults resolved: {dump:#}"
    );
    let public = &config["listeners"]["public"];
    assert_eq!(public["defaultCluster"], "web", "camelCase keys: {dump:#}");
    assert_eq!(
        public["limits"]["headerReadTimeout"], "10s",
        "default limits resolved: {dump:#}"
    );
    assert!(
        public.get("default_cluster").is_none(),
        "no snake_case keys: {dump:#}"
    );

    weft.apply_config(&config_with_timeout(&[up.addr], "1.5s"))
        .await
        .expect("a changed config is accepted");
    let dump = admin_get(&weft, "/config_dump").await.json();
    assert_eq!(dump["version"], "2", "{dump:#}");
    assert_eq!(
        dump["config"]["clusters"]["web"]["connectTimeout"], "1.5s",
        "{dump:#}"
    );
}

fn config_with_timeout(endpoints: &[SocketAddr], timeout: &str) -> String {
    config(endpoints).replace(
        "connectTimeout: 250ms",
        &format!("connectTimeout: {timeout}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_lists_endpoints_as_text_and_json() {
    let one = Upstream::http1("one").await.expect("starting upstream one");
    let two = Upstream::http1("two").await.expect("starting upstream two");
    let weft = start(&[one.addr, two.addr]).await;
    let reply = within(
        "a request through public",
        client::h1(weft.addr("public"), client::get("/")),
    )
    .await
    .expect("a request through the listener");
    assert_eq!(reply.status, 200, "{}", reply.text());

    let reply = admin_get(&weft, "/clusters").await;
    assert_eq!(reply.status, 200, "/clusters: {}", reply.text());
    let text = reply.text();
    for up in [&one, &two] {
        let line = format!("web::{}::health_flags::healthy", up.addr);
        assert!(
            text.lines().any(|l| l == line),
            "/clusters should have {line}:\n{text}"
        );
    }
    let total: u64 = text
        .lines()
        .filter(|l| l.starts_with("web::") && l.contains("::rq_total::"))
        .filter_map(|l| l.rsplit("::").next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(total, 1, "one request was sent to the cluster:\n{text}");

    let reply = admin_get(&weft, "/clusters?format=json").await;
    assert_eq!(reply.status, 200, "/clusters?format=json: {}", reply.text());
    let json = reply.json();
    let clusters = json["clusters"]
        .as_array()
        .unwrap_or_else(|| panic!("no clusters array: {json:#}"));
    assert_eq!(clusters.len(), 1, "{json:#}");
    assert_eq!(clusters[0]["name"], "web", "{json:#}");
    let mut addresses: Vec<String> = clusters[0]["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("no endpoints array: {json:#}"))
        .iter()
        .map(|e| {
            assert_eq!(e["health"], "healthy", "{json:#}");
            e["address"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    addresses.sort();
    let mut expected = vec![one.addr.to_string(), two.addr.to_string()];
    expected.sort();
    assert_eq!(addresses, expected, "{json:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_shows_the_bound_port() {
    let up = Upstream::http1("web").await.expect("starting upstream web");
    let weft = start(&[up.addr]).await;
    let bound = weft.addr("public");
    assert_ne!(bound.port(), 0, "port 0 resolves to a real port");

    let reply = admin_get(&weft, "/listeners").await;
    assert_eq!(reply.status, 200, "/listeners: {}", reply.text());
    let line = format!("public::{bound}");
    assert!(
        reply.text().lines().any(|l| l == line),
        "/listeners should show {line}:\n{}",
        reply.text()
    );

    let reply = admin_get(&weft, "/listeners?format=json").await;
    assert_eq!(
        reply.status,
        200,
        "/listeners?format=json: {}",
        reply.text()
    );
    let json = reply.json();
    let listeners = json["listeners"]
        .as_array()
        .unwrap_or_else(|| panic!("no listeners array: {json:#}"));
    assert_eq!(listeners.len(), 1, "{json:#}");
    assert_eq!(listeners[0]["name"], "public", "{json:#}");
    assert_eq!(listeners[0]["address"], bound.to_string(), "{json:#}");
    assert_eq!(listeners[0]["defaultCluster"], "web", "{json:#}");
    assert_eq!(listeners[0]["tls"], false, "{json:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_writes_are_405() {
    let up = Upstream::http1("web").await.expect("starting upstream web");
    let weft = start(&[up.addr]).await;
    let reply = admin_get(&weft, "/no/such/endpoint").await;
    assert_eq!(reply.status, 404, "unknown admin path: {}", reply.text());

    let reply = within("POST /ready", weft.admin_post("/ready"))
        .await
        .expect("POST /ready on the admin server");
    assert_eq!(
        reply.status,
        405,
        "/ready is read-only; a POST is refused: {}",
        reply.text()
    );
    let reply = admin_get(&weft, "/ready").await;
    assert_eq!(reply.status, 200, "a refused POST changes nothing");
}
