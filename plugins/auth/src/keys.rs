//! Verification keys: the JWS algorithms weft accepts ([`Alg`]), keys parsed once from the
//! configuration (a secret, a PEM public key, or an RFC 7517 JWK) into a ready verifier
//! ([`VerifyKey`]), and the signature check itself.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use serde::Deserialize;
use sha2::Sha256;

/// base64url, with or without padding (JWS segments and JWK members).
pub(crate) const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard base64, with or without padding (`secretBase64`).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The shortest HS256 secret RFC 7518 §3.2 allows: as long as the hash.
const MIN_SECRET_BYTES: usize = 32;
/// The smallest RSA modulus accepted.
const MIN_RSA_BITS: usize = 2048;

/// A JWS algorithm weft verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    /// HMAC with SHA-256.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256 (`r || s`, 64 bytes).
    Es256,
}

impl Alg {
    /// The algorithm named `name` (case-sensitive, as in JWS); `none` and others are `None`.
    pub(crate) fn parse(name: &str) -> Option<Alg> {
        match name {
            "HS256" => Some(Alg::Hs256),
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
}

/// A key ready to verify signatures of one algorithm.
#[derive(Debug)]
pub(crate) struct VerifyKey {
    /// Its key id; a key without one is tried for tokens of its algorithm whatever their `kid`.
    pub(crate) kid: Option<String>,
    /// The one algorithm it verifies.
    pub(crate) alg: Alg,
    verifier: Verifier,
}

#[derive(Debug)]
enum Verifier {
    /// Already keyed: a request clones the state instead of hashing the secret again.
    Hmac(Hmac<Sha256>),
    Rsa(rsa::pkcs1v15::VerifyingKey<Sha256>),
    Ec(p256::ecdsa::VerifyingKey),
}

impl VerifyKey {
    /// Whether `signature` signs `input` under this key (HMAC compared in constant time).
    pub(crate) fn verify(&self, input: &[u8], signature: &[u8]) -> bool {
        match &self.verifier {
            Verifier::Hmac(keyed) => {
                let mut mac = keyed.clone();
                mac.update(input);
                mac.verify_slice(signature).is_ok()
            }
            Verifier::Rsa(key) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|sig| key.verify(input, &sig).is_ok()),
            Verifier::Ec(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(input, &sig).is_ok()),
        }
    }

    fn hmac(kid: Option<String>, secret: &[u8]) -> Result<VerifyKey, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "an HS256 secret needs at least {MIN_SECRET_BYTES} bytes (RFC 7518), this one has {}",
                secret.len()
            ));
        }
        let keyed = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
        Ok(VerifyKey {
            kid,
            alg: Alg::Hs256,
            verifier: Verifier::Hmac(keyed),
        })
    }

    fn rsa(kid: Option<String>, key: RsaPublicKey) -> Result<VerifyKey, String> {
        let bits = key.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "an RS256 key needs at least {MIN_RSA_BITS} bits, this one has {bits}"
            ));
        }
        Ok(VerifyKey {
            kid,
            alg: Alg::Rs256,
            verifier: Verifier::Rsa(rsa::pkcs1v15::VerifyingKey::new(key)),
        })
    }

    fn ec(kid: Option<String>, key: p256::ecdsa::VerifyingKey) -> VerifyKey {
        VerifyKey {
            kid,
            alg: Alg::Es256,
            verifier: Verifier::Ec(key),
        }
    }
}

/// One entry of `jwt.keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyConfig {
    /// The key id tokens name in their header.
    #[serde(default)]
    pub kid: Option<String>,
    /// `HS256`, `RS256` or `ES256`.
    pub alg: String,
    /// HS256: the secret, as text.
    #[serde(default)]
    pub secret: Option<String>,
    /// HS256: the secret, base64 (standard or URL-safe).
    #[serde(default)]
    pub secret_base64: Option<String>,
    /// RS256 / ES256: the public key in PEM (`PUBLIC KEY`; for RSA also `RSA PUBLIC KEY`).
    #[serde(default)]
    pub pem: Option<String>,
}

/// One JWK of `jwt.jwks.keys` (RFC 7517/7518). Members weft does not use (`x5c`, `key_ops`, …)
/// are ignored.
#[derive(Debug, Deserialize)]
pub struct Jwk {
    /// `RSA`, `EC` or `oct`.
    pub kty: String,
    /// The key id.
    #[serde(default)]
    pub kid: Option<String>,
    /// The algorithm; inferred from `kty` when absent.
    #[serde(default)]
    pub alg: Option<String>,
    /// `sig` or `enc`; `enc` keys are skipped.
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    /// RSA modulus.
    #[serde(default)]
    pub n: Option<String>,
    /// RSA exponent.
    #[serde(default)]
    pub e: Option<String>,
    /// EC curve (`P-256`).
    #[serde(default)]
    pub crv: Option<String>,
    /// EC x coordinate.
    #[serde(default)]
    pub x: Option<String>,
    /// EC y coordinate.
    #[serde(default)]
    pub y: Option<String>,
    /// Symmetric key bytes.
    #[serde(default)]
    pub k: Option<String>,
    /// A private exponent: refused (a JWKS for verification holds public keys only).
    #[serde(default)]
    pub d: Option<serde_json::Value>,
}

