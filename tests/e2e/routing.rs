//! Routing from a filter: the `route` test filter sets weft's documented property
//! `weft.upstream_cluster` (read back through `proxy_get_property`) and rewrites `:path`; the
//! request goes to the chosen cluster with the rewritten path, an unknown cluster is a 503 that
//! names it, and a request the filter does not route goes to the listener's `defaultCluster`.

use weft_e2e::client;
use weft_e2e::filters::{module, start, step};
use weft_e2e::resources::{Chain, Cluster, Filter, Listener, Plugin, join};
use weft_e2e::upstream::Upstream;
use weft_test_artifacts::TARGETS;

/// `request` with `x-route: cluster`.
fn with_route<B>(mut request: http::Request<B>, cluster: &'static str) -> http::Request<B> {
    request
        .headers_mut()
        .insert("x-route", http::HeaderValue::from_static(cluster));
    request
}

#[tokio::test]
async fn a_filter_chooses_the_cluster_and_rewrites_the_path() {
    let web = Upstream::http1("web").await.expect("upstream web");
    let api = Upstream::h2c("api").await.expect("upstream api");
    for target in TARGETS {
        let yaml = join([
            Cluster::new("web", &[web.addr]).to_string(),
            Cluster::new("api", &[api.addr])
                .field("protocol", "HTTP2")
                .to_string(),
            Plugin::new("route", module("route", target)).to_string(),
            Chain::new("edge", [Filter::new("route")]).to_string(),
            Listener::new("public", "web").chain("edge").to_string(),
        ]);
        let weft = start(&yaml, &format!("the route filter ({target})")).await;
        let addr = weft.addr("public");

        let request = with_route(client::get("/strip/v1/items?page=2"), "api");
        let routed = step("a routed request", client::h1(addr, request)).await;
        assert_eq!(routed.status, 200, "{target}: {}", routed.text());
        let json = routed.json();
        assert_eq!(
            json["upstream"], "api",
            "{target}: the filter's cluster serves it"
        );
        assert_eq!(
            json["path"], "/v1/items?page=2",
            "{target}: :path rewritten"
        );
        assert_eq!(
            json["headers"]["x-routed-to"], "api",
            "{target}: the property reads back what the filter set"
        );

        let default = step("an unrouted request", client::h1(addr, client::get("/a"))).await;
        assert_eq!(default.status, 200, "{target}: {}", default.text());
        assert_eq!(
            default.json()["upstream"],
            "web",
            "{target}: defaultCluster"
        );

        let request = with_route(client::get("/"), "nowhere");
        let what = "a request routed to a missing cluster";
        let unknown = step(what, client::h1(addr, request)).await;
        assert_eq!(unknown.status, 503, "{target}: {}", unknown.text());
        assert!(
            unknown.text().contains("nowhere"),
            "{target}: the 503 names the cluster: {}",
            unknown.text()
        );
        weft.shutdown().await;
    }
}
