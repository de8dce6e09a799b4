//! Endpoint selection: round robin, least request (power of two random choices, as Envoy) and
//! random, always skipping ejected endpoints and those a retry already tried.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use rand::Rng;

use super::endpoint::Endpoint;
use crate::config::resolved::LoadBalancerKind;

/// Picks an endpoint index, or `None` when every endpoint is ejected or already tried.
pub fn pick(
    kind: LoadBalancerKind,
    endpoints: &[Arc<Endpoint>],
    cursor: &AtomicUsize,
    tried: &[usize],
) -> Option<usize> {
    let n = endpoints.len();
    let eligible = |i: usize| !tried.contains(&i) && endpoints[i].available();
    match kind {
        LoadBalancerKind::RoundRobin => {
            let start = cursor.fetch_add(1, Ordering::Relaxed);
            (0..n).map(|k| (start + k) % n).find(|&i| eligible(i))
        }
        LoadBalancerKind::Random => {
            let candidates: Vec<usize> = (0..n).filter(|&i| eligible(i)).collect();
            (!candidates.is_empty())
                .then(|| candidates[rand::rng().random_range(0..candidates.len())])
        }
        LoadBalancerKind::LeastRequest => {
            let candidates: Vec<usize> = (0..n).filter(|&i| eligible(i)).collect();
            match candidates.len() {
                0 => None,
                1 => Some(candidates[0]),
                len => {
                    let mut rng = rand::rng();
                    let a = candidates[rng.random_range(0..len)];
                    let mut b = candidates[rng.random_range(0..len - 1)];
                    if b == a {
                        b = candidates[len - 1];
                    }
                    Some(if endpoints[b].active() < endpoints[a].active() {
                        b
                    } else {
                        a
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(
                    format!("127.0.0.1:{}", 1000 + i).parse().expect("endpoint"),
                    1,
                ))
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles_and_skips_ejected() {
        let eps = endpoints(3);
        let cursor = AtomicUsize::new(0);
        let picks: Vec<_> = (0..6)
            .filter_map(|_| pick(LoadBalancerKind::RoundRobin, &eps, &cursor, &[]))
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        eps[1].record_failure(1, Duration::from_secs(60));
        let picks: Vec<_> = (0..4)
            .filter_map(|_| pick(LoadBalancerKind::RoundRobin, &eps, &cursor, &[]))
            .collect();
        assert!(!picks.contains(&1), "{picks:?}");
    }

    #[test]
    fn tried_endpoints_are_skipped_and_none_when_exhausted() {
        let eps = endpoints(2);
        let cursor = AtomicUsize::new(0);
        for kind in [
            LoadBalancerKind::RoundRobin,
            LoadBalancerKind::Random,
            LoadBalancerKind::LeastRequest,
        ] {
            assert_eq!(pick(kind, &eps, &cursor, &[0]), Some(1));
            assert_eq!(pick(kind, &eps, &cursor, &[0, 1]), None);
        }
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let eps = endpoints(2);
        let _busy: Vec<_> = (0..5).map(|_| eps[0].begin()).collect();
        let cursor = AtomicUsize::new(0);
        for _ in 0..50 {
            assert_eq!(
                pick(LoadBalancerKind::LeastRequest, &eps, &cursor, &[]),
                Some(1)
            );
        }
    }

    #[test]
    fn random_spreads_over_all_endpoints() {
        let eps = endpoints(4);
        let cursor = AtomicUsize::new(0);
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            seen[pick(LoadBalancerKind::Random, &eps, &cursor, &[]).expect("pick")] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
    }
}
