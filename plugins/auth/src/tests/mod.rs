//! Native tests of the auth plugin through `weft_sdk::testing`, and what they share: test
//! tokens signed here (HS256 with `hmac`, RS256 and ES256 with the fixed keys of [`keys`]),
//! configurations, and assertions on refusals.
//!
//! - `jwt`: every way a token is accepted or refused, claims forwarded and required.
//! - `credentials`: API keys, both mechanisms together, `allowPrincipals`, `bypass`.
//! - `configs`: configurations refused with the field named.

mod configs;
mod credentials;
mod jwt;
mod keys;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::{SignatureEncoding, Signer};
use serde_json::{Value, json};
use sha2::Sha256;
use weft_sdk::Action;
use weft_sdk::testing::{Exchange, Harness, LocalReply, TestRequest};

use crate::Auth;
use crate::keys::BASE64URL;

/// The HS256 secret of most tests (32 bytes).
const SECRET: &str = "0123456789abcdef0123456789abcdef";
/// The issuer the tests configure.
const ISSUER: &str = "https://id.example";

/// Seconds since the Unix epoch, as the harness's clock starts.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Claims that pass the default checks: `sub`, `iss`, `aud`, `exp` in five minutes.
fn claims() -> Value {
    json!({"sub": "ann", "iss": ISSUER, "aud": "api", "exp": now() + 300})
}

/// `claims()` with `extra` merged over it (a `null` removes the claim).
fn claims_with(extra: Value) -> Value {
    let mut claims = claims();
    if let (Some(map), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                map.remove(k);
            } else {
                map.insert(k.clone(), v.clone());
            }
        }
    }
    claims
}

fn b64(bytes: &[u8]) -> String {
    BASE64URL.encode(bytes)
}

/// `header.claims` encoded, ready to sign.
fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// An HS256 token over `header` with `secret`.
fn hs256_with(secret: &[u8], header: Value, claims: &Value) -> String {
    let input = signing_input(&header, claims);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any HMAC key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// An HS256 token, `kid: hs`, signed with [`SECRET`].
fn hs256(claims: &Value) -> String {
    hs256_with(
        SECRET.as_bytes(),
        json!({"alg": "HS256", "typ": "JWT", "kid": "hs"}),
        claims,
    )
}

/// An RS256 token over `header`, signed with [`keys::RSA_PRIVATE`].
fn rs256_with(header: Value, claims: &Value) -> String {
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(keys::RSA_PRIVATE).expect("the test RSA key");
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key);
    let input = signing_input(&header, claims);
    let signature = signer.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

/// The ES256 test key.
fn ec_key() -> p256::ecdsa::SigningKey {
    use p256::pkcs8::DecodePrivateKey;
    p256::ecdsa::SigningKey::from_pkcs8_pem(keys::EC_PRIVATE).expect("the test EC key")
}

/// An ES256 token over `header`, signed with `key` (JWS `r || s`).
fn es256_with(key: &p256::ecdsa::SigningKey, header: Value, claims: &Value) -> String {
    let input = signing_input(&header, claims);
    let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

/// A configuration with `jwt` set to `jwt` (JSON).
fn jwt_config(jwt: Value) -> String {
    json!({ "jwt": jwt }).to_string()
}

/// The usual `jwt` section: HS256 key `hs`, the issuer, audience `api`, `sub` → `x-user`.
fn hs_jwt() -> Value {
    json!({
        "issuer": ISSUER,
        "audiences": ["api"],
        "keys": [{"kid": "hs", "alg": "HS256", "secret": SECRET}],
        "forwardClaims": {"sub": "x-user"},
    })
}

/// A harness on `config`, which must be accepted.
fn harness(config: &str) -> Harness<Auth> {
    match Harness::<Auth>::new(config) {
        Ok(harness) => harness,
        Err(e) => panic!("configuration refused: {e}\n{config}"),
    }
}

/// A GET of `/api` with `Authorization: Bearer token`.
fn with_token(token: &str) -> TestRequest {
    TestRequest::get("/api").header("authorization", &format!("Bearer {token}"))
}

/// The request went on upstream.
fn assert_passed(exchange: &Exchange<'_, Auth>) {
    assert_eq!(
        exchange.action(),
        Action::Continue,
        "refused: {:?}",
        exchange.local_reply()
    );
    assert!(exchange.local_reply().is_none());
}

/// The request was refused with `status` and `reason`; returns the reply.
fn assert_refused(exchange: &Exchange<'_, Auth>, status: u16, reason: &str) -> LocalReply {
    let reply = exchange
        .local_reply()
        .unwrap_or_else(|| panic!("expected a {status} ({reason}), the request went on"));
    assert_eq!(reply.status, status, "{}", reply.body_text());
    let body: Value = serde_json::from_slice(&reply.body).expect("a JSON body");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(exchange.action(), Action::Pause);
    reply
}

/// Every `WWW-Authenticate` value of `reply`.
fn challenges(reply: &LocalReply) -> Vec<&str> {
    reply
        .headers
        .iter()
        .filter(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect()
}

/// `auth_denied_total{reason="…"}`.
fn denied(harness: &Harness<Auth>, reason: &str) -> Option<u64> {
    harness.counter(&format!("auth_denied_total{{reason=\"{reason}\"}}"))
}
