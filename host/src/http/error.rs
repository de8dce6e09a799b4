//! Every way a request can fail, and the one place each failure becomes a response: a status
//! and a one-line body naming the cause, as a user reading `curl` output needs it.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use super::body::{ProxyBody, full};

/// Where a failure came from, as pingora classifies it: the client, the upstream, or the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The request itself was unacceptable.
    Downstream,
    /// The upstream failed or could not be reached.
    Upstream,
    /// The proxy's configuration had nowhere to send the request.
    Internal,
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is malformed (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// More headers than the listener allows (431).
    #[error("request has {count} headers, more than the limit of {limit}")]
    TooManyHeaders {
        /// Headers received.
        count: usize,
        /// The listener's `maxRequestHeaders`.
        limit: usize,
    },
    /// A header block larger than the listener allows (431).
    #[error("request header block is {size} bytes, more than the limit of {limit}")]
    HeadersTooLarge {
        /// Bytes received.
        size: usize,
        /// The listener's `maxRequestHeadersBytes`.
        limit: usize,
    },
    /// No cluster was chosen for the request (404).
    #[error("no route: listener {listener} has no default cluster and no filter chose one")]
    NoRoute {
        /// Listener name.
        listener: String,
    },
    /// The chosen cluster does not exist (503).
    #[error("unknown cluster {cluster}")]
    UnknownCluster {
        /// The name a filter chose.
        cluster: String,
    },
    /// Every endpoint of the cluster is ejected (503).
    #[error("no healthy endpoint in cluster {cluster}")]
    NoHealthyEndpoint {
        /// Cluster name.
        cluster: String,
    },
    /// Connecting failed on every endpoint tried (503).
    #[error("upstream connect error in cluster {cluster}: {endpoint}: {reason}")]
    ConnectFailed {
        /// Cluster name.
        cluster: String,
        /// The last endpoint tried.
        endpoint: String,
        /// Why the last attempt failed.
        reason: String,
    },
    /// The upstream closed or reset the connection before a complete response (502).
    #[error("upstream reset in cluster {cluster}: {endpoint}: {reason}")]
    UpstreamReset {
        /// Cluster name.
        cluster: String,
        /// The endpoint.
        endpoint: String,
        /// Detail from the connection.
        reason: String,
    },
    /// The upstream's response body failed before its end, while the proxy read it whole and
    /// before the head went to the client (502).
    #[error("upstream response body failed in cluster {cluster}: {reason}")]
    UpstreamBody {
        /// Cluster name.
        cluster: String,
        /// Detail from the connection.
        reason: String,
    },
    /// The upstream's response was not valid HTTP (502).
    #[error("malformed upstream response in cluster {cluster}: {endpoint}: {reason}")]
    UpstreamMalformed {
        /// Cluster name.
        cluster: String,
        /// The endpoint.
        endpoint: String,
        /// What the parser rejected.
        reason: String,
    },
    /// No response headers within the cluster's `timeout` (504).
    #[error(
        "upstream request timeout in cluster {cluster}: no response from {endpoint} within {after:?}"
    )]
    UpstreamTimeout {
        /// Cluster name.
        cluster: String,
        /// The endpoint.
        endpoint: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The proxy is shutting down (503).
    #[error("proxy is draining")]
    Draining,
    /// A filter failed and its `failStrategy` is `FAIL_CLOSE` (503).
    #[error("filter {filter} (plugin {plugin}) failed: {reason}")]
    FilterFailed {
        /// The filter's instance name.
        filter: String,
        /// The plugin it runs.
        plugin: String,
        /// Why: trap, panic, deadline, memory, start — and detail.
        reason: String,
    },
    /// A filter held more body than the listener's `maxBufferedBodyBytes` (413).
    #[error("request body buffered by filter {filter} exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The filter that buffered it.
        filter: String,
        /// The listener's limit.
        limit: usize,
    },
    /// A filter held the response body past the buffer limit (500).
    #[error("response body buffered by filter {filter} exceeds the limit of {limit} bytes")]
    ResponseBodyTooLarge {
        /// The filter that buffered it.
        filter: String,
        /// The listener's limit.
        limit: usize,
    },
    /// A filter paused the stream and nothing resumed it in time (504).
    #[error("filter {filter} held the {side} for longer than {after:?}")]
    FilterStalled {
        /// The filter.
        filter: String,
        /// `request` or `response`.
        side: &'static str,
        /// How long it waited.
        after: Duration,
    },
}

impl ProxyError {
    /// The status a client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooManyHeaders { .. } | Self::HeadersTooLarge { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::UnknownCluster { .. }
            | Self::NoHealthyEndpoint { .. }
            | Self::ConnectFailed { .. }
            | Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamReset { .. }
            | Self::UpstreamBody { .. }
            | Self::UpstreamMalformed { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } | Self::FilterStalled { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::FilterFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ResponseBodyTooLarge { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Where the failure came from.
    pub fn origin(&self) -> Origin {
        match self {
            Self::BadRequest(_) | Self::TooManyHeaders { .. } | Self::HeadersTooLarge { .. } => {
                Origin::Downstream
            }
            Self::NoRoute { .. }
            | Self::UnknownCluster { .. }
            | Self::Draining
            | Self::FilterFailed { .. }
            | Self::BodyTooLarge { .. }
            | Self::ResponseBodyTooLarge { .. }
            | Self::FilterStalled { .. } => Origin::Internal,
            _ => Origin::Upstream,
        }
    }

    /// The response the client receives: the status and a one-line body naming the cause.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let mut response = Response::new(full(format!("{self}\n")));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.origin() == Origin::Downstream {
            // A client that sent a malformed request cannot be trusted to frame the next one.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn each_failure_has_its_status_and_a_one_line_body() {
        let cases = [
            (
                ProxyError::NoHealthyEndpoint {
                    cluster: "web".into(),
                },
                503,
                "no healthy endpoint in cluster web\n",
            ),
            (
                ProxyError::UpstreamTimeout {
                    cluster: "web".into(),
                    endpoint: "10.0.0.1:80".into(),
                    after: Duration::from_secs(2),
                },
                504,
                "upstream request timeout in cluster web: no response from 10.0.0.1:80 within 2s\n",
            ),
            (
                ProxyError::UpstreamReset {
                    cluster: "web".into(),
                    endpoint: "10.0.0.1:80".into(),
                    reason: "connection closed".into(),
                },
                502,
                "upstream reset in cluster web: 10.0.0.1:80: connection closed\n",
            ),
            (
                ProxyError::TooManyHeaders {
                    count: 101,
                    limit: 100,
                },
                431,
                "request has 101 headers, more than the limit of 100\n",
            ),
        ];
        for (error, status, body) in cases {
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(std::str::from_utf8(&bytes).expect("utf8"), body);
        }
    }
}
