//! The built-in `auth` plugin (`builtin://auth`): bearer JWTs, API keys and allow-lists of
//! mTLS identities, answering 401 or 403 before a request reaches anything upstream.
//!
//! ```yaml
//! - plugin: auth
//!   config:
//!     jwt:
//!       issuer: https://id.example           # optional: `iss` must equal it
//!       audiences: [api]                     # optional: `aud` must name one of them
//!       keys:
//!         - {kid: k1, alg: HS256, secret: "a secret of at least 32 bytes......"}
//!         - {kid: k2, alg: RS256, pem: "-----BEGIN PUBLIC KEY-----\n..."}
//!       jwks: {keys: [{kty: EC, crv: P-256, kid: k3, x: "...", y: "..."}]}  # RFC 7517, inline
//!       forwardClaims: {sub: x-user}         # claim → request header upstream
//!       requiredClaims: {role: admin}        # optional: else 403
//!       header: authorization                # default; the `Bearer ` scheme
//!       clockSkew: 60s                       # default
//!     apiKeys: {header: x-api-key, keys: {"k-1f2e…": ci-bot}}
//!     allowPrincipals: ["spiffe://cluster.local/ns/web/sa/frontend"]
//!     bypass: [{prefix: /healthz}]
//! ```
//!
//! At least one of `jwt`, `apiKeys` and `allowPrincipals` is required. Everything is checked
//! when the configuration is applied (a bad PEM, an unknown algorithm, a key of the wrong kind
//! for its `alg`, an HS256 secret shorter than 32 bytes, an RSA key under 2048 bits, a JWK with
//! private material: the update is refused naming the entry, e.g. `jwt.keys[1]`).
//!
//! # What a request goes through
//!
//! 1. **bypass**: a request whose path (query included) starts with a `bypass` prefix passes
//!    unchecked. Prefixes are plain string prefixes (`/health` also covers `/healthz`). A path
//!    with dot segments (`/./`, `/../`), backslashes or percent-encoded `.`, `/` or `\` never
//!    bypasses — it could name another path once the upstream normalises it — it is checked
//!    like any other.
//! 2. **allowPrincipals**: the peer's verified mTLS identity (`weft.peer_principal`, the SPIFFE
//!    URI of its client certificate) must be listed: none → 401 (`missing_principal`,
//!    `WWW-Authenticate: MutualTLS realm="weft"`), not listed → 403 (`principal_not_allowed`).
//!    Alone, it is the only check; with `jwt` or `apiKeys` a credential is required as well.
//! 3. **credentials**, when `jwt` and/or `apiKeys` are configured. With both, either valid
//!    credential is enough: a bearer token is tried first, then the API key; a request with
//!    neither valid is refused with the first presented credential's reason.
//!    - `jwt`: the token (`Authorization: Bearer …`, or the `header` configured, where the
//!      `Bearer ` prefix is optional) is a JWS compact token. Its signature must verify with
//!      the key of its `kid` — a token without `kid` (or a key without one) is tried against
//!      every key of the token's `alg`. The `alg` must be the key's own: `none` is never
//!      accepted, and a public key is never used as an HMAC secret. Then `exp` is required
//!      and must be in the future, `nbf` (if present) must not be, both within `clockSkew`;
//!      `iss` must equal `issuer` and `aud` (a string or an array) must name one of
//!      `audiences`, each only when configured. A token with `crit` header parameters is
//!      refused. Finally each `requiredClaims` entry must equal the claim (or be an element
//!      of an array claim), else 403 (`claim_mismatch`, RFC 6750 `insufficient_scope`).
//!      A token that passed every check is remembered (at most 256 per configuration, as
//!      Envoy's `jwt_authn` caches them): its next requests skip the signature and claims
//!      parsing, but its `exp` and `nbf` are still checked against the clock each time.
//!    - `apiKeys`: the `header` (default `x-api-key`) must carry one of the keys. Keys are
//!      compared through their SHA-256, so lookup time says nothing about a key.
//!
//! Refusals are local replies with a JSON body naming the reason:
//! `{"error":"unauthorized","reason":"expired","message":"the token has expired"}`. A 401
//! carries a `WWW-Authenticate` challenge per configured credential: `Bearer realm="weft"`
//! (with `error="invalid_token", error_description="…"` when a token was refused, RFC 6750)
//! and `ApiKey realm="weft", header="x-api-key"`. Reasons: `missing`, `malformed`,
//! `unsupported_alg`, `unknown_key`, `alg_mismatch`, `bad_signature`, `missing_exp`,
//! `expired`, `not_yet_valid`, `wrong_issuer`, `wrong_audience`, `unknown_api_key`,
//! `missing_principal` (401); `claim_mismatch`, `principal_not_allowed` (403).
//!
//! # What the upstream sees
//!
//! - `forwardClaims` headers: the claim's value, strings as they are, numbers, booleans,
//!   arrays and objects as JSON text; absent when the claim is (or its value cannot be a
//!   header value).
//! - `x-weft-api-key-name`: the configured name of the API key that let the request in.
//!
//! These headers are removed from every request first — bypassed ones included — so a client
//! can never send its own. The credential headers themselves (`authorization`, the API key
//! header) are passed on unchanged, as Envoy's `jwt_authn` does by default.
//!
//! # Metrics
//!
//! `auth_allowed_total` (requests let in after the checks), `auth_bypassed_total`, and
//! `auth_denied_total{reason="…"}`.

