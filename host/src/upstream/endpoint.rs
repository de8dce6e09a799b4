//! One upstream endpoint: its address, requests in flight (for `LEAST_REQUEST`), outlier state
//! (consecutive failures, ejection deadline) and counters shown on `/clusters`.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use super::pool::Pool;
use crate::config::resolved::EndpointSpec;

/// Process-wide origin for the millisecond clocks kept in atomics.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_millis() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What an outlier check concluded after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The endpoint stays in rotation.
    Kept,
    /// The endpoint was just ejected.
    Ejected,
}

/// An upstream endpoint and everything the proxy tracks about it.
#[derive(Debug)]
pub struct Endpoint {
    /// Configured address.
    pub spec: EndpointSpec,
    /// `host:port`, as shown in errors and `/clusters`.
    pub label: String,
    /// Pooled connections to this endpoint.
    pub pool: Pool,
    active: AtomicUsize,
    consecutive_failures: AtomicU32,
    /// Milliseconds since [`epoch`] until which the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    ejections: AtomicU64,
}

/// A request in flight on an endpoint; dropping it ends the request for `LEAST_REQUEST`.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A snapshot of an endpoint for the admin server.
#[derive(Debug, Serialize)]
pub struct EndpointStatus {
    /// `host:port`.
    pub address: String,
    /// `healthy` or `ejected`.
    pub health: &'static str,
    /// Milliseconds until an ejected endpoint returns.
    pub ejected_for_ms: u64,
    /// Requests in flight.
    pub active_requests: usize,
    /// Requests sent.
    pub requests_total: u64,
    /// Connect failures, resets, timeouts and gateway errors.
    pub failures_total: u64,
    /// Times ejected.
    pub ejections_total: u64,
    /// Idle pooled HTTP/1.1 connections.
    pub idle_connections: usize,
}

impl Endpoint {
    /// A healthy endpoint with an empty pool.
    pub fn new(spec: EndpointSpec, max_idle: usize) -> Self {
        let label = spec.to_string();
        Self {
            spec,
            label,
            pool: Pool::new(max_idle),
            active: AtomicUsize::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    /// Whether the endpoint may take requests now.
    pub fn available(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || now_millis() >= until
    }

    /// Requests in flight.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Starts a request on this endpoint.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A request succeeded: the failure streak ends.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// A request failed; ejects the endpoint for `ejection_time` once `threshold` failures
    /// happened in a row.
    pub fn record_failure(&self, threshold: u32, ejection_time: Duration) -> Verdict {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let streak = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if streak < threshold || !self.available() {
            return Verdict::Kept;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let until = now_millis()
            .saturating_add(u64::try_from(ejection_time.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        self.ejected_until.store(until, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.pool.clear();
        Verdict::Ejected
    }

    /// The endpoint as `/clusters` shows it.
    pub fn status(&self) -> EndpointStatus {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let now = now_millis();
        let ejected = until != 0 && now < until;
        EndpointStatus {
            address: self.label.clone(),
            health: if ejected { "ejected" } else { "healthy" },
            ejected_for_ms: if ejected { until - now } else { 0 },
            active_requests: self.active(),
            requests_total: self.requests.load(Ordering::Relaxed),
            failures_total: self.failures.load(Ordering::Relaxed),
            ejections_total: self.ejections.load(Ordering::Relaxed),
            idle_connections: self.pool.idle_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Arc<Endpoint> {
        Arc::new(Endpoint::new("127.0.0.1:1".parse().expect("endpoint"), 4))
    }

    #[test]
    fn ejects_after_the_threshold_and_returns_after_the_ejection_time() {
        let ep = endpoint();
        let time = Duration::from_millis(50);
        assert_eq!(ep.record_failure(3, time), Verdict::Kept);
        assert_eq!(ep.record_failure(3, time), Verdict::Kept);
        assert!(ep.available());
        assert_eq!(ep.record_failure(3, time), Verdict::Ejected);
        assert!(!ep.available());
        assert_eq!(ep.status().health, "ejected");
        std::thread::sleep(Duration::from_millis(80));
        assert!(ep.available(), "an ejected endpoint comes back");
        assert_eq!(ep.status().ejections_total, 1);
    }

    #[test]
    fn a_success_resets_the_streak() {
        let ep = endpoint();
        let time = Duration::from_secs(10);
        ep.record_failure(2, time);
        ep.record_success();
        assert_eq!(ep.record_failure(2, time), Verdict::Kept);
        assert!(ep.available());
    }

    #[test]
    fn in_flight_guards_count_active_requests() {
        let ep = endpoint();
        let a = ep.begin();
        let b = ep.begin();
        assert_eq!(ep.active(), 2);
        drop(a);
        assert_eq!(ep.active(), 1);
        drop(b);
        assert_eq!(ep.status().requests_total, 2);
        assert_eq!(ep.active(), 0);
    }
}
