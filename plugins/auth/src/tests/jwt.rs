//! Bearer JWTs: each algorithm accepted, every way a token is refused, the clock, claims
//! forwarded (and never taken from the client) and required.

use std::time::Duration;

use p256::ecdsa::SigningKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::json;
use weft_sdk::testing::TestRequest;

use super::*;

#[test]
fn a_valid_hs256_token_goes_upstream_with_its_subject_and_authorization() {
    let harness = harness(&jwt_config(hs_jwt()));
    let token = hs256(&claims());
    let exchange = harness.request(with_token(&token));
    assert_passed(&exchange);
    assert_eq!(exchange.request_header("x-user").as_deref(), Some("ann"));
    let authorization = format!("Bearer {token}");
    assert_eq!(
        exchange.request_header("authorization").as_deref(),
        Some(authorization.as_str()),
        "the credential header is passed on"
    );
    assert_eq!(harness.counter("auth_allowed_total"), Some(1));
}

#[test]
fn no_token_is_a_401_with_a_plain_bearer_challenge() {
    let harness = harness(&jwt_config(hs_jwt()));
    for request in [
        TestRequest::get("/api"),
        TestRequest::get("/api").header("authorization", "Basic YW5uOnB3"),
        TestRequest::get("/api").header("authorization", "Bearer "),
    ] {
        let exchange = harness.request(request);
        let reply = assert_refused(&exchange, 401, "missing");
        assert_eq!(challenges(&reply), ["Bearer realm=\"weft\""]);
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
    assert_eq!(denied(&harness, "missing"), Some(3));
}

#[test]
fn malformed_tokens_are_401_invalid_token() {
    let harness = harness(&jwt_config(hs_jwt()));
    let good = hs256(&claims());
    let (header, rest) = good.split_once('.').expect("three segments");
    let not_json = format!("{}.{rest}", b64(b"{alg: HS256"));
    let five = format!("{good}.x.y");
    // Claims that are not base64url, under a signature that verifies.
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any length");
    mac.update(format!("{header}.!!!").as_bytes());
    let bad_claims = format!("{header}.!!!.{}", b64(&mac.finalize().into_bytes()));
    let bad_signature = format!("{header}.e30.%%");
    for token in [
        "abc",
        "a.b",
        &five,
        "..",
        &not_json,
        &bad_claims,
        &bad_signature,
    ] {
        let exchange = harness.request(with_token(token));
        let reply = assert_refused(&exchange, 401, "malformed");
        let challenge = challenges(&reply).join(" ");
        assert!(
            challenge.starts_with(
                "Bearer realm=\"weft\", error=\"invalid_token\", error_description=\""
            ),
            "{token}: {challenge}"
        );
    }
}

#[test]
fn claims_that_are_not_a_json_object_are_malformed() {
    let harness = harness(&jwt_config(hs_jwt()));
    let header = json!({"alg": "HS256", "kid": "hs"});
    for claims in [
        json!(["exp"]),
        json!({"exp": "tomorrow"}),
        json!({"aud": 7, "exp": now() + 60}),
    ] {
        let token = hs256_with(SECRET.as_bytes(), header.clone(), &claims);
        assert_refused(&harness.request(with_token(&token)), 401, "malformed");
    }
}

#[test]
fn a_tampered_token_or_another_secret_is_a_bad_signature() {
    let harness = harness(&jwt_config(hs_jwt()));
    let token = hs256(&claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let admin = b64(claims_with(json!({"sub": "admin"})).to_string().as_bytes());
    parts[1] = &admin;
    let tampered = parts.join(".");
    assert_refused(
        &harness.request(with_token(&tampered)),
        401,
        "bad_signature",
    );

    let other = hs256_with(
        b"another secret of thirty-two byte",
        json!({"alg": "HS256", "kid": "hs"}),
        &claims(),
    );
    let exchange = harness.request(with_token(&other));
    let reply = assert_refused(&exchange, 401, "bad_signature");
    assert!(reply.body_text().contains("signature does not verify"));
    assert_eq!(exchange.request_header("x-user"), None);
    assert_eq!(denied(&harness, "bad_signature"), Some(2));
}

#[test]
fn an_unknown_kid_is_refused() {
    let harness = harness(&jwt_config(hs_jwt()));
    let token = hs256_with(
        SECRET.as_bytes(),
        json!({"alg": "HS256", "kid": "nope"}),
        &claims(),
    );
    assert_refused(&harness.request(with_token(&token)), 401, "unknown_key");
}

#[test]
fn alg_none_and_unsupported_algs_are_refused() {
    let harness = harness(&jwt_config(hs_jwt()));
    let input = signing_input(&json!({"alg": "none", "kid": "hs"}), &claims());
    for token in [format!("{input}."), format!("{input}.c2ln")] {
        assert_refused(&harness.request(with_token(&token)), 401, "unsupported_alg");
    }
    let hs512 = hs256_with(SECRET.as_bytes(), json!({"alg": "HS512"}), &claims());
    assert_refused(&harness.request(with_token(&hs512)), 401, "unsupported_alg");
    let no_alg = hs256_with(SECRET.as_bytes(), json!({"kid": "hs"}), &claims());
    assert_refused(
        &harness.request(with_token(&no_alg)),
        401,
        "unsupported_alg",
    );
}

#[test]
fn a_public_key_is_never_an_hmac_secret() {
    // The classic alg confusion: HS256 "signed" with the RSA public key's PEM text.
    let config = jwt_config(json!({
        "keys": [{"kid": "rs", "alg": "RS256", "pem": keys::RSA_PUBLIC}],
    }));
    let harness = harness(&config);
    let with_kid = hs256_with(
        keys::RSA_PUBLIC.as_bytes(),
        json!({"alg": "HS256", "kid": "rs"}),
        &claims(),
    );
    assert_refused(&harness.request(with_token(&with_kid)), 401, "alg_mismatch");
    let without_kid = hs256_with(
        keys::RSA_PUBLIC.as_bytes(),
        json!({"alg": "HS256"}),
        &claims(),
    );
    assert_refused(
        &harness.request(with_token(&without_kid)),
        401,
        "unknown_key",
    );
}

#[test]
fn a_token_without_kid_is_tried_against_every_key_of_its_alg() {
    let second = "fedcba9876543210fedcba9876543210";
    let config = jwt_config(json!({
        "keys": [
            {"kid": "one", "alg": "HS256", "secret": SECRET},
            {"kid": "two", "alg": "HS256", "secret": second},
        ],
    }));
    let harness = harness(&config);
    let token = hs256_with(second.as_bytes(), json!({"alg": "HS256"}), &claims());
    assert_passed(&harness.request(with_token(&token)));
    // With a kid, only that key is tried.
    let token = hs256_with(
        second.as_bytes(),
        json!({"alg": "HS256", "kid": "one"}),
        &claims(),
    );
    assert_refused(&harness.request(with_token(&token)), 401, "bad_signature");
}

#[test]
fn a_key_without_kid_verifies_tokens_whatever_their_kid() {
    let config = jwt_config(json!({"keys": [{"alg": "HS256", "secret": SECRET}]}));
    let harness = harness(&config);
    assert_passed(&harness.request(with_token(&hs256(&claims()))));
}

#[test]
fn a_crit_header_is_refused() {
    let harness = harness(&jwt_config(hs_jwt()));
    let token = hs256_with(
        SECRET.as_bytes(),
        json!({"alg": "HS256", "kid": "hs", "crit": ["exp"], "exp": 1}),
        &claims(),
    );
    assert_refused(&harness.request(with_token(&token)), 401, "malformed");
}

#[test]
fn expiry_is_required_and_checked_with_the_clock_skew() {
    let harness = harness(&jwt_config(hs_jwt()));
    let expired = hs256(&claims_with(json!({"exp": now() - 120})));
    let exchange = harness.request(with_token(&expired));
    let reply = assert_refused(&exchange, 401, "expired");
    assert_eq!(
        challenges(&reply),
        [
            "Bearer realm=\"weft\", error=\"invalid_token\", error_description=\"the token has expired\""
        ]
    );
    let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(body["error"], "unauthorized");

    // Within the default 60 s of skew.
    let recent = hs256(&claims_with(json!({"exp": now() - 20})));
    assert_passed(&harness.request(with_token(&recent)));

    let no_exp = hs256(&claims_with(json!({"exp": null})));
    assert_refused(&harness.request(with_token(&no_exp)), 401, "missing_exp");

    // A token valid now expires as the clock moves.
    let soon = hs256(&claims_with(json!({"exp": now() + 10})));
    assert_passed(&harness.request(with_token(&soon)));
    harness.advance(Duration::from_secs(75));
    assert_refused(&harness.request(with_token(&soon)), 401, "expired");
    assert_eq!(denied(&harness, "expired"), Some(2));
}

#[test]
fn clock_skew_is_configurable() {
    let mut jwt = hs_jwt();
    jwt["clockSkew"] = json!("0s");
    let harness = harness(&jwt_config(jwt));
    let just_expired = hs256(&claims_with(json!({"exp": now() - 2})));
    assert_refused(&harness.request(with_token(&just_expired)), 401, "expired");
    let fractional = hs256(&claims_with(json!({"exp": (now() + 30) as f64 + 0.5})));
    assert_passed(&harness.request(with_token(&fractional)));
}

#[test]
fn a_token_not_yet_valid_is_refused() {
    let harness = harness(&jwt_config(hs_jwt()));
    let future = hs256(&claims_with(json!({"nbf": now() + 300})));
    let reply = assert_refused(&harness.request(with_token(&future)), 401, "not_yet_valid");
    assert!(reply.body_text().contains("not valid yet"));
    let within_skew = hs256(&claims_with(json!({"nbf": now() + 30})));
    assert_passed(&harness.request(with_token(&within_skew)));
    let past = hs256(&claims_with(json!({"nbf": now() - 30})));
    assert_passed(&harness.request(with_token(&past)));
}

#[test]
fn the_issuer_must_match() {
    let harness = harness(&jwt_config(hs_jwt()));
    for claims in [
        claims_with(json!({"iss": "https://evil.example"})),
        claims_with(json!({"iss": null})),
        claims_with(json!({"iss": "https://id.example/"})),
    ] {
        assert_refused(
            &harness.request(with_token(&hs256(&claims))),
            401,
            "wrong_issuer",
        );
    }
    // Without an issuer configured, any (or none) is fine.
    let mut jwt = hs_jwt();
    jwt.as_object_mut().map(|j| j.remove("issuer"));
    let open = super::harness(&jwt_config(jwt));
    let any = hs256(&claims_with(json!({"iss": "https://other.example"})));
    assert_passed(&open.request(with_token(&any)));
}

#[test]
fn the_audience_must_intersect_as_a_string_or_an_array() {
    let harness = harness(&jwt_config(hs_jwt()));
    let array = hs256(&claims_with(json!({"aud": ["web", "api"]})));
    assert_passed(&harness.request(with_token(&array)));
    for aud in [
        json!("web"),
        json!(["web", "admin"]),
        json!([]),
        json!(null),
    ] {
        let token = hs256(&claims_with(json!({ "aud": aud })));
        let reply = assert_refused(&harness.request(with_token(&token)), 401, "wrong_audience");
        assert!(challenges(&reply)[0].contains("not for this audience"));
    }
}

#[test]
fn rs256_tokens_verify_with_spki_and_pkcs1_public_keys() {
    for pem in [keys::RSA_PUBLIC, keys::RSA_PUBLIC_PKCS1] {
        let harness = harness(&jwt_config(json!({
            "issuer": ISSUER,
            "keys": [{"kid": "rs", "alg": "RS256", "pem": pem}],
            "forwardClaims": {"sub": "x-user"},
        })));
        let token = rs256_with(json!({"alg": "RS256", "kid": "rs"}), &claims());
        let exchange = harness.request(with_token(&token));
        assert_passed(&exchange);
        assert_eq!(exchange.request_header("x-user").as_deref(), Some("ann"));

        let (input, signature) = token.rsplit_once('.').expect("a signature");
        let (header, _) = input.split_once('.').expect("claims");
        let forged = b64(claims_with(json!({"sub": "root"})).to_string().as_bytes());
        let tampered = format!("{header}.{forged}.{signature}");
        assert_refused(
            &harness.request(with_token(&tampered)),
            401,
            "bad_signature",
        );
    }
}

#[test]
fn es256_tokens_verify_and_another_key_does_not() {
    let harness = harness(&jwt_config(json!({
        "keys": [{"kid": "ec", "alg": "ES256", "pem": keys::EC_PUBLIC}],
    })));
    let header = json!({"alg": "ES256", "kid": "ec"});
    let token = es256_with(&ec_key(), header.clone(), &claims());
    assert_passed(&harness.request(with_token(&token)));

    let other = SigningKey::from_slice(&[7u8; 32]).expect("a valid scalar");
    let forged = es256_with(&other, header, &claims());
    assert_refused(&harness.request(with_token(&forged)), 401, "bad_signature");

    // A DER-encoded signature is not the JWS form (r || s).
    let (input, _) = token.rsplit_once('.').expect("a signature");
    let der: p256::ecdsa::Signature = ec_key().sign(input.as_bytes());
    let der_token = format!("{input}.{}", b64(der.to_der().as_bytes()));
    assert_refused(
        &harness.request(with_token(&der_token)),
        401,
        "bad_signature",
    );
}

#[test]
fn inline_jwks_keys_of_every_kind_verify() {
    let rsa = rsa::RsaPublicKey::from_public_key_pem(keys::RSA_PUBLIC).expect("the RSA key");
    let point = ec_key().verifying_key().to_encoded_point(false);
    let (x, y) = (point.x().expect("x"), point.y().expect("y"));
    let harness = harness(&jwt_config(json!({
        "jwks": {"keys": [
            {"kty": "RSA", "kid": "r", "use": "sig", "n": b64(&rsa.n().to_bytes_be()), "e": b64(&rsa.e().to_bytes_be())},
            {"kty": "EC", "kid": "e", "crv": "P-256", "alg": "ES256", "x": b64(x), "y": b64(y)},
            {"kty": "oct", "kid": "o", "k": b64(SECRET.as_bytes()), "key_ops": ["verify"]},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        ]},
    })));
    let rs = rs256_with(json!({"alg": "RS256", "kid": "r"}), &claims());
    assert_passed(&harness.request(with_token(&rs)));
    let es = es256_with(&ec_key(), json!({"alg": "ES256", "kid": "e"}), &claims());
    assert_passed(&harness.request(with_token(&es)));
    let hs = hs256_with(
        SECRET.as_bytes(),
        json!({"alg": "HS256", "kid": "o"}),
        &claims(),
    );
    assert_passed(&harness.request(with_token(&hs)));
    // The key ids are enforced: the RSA token under the EC key's kid.
    let wrong = rs256_with(json!({"alg": "RS256", "kid": "e"}), &claims());
    assert_refused(&harness.request(with_token(&wrong)), 401, "alg_mismatch");
}

#[test]
fn forwarded_claims_are_rendered_and_client_copies_are_dropped() {
    let mut jwt = hs_jwt();
    jwt["forwardClaims"] = json!({
        "sub": "x-user", "admin": "x-admin", "level": "x-level",
        "groups": "x-groups", "tenant": "x-tenant", "note": "x-note",
    });
    let harness = harness(&jwt_config(jwt));
    let token = hs256(&claims_with(json!({
        "admin": true, "level": 3, "groups": ["a", "b"], "note": "line\nbreak",
    })));
    let exchange = harness.request(
        with_token(&token)
            .header("x-user", "mallory")
            .header("x-tenant", "spoofed")
            .header("x-note", "spoofed"),
    );
    assert_passed(&exchange);
    assert_eq!(exchange.request_header("x-user").as_deref(), Some("ann"));
    assert_eq!(exchange.request_header("x-admin").as_deref(), Some("true"));
    assert_eq!(exchange.request_header("x-level").as_deref(), Some("3"));
    assert_eq!(
        exchange.request_header("x-groups").as_deref(),
        Some("[\"a\",\"b\"]")
    );
    assert_eq!(
        exchange.request_header("x-tenant"),
        None,
        "absent claim, spoofed header dropped"
    );
    assert_eq!(
        exchange.request_header("x-note"),
        None,
        "a claim no header can carry"
    );
    let users = exchange
        .request_headers()
        .into_iter()
        .filter(|(k, _)| k == "x-user")
        .count();
    assert_eq!(users, 1, "the client's x-user is replaced, not added to");
}

#[test]
fn forwarded_registered_claims_are_still_checked() {
    let mut jwt = hs_jwt();
    jwt["forwardClaims"] = json!({"iss": "x-issuer", "aud": "x-aud"});
    let harness = harness(&jwt_config(jwt));
    let exchange = harness.request(with_token(&hs256(&claims())));
    assert_passed(&exchange);
    assert_eq!(exchange.request_header("x-issuer").as_deref(), Some(ISSUER));
    assert_eq!(exchange.request_header("x-aud").as_deref(), Some("api"));
    let wrong = hs256(&claims_with(json!({"iss": "https://evil.example"})));
    assert_refused(&harness.request(with_token(&wrong)), 401, "wrong_issuer");
}

#[test]
fn required_claims_refuse_with_403_insufficient_scope() {
    let mut jwt = hs_jwt();
    jwt["requiredClaims"] = json!({"role": "admin", "email_verified": true});
    let harness = harness(&jwt_config(jwt));
    let admin = hs256(&claims_with(
        json!({"role": "admin", "email_verified": true}),
    ));
    assert_passed(&harness.request(with_token(&admin)));
    let in_array = hs256(&claims_with(
        json!({"role": ["user", "admin"], "email_verified": true}),
    ));
    assert_passed(&harness.request(with_token(&in_array)));

    for claims in [
        claims_with(json!({"role": "user", "email_verified": true})),
        claims_with(json!({"role": "admin"})),
        claims_with(json!({"role": "admin", "email_verified": "true"})),
    ] {
        let exchange = harness.request(with_token(&hs256(&claims)));
        let reply = assert_refused(&exchange, 403, "claim_mismatch");
        let challenge = challenges(&reply).join(" ");
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
        assert_eq!(body["error"], "forbidden");
    }
}

#[test]
fn a_custom_header_takes_the_token_with_or_without_bearer() {
    let mut jwt = hs_jwt();
    jwt["header"] = json!("X-JWT");
    let harness = harness(&jwt_config(jwt));
    let token = hs256(&claims());
    assert_passed(&harness.request(TestRequest::get("/").header("x-jwt", &token)));
    let bearer = format!("bearer {token}");
    assert_passed(&harness.request(TestRequest::get("/").header("x-jwt", &bearer)));
    assert_refused(&harness.request(with_token(&token)), 401, "missing");
}

#[test]
fn secret_base64_is_the_decoded_secret() {
    let secret = [0xfbu8; 32];
    let standard = base64::engine::general_purpose::STANDARD.encode(secret);
    assert!(
        standard.contains('+') || standard.contains('/'),
        "exercises the standard alphabet"
    );
    let harness = harness(&jwt_config(json!({
        "keys": [{"alg": "HS256", "secretBase64": standard}],
    })));
    let token = hs256_with(&secret, json!({"alg": "HS256"}), &claims());
    assert_passed(&harness.request(with_token(&token)));
    let wrong = hs256_with(standard.as_bytes(), json!({"alg": "HS256"}), &claims());
    assert_refused(&harness.request(with_token(&wrong)), 401, "bad_signature");
}

#[test]
fn padded_segments_are_tolerated() {
    let harness = harness(&jwt_config(hs_jwt()));
    let token = hs256(&claims());
    let padded: Vec<String> = token
        .split('.')
        .map(|part| {
            let mut part = part.to_owned();
            while part.len() % 4 != 0 {
                part.push('=');
            }
            part
        })
        .collect();
    // Padding changes the signing input, so sign the padded header and claims again.
    let input = format!("{}.{}", padded[0], padded[1]);
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any length");
    mac.update(input.as_bytes());
    let signature = base64::engine::general_purpose::URL_SAFE.encode(mac.finalize().into_bytes());
    assert!(signature.ends_with('='));
    assert_passed(&harness.request(with_token(&format!("{input}.{signature}"))));
}

#[test]
fn a_token_verified_before_is_still_checked_against_the_clock() {
    let harness = harness(&jwt_config(hs_jwt()));
    let token = hs256(&claims_with(json!({"exp": now() + 10, "nbf": now() - 5})));
    for _ in 0..3 {
        // The first request verifies it in full, the next ones find it cached: same answer.
        let exchange = harness.request(with_token(&token));
        assert_passed(&exchange);
        assert_eq!(exchange.request_header("x-user").as_deref(), Some("ann"));
    }
    assert_eq!(harness.counter("auth_allowed_total"), Some(3));

    // Past exp (and the skew) the cached token is refused as a full check refuses it.
    harness.advance(Duration::from_secs(75));
    let exchange = harness.request(with_token(&token));
    assert_refused(&exchange, 401, "expired");
    assert_eq!(exchange.request_header("x-user"), None);

    // A token differing from a cached one only in its signature is checked in full.
    let fresh = hs256(&claims());
    assert_passed(&harness.request(with_token(&fresh)));
    let (signed, _) = fresh.rsplit_once('.').expect("three parts");
    let forged = format!("{signed}.{}", b64(&[0; 32]));
    assert_refused(&harness.request(with_token(&forged)), 401, "bad_signature");
    assert_passed(&harness.request(with_token(&fresh)));
}

#[test]
fn a_cached_token_not_yet_valid_waits_for_its_nbf() {
    let mut jwt = hs_jwt();
    jwt["clockSkew"] = json!("0s");
    let harness = harness(&jwt_config(jwt));
    let token = hs256(&claims_with(json!({"nbf": now() + 30})));
    assert_refused(&harness.request(with_token(&token)), 401, "not_yet_valid");
    harness.advance(Duration::from_secs(31));
    assert_passed(&harness.request(with_token(&token)));
    // Cached now: still accepted, and the clock still counts.
    assert_passed(&harness.request(with_token(&token)));
    harness.advance(Duration::from_secs(300));
    assert_refused(&harness.request(with_token(&token)), 401, "expired");
}
