//! The control plane's metrics and the admin HTTP endpoint that serves them:
//! `GET /stats/prometheus` (Prometheus text format) and `GET /ready`.
//!
//! - `weft_control_pushes_total`: snapshots sent to proxies;
//! - `weft_control_rejections_total`: snapshots proxies NACKed;
//! - `weft_control_connected_proxies`: Subscribe calls open now;
//! - `weft_control_convergence_seconds`: from an accepted change to each proxy's ACK of it.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, TextEncoder};
use tokio::{net::TcpListener, sync::watch};

/// The control plane's metrics, in their own Prometheus registry.
#[derive(Clone)]
pub struct Metrics {
    registry: prometheus::Registry,
    pub(crate) pushes: IntCounter,
    pub(crate) rejections: IntCounter,
    pub(crate) connected: IntGauge,
    pub(crate) convergence: Histogram,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = prometheus::Registry::new();
        let pushes = IntCounter::new("weft_control_pushes_total", "Snapshots sent to proxies.")?;
        let rejections = IntCounter::new(
            "weft_control_rejections_total",
            "Snapshots proxies rejected (NACKs).",
        )?;
        let connected = IntGauge::new(
            "weft_control_connected_proxies",
            "Proxies holding a Subscribe call.",
        )?;
        let convergence = Histogram::with_opts(
            HistogramOpts::new(
                "weft_control_convergence_seconds",
                "Time from an accepted change to a proxy's ACK of it.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0,
            ]),
        )?;
        registry.register(Box::new(pushes.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(connected.clone()))?;
        registry.register(Box::new(convergence.clone()))?;
        Ok(Self {
            registry,
            pushes,
            rejections,
            connected,
            convergence,
        })
    }

    /// Every metric in the Prometheus text format.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Records one proxy's convergence time.
    pub(crate) fn converged(&self, elapsed: Duration) {
        self.convergence.observe(elapsed.as_secs_f64());
    }
}

/// Serves the admin endpoint on `listener` until `shutdown` turns true.
pub(crate) async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&metrics, &request)) }
            });
            let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/stats/prometheus") => {
            (StatusCode::OK, "text/plain; version=0.0.4", metrics.text())
        }
        (&Method::GET, "/ready") => (StatusCode::OK, "text/plain", "LIVE\n".to_owned()),
        (_, "/stats/prometheus" | "/ready") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /stats/prometheus or /ready\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exported() -> Result<(), prometheus::Error> {
        let metrics = Metrics::new()?;
        metrics.pushes.inc();
        metrics.converged(Duration::from_millis(120));
        let text = metrics.text();
        for name in [
            "weft_control_pushes_total 1",
            "weft_control_rejections_total 0",
            "weft_control_connected_proxies 0",
            "weft_control_convergence_seconds_count 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        Ok(())
    }
}