mod cache;
mod config;
mod jwt;
mod keys;
mod reply;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use serde_json::Value;
use weft_sdk::{Action, Counter, Filter, Request, Result};

pub use config::{API_KEY_NAME_HEADER, ApiKeysConfig, BypassRule, Config, JwksConfig, JwtConfig};
pub use keys::{Jwk, KeyConfig};

use config::Resolved;
use jwt::Verified;
use reply::Denial;

/// One request's filter.
pub struct Auth {
    config: Rc<Config>,
}

/// Who a request was let in as.
enum Identity<'c> {
    /// No credential was asked for (only `allowPrincipals`), or the request bypassed.
    Anonymous,
    /// A verified bearer token, with the claims to forward.
    Token(Verified),
    /// The name of a valid API key.
    ApiKey(&'c str),
}

impl Filter for Auth {
    type Config = Config;

    fn configure(config: &mut Config) -> Result<(), String> {
        config.resolve()
    }

    fn new(config: &Rc<Config>) -> Self {
        Auth {
            config: config.clone(),
        }
    }

    fn on_request_headers(&mut self, request: &mut Request) -> Result<Action> {
        let auth = &self.config.resolved;
        if !auth.bypass.is_empty() && bypassed(&auth.bypass, &request.path()?) {
            forward(request, auth, &Identity::Anonymous)?;
            count(&auth.bypassed, "auth_bypassed_total");
            return Ok(Action::Continue);
        }
        if let Some(allowed) = &auth.principals {
            match request.peer_principal()? {
                None => return Denial::missing_principal().send(request, auth),
                Some(principal) if !allowed.contains(&principal) => {
                    return Denial::principal_not_allowed().send(request, auth);
                }
                Some(_) => {}
            }
        }
        let identity = match authenticate(request, auth)? {
            Ok(identity) => identity,
            Err(denial) => return denial.send(request, auth),
        };
        forward(request, auth, &identity)?;
        count(&auth.allowed, "auth_allowed_total");
        Ok(Action::Continue)
    }
}

weft_sdk::export_filter!(Auth);

