//! A bounded cache of verified tokens, as Envoy's `jwt_authn` keeps one: a token whose
//! signature, issuer, audience and required claims were checked once is not decoded, hashed
//! and parsed again on its next request.
//!
//! Only what cannot change between two requests is cached: an entry is keyed by the token's
//! full text and holds the outcome of every check that does not depend on the time, plus the
//! token's `exp` and `nbf`, which are checked against the current time on every hit exactly
//! as a full verification checks them. A hit therefore answers what a full verification
//! would answer at that moment. Only tokens that passed every check are cached; a refused
//! one is verified in full each time.
//!
//! The cache belongs to one configuration (a new configuration starts empty, so a rotated key
//! or a changed issuer is never answered from it), holds at most [`CAPACITY`] tokens of at
//! most [`MAX_TOKEN_LEN`] bytes each, and drops expired tokens first when full.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use serde_json::Value;

/// The most tokens one configuration's cache holds (Envoy's default `jwt_cache_size` is 100).
pub(crate) const CAPACITY: usize = 256;

/// Longer tokens are not cached, so the cache stays small whatever clients send.
pub(crate) const MAX_TOKEN_LEN: usize = 4096;

/// What a verified token's next request needs: its validity window and captured claims.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// `exp`, seconds since the Unix epoch.
    pub(crate) exp: f64,
    /// `nbf`, if the token has one.
    pub(crate) nbf: Option<f64>,
    /// The values of the configured claims, in order.
    pub(crate) claims: Rc<[Option<Value>]>,
}

/// Verified tokens, by a hash of their text; each entry keeps the full text it was stored
/// for, and only a token equal to it finds the entry (a different token with the same hash
/// is a miss, then replaces it).
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    entries: RefCell<Entries>,
}

/// Token hash → (the token, its entry); the hasher passes the hashes through.
type Entries = HashMap<u64, (Box<[u8]>, Entry), BuildHasherDefault<Prehashed>>;

impl TokenCache {
    /// The entry of `token`, if it was verified before.
    pub(crate) fn get(&self, token: &[u8]) -> Option<Entry> {
        let entries = self.entries.borrow();
        let (stored, entry) = entries.get(&hash(token))?;
        same(stored, token).then(|| entry.clone())
    }

    /// Remembers the verified `token`. When the cache is full, tokens expired at `expired_at`
    /// (now minus the clock skew) go first, then an arbitrary one.
    pub(crate) fn insert(&self, token: &[u8], entry: Entry, expired_at: f64) {
        if token.len() > MAX_TOKEN_LEN {
            return;
        }
        let key = hash(token);
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            entries.retain(|_, (_, e)| e.exp > expired_at);
            if entries.len() >= CAPACITY {
                let victim = entries.keys().next().copied();
                if let Some(victim) = victim {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(key, (token.into(), entry));
    }

    /// How many tokens are cached.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.borrow().len()
    }
}

/// Whether two tokens are the same bytes, compared eight at a time (a Wasm `memcmp` goes byte
/// by byte, and a token is a few hundred bytes).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a8, mut b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let words = |chunk: &[u8]| {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        u64::from_ne_bytes(word)
    };
    (&mut a8).zip(&mut b8).all(|(x, y)| words(x) == words(y))
        && a8.remainder().iter().eq(b8.remainder().iter())
}

/// A fast hash of a token's bytes, eight at a time. Keys are compared in full on a match, and
/// only tokens that verified are ever stored, so a client cannot fill the table with
/// colliding keys.
fn hash(bytes: &[u8]) -> u64 {
    let mix = |h: u64, word: u64| {
        let h = (h ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    };
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        h = mix(h, u64::from_le_bytes(word));
    }
    let mut tail = [0; 8];
    let rest = chunks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    // murmur3's finalizer, so every input bit reaches the bits hashbrown looks at.
    let mut h = mix(h, u64::from_le_bytes(tail));
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The map's keys are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(exp: f64) -> Entry {
        Entry {
            exp,
            nbf: None,
            claims: Rc::from(vec![Some(Value::from("ann"))]),
        }
    }

    #[test]
    fn finds_tokens_by_their_full_text() {
        let cache = TokenCache::default();
        cache.insert(b"a.b.c", entry(100.0), 0.0);
        assert_eq!(cache.get(b"a.b.c").map(|e| e.exp), Some(100.0));
        assert!(cache.get(b"a.b.d").is_none());
        assert!(cache.get(b"a.b.").is_none());
        assert!(cache.get(b"a.b.cc").is_none());
        assert!(cache.get(b"A.b.c").is_none());
    }

    #[test]
    fn compares_whole_tokens_eight_bytes_at_a_time() {
        let token = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJl";
        assert!(same(token, token));
        for at in 0..token.len() {
            let mut other = token.to_vec();
            other[at] ^= 1;
            assert!(!same(token, &other), "differs at {at}");
        }
        assert!(!same(token, &token[..token.len() - 1]));
    }

    #[test]
    fn stays_bounded_dropping_expired_tokens_first() {
        let cache = TokenCache::default();
        for i in 0..CAPACITY {
            // Every other token expired at 50.
            let exp = if i % 2 == 0 { 10.0 } else { 1000.0 };
            cache.insert(format!("token-{i}").as_bytes(), entry(exp), 50.0);
        }
        assert_eq!(cache.len(), CAPACITY);
        cache.insert(b"one-more", entry(1000.0), 50.0);
        assert_eq!(cache.len(), CAPACITY / 2 + 1);
        assert!(cache.get(b"token-1").is_some() && cache.get(b"token-0").is_none());

        // With nothing expired, one arbitrary token makes room.
        for i in 0..CAPACITY * 3 {
            cache.insert(format!("more-{i}").as_bytes(), entry(1000.0), 50.0);
            assert!(cache.len() <= CAPACITY);
        }
        assert!(
            cache
                .get(format!("more-{}", CAPACITY * 3 - 1).as_bytes())
                .is_some()
        );
    }

    #[test]
    fn long_tokens_are_not_cached() {
        let cache = TokenCache::default();
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        cache.insert(long.as_bytes(), entry(100.0), 0.0);
        assert!(cache.get(long.as_bytes()).is_none());
        assert_eq!(cache.len(), 0);
    }
}
