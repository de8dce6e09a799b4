//! The life of a request, top to bottom:
//!
//! 1. check the request (header limits, a host to forward to) — 400 / 431 on failure;
//! 2. rewrite headers for the upstream (hop-by-hop out; `x-forwarded-for`, `-proto`,
//!    `-client-cert` and `x-request-id` in);
//! 3. run the listener's filter chain, if it has one (request phases; see [`crate::wasm::chain`])
//!    — a filter may answer locally, rewrite the request, or choose the cluster;
//! 4. choose the cluster (a filter's `weft.upstream_cluster`, else the listener's
//!    `defaultCluster`; filters read it back as `xds.cluster_name`) — 404 if none;
//! 5. forward through the cluster (pick, connect, retry connection failures, time out) —
//!    502 / 503 / 504 on failure;
//! 6. strip hop-by-hop headers from the response, run the response phases, and send its body
//!    back through the filters' body phases: read whole first when it is small and of known
//!    length and the request had no body, streamed otherwise.
//!
//! Every early exit of the unfiltered path is a [`ProxyError`], turned into a response in
//! exactly one place; the filtered path also ends every filter context on its way out.

use std::{net::SocketAddr, sync::Arc};

use bytes::{Bytes, BytesMut};
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header, uri::PathAndQuery,
};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::{
    body::{BoxError, ProxyBody, boxed},
    error::ProxyError,
    headers,
};
use crate::{
    config::resolved::UpstreamProtocol,
    runtime::{ListenerRuntime, Runtime},
    tls::PeerIdentity,
    upstream::Cluster,
    wasm::{
        chain::{FilterStream, FilteredBody, Flow, HeldStream, RequestStart},
        context::Side,
        filter::Chain,
    },
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
    downstream: &Arc<Downstream>,
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
    downstream: &Arc<Downstream>,
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

    // 2. Rewrite for the upstream.
    let (mut parts, body) = request.into_parts();
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

    // An empty chain has nothing to run: the plain path, without the per-stream state.
    if let Some(chain) = listener.chain.as_ref().filter(|c| !c.filters.is_empty()) {
        return Ok(filtered(runtime, listener, chain, downstream, parts, host, body).await);
    }

    // 4. Choose the cluster.
    let cluster = choose_cluster(runtime, listener, None)?;

    // 5. Forward.
    upstream_head(&mut parts, host, cluster)?;
    let mut response = cluster
        .forward(Request::from_parts(parts, boxed(body)))
        .await?;

    // 6. Back downstream.
    headers::strip_hop_by_hop(response.headers_mut(), false);
    Ok(response)
}

