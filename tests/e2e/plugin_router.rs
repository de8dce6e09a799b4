//! End-to-end tests of the built-in `router` plugin (`builtin://router`) through the proxy:
//! routes choose between two upstream clusters by path, method, header and query; a prefix
//! rewrite reaches the upstream with its query; an unmatched request is a 404; a 90/10 canary
//! split holds over 1000 requests; a bad route table refuses to start the proxy.

use std::net::SocketAddr;

use http::{HeaderValue, Method, Request};
use weft_e2e::client::{self, H1Conn};
use weft_e2e::filters::{STEP, VERSIONS, send, start, step};
use weft_e2e::resources::{Chain, Cluster, Filter, Listener, Plugin, join};
use weft_e2e::upstream::Upstream;
use weft_e2e::weft::Weft;
use weft_e2e::within;

/// Clusters `a` and `b` over the two upstreams, the builtin router with `config` as chain
/// `edge`, and listener `public` (default cluster `a`, which a routed request never needs).
fn routed(a: SocketAddr, b: SocketAddr, config: &str) -> String {
    join([
        Cluster::new("a", &[a]).to_string(),
        Cluster::new("b", &[b]).to_string(),
        Plugin::new("router", "")
            .url("builtin://router")
            .to_string(),
        Chain::new("edge", [Filter::new("router").config(config)]).to_string(),
        Listener::new("public", "a").chain("edge").to_string(),
    ])
}

fn with_header<B>(mut request: Request<B>, name: &'static str, value: &'static str) -> Request<B> {
    request
        .headers_mut()
        .insert(name, HeaderValue::from_static(value));
    request
}

const ROUTES: &str = r#"{routes: [
  {name: api, match: {prefix: /api/, methods: [GET]}, rewritePrefix: /v2/, cluster: b},
  {match: {exact: /a}, cluster: a},
  {match: {prefix: /team, headers: {x-team: blue}}, cluster: b},
  {match: {regex: "/items/[0-9]+", query: [{name: format, exact: json}]}, cluster: a}
]}"#;

#[tokio::test]
async fn routes_choose_the_cluster_rewrite_the_path_and_404_the_rest() {
    let a = Upstream::http1("a").await.expect("upstream a");
    let b = Upstream::http1("b").await.expect("upstream b");
    let routes = ROUTES.replace('\n', " ");
    let weft = start(&routed(a.addr, b.addr, &routes), "the router").await;
    let addr = weft.addr("public");

    for version in VERSIONS {
        let rewritten = send(addr, version, client::get("/api/users?id=7&x=%20y")).await;
        assert_eq!(rewritten.status, 200, "{version:?}: {}", rewritten.text());
        let json = rewritten.json();
        assert_eq!(
            json["upstream"], "b",
            "{version:?}: the prefix route's cluster"
        );
        assert_eq!(
            json["path"], "/v2/users?id=7&x=%20y",
            "{version:?}: the prefix rewritten, the query kept"
        );

        let exact = send(addr, version, client::get("/a")).await;
        assert_eq!(exact.header("x-upstream"), Some("a"), "{version:?}");

        let blue = with_header(client::get("/team/x"), "x-team", "blue");
        let blue = send(addr, version, blue).await;
        assert_eq!(
            blue.header("x-upstream"),
            Some("b"),
            "{version:?}: header route"
        );

        let items = send(addr, version, client::get("/items/12?format=json")).await;
        assert_eq!(
            items.header("x-upstream"),
            Some("a"),
            "{version:?}: regex + query"
        );
        assert_eq!(items.json()["path"], "/items/12?format=json", "{version:?}");

        let misses = [
            client::get("/nothing"),
            client::request(Method::POST, "/api/users", "x"),
            with_header(client::get("/team/x"), "x-team", "red"),
            client::get("/items/12?format=xml"),
            client::get("/items/12/more?format=json"),
        ];
        for request in misses {
            let what = format!("{} {}", request.method(), request.uri());
            let missed = send(addr, version, request).await;
            assert_eq!(missed.status, 404, "{version:?} {what}: {}", missed.text());
            assert_eq!(missed.text(), "no route matched\n", "{version:?} {what}");
        }
    }
    let upstream_total = a.requests() + b.requests();
    assert_eq!(
        upstream_total, 8,
        "only the routed requests reach an upstream"
    );
    weft.shutdown().await;
}

#[tokio::test]
async fn a_90_10_canary_split_holds_over_1000_requests() {
    let a = Upstream::http1("a").await.expect("upstream a");
    let b = Upstream::http1("b").await.expect("upstream b");
    let split =
        "{routes: [{weightedClusters: [{cluster: a, weight: 90}, {cluster: b, weight: 10}]}]}";
    let weft = start(&routed(a.addr, b.addr, split), "a 90/10 split").await;
    let addr = weft.addr("public");

    // 8 keep-alive connections, 125 requests each, concurrently.
    let workers = (0..8).map(|_| async move {
        let mut conn = step("connecting", H1Conn::connect(addr)).await;
        let (mut to_a, mut to_b) = (0u32, 0u32);
        for _ in 0..125 {
            let reply = step("GET / through the split", conn.get("/")).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            match reply.header("x-upstream") {
                Some("a") => to_a += 1,
                Some("b") => to_b += 1,
                other => panic!("served by {other:?}"),
            }
        }
        (to_a, to_b)
    });
    let counts = within(
        STEP * 6,
        "1000 requests through the split",
        futures_util::future::join_all(workers),
    )
    .await;
    let (to_a, to_b) = counts.iter().fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
    assert_eq!(to_a + to_b, 1000);
    // Exact per worker instance; a few instances may each be one pick off.
    assert!(
        (880..=920).contains(&to_a),
        "90/10 over 1000 requests: {to_a} to a, {to_b} to b"
    );
    assert_eq!(a.requests() as u32, to_a);
    assert_eq!(b.requests() as u32, to_b);
    weft.shutdown().await;
}

#[tokio::test]
async fn a_bad_route_table_refuses_to_start_naming_the_route_and_field() {
    let a = Upstream::http1("a").await.expect("upstream a");
    let b = Upstream::http1("b").await.expect("upstream b");
    let bad = "{routes: [{cluster: a}, {weightedClusters: [{cluster: b, weight: 0}]}]}";
    let yaml = routed(a.addr, b.addr, bad);
    let error = match within(STEP, "starting with a bad router", Weft::start(&yaml)).await {
        Ok(_) => panic!("weft started with a bad route table"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("routes[1].weightedClusters: weights must sum to more than 0"),
        "the error names the route and field: {error}"
    );
}
