//! End-to-end tests of the built-in `auth` plugin (`builtin://auth`) through the proxy: a valid
//! HS256 token reaches the upstream with its subject forwarded (a client's own copy replaced);
//! an expired token, a token for another audience and no token are 401s with
//! `WWW-Authenticate` that never reach the upstream; API keys let known keys in by name; a
//! bypass path needs no credentials; `allowPrincipals` lets the mTLS client certificate's SPIFFE
//! identity in, answers 403 to an identity not listed and 401 to a plaintext client.
//!
//! Tokens are signed here (HMAC-SHA256 from `sha2`, base64url by hand): the test crate has no
//! JWT library, and needs none for HS256.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Request, Version};
use sha2::{Digest, Sha256};
use weft_e2e::certs::{CLIENT_SPIFFE, Identity, TestPki};
use weft_e2e::client::{self, Reply};
use weft_e2e::filters::{STEP, VERSIONS, send, start};
use weft_e2e::resources::{Chain, Cluster, Filter, Listener, Plugin, edge, join};
use weft_e2e::upstream::Upstream;
use weft_e2e::within;

/// The HS256 secret of the tests (32 bytes, the least RFC 7518 allows).
const SECRET: &[u8] = b"weft-e2e-secret-of-32-bytes-long";

/// The auth config of most tests: HS256, issuer, audience `api`, `sub` → `x-user`, a bypass.
fn jwt_config() -> String {
    let secret = std::str::from_utf8(SECRET).expect("an ASCII secret");
    format!(
        r#"{{jwt: {{issuer: "https://id.test", audiences: [api], keys: [{{kid: k1, alg: HS256, secret: "{secret}"}}], forwardClaims: {{sub: x-user}}}}, bypass: [{{prefix: /healthz}}]}}"#
    )
}

/// Cluster `web` on `upstream`, the builtin auth plugin with `config`, listener `public`.
fn auth_edge(upstream: SocketAddr, config: &str) -> String {
    edge(
        upstream,
        &[Plugin::new("auth", "").url("builtin://auth")],
        [Filter::new("auth").config(config)],
    )
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// HMAC-SHA256 (RFC 2104) of `message` under [`SECRET`].
fn hmac_sha256(message: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 64];
    key[..SECRET.len()].copy_from_slice(SECRET);
    let pad = |byte: u8| key.map(|k| k ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

/// An HS256 token (`kid: k1`) with issuer `https://id.test`, subject `ann`, `aud`, and `exp`
/// `expires_in` seconds from now.
fn token(aud: &str, expires_in: i64) -> String {
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "k1"});
    let claims = serde_json::json!({
        "iss": "https://id.test", "sub": "ann", "aud": aud, "exp": now() + expires_in,
    });
    let input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let signature = base64url(&hmac_sha256(input.as_bytes()));
    format!("{input}.{signature}")
}

fn with_header<B>(mut request: Request<B>, name: &'static str, value: &str) -> Request<B> {
    let value = HeaderValue::from_str(value).expect("a valid header value");
    request.headers_mut().insert(name, value);
    request
}

fn bearer<B>(request: Request<B>, token: &str) -> Request<B> {
    with_header(request, "authorization", &format!("Bearer {token}"))
}

/// The upstream's view of request header `name`, from its JSON echo.
fn seen(reply: &Reply, name: &str) -> Option<String> {
    reply.json()["headers"][name].as_str().map(str::to_owned)
}

/// The JSON body's `reason`.
fn reason(reply: &Reply) -> String {
    reply.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_valid_hs256_token_reaches_the_upstream_with_its_subject() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = start(&auth_edge(up.addr, &jwt_config()), "auth with jwt").await;
    let addr = weft.addr("public");
    let token = token("api", 300);
    for version in VERSIONS {
        let request = with_header(bearer(client::get("/orders"), &token), "x-user", "mallory");
        let reply = send(addr, version, request).await;
        assert_eq!(reply.status, 200, "{version:?}: {}", reply.text());
        assert_eq!(
            seen(&reply, "x-user").as_deref(),
            Some("ann"),
            "{version:?}"
        );
        assert_eq!(
            seen(&reply, "authorization"),
            Some(format!("Bearer {token}")),
            "{version:?}: the token is passed on"
        );
    }
    assert_eq!(up.requests(), 2);
    assert_eq!(weft.metric("auth_allowed_total").await, Some(2.0));
    weft.shutdown().await;
}

#[tokio::test]
async fn expired_wrong_audience_and_missing_tokens_are_401_with_a_challenge() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = start(&auth_edge(up.addr, &jwt_config()), "auth with jwt").await;
    let addr = weft.addr("public");
    for version in VERSIONS {
        let expired = send(addr, version, bearer(client::get("/"), &token("api", -600))).await;
        assert_eq!(expired.status, 401, "{version:?}: {}", expired.text());
        assert_eq!(reason(&expired), "expired", "{version:?}");
        assert_eq!(
            expired.header("www-authenticate"),
            Some(
                "Bearer realm=\"weft\", error=\"invalid_token\", error_description=\"the token has expired\""
            ),
            "{version:?}"
        );

        let elsewhere = send(addr, version, bearer(client::get("/"), &token("web", 300))).await;
        assert_eq!(elsewhere.status, 401, "{version:?}: {}", elsewhere.text());
        assert_eq!(reason(&elsewhere), "wrong_audience", "{version:?}");
        let challenge = elsewhere.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{version:?}: {challenge}"
        );

        let anonymous = send(addr, version, client::get("/")).await;
        assert_eq!(anonymous.status, 401, "{version:?}");
        assert_eq!(reason(&anonymous), "missing", "{version:?}");
        assert_eq!(
            anonymous.header("www-authenticate"),
            Some("Bearer realm=\"weft\"")
        );
    }
    assert_eq!(up.requests(), 0, "no refused request reaches the upstream");
    assert_eq!(
        weft.metric("auth_denied_total{reason=\"expired\"}").await,
        Some(2.0)
    );
    weft.shutdown().await;
}

