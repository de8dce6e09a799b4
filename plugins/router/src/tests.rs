//! Native tests of the router through `weft_sdk::testing`: matching by path, method, header
//! and query, the 404, rewrites, exact weighted splits and configuration errors.

use std::collections::HashMap;

use weft_sdk::Action;
use weft_sdk::testing::{Harness, TestRequest};

use super::*;

fn router(config: &str) -> Harness<Router> {
    match Harness::<Router>::new(config) {
        Ok(harness) => harness,
        Err(e) => panic!("configuration refused: {e}"),
    }
}

/// The cluster `request` is routed to, or `404` when it is answered locally with that.
fn route(harness: &Harness<Router>, request: TestRequest) -> String {
    let exchange = harness.request(request);
    match exchange.local_reply() {
        Some(reply) => reply.status.to_string(),
        None => {
            assert_eq!(exchange.action(), Action::Continue);
            exchange.cluster().unwrap_or_else(|| "<none>".into())
        }
    }
}

fn refused(config: &str) -> String {
    match Harness::<Router>::new(config) {
        Ok(_) => panic!("configuration accepted: {config}"),
        Err(e) => e,
    }
}

#[test]
fn prefix_exact_and_regex_match_the_path_without_the_query() {
    let harness = router(
        r#"{"routes": [
            {"match": {"exact": "/healthz"}, "cluster": "health"},
            {"match": {"regex": "/users/[0-9]+"}, "cluster": "users"},
            {"match": {"prefix": "/api/"}, "cluster": "api"}
        ]}"#,
    );
    assert_eq!(route(&harness, TestRequest::get("/healthz")), "health");
    assert_eq!(
        route(&harness, TestRequest::get("/healthz?full=1")),
        "health"
    );
    assert_eq!(route(&harness, TestRequest::get("/healthz/more")), "404");
    assert_eq!(route(&harness, TestRequest::get("/users/42")), "users");
    assert_eq!(route(&harness, TestRequest::get("/users/42?x=/y")), "users");
    // Anchored: a regex must match the whole path.
    assert_eq!(route(&harness, TestRequest::get("/users/42/posts")), "404");
    assert_eq!(route(&harness, TestRequest::get("/v1/users/42")), "404");
    assert_eq!(route(&harness, TestRequest::get("/api/things")), "api");
    assert_eq!(route(&harness, TestRequest::get("/api")), "404");
    // The query is not part of the path.
    assert_eq!(route(&harness, TestRequest::get("/x?/api/")), "404");
}

#[test]
fn first_matching_route_wins_and_a_route_without_match_catches_all() {
    let harness = router(
        r#"{"routes": [
            {"match": {"prefix": "/a"}, "cluster": "first"},
            {"match": {"prefix": "/a/b"}, "cluster": "never"},
            {"match": {}, "cluster": "fallback"},
            {"cluster": "unreached"}
        ]}"#,
    );
    assert_eq!(route(&harness, TestRequest::get("/a/b")), "first");
    assert_eq!(route(&harness, TestRequest::post("/other")), "fallback");
}

#[test]
fn no_matching_route_is_a_404_saying_so() {
    let harness = router(r#"{"routes": [{"match": {"prefix": "/api"}, "cluster": "api"}]}"#);
    let exchange = harness.request(TestRequest::get("/web"));
    let reply = exchange.local_reply().expect("a local reply");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body_text(), "no route matched\n");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(exchange.action(), Action::Pause);
    assert_eq!(exchange.cluster(), None);
}

#[test]
fn methods_match_any_listed_case_insensitively_in_the_config() {
    let harness = router(
        r#"{"routes": [
            {"match": {"prefix": "/", "methods": ["get", "HEAD"]}, "cluster": "read"},
            {"match": {"methods": ["POST"]}, "cluster": "write"}
        ]}"#,
    );
    assert_eq!(route(&harness, TestRequest::get("/x")), "read");
    assert_eq!(route(&harness, TestRequest::new("HEAD", "/x")), "read");
    assert_eq!(route(&harness, TestRequest::post("/x")), "write");
    assert_eq!(route(&harness, TestRequest::new("DELETE", "/x")), "404");
}

