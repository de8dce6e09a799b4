//! The plugin's configuration: the authored model (serde, camelCase, unknown fields rejected)
//! and its validation into the resolved model the request path uses ([`Resolved`]): keys
//! parsed, API keys hashed, header names checked, the clock skew a number.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use weft_sdk::Counter;

use crate::cache::TokenCache;
use crate::keys::{self, Jwk, KeyConfig, VerifyKey};

/// The header that carries the accepted API key's name upstream.
pub const API_KEY_NAME_HEADER: &str = "x-weft-api-key-name";

/// The plugin's configuration (the `config` of its chain entry). At least one of `jwt`,
/// `apiKeys` and `allowPrincipals` is required.
///
/// ```yaml
/// jwt:
///   issuer: https://id.example          # optional: `iss` must equal it
///   audiences: [api]                    # optional: `aud` must name one of them
///   keys:                               # and/or `jwks: {keys: [...]}` (RFC 7517)
///     - {kid: k1, alg: HS256, secret: "at least 32 bytes of secret......"}
///     - {kid: k2, alg: RS256, pem: "-----BEGIN PUBLIC KEY-----..."}
///   forwardClaims: {sub: x-user}        # claim → request header upstream
///   requiredClaims: {role: admin}       # optional: else 403
///   header: authorization               # default; `Bearer ` prefix
///   clockSkew: 60s                      # default
/// apiKeys: {header: x-api-key, keys: {"s3cr3t-key": ci}}
/// allowPrincipals: ["spiffe://cluster.local/ns/web/sa/frontend"]
/// bypass: [{prefix: /healthz}]
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Bearer JWTs.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Static API keys.
    #[serde(default)]
    pub api_keys: Option<ApiKeysConfig>,
    /// The mTLS identities (SPIFFE URIs) allowed in.
    #[serde(default)]
    pub allow_principals: Option<Vec<String>>,
    /// Path prefixes that skip every check.
    #[serde(default)]
    pub bypass: Vec<BypassRule>,
    /// What `configure` made of the above.
    #[serde(skip)]
    pub(crate) resolved: Resolved,
}

/// `jwt`: how bearer tokens are verified.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtConfig {
    /// The `iss` every token must carry; unchecked when absent.
    #[serde(default)]
    pub issuer: Option<String>,
    /// A token's `aud` must name at least one of these; unchecked when empty.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Verification keys.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Verification keys as an inline JWK Set (RFC 7517).
    #[serde(default)]
    pub jwks: Option<JwksConfig>,
    /// Claims copied into request headers upstream: `{claim: header}`.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Claims a valid token must have with these values (or, for an array claim, contain);
    /// otherwise 403.
    #[serde(default)]
    pub required_claims: BTreeMap<String, serde_json::Value>,
    /// The header carrying the token (default `authorization`, `Bearer ` scheme).
    #[serde(default)]
    pub header: Option<String>,
    /// How far `exp` and `nbf` may be off (default `60s`).
    #[serde(default)]
    pub clock_skew: Option<String>,
}

/// `jwt.jwks`: a JWK Set.
#[derive(Debug, Deserialize)]
pub struct JwksConfig {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// `apiKeys`: static keys in a header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiKeysConfig {
    /// The header carrying the key (default `x-api-key`).
    #[serde(default)]
    pub header: Option<String>,
    /// `{key: name}`: the name is sent upstream in `x-weft-api-key-name`.
    pub keys: BTreeMap<String, String>,
}

/// One `bypass` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BypassRule {
    /// Requests whose path starts with this pass unchecked.
    pub prefix: String,
}

/// The validated configuration the request path reads.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    pub(crate) jwt: Option<Jwt>,
    pub(crate) api_keys: Option<ApiKeys>,
    pub(crate) principals: Option<HashSet<String>>,
    pub(crate) bypass: Vec<String>,
    /// `auth_allowed_total`, once defined.
    pub(crate) allowed: Cell<Option<Counter>>,
    /// `auth_bypassed_total`, once defined.
    pub(crate) bypassed: Cell<Option<Counter>>,
}