/// Steps 3 to 6 through a filter chain. Every way out ends the filter contexts.
async fn filtered(
    runtime: &Runtime,
    listener: &ListenerRuntime,
    chain: &Chain,
    downstream: &Arc<Downstream>,
    mut parts: http::request::Parts,
    host: HeaderValue,
    body: Incoming,
) -> Response<ProxyBody> {
    let limits = &listener.config.limits;
    let start = RequestStart {
        downstream,
        parts: &mut parts,
        authority: host,
        buffer_limit: limits.max_buffered_body_bytes,
        pause_limit: limits.idle_timeout,
    };
    let mut stream = match FilterStream::start(chain, start).await {
        Ok(stream) => stream,
        Err(flow) => return flow.into_response(),
    };
    // 3. Request headers through the chain.
    let end_of_stream = body.is_end_stream();
    if let Flow::Respond(response) = stream.request_headers(end_of_stream).await {
        return stream.end_with(*response).await;
    }
    // 4. The cluster: a filter's choice, else the listener's default.
    let chosen = stream.take_request(&mut parts).and_then(|(host, chosen)| {
        let cluster = choose_cluster(runtime, listener, chosen.as_deref())?;
        upstream_head(&mut parts, host, cluster)?;
        Ok(cluster)
    });
    let cluster = match chosen {
        Ok(cluster) => cluster,
        Err(error) => return stream.end_with(error.into_response()).await,
    };
    stream.record_cluster(&cluster.config.name);
    // 5. Forward, the request body through the body phases (which then share the stream).
    let (mut held, body) = if end_of_stream {
        (HeldStream::Own(stream), boxed(body))
    } else {
        let (held, shared) = HeldStream::shared(stream);
        let body = boxed(FilteredBody::new(boxed(body), shared, Side::Request));
        (held, body)
    };
    let result = cluster.forward(Request::from_parts(parts, body)).await;
    // A request body may still be on its way through its phases (which take the stream's lock)
    // while the response comes back: the handler must not hold the lock waiting for the response
    // body then, or an upstream that echoes the request waits for a request body that waits for
    // the lock.
    let request_body_running = matches!(held, HeldStream::Shared(..));
    let stream = held.lock().await;
    if let Some(decided) = stream.take_outcome() {
        return stream.end_with(decided).await;
    }
    let mut response = match result {
        Ok(response) => response,
        Err(error) => return stream.end_with(error.into_response()).await,
    };
    // 6. Response headers bottom-up, then the body through the body phases.
    headers::strip_hop_by_hop(response.headers_mut(), false);
    let (mut head, body) = response.into_parts();
    let end_of_stream = body.is_end_stream();
    if let Flow::Respond(local) = stream.response_headers(&mut head, end_of_stream).await {
        return stream.end_with(*local).await;
    }
    if end_of_stream {
        stream.finish().await;
        stream.response_head(&mut head);
        return Response::from_parts(head, body);
    }
    // A small body of known length is read whole and goes through its phase here; a larger
    // one, one of unknown length, or one that may wait for the request body, streams through
    // them as it comes.
    if !request_body_running
        && body
            .size_hint()
            .exact()
            .is_some_and(|len| len <= whole_body_limit(limits.max_buffered_body_bytes))
    {
        return match read_whole(body).await {
            Ok((data, trailers)) => stream.whole_response(head, data, trailers).await,
            Err(error) => {
                let error = ProxyError::UpstreamBody {
                    cluster: cluster.config.name.to_string(),
                    reason: error.to_string(),
                };
                stream.end_with(error.into_response()).await
            }
        };
    }
    stream.response_head(&mut head);
    let shared = held.into_shared();
    Response::from_parts(head, boxed(FilteredBody::new(body, shared, Side::Response)))
}

/// Response bodies up to this size (and the listener's buffer limit), when the upstream gave
/// their length and the request had no body, are read whole before their body phase: one phase
/// call, and no body wrapper sharing the stream with the handler. The client gets the head once
/// the body is in — as from nginx with `proxy_buffering`.
const WHOLE_BODY_LIMIT: u64 = 64 << 10;

/// The largest response body read whole: [`WHOLE_BODY_LIMIT`], or less when the listener lets a
/// filter hold less (`maxBufferedBodyBytes`) — the proxy never holds more than that for it.
fn whole_body_limit(max_buffered_body_bytes: usize) -> u64 {
    WHOLE_BODY_LIMIT.min(u64::try_from(max_buffered_body_bytes).unwrap_or(u64::MAX))
}

/// Reads `body` to its end: its data (without a copy when it came in one frame) and trailers.
async fn read_whole(mut body: ProxyBody) -> Result<(Bytes, Option<HeaderMap>), BoxError> {
    let mut data = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame?.into_data() {
            Ok(chunk) if data.is_empty() && joined.is_none() => data = chunk,
            Ok(chunk) => joined
                .get_or_insert_with(|| BytesMut::from(&data[..]))
                .extend_from_slice(&chunk),
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    Ok((joined.map_or(data, BytesMut::freeze), trailers))
}

/// The cluster a request goes to: `chosen` by a filter, else the listener's default.
fn choose_cluster<'r>(
    runtime: &'r Runtime,
    listener: &ListenerRuntime,
    chosen: Option<&str>,
) -> Result<&'r Arc<Cluster>, ProxyError> {
    let name = match chosen {
        Some(name) => name,
        None => listener
            .config
            .default_cluster
            .as_deref()
            .ok_or_else(|| ProxyError::NoRoute {
                listener: listener.config.name.to_string(),
            })?,
    };
    runtime
        .clusters
        .get(name)
        .ok_or_else(|| ProxyError::UnknownCluster {
            cluster: name.to_owned(),
        })
}

/// Shapes the request head for `cluster`: an absolute URI and no `Host` for HTTP/2, origin form
/// and `Host` for HTTP/1.1.
fn upstream_head(
    parts: &mut http::request::Parts,
    host: HeaderValue,
    cluster: &Cluster,
) -> Result<(), ProxyError> {
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if cluster.config.protocol == UpstreamProtocol::Http2 {
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
    Ok(())
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
