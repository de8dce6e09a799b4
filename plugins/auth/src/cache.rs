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

/// Verified tokens by their full text.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    entries: RefCell<HashMap<Box<str>, Entry, BuildHasherDefault<TokenHasher>>>,
}

impl TokenCache {
    /// The entry of `token`, if it was verified before.
    pub(crate) fn get(&self, token: &str) -> Option<Entry> {
        self.entries.borrow().get(token).cloned()
    }

    /// Remembers the verified `token`. When the cache is full, tokens expired at `expired_at`
    /// (now minus the clock skew) go first, then an arbitrary one.
    pub(crate) fn insert(&self, token: &str, entry: Entry, expired_at: f64) {
        if token.len() > MAX_TOKEN_LEN {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= CAPACITY && !entries.contains_key(token) {
            entries.retain(|_, e| e.exp > expired_at);
            if entries.len() >= CAPACITY {
                let victim = entries.keys().next().cloned();
                if let Some(victim) = victim {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(token.into(), entry);
    }

    /// How many tokens are cached.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.borrow().len()
    }
}

/// A fast hash of a token's bytes, eight at a time. Keys are compared in full on a match, and
/// only tokens that verified are ever stored, so a client cannot fill the table with
/// colliding keys.
#[derive(Default)]
struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let mut tail = [0; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.mix(u64::from_le_bytes(tail) ^ (bytes.len() as u64) << 56);
    }
}

impl TokenHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
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
        cache.insert("a.b.c", entry(100.0), 0.0);
        assert_eq!(cache.get("a.b.c").map(|e| e.exp), Some(100.0));
        assert!(cache.get("a.b.d").is_none());
        assert!(cache.get("a.b.").is_none());
        assert!(cache.get("a.b.cc").is_none());
    }

    #[test]
    fn stays_bounded_dropping_expired_tokens_first() {
        let cache = TokenCache::default();
        for i in 0..CAPACITY {
            // Every other token expired at 50.
            let exp = if i % 2 == 0 { 10.0 } else { 1000.0 };
            cache.insert(&format!("token-{i}"), entry(exp), 50.0);
        }
        assert_eq!(cache.len(), CAPACITY);
        cache.insert("one-more", entry(1000.0), 50.0);
        assert_eq!(cache.len(), CAPACITY / 2 + 1);
        assert!(cache.get("token-1").is_some() && cache.get("token-0").is_none());

        // With nothing expired, one arbitrary token makes room.
        for i in 0..CAPACITY * 3 {
            cache.insert(&format!("more-{i}"), entry(1000.0), 50.0);
            assert!(cache.len() <= CAPACITY);
        }
        assert!(cache.get(&format!("more-{}", CAPACITY * 3 - 1)).is_some());
    }

    #[test]
    fn long_tokens_are_not_cached() {
        let cache = TokenCache::default();
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        cache.insert(&long, entry(100.0), 0.0);
        assert!(cache.get(&long).is_none());
        assert_eq!(cache.len(), 0);
    }
}
