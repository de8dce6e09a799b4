//! Upstream clusters: a set of endpoints behind a load balancer, with pooled connections,
//! connect and request timeouts, bounded retries of connection failures on other endpoints,
//! and consecutive-failure ejection.

pub mod balance;
pub mod endpoint;
pub mod h1;
pub mod pool;

use std::sync::{Arc, atomic::AtomicUsize};

use http::{Request, Response};
use prometheus::IntCounter;
use tokio::time::Instant;

use self::{
    endpoint::{Endpoint, EndpointStatus, Verdict},
    pool::{ConnectSpec, ExchangeError, Exchanged, SendError},
};
use crate::{
    config::ClusterConfig,
    http::{
        body::{Observed, ProxyBody, boxed},
        error::ProxyError,
    },
    metrics::Metrics,
    runtime::CodeCounters,
    tls::TlsError,
};

/// A running cluster. Kept across reloads while its configuration is unchanged, so pools and
/// ejections survive.
pub struct Cluster {
    /// The configuration it was built from.
    pub config: Arc<ClusterConfig>,
    endpoints: Vec<Arc<Endpoint>>,
    cursor: AtomicUsize,
    connect: ConnectSpec,
    stats: ClusterStats,
}

struct ClusterStats {
    codes: CodeCounters,
    connect_fail: IntCounter,
    cx_total: IntCounter,
    retries: IntCounter,
    ejections: IntCounter,
}

impl Cluster {
    /// Builds a cluster; fails only when its TLS material is unusable.
    pub fn new(config: Arc<ClusterConfig>, metrics: &Metrics) -> Result<Self, TlsError> {
        let tls = match &config.tls {
            None => None,
            Some(tls) => Some((
                crate::tls::client_config(tls, config.protocol)?,
                tls.clone(),
            )),
        };
        let name = &*config.name;
        let stats = ClusterStats {
            codes: CodeCounters::new(metrics.upstream_requests.clone(), config.name.clone()),
            connect_fail: metrics.upstream_cx_connect_fail.with_label_values(&[name]),
            cx_total: metrics.upstream_cx_total.with_label_values(&[name]),
            retries: metrics.upstream_retries.with_label_values(&[name]),
            ejections: metrics.upstream_ejections.with_label_values(&[name]),
        };
        Ok(Self {
            endpoints: config
                .endpoints
                .iter()
                .map(|spec| Arc::new(Endpoint::new(spec.clone(), config.max_idle_per_endpoint)))
                .collect(),
            cursor: AtomicUsize::new(0),
            connect: ConnectSpec {
                protocol: config.protocol,
                timeout: config.connect_timeout,
                tls,
            },
            stats,
            config,
        })
    }

    /// Endpoint states for `/clusters`.
    pub fn status(&self) -> Vec<EndpointStatus> {
        self.endpoints.iter().map(|e| e.status()).collect()
    }

