//! Configurations the plugin refuses, each with the field it names, and the ones it accepts.

use serde_json::json;

use super::*;

/// The error `config` is refused with.
fn refused(config: Value) -> String {
    match Harness::<Auth>::new(&config.to_string()) {
        Ok(_) => panic!("accepted: {config}"),
        Err(e) => e,
    }
}

/// Asserts `config` is refused with an error containing every one of `parts`.
fn assert_refused_with(config: Value, parts: &[&str]) {
    let error = refused(config.clone());
    for part in parts {
        assert!(error.contains(part), "{config}\n→ {error:?} lacks {part:?}");
    }
}

fn one_key(key: Value) -> Value {
    json!({"jwt": {"keys": [{"kid": "ok", "alg": "HS256", "secret": SECRET}, key]}})
}

#[test]
fn a_configuration_must_ask_for_something() {
    assert_refused_with(
        json!({}),
        &["at least one of jwt, apiKeys and allowPrincipals"],
    );
    assert_refused_with(json!({"bypass": [{"prefix": "/"}]}), &["at least one"]);
    assert_refused_with(
        json!({"jwt": {"keys": []}}),
        &["jwt: needs at least one signing key"],
    );
}

#[test]
fn unknown_fields_are_named() {
    assert_refused_with(json!({"jwts": {}}), &["unknown field `jwts`"]);
    assert_refused_with(
        json!({"jwt": {"keys": [{"alg": "HS256", "secret": SECRET, "kyd": "x"}]}}),
        &["jwt.keys[0]", "unknown field `kyd`"],
    );
    assert_refused_with(
        json!({"apiKeys": {"keys": {"a": "b"}, "heder": "x"}}),
        &["unknown field `heder`"],
    );
}

#[test]
fn bad_keys_are_refused_naming_the_entry() {
    let cases = [
        (
            json!({"alg": "RS256", "pem": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"}),
            "not an RSA public key",
        ),
        (
            json!({"alg": "PS256", "pem": keys::RSA_PUBLIC}),
            "unsupported algorithm \"PS256\"",
        ),
        (json!({"alg": "none"}), "unsupported algorithm \"none\""),
        (
            json!({"alg": "RS256", "pem": keys::EC_PUBLIC}),
            "a P-256 key, but RS256 needs an RSA key",
        ),
        (
            json!({"alg": "ES256", "pem": keys::RSA_PUBLIC}),
            "an RSA key, but ES256 needs a P-256 key",
        ),
        (
            json!({"alg": "ES256", "pem": keys::EC_P384_PUBLIC}),
            "not a P-256 public key",
        ),
        (
            json!({"alg": "RS256", "pem": keys::RSA_PRIVATE}),
            "private key",
        ),
        (
            json!({"alg": "RS256", "pem": keys::RSA_1024_PUBLIC}),
            "at least 2048 bits",
        ),
        (
            json!({"alg": "RS256", "secret": SECRET}),
            "takes a pem public key",
        ),
        (json!({"alg": "RS256"}), "needs a pem"),
        (
            json!({"alg": "HS256", "secret": "short"}),
            "at least 32 bytes",
        ),
        (
            json!({"alg": "HS256", "pem": keys::RSA_PUBLIC}),
            "not a pem",
        ),
        (json!({"alg": "HS256"}), "needs a secret"),
        (
            json!({"alg": "HS256", "secret": SECRET, "secretBase64": "AAAA"}),
            "not both",
        ),
        (
            json!({"alg": "HS256", "secretBase64": "not base64!"}),
            "secretBase64: not base64",
        ),
    ];
    for (key, message) in cases {
        assert_refused_with(one_key(key), &["jwt.keys[1]: ", message]);
    }
}

#[test]
fn bad_jwks_keys_are_refused_naming_the_entry() {
    let jwk = |key: Value| json!({"jwt": {"jwks": {"keys": [key]}}});
    let cases = [
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"}),
            "unsupported key type \"OKP\"",
        ),
        (
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}),
            "private key material",
        ),
        (json!({"kty": "RSA", "e": "AQAB"}), "needs n"),
        (
            json!({"kty": "RSA", "alg": "HS256", "n": "AQAB", "e": "AQAB"}),
            "does not fit a RSA key",
        ),
        (
            json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
            "unsupported curve \"P-384\"",
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}),
            "32 bytes each",
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])}),
            "not a point on P-256",
        ),
        (
            json!({"kty": "oct", "k": b64(b"short")}),
            "at least 32 bytes",
        ),
        (json!({"kty": "oct", "k": "***"}), "k: not base64url"),
    ];
    for (key, message) in cases {
        assert_refused_with(jwk(key), &["jwt.jwks.keys[0]: ", message]);
    }
    // A JWK Set of encryption keys only has nothing to verify with.
    assert_refused_with(
        jwk(json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"})),
        &["needs at least one signing key"],
    );
}