#[tokio::test]
async fn a_bypass_path_reaches_the_upstream_without_credentials() {
    let up = Upstream::http1("web").await.expect("upstream");
    let weft = start(&auth_edge(up.addr, &jwt_config()), "auth with a bypass").await;
    let addr = weft.addr("public");
    for version in VERSIONS {
        let request = with_header(client::get("/healthz?probe=1"), "x-user", "admin");
        let reply = send(addr, version, request).await;
        assert_eq!(reply.status, 200, "{version:?}: {}", reply.text());
        assert_eq!(reply.json()["path"], "/healthz?probe=1");
        assert_eq!(
            seen(&reply, "x-user"),
            None,
            "{version:?}: identity headers are dropped"
        );

        let sneaky = send(addr, version, client::get("/healthz/../admin")).await;
        assert_eq!(
            sneaky.status, 401,
            "{version:?}: a dot segment never bypasses"
        );
    }
    assert_eq!(up.requests(), 2);
    weft.shutdown().await;
}

#[tokio::test]
async fn api_keys_let_known_keys_in_by_name() {
    let up = Upstream::http1("web").await.expect("upstream");
    let config = r#"{apiKeys: {keys: {"k-e2e-0001": ci-bot}}}"#;
    let weft = start(&auth_edge(up.addr, config), "auth with api keys").await;
    let addr = weft.addr("public");
    for version in VERSIONS {
        let known = with_header(client::get("/"), "x-api-key", "k-e2e-0001");
        let known = with_header(known, "x-weft-api-key-name", "root");
        let reply = send(addr, version, known).await;
        assert_eq!(reply.status, 200, "{version:?}: {}", reply.text());
        assert_eq!(
            seen(&reply, "x-weft-api-key-name").as_deref(),
            Some("ci-bot")
        );

        let unknown = with_header(client::get("/"), "x-api-key", "k-e2e-9999");
        let reply = send(addr, version, unknown).await;
        assert_eq!(reply.status, 401, "{version:?}");
        assert_eq!(reason(&reply), "unknown_api_key");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("ApiKey realm=\"weft\", header=\"x-api-key\"")
        );
    }
    assert_eq!(up.requests(), 2);
    weft.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_principals_checks_the_client_certificate_identity() {
    let pki = TestPki::new().expect("generating the test PKI");
    let up = Upstream::http1("web").await.expect("upstream");
    let mtls = format!(
        r#"{{certificate: "{}", privateKey: "{}", clientCa: "{}"}}"#,
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    let allow = |principal: &str| format!("{{allowPrincipals: [\"{principal}\"]}}");
    let auth = || Filter::new("auth");
    let yaml = join([
        Cluster::new("web", &[up.addr]).to_string(),
        Plugin::new("auth", "").url("builtin://auth").to_string(),
        Chain::new("client-only", [auth().config(&allow(CLIENT_SPIFFE))]).to_string(),
        Chain::new(
            "others-only",
            [auth().config(&allow("spiffe://weft.test/ns/x/sa/other"))],
        )
        .to_string(),
        Listener::new("allowed", "web")
            .chain("client-only")
            .field("tls", &mtls)
            .to_string(),
        Listener::new("denied", "web")
            .chain("others-only")
            .field("tls", &mtls)
            .to_string(),
        Listener::new("plaintext", "web")
            .chain("client-only")
            .to_string(),
    ]);
    let weft = start(&yaml, "auth with allowPrincipals").await;

    let tls = pki.client_config(&[b"h2", b"http/1.1"], Some(Identity::Client));
    let allowed = within(
        STEP,
        "a request with the client certificate, listed",
        client::tls(
            weft.addr("allowed"),
            tls.clone(),
            "localhost",
            client::get("/in"),
        ),
    )
    .await
    .expect("the mTLS request completes");
    assert_eq!(allowed.status, 200, "{}", allowed.text());

    let denied = within(
        STEP,
        "a request with the client certificate, not listed",
        client::tls(weft.addr("denied"), tls, "localhost", client::get("/out")),
    )
    .await
    .expect("the mTLS request completes");
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(reason(&denied), "principal_not_allowed");

    let anonymous = send(weft.addr("plaintext"), Version::HTTP_11, client::get("/")).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert_eq!(reason(&anonymous), "missing_principal");
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("MutualTLS realm=\"weft\"")
    );

    assert_eq!(
        up.requests(),
        1,
        "only the listed identity reaches the upstream"
    );
    weft.shutdown().await;
}

/// The plugin's own message (`jwt.keys[0]: pem: not an RSA public key…`) goes to the proxy's
/// log; the startup error names the filter whose configuration was refused.
#[tokio::test]
async fn a_bad_key_refuses_the_configuration() {
    let up = Upstream::http1("web").await.expect("upstream");
    let config = r#"{jwt: {keys: [{kid: k1, alg: RS256, pem: "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"}]}}"#;
    let started = weft_e2e::weft::Weft::start(&auth_edge(up.addr, config)).await;
    let error = match started {
        Ok(_) => panic!("weft started with a bad RS256 key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("filter `auth`") && error.contains("rejected its configuration"),
        "{error}"
    );
    assert!(
        error.contains("jwt.keys[0]"),
        "the refusal carries the plugin's own reason, naming the key: {error}"
    );
}