    /// Forwards a request: picks an endpoint, sends, and retries on another endpoint while the
    /// failure left the request unsent. The whole exchange up to the response headers is bounded
    /// by the cluster's `timeout`.
    pub async fn forward(
        &self,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let deadline = Instant::now() + self.config.request_timeout;
        // Filled only when a retry happens: the common path does not allocate.
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error = None;
        for attempt in 0..=self.config.retries {
            let Some(index) = balance::pick(
                self.config.load_balancer,
                &self.endpoints,
                &self.cursor,
                &tried,
            ) else {
                break;
            };
            if attempt > 0 {
                self.stats.retries.inc();
            }
            let endpoint = &self.endpoints[index];
            let in_flight = endpoint.begin();
            let send = endpoint.pool.send(
                &endpoint.spec.host,
                endpoint.spec.port,
                &self.connect,
                request,
                || self.stats.cx_total.inc(),
            );
            let outcome = match tokio::time::timeout_at(deadline, send).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    self.failed(endpoint);
                    return Err(self.record(ProxyError::UpstreamTimeout {
                        cluster: self.config.name.to_string(),
                        endpoint: endpoint.label.clone(),
                        after: self.config.request_timeout,
                    }));
                }
            };
            match outcome {
                Ok(exchanged) => {
                    let status = match &exchanged {
                        Exchanged::Http1(response) => response.status(),
                        Exchanged::Http2(response) => response.status(),
                    };
                    if matches!(status.as_u16(), 502..=504) {
                        self.failed(endpoint);
                    } else {
                        endpoint.record_success();
                    }
                    self.stats.codes.inc(status);
                    return Ok(match exchanged {
                        Exchanged::Http1(response) => {
                            let endpoint = endpoint.clone();
                            response.map(|mut body| {
                                body.on_release(Box::new(move |conn| {
                                    drop(in_flight);
                                    if let Some(conn) = conn {
                                        endpoint.pool.put_back(conn);
                                    }
                                }));
                                boxed(body)
                            })
                        }
                        Exchanged::Http2(response) => response
                            .map(|body| boxed(Observed::new(body, move |_| drop(in_flight)))),
                    });
                }
                Err(SendError::NotSent {
                    request: unsent,
                    reason,
                }) => {
                    self.stats.connect_fail.inc();
                    self.failed(endpoint);
                    tracing::debug!(cluster = %self.config.name, endpoint = %endpoint.label, %reason, "upstream connect failed");
                    last_error = Some(ProxyError::ConnectFailed {
                        cluster: self.config.name.to_string(),
                        endpoint: endpoint.label.clone(),
                        reason,
                    });
                    request = *unsent;
                    tried.push(index);
                }
                Err(SendError::Failed { error, fresh }) => {
                    self.failed(endpoint);
                    return Err(self.record(self.classify(endpoint, &error, fresh)));
                }
            }
        }
        let error = last_error.unwrap_or_else(|| ProxyError::NoHealthyEndpoint {
            cluster: self.config.name.to_string(),
        });
        Err(self.record(error))
    }

    fn failed(&self, endpoint: &Endpoint) {
        let outlier = &self.config.outlier;
        if endpoint.record_failure(outlier.consecutive_failures, outlier.ejection_time)
            == Verdict::Ejected
        {
            self.stats.ejections.inc();
            tracing::warn!(
                cluster = %self.config.name,
                endpoint = %endpoint.label,
                ejection = ?outlier.ejection_time,
                "endpoint ejected after consecutive failures"
            );
        }
    }

    fn record(&self, error: ProxyError) -> ProxyError {
        let code = error.status();
        self.stats.codes.inc(code);
        error
    }

    fn classify(&self, endpoint: &Endpoint, error: &ExchangeError, fresh: bool) -> ProxyError {
        let cluster = self.config.name.to_string();
        let endpoint = endpoint.label.clone();
        let reason = error_chain(error);
        if fresh && received_tls_alert(error) {
            // The TLS session was refused (e.g. our client certificate): the connection never
            // carried the request, whatever hyper managed to write into it.
            self.stats.connect_fail.inc();
            ProxyError::ConnectFailed {
                cluster,
                endpoint,
                reason,
            }
        } else if malformed(error) {
            ProxyError::UpstreamMalformed {
                cluster,
                endpoint,
                reason,
            }
        } else {
            ProxyError::UpstreamReset {
                cluster,
                endpoint,
                reason,
            }
        }
    }
}

/// Whether the upstream's response was not valid HTTP.
fn malformed(error: &ExchangeError) -> bool {
    match error {
        ExchangeError::Http1(h1::Error::Malformed(_)) => true,
        ExchangeError::Http1(_) => false,
        ExchangeError::Http2(e) => e.is_parse() || e.is_parse_status() || e.is_parse_too_large(),
    }
}

/// Whether the peer ended the connection with a TLS alert.
fn received_tls_alert(error: &ExchangeError) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let alert = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| cause.downcast_ref::<rustls::Error>());
        if matches!(alert, Some(rustls::Error::AlertReceived(_))) {
            return true;
        }
        source = cause.source();
    }
    false
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