#[test]
fn header_matchers_exact_prefix_regex_present_and_absent() {
    let harness = router(
        r#"{"routes": [
            {"match": {"headers": [{"name": "X-Tenant", "exact": "acme"}]}, "cluster": "acme"},
            {"match": {"headers": [{"name": "user-agent", "prefix": "curl/"}]}, "cluster": "curl"},
            {"match": {"headers": [{"name": "x-version", "regex": "v[0-9]"}]}, "cluster": "versioned"},
            {"match": {"headers": [{"name": "x-debug", "present": true}]}, "cluster": "debug"},
            {"match": {"prefix": "/anon", "headers": [{"name": "authorization", "present": false}]}, "cluster": "anonymous"},
            {"match": {"headers": [{"name": ":authority", "exact": "admin.example"}]}, "cluster": "admin"}
        ]}"#,
    );
    let get = || TestRequest::get("/p");
    assert_eq!(route(&harness, get().header("x-tenant", "acme")), "acme");
    assert_eq!(route(&harness, get().header("x-tenant", "acme2")), "404");
    assert_eq!(
        route(&harness, get().header("user-agent", "curl/8.1")),
        "curl"
    );
    assert_eq!(
        route(&harness, get().header("x-version", "v2")),
        "versioned"
    );
    assert_eq!(route(&harness, get().header("x-version", "v22")), "404");
    assert_eq!(route(&harness, get().header("x-debug", "")), "debug");
    assert_eq!(route(&harness, TestRequest::get("/anon")), "anonymous");
    let authorized = TestRequest::get("/anon").header("authorization", "Bearer x");
    assert_eq!(route(&harness, authorized), "404");
    let admin = get().header(":authority", "admin.example");
    assert_eq!(route(&harness, admin), "admin");
}

#[test]
fn every_header_condition_must_hold_and_the_map_form_means_exact() {
    let harness = router(
        r#"{"routes": [
            {"match": {"headers": {"x-a": "1", "x-b": 2}}, "cluster": "both"}
        ]}"#,
    );
    let both = TestRequest::get("/").header("x-a", "1").header("x-b", "2");
    assert_eq!(route(&harness, both), "both");
    assert_eq!(
        route(&harness, TestRequest::get("/").header("x-a", "1")),
        "404"
    );
    let wrong = TestRequest::get("/").header("x-a", "1").header("x-b", "20");
    assert_eq!(route(&harness, wrong), "404");
}

#[test]
fn query_matchers_see_decoded_first_values() {
    let harness = router(
        r#"{"routes": [
            {"match": {"query": [{"name": "debug", "present": true}]}, "cluster": "debug"},
            {"match": {"query": {"user name": "ann lee"}}, "cluster": "ann"},
            {"match": {"query": [{"name": "v", "regex": "[0-9]+"}]}, "cluster": "numbered"},
            {"match": {"prefix": "/q", "query": [{"name": "v", "present": false}]}, "cluster": "no-v"}
        ]}"#,
    );
    assert_eq!(route(&harness, TestRequest::get("/?debug")), "debug");
    assert_eq!(route(&harness, TestRequest::get("/?a=1&debug=0")), "debug");
    assert_eq!(
        route(&harness, TestRequest::get("/?user%20name=ann%20lee")),
        "ann"
    );
    assert_eq!(
        route(&harness, TestRequest::get("/?user+name=ann+lee")),
        "404"
    );
    assert_eq!(route(&harness, TestRequest::get("/?v=12&v=x")), "numbered");
    assert_eq!(route(&harness, TestRequest::get("/?v=x&v=12")), "404");
    assert_eq!(route(&harness, TestRequest::get("/q?w=1")), "no-v");
    assert_eq!(route(&harness, TestRequest::get("/q?v=a")), "404");
    // A malformed escape stays as written.
    let harness = router(r#"{"routes": [{"match": {"query": {"p": "100%"}}, "cluster": "raw"}]}"#);
    assert_eq!(route(&harness, TestRequest::get("/?p=100%")), "raw");
}

