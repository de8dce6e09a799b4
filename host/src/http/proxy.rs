//! The life of a request, top to bottom:
//!
//! 1. check the request (header limits, a host to forward to) — 400 / 431 on failure;
//! 2. choose the cluster (the listener's `defaultCluster` until filter chains run) — 404 if none;
//! 3. rewrite headers for the upstream (hop-by-hop out; `x-forwarded-for`, `-proto`,
//!    `-client-cert` and `x-request-id` in);
//! 4. forward through the cluster (pick, connect, retry connection failures, time out) —
//!    502 / 503 / 504 on failure;
//! 5. strip hop-by-hop headers from the response and stream its body back.
//!
//! Every early exit is a [`ProxyError`], turned into a response in exactly one place.

use std::{net::SocketAddr, sync::Arc};

use http::{HeaderValue, Method, Request, Response, Uri, Version, header, uri::PathAndQuery};
use hyper::body::Incoming;

use super::{
    body::{ProxyBody, boxed},
    error::ProxyError,
    headers,
};
use crate::{
    config::resolved::UpstreamProtocol,
    runtime::{ListenerRuntime, Runtime},
    tls::PeerIdentity,
};

/// What the proxy knows about the downstream connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The listener's name.
    pub listener: Arc<str>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's IP as `x-forwarded-for` carries it, rendered once per connection.
    pub client_address: HeaderValue,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// TLS details when the listener terminates TLS.
    pub tls: Option<TlsInfo>,
}

/// A downstream TLS session.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The client's verified certificate identity, on mTLS listeners.
    pub peer: Option<PeerIdentity>,
}

impl Downstream {
    /// `https` on TLS listeners, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Proxies one request. Never fails: errors become their response here.
pub async fn handle(
    runtime: Arc<Runtime>,
    listener: Arc<ListenerRuntime>,
    downstream: &Downstream,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let version = request.version();
    let mut response = match proxy(&runtime, &listener, downstream, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(listener = %downstream.listener, client = %downstream.peer, %error, "request failed");
            error.into_response()
        }
    };
    *response.version_mut() = version;
    response
}

async fn proxy(
    runtime: &Runtime,
    listener: &ListenerRuntime,
    downstream: &Downstream,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    // 1. Check the request.
    let limits = &listener.config.limits;
    headers::check_limits(
        request.headers(),
        limits.max_request_headers,
        limits.max_request_headers_bytes,
    )?;
    if request.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported".into()));
    }
    let host = authority(&request, downstream)?;

    // 2. Choose the cluster.
    let cluster_name =
        listener
            .config
            .default_cluster
            .as_ref()
            .ok_or_else(|| ProxyError::NoRoute {
                listener: downstream.listener.to_string(),
            })?;
    let cluster = runtime
        .clusters
        .get(cluster_name)
        .ok_or_else(|| ProxyError::UnknownCluster {
            cluster: cluster_name.to_string(),
        })?;

    // 3. Rewrite for the upstream.
    let (mut parts, body) = request.into_parts();
    let upstream_h2 = cluster.config.protocol == UpstreamProtocol::Http2;
    headers::strip_hop_by_hop(&mut parts.headers, true);
    if parts.version == Version::HTTP_2 {
        // An HTTP/2 client takes trailers by definition; tell an HTTP/1.1 upstream so, or it
        // will not send them.
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers::set_forwarded(
        &mut parts.headers,
        &downstream.client_address,
        downstream.scheme(),
    );
    headers::set_client_cert(
        &mut parts.headers,
        downstream.tls.as_ref().and_then(|t| t.peer.as_ref()),
    );
    headers::ensure_request_id(&mut parts.headers);
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if upstream_h2 {
        let scheme = if cluster.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        parts.uri = Uri::builder()
            .scheme(scheme)
            .authority(host.as_bytes())
            .path_and_query(path)
            .build()
            .map_err(|e| ProxyError::BadRequest(format!("invalid request target: {e}")))?;
        parts.headers.remove(header::HOST);
        parts.version = Version::HTTP_2;
    } else {
        parts.uri = Uri::from(path);
        parts.headers.insert(header::HOST, host);
        parts.version = Version::HTTP_11;
    }

    // 4. Forward.
    let mut response = cluster
        .forward(Request::from_parts(parts, boxed(body)))
        .await?;

    // 5. Back downstream.
    headers::strip_hop_by_hop(response.headers_mut(), false);
    Ok(response)
}

/// The host the client addressed: `Host` on HTTP/1.1, `:authority` on HTTP/2, and for an
/// HTTP/1.0 request without `Host`, the local address it reached.
fn authority(
    request: &Request<Incoming>,
    downstream: &Downstream,
) -> Result<HeaderValue, ProxyError> {
    if let Some(host) = request.headers().get(header::HOST) {
        if host.is_empty() || host.to_str().is_err() {
            return Err(ProxyError::BadRequest("invalid Host header".into()));
        }
        return Ok(host.clone());
    }
    match request.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("invalid authority".into())),
        None if request.version() == Version::HTTP_10 => {
            HeaderValue::from_str(&downstream.local.to_string())
                .map_err(|_| ProxyError::BadRequest("invalid local address".into()))
        }
        None => Err(ProxyError::BadRequest("missing Host header".into())),
    }
}
