//! Maps keyed by the host's context ids and callout tokens: `u32`s the host hands out, so no
//! client can choose them and a keyed (SipHash) hash buys nothing but time. [`IdMap`] hashes
//! them with one multiplication.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by a context id or callout token, with [`IdHasher`].
pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of one integer: the key times 2^64/φ, whose high bits hashbrown uses.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u32` keys are hashed, through `write_u32`; anything else still hashes fully.
        for &byte in bytes {
            self.write_u32(u32::from(byte));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_ids_spread_over_buckets() {
        let mut map = IdMap::default();
        for id in 0..10_000u32 {
            map.insert(id, id * 2);
        }
        assert!((0..10_000u32).all(|id| map.get(&id) == Some(&(id * 2))));
        let hash = |id: u32| {
            let mut h = IdHasher::default();
            h.write_u32(id);
            h.finish()
        };
        // hashbrown takes the top 7 bits as the tag and the low bits as the bucket.
        let tags: std::collections::HashSet<u64> = (0..1000).map(|id| hash(id) >> 57).collect();
        assert!(tags.len() > 100);
    }
}