/// Parses one `jwt.keys` entry (errors say what is wrong; the caller names the entry).
pub(crate) fn from_config(config: &KeyConfig) -> Result<VerifyKey, String> {
    let alg = parse_alg(&config.alg)?;
    let kid = config.kid.clone();
    match alg {
        Alg::Hs256 => {
            if config.pem.is_some() {
                return Err("HS256 takes a secret or secretBase64, not a pem".into());
            }
            match (&config.secret, &config.secret_base64) {
                (Some(secret), None) => VerifyKey::hmac(kid, secret.as_bytes()),
                (None, Some(encoded)) => {
                    let secret = BASE64
                        .decode(encoded.trim())
                        .or_else(|_| BASE64URL.decode(encoded.trim()))
                        .map_err(|e| format!("secretBase64: not base64: {e}"))?;
                    VerifyKey::hmac(kid, &secret)
                }
                (Some(_), Some(_)) => Err("give secret or secretBase64, not both".into()),
                (None, None) => Err("HS256 needs a secret or secretBase64".into()),
            }
        }
        Alg::Rs256 | Alg::Es256 => {
            if config.secret.is_some() || config.secret_base64.is_some() {
                return Err(format!(
                    "{} takes a pem public key, not a secret",
                    alg.name()
                ));
            }
            let pem = config
                .pem
                .as_deref()
                .ok_or_else(|| format!("{} needs a pem public key", alg.name()))?;
            from_pem(kid, alg, pem.trim())
        }
    }
}

fn parse_alg(name: &str) -> Result<Alg, String> {
    Alg::parse(name).ok_or_else(|| {
        format!("alg: unsupported algorithm {name:?} (supported: HS256, RS256, ES256)")
    })
}

fn from_pem(kid: Option<String>, alg: Alg, pem: &str) -> Result<VerifyKey, String> {
    if pem.contains("PRIVATE KEY-----") {
        return Err("pem: this is a private key; give the public key".into());
    }
    let rsa = || -> Result<RsaPublicKey, String> {
        if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
            RsaPublicKey::from_pkcs1_pem(pem).map_err(|e| format!("pem: bad RSA public key: {e}"))
        } else {
            RsaPublicKey::from_public_key_pem(pem)
                .map_err(|e| format!("pem: not an RSA public key: {e}"))
        }
    };
    let ec = || {
        p256::PublicKey::from_public_key_pem(pem)
            .map(|key| p256::ecdsa::VerifyingKey::from(&key))
            .map_err(|e| format!("pem: not a P-256 public key: {e}"))
    };
    match alg {
        Alg::Rs256 => match rsa() {
            Ok(key) => VerifyKey::rsa(kid, key),
            Err(_) if ec().is_ok() => Err("pem: a P-256 key, but RS256 needs an RSA key".into()),
            Err(e) => Err(e),
        },
        Alg::Es256 => match ec() {
            Ok(key) => Ok(VerifyKey::ec(kid, key)),
            Err(_) if rsa().is_ok() => Err("pem: an RSA key, but ES256 needs a P-256 key".into()),
            Err(e) => Err(e),
        },
        Alg::Hs256 => Err("HS256 takes a secret, not a pem".into()),
    }
}

/// Decodes base64url member `name` of a JWK.
fn member(value: Option<&String>, name: &str, kty: &str) -> Result<Vec<u8>, String> {
    let text = value.ok_or_else(|| format!("a {kty} key needs {name}"))?;
    let bytes = BASE64URL
        .decode(text.trim())
        .map_err(|e| format!("{name}: not base64url: {e}"))?;
    if bytes.is_empty() {
        return Err(format!("{name}: empty"));
    }
    Ok(bytes)
}

/// Parses one JWK; `Ok(None)` for an encryption key (`use: enc`), which is skipped.
pub(crate) fn from_jwk(jwk: &Jwk) -> Result<Option<VerifyKey>, String> {
    if jwk.use_.as_deref() == Some("enc") {
        return Ok(None);
    }
    if jwk.d.is_some() {
        return Err("holds private key material (d); publish only the public key".into());
    }
    let expected = match jwk.kty.as_str() {
        "RSA" => Alg::Rs256,
        "EC" => Alg::Es256,
        "oct" => Alg::Hs256,
        other => {
            return Err(format!(
                "kty: unsupported key type {other:?} (supported: RSA, EC, oct)"
            ));
        }
    };
    if let Some(name) = &jwk.alg {
        let alg = parse_alg(name)?;
        if alg != expected {
            return Err(format!(
                "alg {name} does not fit a {} key (it takes {})",
                jwk.kty,
                expected.name()
            ));
        }
    }
    let kid = jwk.kid.clone();
    match expected {
        Alg::Rs256 => {
            let n = BigUint::from_bytes_be(&member(jwk.n.as_ref(), "n", "RSA")?);
            let e = BigUint::from_bytes_be(&member(jwk.e.as_ref(), "e", "RSA")?);
            let key = RsaPublicKey::new(n, e).map_err(|e| format!("bad RSA key: {e}"))?;
            VerifyKey::rsa(kid, key).map(Some)
        }
        Alg::Es256 => {
            if jwk.crv.as_deref() != Some("P-256") {
                return Err(format!(
                    "crv: unsupported curve {:?} (supported: P-256)",
                    jwk.crv.as_deref().unwrap_or("")
                ));
            }
            let x = member(jwk.x.as_ref(), "x", "EC")?;
            let y = member(jwk.y.as_ref(), "y", "EC")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("x and y of a P-256 key are 32 bytes each".into());
            }
            let point = p256::EncodedPoint::from_affine_coordinates(
                p256::FieldBytes::from_slice(&x),
                p256::FieldBytes::from_slice(&y),
                false,
            );
            let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                .map_err(|_| "x, y: not a point on P-256".to_string())?;
            Ok(Some(VerifyKey::ec(kid, key)))
        }
        Alg::Hs256 => {
            let k = member(jwk.k.as_ref(), "k", "oct")?;
            VerifyKey::hmac(kid, &k).map(Some)
        }
    }
}