#[test]
fn headers_durations_and_lists_are_checked() {
    let with = |field: &str, value: Value| {
        let mut jwt = hs_jwt();
        jwt[field] = value;
        json!({ "jwt": jwt })
    };
    assert_refused_with(
        with("clockSkew", json!("1 minute")),
        &["jwt.clockSkew", "not a duration"],
    );
    assert_refused_with(
        with("header", json!("x jwt")),
        &["jwt.header", "not a valid header name"],
    );
    assert_refused_with(with("issuer", json!("")), &["jwt.issuer"]);
    assert_refused_with(with("audiences", json!([""])), &["jwt.audiences"]);
    assert_refused_with(
        with("forwardClaims", json!({"sub": "authorization"})),
        &["jwt.forwardClaims.sub", "credential header"],
    );
    assert_refused_with(
        with("forwardClaims", json!({"sub": "x-user", "email": "X-User"})),
        &["jwt.forwardClaims.sub", "set twice"],
    );
    assert_refused_with(
        with("forwardClaims", json!({"sub": "content-length"})),
        &["jwt.forwardClaims.sub", "manages"],
    );
    assert_refused_with(
        with("forwardClaims", json!({"sub": "x-weft-api-key-name"})),
        &["API key name header"],
    );
    assert_refused_with(
        json!({"allowPrincipals": []}),
        &["allowPrincipals: list at least one"],
    );
    assert_refused_with(
        json!({"allowPrincipals": ["cluster.local/ns/a/sa/b"]}),
        &["allowPrincipals[0]", "not a URI"],
    );
    assert_refused_with(
        json!({"allowPrincipals": ["spiffe://x/y"], "bypass": [{"prefix": "health"}]}),
        &["bypass[0].prefix: must start with /"],
    );
    assert_refused_with(
        json!({"apiKeys": {"keys": {}}}),
        &["apiKeys.keys: needs at least one key"],
    );
    assert_refused_with(json!({"apiKeys": {"keys": {" k": "n"}}}), &["apiKeys.keys"]);
    assert_refused_with(
        json!({"apiKeys": {"keys": {"k": "a\nb"}}}),
        &["apiKeys.keys"],
    );
    assert_refused_with(
        json!({"jwt": hs_jwt(), "apiKeys": {"header": "Authorization", "keys": {"k": "n"}}}),
        &["apiKeys.header: must differ from jwt.header"],
    );
    assert_refused_with(
        json!({"jwt": hs_jwt(), "apiKeys": {"header": "x-user", "keys": {"k": "n"}}}),
        &["jwt.forwardClaims.sub", "credential header"],
    );
}

#[test]
fn a_full_configuration_is_accepted() {
    let config = json!({
        "jwt": {
            "issuer": ISSUER,
            "audiences": ["api", "web"],
            "keys": [
                {"kid": "hs", "alg": "HS256", "secret": SECRET},
                {"kid": "rs", "alg": "RS256", "pem": keys::RSA_PUBLIC},
                {"kid": "rs1", "alg": "RS256", "pem": keys::RSA_PUBLIC_PKCS1},
                {"kid": "ec", "alg": "ES256", "pem": keys::EC_PUBLIC},
            ],
            "forwardClaims": {"sub": "x-user"},
            "requiredClaims": {"tier": "gold"},
            "header": "authorization",
            "clockSkew": "30s",
        },
        "apiKeys": {"header": "x-api-key", "keys": {"k": "name"}},
        "allowPrincipals": ["spiffe://cluster.local/ns/a/sa/b"],
        "bypass": [{"prefix": "/healthz"}],
    });
    harness(&config.to_string());
}
