//! Bearer JWT (JWS compact) verification: split the token, read the JOSE header, check the
//! signature with a configured key of the token's algorithm, then the claims — `exp`, `nbf`,
//! `iss`, `aud`, the required claims — capturing the claims to forward.
//!
//! The claims are read in one pass with a visitor that keeps only what the configuration
//! asks for: no map of every claim is built, and strings without escapes are borrowed.

use std::borrow::Cow;
use std::fmt;
use std::rc::Rc;

use base64::Engine;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::cache::Entry;
use crate::config::{Jwt, WantedClaim};
use crate::keys::{Alg, BASE64URL};

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Not a JWS compact token, or its parts are not base64url JSON.
    Malformed(&'static str),
    /// `alg` is `none` or one weft does not verify.
    UnsupportedAlg,
    /// No key has the token's `kid` (or, without `kid`, the token's algorithm).
    UnknownKey,
    /// The key with the token's `kid` is for another algorithm.
    AlgMismatch,
    /// No candidate key verifies the signature.
    BadSignature,
    /// No `exp` claim.
    MissingExp,
    /// `exp` passed.
    Expired,
    /// `nbf` is still ahead.
    NotYetValid,
    /// `iss` is missing or not the configured issuer.
    WrongIssuer,
    /// `aud` is missing or names none of the configured audiences.
    WrongAudience,
    /// A `requiredClaims` entry is missing or has another value (403, not 401).
    ClaimMismatch(String),
}

impl Failure {
    /// The `reason` label of `auth_denied_total` and of the reply.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Failure::Malformed(_) => "malformed",
            Failure::UnsupportedAlg => "unsupported_alg",
            Failure::UnknownKey => "unknown_key",
            Failure::AlgMismatch => "alg_mismatch",
            Failure::BadSignature => "bad_signature",
            Failure::MissingExp => "missing_exp",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not_yet_valid",
            Failure::WrongIssuer => "wrong_issuer",
            Failure::WrongAudience => "wrong_audience",
            Failure::ClaimMismatch(_) => "claim_mismatch",
        }
    }

    /// A sentence for the client (RFC 6750 `error_description`).
    pub(crate) fn description(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Failure::Malformed(what) => what,
            Failure::UnsupportedAlg => "the token's alg is not one this proxy accepts",
            Failure::UnknownKey => "no key for the token's kid or alg",
            Failure::AlgMismatch => "the token's alg does not match its key's",
            Failure::BadSignature => "the token's signature does not verify",
            Failure::MissingExp => "the token has no exp claim",
            Failure::Expired => "the token has expired",
            Failure::NotYetValid => "the token is not valid yet (nbf)",
            Failure::WrongIssuer => "the token's issuer is not accepted",
            Failure::WrongAudience => "the token is not for this audience",
            Failure::ClaimMismatch(claim) => {
                return Cow::Owned(format!("claim {claim} is missing or has another value"));
            }
        })
    }
}

/// What a verified token hands on: the value of each [`Jwt::claims`] entry, in order.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) claims: Rc<[Option<Value>]>,
}

impl Jwt {
    /// Verifies `token` at `now` (seconds since the Unix epoch). A token verified before is
    /// answered from [`Jwt::cache`], its `exp` and `nbf` checked against `now` as a full
    /// verification checks them (see [`crate::cache`]).
    pub(crate) fn verify(&self, token: &str, now: f64) -> Result<Verified, Failure> {
        if let Some(entry) = self.cache.get(token.as_bytes()) {
            self.check_time(Some(entry.exp), entry.nbf, now)?;
            return Ok(Verified {
                claims: entry.claims,
            });
        }
        let verified = self.verify_uncached(token, now)?;
        if let Some(exp) = verified.exp {
            let entry = Entry {
                exp,
                nbf: verified.nbf,
                claims: verified.claims.clone(),
            };
            self.cache.insert(token.as_bytes(), entry, now - self.skew);
        }
        Ok(Verified {
            claims: verified.claims,
        })
    }

