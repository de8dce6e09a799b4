//! API keys, JWT and API keys together, `allowPrincipals` alone and with a credential, and
//! `bypass` (including paths that must not bypass).

use serde_json::json;
use weft_sdk::testing::TestRequest;

use super::*;

const FRONTEND: &str = "spiffe://cluster.local/ns/web/sa/frontend";

fn api_keys() -> Value {
    json!({"keys": {"k-live-0001": "ci-bot", "k-live-0002": "dashboard"}})
}

#[test]
fn a_known_api_key_goes_upstream_with_its_name() {
    let harness = harness(&json!({ "apiKeys": api_keys() }).to_string());
    let exchange = harness.request(
        TestRequest::get("/")
            .header("x-api-key", "k-live-0002")
            .header("x-weft-api-key-name", "admin"),
    );
    assert_passed(&exchange);
    assert_eq!(
        exchange.request_header("x-weft-api-key-name").as_deref(),
        Some("dashboard")
    );
    assert_eq!(harness.counter("auth_allowed_total"), Some(1));
}

#[test]
fn an_unknown_or_missing_api_key_is_a_401_naming_the_header() {
    let config = json!({"apiKeys": {"header": "X-Key", "keys": {"k-live-0001": "ci-bot"}}});
    let harness = harness(&config.to_string());
    for (request, reason) in [
        (
            TestRequest::get("/").header("x-key", "k-live-0003"),
            "unknown_api_key",
        ),
        (
            TestRequest::get("/").header("x-key", "K-LIVE-0001"),
            "unknown_api_key",
        ),
        (
            TestRequest::get("/").header("x-api-key", "k-live-0001"),
            "missing",
        ),
        (TestRequest::get("/"), "missing"),
    ] {
        let exchange = harness.request(request);
        let reply = assert_refused(&exchange, 401, reason);
        assert_eq!(
            challenges(&reply),
            ["ApiKey realm=\"weft\", header=\"x-key\""]
        );
    }
    assert_eq!(denied(&harness, "unknown_api_key"), Some(2));
    assert_eq!(denied(&harness, "missing"), Some(2));
}

#[test]
fn with_jwt_and_api_keys_either_credential_is_enough() {
    let config = json!({"jwt": hs_jwt(), "apiKeys": api_keys()});
    let harness = harness(&config.to_string());

    let token = hs256(&claims());
    let by_token = harness.request(with_token(&token).header("x-weft-api-key-name", "ci-bot"));
    assert_passed(&by_token);
    assert_eq!(by_token.request_header("x-user").as_deref(), Some("ann"));
    assert_eq!(by_token.request_header("x-weft-api-key-name"), None);

    let by_key = harness.request(
        TestRequest::get("/")
            .header("x-api-key", "k-live-0001")
            .header("x-user", "mallory"),
    );
    assert_passed(&by_key);
    assert_eq!(
        by_key.request_header("x-weft-api-key-name").as_deref(),
        Some("ci-bot")
    );
    assert_eq!(
        by_key.request_header("x-user"),
        None,
        "no token, no forwarded claims"
    );

    // An expired token does not matter when the API key is good.
    let expired = hs256(&claims_with(json!({"exp": now() - 600})));
    let both = harness.request(with_token(&expired).header("x-api-key", "k-live-0001"));
    assert_passed(&both);
    assert_eq!(both.request_header("x-user"), None);
    assert_eq!(harness.counter("auth_allowed_total"), Some(3));
}

#[test]
fn with_jwt_and_api_keys_a_refusal_challenges_for_both() {
    let config = json!({"jwt": hs_jwt(), "apiKeys": api_keys()});
    let harness = harness(&config.to_string());
    let reply = assert_refused(&harness.request(TestRequest::get("/")), 401, "missing");
    assert_eq!(
        challenges(&reply),
        [
            "Bearer realm=\"weft\"",
            "ApiKey realm=\"weft\", header=\"x-api-key\""
        ]
    );
    // The token's reason wins over a bad key.
    let expired = hs256(&claims_with(json!({"exp": now() - 600})));
    let exchange = harness.request(with_token(&expired).header("x-api-key", "wrong"));
    let reply = assert_refused(&exchange, 401, "expired");
    assert!(challenges(&reply)[0].contains("error=\"invalid_token\""));
    let exchange = harness.request(TestRequest::get("/").header("x-api-key", "wrong"));
    assert_refused(&exchange, 401, "unknown_api_key");
}

