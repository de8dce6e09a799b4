//! The token bucket arithmetic, free of host calls: a bucket of `burst` tokens refilled at
//! `rate`, stored as one number — the time at which the bucket will be full again (the
//! "theoretical arrival time" of GCRA, the generic cell rate algorithm). It is the same bucket
//! as "tokens + last refill time", in 8 bytes, in integer nanoseconds (no floating-point drift),
//! and a refused request leaves it untouched (no write at all).

/// A bucket's shape, resolved from `rate` and `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Nanoseconds per token: the rate's period divided by its count (rounded down; at least 1).
    pub interval: u64,
    /// The bucket's size.
    pub burst: u64,
    /// `burst × interval`: how long an empty bucket takes to fill up.
    pub span: u64,
}

impl Limits {
    /// A bucket refilled with `count` tokens every `period_nanos`, holding at most `burst`;
    /// `None` when the numbers do not make a bucket (zero, or too large for nanoseconds).
    pub fn new(count: u64, period_nanos: u64, burst: u64) -> Option<Limits> {
        if count == 0 || burst == 0 {
            return None;
        }
        let interval = period_nanos / count;
        if interval == 0 {
            return None;
        }
        // Full refill time beyond ~100 years is a configuration mistake (and would overflow
        // when added to the clock).
        let span = burst.checked_mul(interval).filter(|s| *s <= MAX_SPAN)?;
        Some(Limits {
            interval,
            burst,
            span,
        })
    }
}

/// The longest time an empty bucket may take to fill: 100 years of nanoseconds.
const MAX_SPAN: u64 = 100 * 365 * 24 * 3600 * 1_000_000_000;

/// What one request gets from a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A token was taken: store `full_at`; `remaining` tokens are left and the next one
    /// arrives in `next_token` nanoseconds.
    Allowed {
        /// The new state to store.
        full_at: u64,
        /// Tokens left after this one.
        remaining: u64,
        /// Nanoseconds until the bucket gains a token.
        next_token: u64,
    },
    /// The bucket is empty; a token arrives in `wait` nanoseconds.
    Limited {
        /// Nanoseconds until a request would be allowed.
        wait: u64,
    },
}

/// Takes a token at time `now` (nanoseconds) from the bucket whose state is `full_at` (`None`:
/// a bucket never used, which is full).
pub fn take(limits: Limits, full_at: Option<u64>, now: u64) -> Decision {
    // A bucket full in the past is simply full; its time moves up to now.
    let base = full_at.map_or(now, |at| at.max(now));
    let full_at = base.saturating_add(limits.interval);
    let ahead = full_at - now;
    if ahead > limits.span {
        // `ahead - span` is the time until one token is back. Workers read slightly different
        // clocks, and a wall clock can step back: never report more than one interval.
        return Decision::Limited {
            wait: (ahead - limits.span).min(limits.interval),
        };
    }
    let remaining = (limits.span - ahead) / limits.interval;
    let partial = ahead % limits.interval;
    Decision::Allowed {
        full_at,
        remaining,
        next_token: if partial == 0 {
            limits.interval
        } else {
            partial
        },
    }
}

/// The stored form of a bucket: `full_at` as 8 little-endian bytes.
pub fn encode(full_at: u64) -> [u8; 8] {
    full_at.to_le_bytes()
}

/// Reads a stored bucket; anything but 8 bytes counts as a fresh bucket.
pub fn decode(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_le_bytes)
}

/// Whole seconds for a header: `nanos` rounded up, at least 1.
pub fn ceil_seconds(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_fresh_bucket_gives_burst_tokens_then_refuses_for_one_interval() {
        let limits = Limits::new(2, SECOND, 3).expect("a bucket");
        let now = 1_000 * SECOND;
        let mut state = None;
        for left in (0..3).rev() {
            match take(limits, state, now) {
                Decision::Allowed {
                    full_at, remaining, ..
                } => {
                    assert_eq!(remaining, left);
                    state = Some(full_at);
                }
                refused => panic!("refused early: {refused:?}"),
            }
        }
        assert_eq!(
            take(limits, state, now),
            Decision::Limited { wait: SECOND / 2 }
        );
        // Half a second later exactly one token is back.
        let later = now + SECOND / 2;
        assert!(matches!(
            take(limits, state, later),
            Decision::Allowed { remaining: 0, .. }
        ));
    }

    #[test]
    fn an_idle_bucket_refills_to_burst_and_no_further() {
        let limits = Limits::new(1, SECOND, 2).expect("a bucket");
        let Decision::Allowed { full_at, .. } = take(limits, None, 0) else {
            panic!("refused")
        };
        let decision = take(limits, Some(full_at), 3_600 * SECOND);
        assert!(matches!(decision, Decision::Allowed { remaining: 1, .. }));
    }

    #[test]
    fn reports_when_the_next_token_arrives() {
        let limits = Limits::new(1, 10 * SECOND, 5).expect("a bucket");
        let Decision::Allowed {
            full_at,
            next_token,
            ..
        } = take(limits, None, 0)
        else {
            panic!("refused")
        };
        assert_eq!(next_token, 10 * SECOND);
        // 3 s later the partial token is 3/10 along: 7 s to go.
        let Decision::Allowed { next_token, .. } = take(limits, Some(full_at), 3 * SECOND) else {
            panic!("refused")
        };
        assert_eq!(next_token, 7 * SECOND);
    }

    #[test]
    fn rejects_shapes_that_are_not_buckets() {
        assert_eq!(Limits::new(0, SECOND, 1), None);
        assert_eq!(Limits::new(1, SECOND, 0), None);
        assert_eq!(Limits::new(2 * SECOND, SECOND, 1), None);
        assert_eq!(Limits::new(1, 3_600 * SECOND, u64::MAX / 2), None);
    }

    #[test]
    fn encodes_round_trip_and_ignores_foreign_values() {
        assert_eq!(decode(&encode(42)), Some(42));
        assert_eq!(decode(b"nope"), None);
        assert_eq!(ceil_seconds(1), 1);
        assert_eq!(ceil_seconds(0), 1);
        assert_eq!(ceil_seconds(2 * SECOND + 1), 3);
    }
}