#[test]
fn rewrite_prefix_replaces_the_matched_prefix_and_keeps_the_query() {
    let harness = router(
        r#"{"routes": [
            {"match": {"prefix": "/api/v1/"}, "rewritePrefix": "/v1/", "cluster": "a"},
            {"match": {"prefix": "/api"}, "rewritePrefix": "/", "cluster": "a"},
            {"match": {"prefix": "/static"}, "rewritePrefix": "", "cluster": "a"},
            {"match": {"prefix": "/keep"}, "cluster": "a"}
        ]}"#,
    );
    let path = |p: &str| {
        let exchange = harness.request(TestRequest::get(p));
        assert_eq!(exchange.cluster().as_deref(), Some("a"));
        exchange.request_header(":path").unwrap_or_default()
    };
    assert_eq!(path("/api/v1/users?id=7&x=%20"), "/v1/users?id=7&x=%20");
    assert_eq!(path("/api/users?id=7"), "/users?id=7");
    assert_eq!(path("/api"), "/");
    assert_eq!(path("/api?x=1"), "/?x=1");
    assert_eq!(path("/static/app.js"), "/app.js");
    assert_eq!(path("/keep/this?q"), "/keep/this?q");
}

#[test]
fn a_named_route_sets_the_route_name_property() {
    let harness = router(
        r#"{"routes": [{"name": "api", "match": {"prefix": "/api"}, "cluster": "a"}, {"cluster": "b"}]}"#,
    );
    let named = harness.request(TestRequest::get("/api"));
    assert_eq!(named.property("xds.route_name"), Some(b"api".to_vec()));
    let unnamed = harness.request(TestRequest::get("/web"));
    assert_eq!(unnamed.cluster().as_deref(), Some("b"));
    assert_eq!(unnamed.property("xds.route_name"), None);
}

#[test]
fn a_weighted_split_is_exact_over_its_period() {
    let harness = router(
        r#"{"routes": [{"weightedClusters": [
            {"cluster": "stable", "weight": 90}, {"cluster": "canary", "weight": 10}
        ]}]}"#,
    );
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..1000 {
        *counts
            .entry(route(&harness, TestRequest::get("/")))
            .or_default() += 1;
    }
    assert_eq!(counts.get("stable"), Some(&900));
    assert_eq!(counts.get("canary"), Some(&100));
    assert_eq!(counts.len(), 2);
}

#[test]
fn a_weighted_split_interleaves_like_nginx_and_skips_zero_weights() {
    let harness = router(
        r#"{"routes": [{"weightedClusters": [
            {"cluster": "a", "weight": 5}, {"cluster": "off", "weight": 0},
            {"cluster": "b", "weight": 1}, {"cluster": "c", "weight": 1}
        ]}]}"#,
    );
    let picks: Vec<String> = (0..14)
        .map(|_| route(&harness, TestRequest::get("/")))
        .collect();
    // nginx's documented sequence for weights 5/1/1, twice.
    let period = ["a", "a", "b", "a", "c", "a", "a"];
    let expected: Vec<&str> = period.iter().chain(period.iter()).copied().collect();
    assert_eq!(picks, expected);
}

#[test]
fn each_weighted_route_keeps_its_own_rotation() {
    let harness = router(
        r#"{"routes": [
            {"match": {"prefix": "/x"}, "weightedClusters": [{"cluster": "x1", "weight": 1}, {"cluster": "x2", "weight": 1}]},
            {"weightedClusters": [{"cluster": "y1", "weight": 1}, {"cluster": "y2", "weight": 1}]}
        ]}"#,
    );
    assert_eq!(route(&harness, TestRequest::get("/x")), "x1");
    assert_eq!(route(&harness, TestRequest::get("/y")), "y1");
    assert_eq!(route(&harness, TestRequest::get("/x")), "x2");
    assert_eq!(route(&harness, TestRequest::get("/y")), "y2");
}