#[test]
fn allow_principals_alone_checks_the_mtls_identity() {
    let config = json!({"allowPrincipals": [FRONTEND]});
    let harness = harness(&config.to_string());

    let exchange = harness.request(TestRequest::get("/").principal(FRONTEND));
    assert_passed(&exchange);

    let reply = assert_refused(
        &harness.request(TestRequest::get("/")),
        401,
        "missing_principal",
    );
    assert_eq!(challenges(&reply), ["MutualTLS realm=\"weft\""]);

    let stranger = TestRequest::get("/").principal("spiffe://cluster.local/ns/web/sa/other");
    let reply = assert_refused(&harness.request(stranger), 403, "principal_not_allowed");
    assert!(challenges(&reply).is_empty());
    assert_eq!(harness.counter("auth_allowed_total"), Some(1));
    assert_eq!(denied(&harness, "principal_not_allowed"), Some(1));
}

#[test]
fn allow_principals_with_jwt_needs_both() {
    let config = json!({"jwt": hs_jwt(), "allowPrincipals": [FRONTEND]});
    let harness = harness(&config.to_string());
    let token = hs256(&claims());
    assert_passed(&harness.request(with_token(&token).principal(FRONTEND)));
    assert_refused(
        &harness.request(TestRequest::get("/").principal(FRONTEND)),
        401,
        "missing",
    );
    assert_refused(
        &harness.request(with_token(&token)),
        401,
        "missing_principal",
    );
    let other = with_token(&token).principal("spiffe://cluster.local/ns/x/sa/y");
    assert_refused(&harness.request(other), 403, "principal_not_allowed");
}

#[test]
fn bypass_paths_need_no_credentials_but_lose_spoofed_identity_headers() {
    let config = json!({
        "jwt": hs_jwt(),
        "apiKeys": api_keys(),
        "bypass": [{"prefix": "/healthz"}, {"prefix": "/public/"}],
    });
    let harness = harness(&config.to_string());
    for path in ["/healthz", "/healthz?full=1", "/public/logo.png"] {
        let exchange = harness.request(
            TestRequest::get(path)
                .header("x-user", "admin")
                .header("x-weft-api-key-name", "ci-bot"),
        );
        assert_passed(&exchange);
        assert_eq!(exchange.request_header("x-user"), None, "{path}");
        assert_eq!(
            exchange.request_header("x-weft-api-key-name"),
            None,
            "{path}"
        );
    }
    assert_eq!(harness.counter("auth_bypassed_total"), Some(3));
    assert_eq!(harness.counter("auth_allowed_total"), None);
    assert_refused(&harness.request(TestRequest::get("/api")), 401, "missing");
    assert_refused(
        &harness.request(TestRequest::get("/public")),
        401,
        "missing",
    );
}

#[test]
fn paths_that_could_mean_another_path_never_bypass() {
    let config = json!({"jwt": hs_jwt(), "bypass": [{"prefix": "/public/"}]});
    let harness = harness(&config.to_string());
    for path in [
        "/public/../admin",
        "/public/./x/../../admin",
        "/public/..",
        "/public/%2e%2e/admin",
        "/public/%2E%2E%2Fadmin",
        "/public/..%2fadmin",
        "/public/..%5cadmin",
        "/public/..\\admin",
    ] {
        assert_refused(&harness.request(TestRequest::get(path)), 401, "missing");
    }
    // Dots inside names and in the query are fine.
    assert_passed(&harness.request(TestRequest::get("/public/app.v2.js?next=/../x")));
}
