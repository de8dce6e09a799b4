//! The body type the proxy hands to hyper, and small wrappers that observe a body's end:
//! returning a pooled connection, closing a request's bookkeeping. Bodies are streamed frame by
//! frame — data and trailers — never buffered.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// The error type of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends, up- or downstream.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete, in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose errors convert into [`BoxError`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// What to run when an observed body ends: `clean` says whether it ended normally.
pub trait OnEnd {
    /// Runs once.
    fn on_end(self, clean: bool);
}

impl<F: FnOnce(bool)> OnEnd for F {
    fn on_end(self, clean: bool) {
        self(clean)
    }
}

pin_project_lite::pin_project! {
    /// Wraps a body and runs `on_end` exactly once: with `true` when the body ended cleanly
    /// (its last frame was read, or it reports `is_end_stream`), with `false` when it failed or
    /// was dropped before its end.
    pub struct Observed<B: Body, F: OnEnd> {
        #[pin]
        inner: B,
        on_end: Option<F>,
    }

    impl<B: Body, F: OnEnd> PinnedDrop for Observed<B, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(on_end) = this.on_end.take() {
                // hyper stops polling once `is_end_stream` says so; that is a clean end too.
                on_end.on_end(this.inner.is_end_stream());
            }
        }
    }
}

impl<B: Body, F: OnEnd> Observed<B, F> {
    /// Observes `inner`.
    pub fn new(inner: B, on_end: F) -> Self {
        Self {
            inner,
            on_end: Some(on_end),
        }
    }
}

impl<B: Body, F: OnEnd> Body for Observed<B, F> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => Some(true),
            Poll::Ready(Some(Err(_))) => Some(false),
            Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => Some(true),
            _ => None,
        };
        if let Some(clean) = ended
            && let Some(on_end) = this.on_end.take()
        {
            on_end.on_end(clean);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn observed_reports_clean_end_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let body = Observed::new(Full::new(Bytes::from_static(b"hi")), move |clean| {
            log.lock().expect("lock").push(clean)
        });
        let bytes = body.collect().await.expect("collect").to_bytes();
        assert_eq!(&bytes[..], b"hi");
        assert_eq!(*seen.lock().expect("lock"), vec![true]);
    }

    #[tokio::test]
    async fn observed_reports_early_drop() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        drop(Observed::new(
            Full::new(Bytes::from_static(b"hi")),
            move |clean| log.lock().expect("lock").push(clean),
        ));
        assert_eq!(*seen.lock().expect("lock"), vec![false]);
    }
}