#[test]
fn config_errors_name_the_route_and_field() {
    let cases = [
        (r#"{}"#, "routes: at least one route is required"),
        (
            r#"{"routes": [{"cluster": "a"}, {"weightedClusters": [{"cluster": "b", "weight": 0}]}]}"#,
            "routes[1].weightedClusters: weights must sum to more than 0",
        ),
        (
            r#"{"routes": [{"weightedClusters": []}]}"#,
            "routes[0].weightedClusters: at least one cluster is required",
        ),
        (
            r#"{"routes": [{"weightedClusters": [{"cluster": "", "weight": 1}]}]}"#,
            "routes[0].weightedClusters[0].cluster: must not be empty",
        ),
        (
            r#"{"routes": [{"match": {"prefix": "/"}}]}"#,
            "routes[0]: set exactly one of `cluster` and `weightedClusters`",
        ),
        (
            r#"{"routes": [{"cluster": "a", "weightedClusters": [{"cluster": "b", "weight": 1}]}]}"#,
            "routes[0]: set exactly one of `cluster` and `weightedClusters`",
        ),
        (
            r#"{"routes": [{"match": {"prefix": "/", "exact": "/"}, "cluster": "a"}]}"#,
            "routes[0].match: set at most one of `prefix`, `exact` and `regex`",
        ),
        (
            r#"{"routes": [{"match": {"prefix": "api"}, "cluster": "a"}]}"#,
            "routes[0].match.prefix: `api` must start with `/`",
        ),
        (
            r#"{"routes": [{"cluster": "a"}, {"cluster": "b"}, {"match": {"regex": "/(unclosed"}, "cluster": "a"}]}"#,
            "routes[2].match.regex: invalid regex `/(unclosed`",
        ),
        (
            r#"{"routes": [{"match": {"exact": "/"}, "rewritePrefix": "/x", "cluster": "a"}]}"#,
            "routes[0].rewritePrefix: needs a `prefix` match",
        ),
        (
            r#"{"routes": [{"match": {"headers": [{"name": "x", "exact": "1", "present": true}]}, "cluster": "a"}]}"#,
            "routes[0].match.headers[0]: set exactly one of `exact`, `prefix`, `regex` and `present`",
        ),
        (
            r#"{"routes": [{"match": {"headers": [{"name": "x"}]}, "cluster": "a"}]}"#,
            "routes[0].match.headers[0]: set exactly one of",
        ),
        (
            r#"{"routes": [{"match": {"query": [{"name": "", "present": true}]}, "cluster": "a"}]}"#,
            "routes[0].match.query[0].name: must not be empty",
        ),
        (
            r#"{"routes": [{"match": {"query": [{"name": "q", "regex": "("}]}, "cluster": "a"}]}"#,
            "routes[0].match.query[0].regex: invalid regex",
        ),
        (
            r#"{"routes": [{"match": {"methods": [""]}, "cluster": "a"}]}"#,
            "routes[0].match.methods[0]: `` is not a method",
        ),
        (
            r#"{"routes": [{"cluster": ""}]}"#,
            "routes[0].cluster: must not be empty",
        ),
        (
            r#"{"routes": [{"match": {"path": "/"}, "cluster": "a"}]}"#,
            "routes[0].match.path: unknown field `path`",
        ),
        (
            r#"{"routes": [{"weightedClusters": [{"cluster": "a", "weight": -1}]}]}"#,
            "routes[0].weightedClusters[0].weight: invalid value",
        ),
        (
            r#"{"routes": [{"match": {"headers": {"x": [1]}}, "cluster": "a"}]}"#,
            "routes[0].match.headers.x: invalid type: sequence, expected a string, number or boolean",
        ),
    ];
    for (config, expected) in cases {
        let error = refused(config);
        assert!(
            error.contains(expected),
            "config {config}\n  error    {error}\n  expected {expected}"
        );
    }
}