/// `jwt`, resolved.
#[derive(Debug)]
pub(crate) struct Jwt {
    pub(crate) keys: Vec<VerifyKey>,
    pub(crate) issuer: Option<String>,
    pub(crate) audiences: Vec<String>,
    /// Every claim the request path captures: forwarded, required, or both.
    pub(crate) claims: Vec<WantedClaim>,
    pub(crate) header: String,
    /// The clock skew in seconds.
    pub(crate) skew: f64,
    /// Tokens verified under this configuration.
    pub(crate) cache: TokenCache,
}

/// A claim `forwardClaims` or `requiredClaims` names.
#[derive(Debug)]
pub(crate) struct WantedClaim {
    pub(crate) name: String,
    pub(crate) forward_to: Option<String>,
    pub(crate) required: Option<serde_json::Value>,
}

/// `apiKeys`, resolved: keys by their SHA-256, so a lookup's timing says nothing about them.
#[derive(Debug)]
pub(crate) struct ApiKeys {
    pub(crate) header: String,
    pub(crate) names: HashMap<[u8; 32], String>,
    /// The `WWW-Authenticate` challenge naming the header.
    pub(crate) challenge: String,
}

impl ApiKeys {
    /// The name of `key`, if it is one of ours.
    pub(crate) fn name_of(&self, key: &str) -> Option<&str> {
        self.names.get(&digest(key)).map(String::as_str)
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Headers a filter must not take over: hop-by-hop, framing, routing.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "proxy-connection",
];

/// Checks that `name` can be a request header this plugin reads or sets; lowercases it.
fn header_name(field: &str, name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return Err(format!("{field}: {name:?} is not a valid header name"));
    }
    let name = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(format!("{field}: {name:?} is a header the proxy manages"));
    }
    Ok(name)
}

/// Parses a duration such as `60s`, `500ms`, `2m`, `1h`.
fn duration(field: &str, text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad = || format!("{field}: {text:?} is not a duration like 60s, 500ms, 2m or 1h");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(bad),
        "h" => n.checked_mul(3600).map(Duration::from_secs).ok_or_else(bad),
        _ => Err(bad()),
    }
}

impl Config {
    /// Validates everything and builds [`Config::resolved`].
    pub(crate) fn resolve(&mut self) -> Result<(), String> {
        if self.jwt.is_none() && self.api_keys.is_none() && self.allow_principals.is_none() {
            return Err("configure at least one of jwt, apiKeys and allowPrincipals".into());
        }
        let jwt = self.jwt.as_ref().map(resolve_jwt).transpose()?;
        let api_keys = self.api_keys.as_ref().map(resolve_api_keys).transpose()?;
        let principals = self
            .allow_principals
            .as_ref()
            .map(|list| resolve_principals(list))
            .transpose()?;
        let mut bypass = Vec::with_capacity(self.bypass.len());
        for (i, rule) in self.bypass.iter().enumerate() {
            if !rule.prefix.starts_with('/') {
                return Err(format!("bypass[{i}].prefix: must start with /"));
            }
            bypass.push(rule.prefix.clone());
        }
        // No header this plugin sets may be one it reads a credential from.
        let mut read = Vec::new();
        if let Some(jwt) = &jwt {
            read.push(jwt.header.as_str());
        }
        if let Some(keys) = &api_keys {
            read.push(keys.header.as_str());
            if jwt.as_ref().is_some_and(|j| j.header == keys.header) {
                return Err("apiKeys.header: must differ from jwt.header".into());
            }
        }
        let mut set = HashSet::new();
        if api_keys.is_some() {
            set.insert(API_KEY_NAME_HEADER);
        }
        for claim in jwt.iter().flat_map(|j| &j.claims) {
            if let Some(header) = &claim.forward_to {
                if read.contains(&header.as_str()) {
                    return Err(format!(
                        "jwt.forwardClaims.{}: {header:?} is a credential header",
                        claim.name
                    ));
                }
                if !set.insert(header.as_str()) {
                    return Err(format!(
                        "jwt.forwardClaims.{}: header {header:?} is set twice",
                        claim.name
                    ));
                }
            }
        }
        self.resolved = Resolved {
            jwt,
            api_keys,
            principals,
            bypass,
            ..Resolved::default()
        };
        Ok(())
    }
}