    /// Every check of `token`, nothing cached.
    fn verify_uncached(&self, token: &str, now: f64) -> Result<Checked, Failure> {
        const SEGMENTS: Failure = Failure::Malformed("the token is not three base64url segments");
        let (signed, signature) = token.rsplit_once('.').ok_or(SEGMENTS)?;
        let (header, payload) = signed.split_once('.').ok_or(SEGMENTS)?;
        if payload.contains('.') || header.is_empty() || payload.is_empty() {
            return Err(SEGMENTS);
        }

        let header = BASE64URL
            .decode(header)
            .map_err(|_| Failure::Malformed("the token header is not base64url"))?;
        let header: JoseHeader<'_> = serde_json::from_slice(&header)
            .map_err(|_| Failure::Malformed("the token header is not a JSON object"))?;
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: extensions this verifier does not implement.
            return Err(Failure::Malformed("the token header has crit extensions"));
        }
        let alg = header
            .alg
            .as_ref()
            .and_then(|a| Alg::parse(&a.0))
            .ok_or(Failure::UnsupportedAlg)?;

        // The largest signature: RS256 with a 4096-bit key.
        let mut signature_bytes = [0u8; 512];
        let length = BASE64URL
            .decode_slice(signature, &mut signature_bytes)
            .map_err(|_| Failure::Malformed("the token signature is not base64url"))?;
        let signature = signature_bytes.get(..length).unwrap_or_default();
        self.check_signature(alg, header.kid.as_ref().map(|k| &*k.0), signed, signature)?;

        let payload = BASE64URL
            .decode(payload)
            .map_err(|_| Failure::Malformed("the token claims are not base64url"))?;
        let mut deserializer = serde_json::Deserializer::from_slice(&payload);
        let claims = ClaimsSeed { jwt: self }
            .deserialize(&mut deserializer)
            .and_then(|claims| deserializer.end().map(|()| claims))
            .map_err(|_| Failure::Malformed("the token claims are not a valid JSON object"))?;
        self.check_claims(claims, now)
    }

    fn check_signature(
        &self,
        alg: Alg,
        kid: Option<&str>,
        signed: &str,
        signature: &[u8],
    ) -> Result<(), Failure> {
        let mut tried = false;
        let mut kid_matched = false;
        for key in &self.keys {
            if let (Some(want), Some(have)) = (kid, key.kid.as_deref()) {
                if want != have {
                    continue;
                }
                kid_matched = true;
            }
            // Only ever the key's own algorithm: an RSA or EC public key is never an HMAC
            // secret (alg confusion), whatever the token says.
            if key.alg != alg {
                continue;
            }
            tried = true;
            if key.verify(signed.as_bytes(), signature) {
                return Ok(());
            }
        }
        Err(if tried {
            Failure::BadSignature
        } else if kid_matched {
            Failure::AlgMismatch
        } else {
            Failure::UnknownKey
        })
    }

    /// `exp` (required, not passed) and `nbf` (not ahead), within the clock skew.
    fn check_time(&self, exp: Option<f64>, nbf: Option<f64>, now: f64) -> Result<(), Failure> {
        let exp = exp.ok_or(Failure::MissingExp)?;
        if now >= exp + self.skew {
            return Err(Failure::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now + self.skew) {
            return Err(Failure::NotYetValid);
        }
        Ok(())
    }

    fn check_claims(&self, claims: Claims, now: f64) -> Result<Checked, Failure> {
        self.check_time(claims.exp, claims.nbf, now)?;
        if self.issuer.is_some() && claims.iss != Check::Match {
            return Err(Failure::WrongIssuer);
        }
        if !self.audiences.is_empty() && claims.aud != Check::Match {
            return Err(Failure::WrongAudience);
        }
        for (wanted, value) in self.claims.iter().zip(&claims.values) {
            if let Some(required) = &wanted.required {
                let holds = value.as_ref().is_some_and(|value| {
                    value == required
                        || matches!(value, Value::Array(items) if items.contains(required))
                });
                if !holds {
                    return Err(Failure::ClaimMismatch(wanted.name.clone()));
                }
            }
        }
        Ok(Checked {
            exp: claims.exp,
            nbf: claims.nbf,
            claims: claims.values.into(),
        })
    }
}

/// A token that passed every check, with what its cache entry needs.
struct Checked {
    exp: Option<f64>,
    nbf: Option<f64>,
    claims: Rc<[Option<Value>]>,
}

/// A JSON string, borrowed from the input when it has no escapes.
#[derive(Debug)]
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// The JOSE header members weft reads; the others are ignored.
#[derive(Debug, Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: Option<Str<'a>>,
    #[serde(borrow)]
    kid: Option<Str<'a>>,
    crit: Option<IgnoredAny>,
}

/// The outcome of comparing a claim with the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Absent,
    Match,
    Mismatch,
}

/// The claims the checks need.
#[derive(Debug)]
struct Claims {
    exp: Option<f64>,
    nbf: Option<f64>,
    iss: Check,
    aud: Check,
    values: Vec<Option<Value>>,
}

