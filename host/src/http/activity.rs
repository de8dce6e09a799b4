//! What a downstream connection is doing, as its watchdog needs to know: requests in flight,
//! when the last one finished, and when the head of the next one started to arrive. The head
//! clock is fed by [`Watched`], a pass-through IO wrapper, so enforcing `headerReadTimeout`
//! costs a counter update per read instead of a timer per request — and an idle keep-alive
//! connection is governed by `idleTimeout`, not by the header deadline.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::Limits;

/// Activity of one downstream connection.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `started` when the last request finished.
    last_done: AtomicU64,
    /// Milliseconds after `started` (plus one, so 0 means none) when bytes of a request head
    /// arrived with no request in flight; [`HEAD_SEEN`] until the watchdog stamps it, so reads
    /// cost no clock.
    head_started: AtomicU64,
    /// HTTP/1.1 only: on HTTP/2, bytes between requests are frames, not a request head.
    track_heads: bool,
}

/// Bytes of a head arrived; the watchdog has not stamped the time yet.
const HEAD_SEEN: u64 = u64::MAX;

/// Why the watchdog should end a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Nothing in flight for the idle timeout (or no request began in time): finish gracefully.
    Idle,
    /// A request head started arriving and did not complete in time: close now.
    HeadTimeout,
}

impl Activity {
    /// A fresh connection; `track_heads` for HTTP/1.1.
    pub fn new(track_heads: bool) -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_done: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            track_heads,
        }
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request's head is complete and it is being served.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    /// A request's response is done (or abandoned) at `now`.
    pub fn request_finished(&self, now: Instant) {
        let millis = u64::try_from(now.saturating_duration_since(self.started).as_millis())
            .unwrap_or(u64::MAX);
        self.last_done.store(millis, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn bytes_read(&self) {
        if self.track_heads
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(HEAD_SEEN, Ordering::Relaxed);
        }
    }

    /// Whether a limit has expired, judged at this moment.
    pub fn expired(&self, limits: &Limits) -> Option<Expiry> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = self.millis();
        let since = |mark: u64| Duration::from_millis(now.saturating_sub(mark));
        let mut head = self.head_started.load(Ordering::Relaxed);
        if head == HEAD_SEEN {
            // Stamp the head's arrival at this tick, unless a request began meanwhile.
            head = match self.head_started.compare_exchange(
                HEAD_SEEN,
                now + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => now + 1,
                Err(current) => current,
            };
        }
        if head != 0 && since(head - 1) >= limits.header_read_timeout {
            return Some(Expiry::HeadTimeout);
        }
        let (mark, limit) = if self.requests.load(Ordering::Relaxed) == 0 {
            (0, limits.header_read_timeout)
        } else {
            (self.last_done.load(Ordering::Relaxed), limits.idle_timeout)
        };
        (head == 0 && since(mark) >= limit).then_some(Expiry::Idle)
    }
}

/// An IO stream that reports reads to its connection's [`Activity`].
#[derive(Debug)]
pub struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    /// Wraps `io`.
    pub fn new(io: I, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(header: u64, idle: u64) -> Limits {
        Limits {
            max_request_headers_bytes: 60 * 1024,
            max_request_headers: 100,
            header_read_timeout: Duration::from_millis(header),
            idle_timeout: Duration::from_millis(idle),
            max_connections: 10,
            max_buffered_body_bytes: 1 << 20,
        }
    }

    #[test]
    fn an_idle_keep_alive_connection_follows_the_idle_timeout_not_the_header_deadline() {
        let activity = Activity::new(true);
        activity.request_started();
        activity.request_finished(Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            activity.expired(&limits(10, 1000)),
            None,
            "idle, but within idleTimeout"
        );
        assert_eq!(activity.expired(&limits(10, 20)), Some(Expiry::Idle));
    }

    #[test]
    fn a_head_that_trickles_in_hits_the_header_deadline() {
        let activity = Activity::new(true);
        activity.request_started();
        activity.request_finished(Instant::now());
        activity.bytes_read();
        assert_eq!(
            activity.expired(&limits(20, 1000)),
            None,
            "the watchdog stamps the head's arrival"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            activity.expired(&limits(20, 1000)),
            Some(Expiry::HeadTimeout)
        );
        activity.request_started();
        assert_eq!(
            activity.expired(&limits(20, 1000)),
            None,
            "a request in flight is never expired"
        );
    }

    #[test]
    fn http2_frames_between_requests_are_not_a_head() {
        let activity = Activity::new(false);
        activity.request_started();
        activity.request_finished(Instant::now());
        activity.bytes_read();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(activity.expired(&limits(20, 1000)), None);
    }

    #[test]
    fn a_connection_must_start_a_request_within_the_header_deadline() {
        let activity = Activity::new(true);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(activity.expired(&limits(20, 1000)), Some(Expiry::Idle));
    }
}
