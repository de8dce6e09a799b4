//! The steps of [`super::FilteredBody`].

use std::{
    sync::Arc,
    task::{Context, Waker},
    time::Duration,
};

use futures_util::lock::Mutex;

use super::{Frames, Step};

/// A step that has to wait while it holds the stream's lock goes on without its poller, which
/// may be the one waiting for that lock (the handler with the response head in hand, or the
/// other side's body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_waiting_with_the_lock_finishes_without_its_poller() {
    let lock = Arc::new(Mutex::new(()));
    let held = lock.clone();
    let mut step = Step::Inline(Box::pin(async move {
        let _guard = held.lock_owned().await;
        // As a guest does at an epoch tick.
        tokio::task::yield_now().await;
        Ok(Frames::default())
    }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        step.poll(&mut cx).is_pending(),
        "the step yields with the lock"
    );
    // Not polled again until the lock is taken.
    let taken = tokio::time::timeout(Duration::from_secs(5), lock.lock()).await;
    assert!(
        taken.is_ok(),
        "the step let the lock go without being polled"
    );
    drop(taken);
    let frames = std::future::poll_fn(|cx| step.poll(cx)).await;
    assert!(frames.is_ok_and(|frames| frames.is_empty()));
}