/// Reads a claims object, keeping only what `jwt` checks or forwards.
struct ClaimsSeed<'c> {
    jwt: &'c Jwt,
}

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = Claims;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Claims, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = Claims;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JWT claims object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
        let jwt = self.jwt;
        let mut claims = Claims {
            exp: None,
            nbf: None,
            iss: Check::Absent,
            aud: Check::Absent,
            values: vec![None; jwt.claims.len()],
        };
        while let Some(field) = map.next_key_seed(FieldSeed(&jwt.claims))? {
            match field {
                Field {
                    wanted: Some(at),
                    known,
                } => {
                    let value: Value = map.next_value()?;
                    if let Some(known) = known {
                        claims.take_value(known, &value, jwt)?;
                    }
                    if let Some(slot) = claims.values.get_mut(at) {
                        *slot = Some(value);
                    }
                }
                Field {
                    wanted: None,
                    known: Some(Known::Exp),
                } => claims.exp = Some(map.next_value()?),
                Field {
                    wanted: None,
                    known: Some(Known::Nbf),
                } => claims.nbf = Some(map.next_value()?),
                Field {
                    wanted: None,
                    known: Some(Known::Iss),
                } => match &jwt.issuer {
                    Some(issuer) => {
                        let iss: Str<'_> = map.next_value()?;
                        claims.iss = check(iss.0 == issuer.as_str());
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
                Field {
                    wanted: None,
                    known: Some(Known::Aud),
                } => {
                    if jwt.audiences.is_empty() {
                        map.next_value::<IgnoredAny>()?;
                    } else {
                        claims.aud = check(map.next_value_seed(AudSeed(&jwt.audiences))?);
                    }
                }
                Field {
                    wanted: None,
                    known: None,
                } => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(claims)
    }
}

fn check(matched: bool) -> Check {
    if matched {
        Check::Match
    } else {
        Check::Mismatch
    }
}

impl Claims {
    /// A registered claim that is also forwarded or required, read as a [`Value`].
    fn take_value<E: de::Error>(
        &mut self,
        known: Known,
        value: &Value,
        jwt: &Jwt,
    ) -> Result<(), E> {
        let number = || {
            value
                .as_f64()
                .ok_or_else(|| E::custom("a NumericDate is a number"))
        };
        match known {
            Known::Exp => self.exp = Some(number()?),
            Known::Nbf => self.nbf = Some(number()?),
            Known::Iss => {
                let iss = value.as_str().ok_or_else(|| E::custom("iss is a string"))?;
                self.iss = check(jwt.issuer.as_deref() == Some(iss));
            }
            Known::Aud => {
                let names = |name: &str| jwt.audiences.iter().any(|a| a == name);
                self.aud = check(match value {
                    Value::String(aud) => names(aud),
                    Value::Array(items) => {
                        let mut any = false;
                        for item in items {
                            let aud = item
                                .as_str()
                                .ok_or_else(|| E::custom("aud holds strings"))?;
                            any |= names(aud);
                        }
                        any
                    }
                    _ => return Err(E::custom("aud is a string or an array of strings")),
                });
            }
        }
        Ok(())
    }
}

/// A registered claim the checks read.
#[derive(Debug, Clone, Copy)]
enum Known {
    Exp,
    Nbf,
    Iss,
    Aud,
}

/// A claim's name, classified without allocating.
struct Field {
    known: Option<Known>,
    wanted: Option<usize>,
}

struct FieldSeed<'c>(&'c [WantedClaim]);

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Field;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Field, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a claim name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
        let known = match name {
            "exp" => Some(Known::Exp),
            "nbf" => Some(Known::Nbf),
            "iss" => Some(Known::Iss),
            "aud" => Some(Known::Aud),
            _ => None,
        };
        let wanted = self.0.iter().position(|c| c.name == name);
        Ok(Field { known, wanted })
    }
}

/// Reads `aud` (a string or an array of strings): whether it names one of the audiences.
struct AudSeed<'c>(&'c [String]);

impl<'de> DeserializeSeed<'de> for AudSeed<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AudSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_str<E: de::Error>(self, aud: &str) -> Result<bool, E> {
        Ok(self.0.iter().any(|a| a == aud))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut any = false;
        while let Some(aud) = seq.next_element::<Str<'de>>()? {
            any |= self.0.iter().any(|a| *a == aud.0);
        }
        Ok(any)
    }
}