/// Checks the request's credentials: who it is, or why it is refused.
fn authenticate<'c>(request: &Request, auth: &'c Resolved) -> Result<Result<Identity<'c>, Denial>> {
    if auth.jwt.is_none() && auth.api_keys.is_none() {
        return Ok(Ok(Identity::Anonymous));
    }
    let mut refused = None;
    if let Some(jwt) = &auth.jwt {
        let value = request.header(&jwt.header)?;
        if let Some(token) = value.as_deref().and_then(|v| bearer(v, &jwt.header)) {
            let now = weft_sdk::now()?
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            match jwt.verify(token, now) {
                Ok(verified) => return Ok(Ok(Identity::Token(verified))),
                Err(failure) => refused = Some(Denial::token(failure)),
            }
        }
    }
    if let Some(keys) = &auth.api_keys {
        let value = request.header(&keys.header)?;
        if let Some(key) = value.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            match keys.name_of(key) {
                Some(name) => return Ok(Ok(Identity::ApiKey(name))),
                None => refused = refused.or(Some(Denial::unknown_api_key())),
            }
        }
    }
    Ok(Err(refused.unwrap_or_else(Denial::missing)))
}

/// The token in a credential header: after `Bearer ` (any case), which `authorization`
/// requires and other headers may leave out.
fn bearer<'v>(value: &'v str, header: &str) -> Option<&'v str> {
    let value = value.trim();
    let token = match (value.get(..7), value.get(7..)) {
        (Some(scheme), Some(rest)) if scheme.eq_ignore_ascii_case("bearer ") => rest.trim_start(),
        _ if header == "authorization" => return None,
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}

/// Sets (or removes) the identity headers for the upstream.
fn forward(request: &mut Request, auth: &Resolved, identity: &Identity<'_>) -> Result<()> {
    if let Some(jwt) = &auth.jwt {
        let claims = match identity {
            Identity::Token(verified) => Some(&verified.claims),
            _ => None,
        };
        for (at, claim) in jwt.claims.iter().enumerate() {
            let Some(header) = &claim.forward_to else {
                continue;
            };
            let value = claims
                .and_then(|c| c.get(at))
                .and_then(Option::as_ref)
                .and_then(header_value);
            match value {
                Some(value) => request.set_header(header, &value)?,
                None => request.remove_header(header)?,
            }
        }
    }
    if auth.api_keys.is_some() {
        match identity {
            Identity::ApiKey(name) => request.set_header(config::API_KEY_NAME_HEADER, name)?,
            _ => request.remove_header(config::API_KEY_NAME_HEADER)?,
        }
    }
    Ok(())
}

/// A claim as a header value: strings as they are, anything else as JSON text; `None` when
/// it holds characters a header value cannot (control characters other than tab).
fn header_value(value: &Value) -> Option<Cow<'_, str>> {
    let text = match value {
        Value::String(text) => Cow::Borrowed(text.as_str()),
        other => Cow::Owned(other.to_string()),
    };
    let valid = text.bytes().all(|b| b == b'\t' || !(b < 0x20 || b == 0x7f));
    valid.then_some(text)
}

/// Whether `path` starts with a bypass prefix and cannot mean another path upstream.
fn bypassed(prefixes: &[String], path: &str) -> bool {
    prefixes.iter().any(|p| path.starts_with(p.as_str())) && plain_path(path)
}

/// No dot segments, backslashes or percent-encoded `.`, `/`, `\` in the path part.
fn plain_path(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path.contains('\\') || path.split('/').any(|s| s == "." || s == "..") {
        return false;
    }
    !path.as_bytes().windows(3).any(|w| {
        matches!(w, [b'%', a, b] if matches!((a, b.to_ascii_lowercase()), (b'2', b'e' | b'f') | (b'5', b'c')))
    })
}

/// Adds one to counter `name`, defined once and kept in `cell`. A counter the host cannot
/// update must not fail the request.
fn count(cell: &Cell<Option<Counter>>, name: &str) {
    let counter = match cell.get() {
        Some(counter) => Ok(counter),
        None => Counter::define(name).inspect(|c| cell.set(Some(*c))),
    };
    let _ = counter.and_then(|c| c.increment(1));
}