fn resolve_jwt(config: &JwtConfig) -> Result<Jwt, String> {
    let mut keys = Vec::new();
    for (i, key) in config.keys.iter().enumerate() {
        keys.push(keys::from_config(key).map_err(|e| format!("jwt.keys[{i}]: {e}"))?);
    }
    for (i, jwk) in config.jwks.iter().flat_map(|j| &j.keys).enumerate() {
        if let Some(key) = keys::from_jwk(jwk).map_err(|e| format!("jwt.jwks.keys[{i}]: {e}"))? {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err("jwt: needs at least one signing key in keys or jwks".into());
    }
    if config.issuer.as_ref().is_some_and(String::is_empty) {
        return Err("jwt.issuer: must not be empty (leave it out to accept any issuer)".into());
    }
    if config.audiences.iter().any(String::is_empty) {
        return Err("jwt.audiences: an audience must not be empty".into());
    }
    let header = match &config.header {
        Some(name) => header_name("jwt.header", name)?,
        None => "authorization".into(),
    };
    let skew = match &config.clock_skew {
        Some(text) => duration("jwt.clockSkew", text)?,
        None => Duration::from_secs(60),
    };
    let mut claims: Vec<WantedClaim> = Vec::new();
    for (claim, header) in &config.forward_claims {
        let field = format!("jwt.forwardClaims.{claim}");
        let header = header_name(&field, header)?;
        if header == API_KEY_NAME_HEADER {
            return Err(format!("{field}: {header:?} is the API key name header"));
        }
        claims.push(WantedClaim {
            name: claim.clone(),
            forward_to: Some(header),
            required: None,
        });
    }
    for (claim, value) in &config.required_claims {
        match claims.iter_mut().find(|c| c.name == *claim) {
            Some(wanted) => wanted.required = Some(value.clone()),
            None => claims.push(WantedClaim {
                name: claim.clone(),
                forward_to: None,
                required: Some(value.clone()),
            }),
        }
    }
    Ok(Jwt {
        keys,
        issuer: config.issuer.clone(),
        audiences: config.audiences.clone(),
        claims,
        header,
        skew: skew.as_secs_f64(),
        cache: TokenCache::default(),
    })
}

fn resolve_api_keys(config: &ApiKeysConfig) -> Result<ApiKeys, String> {
    let header = match &config.header {
        Some(name) => header_name("apiKeys.header", name)?,
        None => "x-api-key".into(),
    };
    if config.keys.is_empty() {
        return Err("apiKeys.keys: needs at least one key".into());
    }
    let mut names = HashMap::with_capacity(config.keys.len());
    for (key, name) in &config.keys {
        if key.is_empty() || key.trim() != key {
            return Err("apiKeys.keys: a key must be non-empty without surrounding spaces".into());
        }
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_control()) {
            return Err(format!(
                "apiKeys.keys: the name of a key must be a non-empty single line, not {name:?}"
            ));
        }
        names.insert(digest(key), name.clone());
    }
    let challenge = format!("ApiKey realm=\"weft\", header=\"{header}\"");
    Ok(ApiKeys {
        header,
        names,
        challenge,
    })
}

fn resolve_principals(list: &[String]) -> Result<HashSet<String>, String> {
    if list.is_empty() {
        return Err("allowPrincipals: list at least one identity (or leave it out)".into());
    }
    for (i, principal) in list.iter().enumerate() {
        if !principal.contains("://") || principal.contains(char::is_whitespace) {
            return Err(format!(
                "allowPrincipals[{i}]: {principal:?} is not a URI such as spiffe://domain/path"
            ));
        }
    }
    Ok(list.iter().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_units() {
        assert_eq!(duration("f", "60s"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("f", "500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("f", "2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("f", "1h"), Ok(Duration::from_secs(3600)));
        assert!(duration("f", "60").is_err_and(|e| e.contains("f: \"60\"")));
        assert!(duration("f", "s").is_err());
        assert!(duration("f", "-1s").is_err());
    }

    #[test]
    fn header_names_are_checked_and_lowercased() {
        assert_eq!(header_name("f", "X-User"), Ok("x-user".into()));
        assert!(header_name("f", "x user").is_err());
        assert!(header_name("f", ":path").is_err());
        assert!(header_name("f", "Host").is_err_and(|e| e.contains("manages")));
    }
}
