//! Callouts: the HTTP and gRPC requests a filter makes to a cluster by name
//! (`proxy_http_call`, `proxy_grpc_call`, `proxy_grpc_stream`).
//!
//! An HTTP callout is one request built from the guest's pseudo-headers, sent through
//! [`Cluster::forward`], and collected whole (at most [`MAX_RESPONSE_BODY`] bytes) within the
//! guest's timeout. Any failure is reported as a response without headers, as Envoy does.
//!
//! A gRPC callout needs an HTTP/2 cluster. The request body is the guest's messages, each with
//! the 5-byte gRPC prefix; the response is delivered as [`GrpcEvent`]s while it arrives —
//! initial metadata, each message, trailing metadata — and always ends with exactly one
//! [`GrpcEvent::Close`] carrying the gRPC status: the server's `grpc-status`, or one the host
//! chose for a failure (14 `UNAVAILABLE` for transport errors, 4 `DEADLINE_EXCEEDED` for the
//! call's timeout, a status mapped from a non-200 HTTP status). A stream's request body flows
//! while the response is read. Like every request through a cluster, the response headers must
//! arrive within the cluster's request timeout.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::stream;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version, header,
    uri::{Authority, PathAndQuery, Scheme},
};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc::UnboundedReceiver;

use super::context::GrpcEvent;
use crate::{
    config::{ClusterConfig, resolved::UpstreamProtocol},
    http::{
        body::{BoxError, ProxyBody, boxed, full},
        error::ProxyError,
        headers::strip_hop_by_hop,
    },
    upstream::Cluster,
};

#[cfg(test)]
mod tests;

/// The largest response body an HTTP callout collects; a longer one fails the call.
pub const MAX_RESPONSE_BODY: usize = 4 << 20;

/// The largest gRPC message a callout accepts (gRPC's default receive limit); a longer one
/// ends the call with `RESOURCE_EXHAUSTED`.
pub const MAX_GRPC_MESSAGE: usize = 4 << 20;

/// What an HTTP callout got back. No headers means it failed (refused, reset, timed out) —
/// Envoy's way of reporting a failed call to `proxy_on_http_call_response`.
#[derive(Debug, Clone, Default)]
pub struct CalloutResponse {
    /// Response headers, `:status` first.
    pub headers: Vec<(Bytes, Bytes)>,
    /// The whole response body.
    pub body: Bytes,
    /// Response trailers.
    pub trailers: Vec<(Bytes, Bytes)>,
}

/// A message for an open gRPC stream (`proxy_grpc_send`).
#[derive(Debug)]
pub enum GrpcOutbound {
    /// One message (unframed: the host adds the 5-byte gRPC prefix).
    Message(Bytes),
    /// Half-close the stream (after the message, when `end_of_stream` was set).
    End,
}

/// The target and options of a gRPC callout (`proxy_grpc_call`, `proxy_grpc_stream`).
#[derive(Debug, Clone, Default)]
pub struct GrpcRequest {
    /// Fully qualified service name, e.g. `helloworld.Greeter`.
    pub service: Bytes,
    /// Method name, e.g. `SayHello`.
    pub method: Bytes,
    /// Request metadata, sent as headers; pseudo-headers and invalid entries are skipped.
    pub initial_metadata: Vec<(Bytes, Bytes)>,
    /// Deadline for the whole call, also sent as `grpc-timeout`; `None` sets none.
    pub timeout: Option<Duration>,
}

/// gRPC status codes the host reports itself.
mod code {
    pub const OK: u32 = 0;
    pub const UNKNOWN: u32 = 2;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Whether the headers of a `proxy_http_call` name a request: `:method`, `:path` and
/// `:authority` present and non-empty. When not, the host function returns `BadArgument`,
/// as Envoy does.
pub fn validate_http_call_headers(headers: &[(Bytes, Bytes)]) -> bool {
    [":method", ":path", ":authority"]
        .into_iter()
        .all(|name| pseudo(headers, name).is_some_and(|value| !value.is_empty()))
}

/// Sends one HTTP request to `cluster` and collects the whole response, bounded by `timeout`.
///
/// `headers` carry `:method`, `:path`, `:authority` and optionally `:scheme` (otherwise the
/// cluster's TLS decides); other headers are copied, invalid or hop-by-hop ones skipped. A
/// failure — invalid request, connect error, reset, timeout, a body over
/// [`MAX_RESPONSE_BODY`] — yields [`CalloutResponse::default`].
pub async fn http_call(
    cluster: Arc<Cluster>,
    headers: Vec<(Bytes, Bytes)>,
    body: Bytes,
    trailers: Vec<(Bytes, Bytes)>,
    timeout: Duration,
) -> CalloutResponse {
    let exchange = http_exchange(&cluster, &headers, body, &trailers);
    let outcome = match tokio::time::timeout(timeout, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(CalloutError::Timeout(timeout)),
    };
    outcome.unwrap_or_else(|error| {
        tracing::debug!(cluster = %cluster.config.name, %error, "HTTP callout failed");
        CalloutResponse::default()
    })
}

/// Opens a unary gRPC call to `cluster`: sends `message` to `/{service}/{method}` and delivers
/// the response to `deliver` as it arrives, ending with exactly one [`GrpcEvent::Close`].
pub async fn grpc_call(
    cluster: Arc<Cluster>,
    request: GrpcRequest,
    message: Bytes,
    mut deliver: impl FnMut(GrpcEvent) + Send,
) {
    let body = match frame_message(message) {
        Ok(framed) => full(framed),
        Err(error) => {
            let message = Bytes::from(error.to_string());
            deliver(close(&cluster, code::RESOURCE_EXHAUSTED, message));
            return;
        }
    };
    grpc_exchange(cluster, request, body, deliver).await;
}

/// Opens a gRPC stream to `cluster`: each [`GrpcOutbound::Message`] from `outbound` is sent
/// framed, [`GrpcOutbound::End`] or a closed channel ends the request body, and the response
/// is delivered to `deliver` as it arrives, ending with exactly one [`GrpcEvent::Close`].
pub async fn grpc_stream(
    cluster: Arc<Cluster>,
    request: GrpcRequest,
    outbound: UnboundedReceiver<GrpcOutbound>,
    deliver: impl FnMut(GrpcEvent) + Send,
) {
    let frames = stream::unfold(outbound, |mut outbound| async move {
        match outbound.recv().await {
            Some(GrpcOutbound::Message(message)) => {
                Some((frame_message(message).map(Frame::data), outbound))
            }
            Some(GrpcOutbound::End) | None => None,
        }
    });
    grpc_exchange(cluster, request, boxed(StreamBody::new(frames)), deliver).await;
}

/// Why an HTTP callout failed; logged, while the guest sees a response without headers.
#[derive(Debug, thiserror::Error)]
enum CalloutError {
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Upstream(#[from] ProxyError),
    #[error("response body: {0}")]
    Body(BoxError),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

async fn http_exchange(
    cluster: &Cluster,
    headers: &[(Bytes, Bytes)],
    body: Bytes,
    trailers: &[(Bytes, Bytes)],
) -> Result<CalloutResponse, CalloutError> {
    let request = http_request(&cluster.config, headers, body, trailers)?;
    let (parts, mut body) = cluster.forward(request).await?.into_parts();
    // Read frame by frame (not `Limited::collect`, whose future is not provably `Send` over a
    // boxed body): the callout runs on a task of its own.
    let mut data = BytesMut::new();
    let mut trailers = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(CalloutError::Body)?;
        match frame.into_data() {
            Ok(chunk) => {
                if data.len() + chunk.len() > MAX_RESPONSE_BODY {
                    return Err(CalloutError::Body("length limit exceeded".into()));
                }
                data.extend_from_slice(&chunk);
            }
            Err(frame) => {
                if let Ok(map) = frame.into_trailers() {
                    trailers = pairs(&map);
                }
            }
        }
    }
    Ok(CalloutResponse {
        headers: response_head(parts.status, &parts.headers),
        body: data.freeze(),
        trailers,
    })
}

/// The request of an HTTP callout, shaped for the cluster's protocol as the proxy shapes
/// forwarded requests: an absolute URI on HTTP/2, the path and `Host` on HTTP/1.1.
fn http_request(
    config: &ClusterConfig,
    headers: &[(Bytes, Bytes)],
    body: Bytes,
    trailers: &[(Bytes, Bytes)],
) -> Result<Request<ProxyBody>, CalloutError> {
    let method = pseudo(headers, ":method")
        .and_then(|m| Method::from_bytes(m).ok())
        .ok_or(CalloutError::Invalid("missing or invalid :method"))?;
    let path = pseudo(headers, ":path")
        .filter(|p| p.starts_with(b"/"))
        .and_then(|p| PathAndQuery::from_maybe_shared(p.clone()).ok())
        .ok_or(CalloutError::Invalid("missing or invalid :path"))?;
    let authority = pseudo(headers, ":authority")
        .and_then(|a| Authority::from_maybe_shared(a.clone()).ok())
        .ok_or(CalloutError::Invalid("missing or invalid :authority"))?;
    let scheme = pseudo(headers, ":scheme")
        .and_then(|s| Scheme::try_from(&s[..]).ok())
        .unwrap_or_else(|| cluster_scheme(config));

    let mut map = header_map(headers);
    strip_hop_by_hop(&mut map, true);
    map.remove(header::HOST);
    map.remove(header::CONTENT_LENGTH);
    let trailers = header_map(trailers);
    if trailers.is_empty() && !body.is_empty() {
        map.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let (uri, version) = if config.protocol == UpstreamProtocol::Http2 {
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| CalloutError::Invalid("invalid request target"))?;
        (uri, Version::HTTP_2)
    } else {
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| CalloutError::Invalid("missing or invalid :authority"))?;
        map.insert(header::HOST, host);
        (Uri::from(path), Version::HTTP_11)
    };

    let body = if trailers.is_empty() {
        full(body)
    } else {
        let data = (!body.is_empty()).then(|| Frame::data(body));
        let frames = data.into_iter().chain([Frame::trailers(trailers)]);
        boxed(StreamBody::new(stream::iter(
            frames.map(Ok::<_, Infallible>),
        )))
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Ok(request)
}

/// Runs a gRPC exchange and delivers its events, `Close` last and once.
async fn grpc_exchange(
    cluster: Arc<Cluster>,
    request: GrpcRequest,
    body: ProxyBody,
    mut deliver: impl FnMut(GrpcEvent) + Send,
) {
    let (status, message) = if cluster.config.protocol != UpstreamProtocol::Http2 {
        (
            code::UNAVAILABLE,
            Bytes::from_static(b"cluster is not HTTP/2"),
        )
    } else {
        let exchange = grpc_response(&cluster, &request, body, &mut deliver);
        match request.timeout {
            None => exchange.await,
            Some(timeout) => tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or_else(|_| {
                    (
                        code::DEADLINE_EXCEEDED,
                        Bytes::from(format!("deadline of {timeout:?} exceeded")),
                    )
                }),
        }
    };
    deliver(close(&cluster, status, message));
}

/// The final event of a gRPC callout, logged when it is a failure.
fn close(cluster: &Cluster, status: u32, message: Bytes) -> GrpcEvent {
    if status != code::OK {
        tracing::debug!(
            cluster = %cluster.config.name,
            status,
            message = %String::from_utf8_lossy(&message),
            "gRPC callout ended with an error"
        );
    }
    GrpcEvent::Close { status, message }
}

/// Sends the request and delivers the response up to its end; returns the call's status and
/// message.
async fn grpc_response(
    cluster: &Cluster,
    request: &GrpcRequest,
    body: ProxyBody,
    deliver: &mut (impl FnMut(GrpcEvent) + Send),
) -> (u32, Bytes) {
    let request = match grpc_request(&cluster.config, request, body) {
        Ok(request) => request,
        Err(reason) => return (code::INTERNAL, Bytes::from_static(reason.as_bytes())),
    };
    let (parts, mut body) = match cluster.forward(request).await {
        Ok(response) => response.into_parts(),
        Err(error) => return (code::UNAVAILABLE, Bytes::from(error.to_string())),
    };
    if let Some(status) = grpc_status(&parts.headers) {
        // Trailers-only: the headers are the trailers (what Envoy delivers too).
        deliver(GrpcEvent::TrailingMetadata(response_head(
            parts.status,
            &parts.headers,
        )));
        return (status, grpc_message(&parts.headers));
    }
    if parts.status != StatusCode::OK {
        let message = format!("upstream answered HTTP {}", parts.status);
        return (status_from_http(parts.status), Bytes::from(message));
    }
    deliver(GrpcEvent::InitialMetadata(response_head(
        parts.status,
        &parts.headers,
    )));

    let mut deframer = Deframer::default();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => return (code::UNAVAILABLE, Bytes::from(error.to_string())),
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                deframer.push(&data);
                loop {
                    match deframer.next_message() {
                        Ok(Some(message)) => deliver(GrpcEvent::Message(message)),
                        Ok(None) => break,
                        Err(error) => return (error.status(), Bytes::from(error.to_string())),
                    }
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            deliver(GrpcEvent::TrailingMetadata(pairs(&trailers)));
            return match grpc_status(&trailers) {
                Some(code::OK) if !deframer.is_empty() => (
                    code::INTERNAL,
                    Bytes::from_static(b"response ended inside a message"),
                ),
                Some(status) => (status, grpc_message(&trailers)),
                None => (
                    code::UNKNOWN,
                    Bytes::from_static(b"response trailers carry no grpc-status"),
                ),
            };
        }
    }
    (
        code::UNKNOWN,
        Bytes::from_static(b"response ended without grpc-status"),
    )
}

/// The HTTP/2 request of a gRPC callout: `POST /{service}/{method}` to the cluster, with the
/// metadata, `content-type: application/grpc`, `te: trailers` and `grpc-timeout`.
fn grpc_request(
    config: &ClusterConfig,
    request: &GrpcRequest,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, &'static str> {
    let name_ok = |name: &Bytes| !name.is_empty() && !name.iter().any(|b| b"/?#".contains(b));
    if !name_ok(&request.service) || !name_ok(&request.method) {
        return Err("invalid gRPC service or method name");
    }
    let mut path = BytesMut::with_capacity(2 + request.service.len() + request.method.len());
    path.put_u8(b'/');
    path.put_slice(&request.service);
    path.put_u8(b'/');
    path.put_slice(&request.method);
    let path = PathAndQuery::from_maybe_shared(path.freeze())
        .map_err(|_| "invalid gRPC service or method name")?;
    let uri = Uri::builder()
        .scheme(cluster_scheme(config))
        .authority(grpc_authority(config).ok_or("cluster has no usable authority")?)
        .path_and_query(path)
        .build()
        .map_err(|_| "invalid gRPC request target")?;

    let mut headers = header_map(&request.initial_metadata);
    strip_hop_by_hop(&mut headers, false);
    for reserved in [&header::HOST, &header::CONTENT_LENGTH, &GRPC_TIMEOUT] {
        headers.remove(reserved);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(timeout) = request.timeout
        && let Ok(value) = HeaderValue::from_str(&grpc_timeout(timeout))
    {
        headers.insert(GRPC_TIMEOUT.clone(), value);
    }

    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = headers;
    Ok(request)
}

/// `:authority` of gRPC callouts: the cluster's name, as Envoy's default; the first endpoint
/// when the name is not a valid authority.
fn grpc_authority(config: &ClusterConfig) -> Option<Authority> {
    Authority::try_from(&*config.name).ok().or_else(|| {
        let endpoint = config.endpoints.first()?;
        Authority::try_from(endpoint.to_string()).ok()
    })
}

fn cluster_scheme(config: &ClusterConfig) -> Scheme {
    if config.tls.is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    }
}

/// Frames one message: compression flag 0, big-endian length, the message.
fn frame_message(message: Bytes) -> Result<Bytes, OversizedMessage> {
    let length = u32::try_from(message.len()).map_err(|_| OversizedMessage(message.len()))?;
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(length);
    framed.put_slice(&message);
    Ok(framed.freeze())
}

/// A message too long for gRPC's 32-bit length prefix.
#[derive(Debug, thiserror::Error)]
#[error("gRPC message of {0} bytes does not fit a 32-bit length prefix")]
struct OversizedMessage(usize);

/// `grpc-timeout`: milliseconds (rounded up), or coarser units when the value would pass the
/// 8 digits the gRPC spec allows — Envoy's encoding.
fn grpc_timeout(timeout: Duration) -> String {
    const MAX_VALUE: u128 = 99_999_999;
    let mut value = timeout.as_nanos().div_ceil(1_000_000);
    for (unit, divisor) in [('m', 1), ('S', 1000), ('M', 60), ('H', 60)] {
        value /= divisor;
        if value <= MAX_VALUE {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX_VALUE}H")
}

/// The gRPC status for a response that is not HTTP 200 and carries no `grpc-status`
/// (gRPC's `http-grpc-status-mapping.md`).
fn status_from_http(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// `grpc-status`, when present; `UNKNOWN` when it is not a number.
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    let value = headers.get(&GRPC_STATUS)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(code::UNKNOWN),
    )
}

/// `grpc-message`, percent-decoded as the gRPC spec encodes it; empty when absent.
fn grpc_message(headers: &HeaderMap) -> Bytes {
    headers
        .get(&GRPC_MESSAGE)
        .map(|value| percent_decode(value.as_bytes()))
        .unwrap_or_default()
}

fn percent_decode(text: &[u8]) -> Bytes {
    if !text.contains(&b'%') {
        return Bytes::copy_from_slice(text);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut decoded = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%'
            && let [hi, lo, ..] = tail
            && let (Some(hi), Some(lo)) = (hex(*hi), hex(*lo))
        {
            decoded.push(hi << 4 | lo);
            rest = &tail[2..];
        } else {
            decoded.push(byte);
            rest = tail;
        }
    }
    Bytes::from(decoded)
}

/// Splits a gRPC response body into messages, whatever DATA frames they arrived in.
#[derive(Debug, Default)]
struct Deframer {
    buffer: BytesMut,
}

/// Why a response body is not a sequence of gRPC messages the host can deliver.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum DeframeError {
    #[error("compressed gRPC messages are not supported (none was asked for)")]
    Compressed,
    #[error("gRPC message of {0} bytes is over the {MAX_GRPC_MESSAGE}-byte limit")]
    TooLarge(usize),
}

impl DeframeError {
    fn status(&self) -> u32 {
        match self {
            Self::Compressed => code::INTERNAL,
            Self::TooLarge(_) => code::RESOURCE_EXHAUSTED,
        }
    }
}

impl Deframer {
    /// Appends received bytes.
    fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next complete message, if one has arrived.
    fn next_message(&mut self) -> Result<Option<Bytes>, DeframeError> {
        let Some(prefix) = self.buffer.get(..5) else {
            return Ok(None);
        };
        if prefix[0] != 0 {
            return Err(DeframeError::Compressed);
        }
        let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if length > MAX_GRPC_MESSAGE {
            return Err(DeframeError::TooLarge(length));
        }
        if self.buffer.len() < 5 + length {
            return Ok(None);
        }
        self.buffer.advance(5);
        Ok(Some(self.buffer.split_to(length).freeze()))
    }

    /// Whether no partial message is pending.
    fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }
}

/// The value of a pseudo-header.
fn pseudo<'a>(headers: &'a [(Bytes, Bytes)], name: &str) -> Option<&'a Bytes> {
    headers
        .iter()
        .find(|(n, _)| n.as_ref() == name.as_bytes())
        .map(|(_, value)| value)
}

/// A header map of the regular entries of `pairs`; pseudo-headers and invalid names or values
/// are skipped.
fn header_map(pairs: &[(Bytes, Bytes)]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if name.starts_with(b":") {
            continue;
        }
        match (
            HeaderName::from_bytes(name),
            HeaderValue::from_maybe_shared(value.clone()),
        ) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => tracing::debug!(
                name = %String::from_utf8_lossy(name),
                "callout header skipped: invalid name or value"
            ),
        }
    }
    map
}

/// Response headers as the guest sees them: `:status` first.
fn response_head(status: StatusCode, headers: &HeaderMap) -> Vec<(Bytes, Bytes)> {
    let mut head = Vec::with_capacity(headers.len() + 1);
    head.push((
        Bytes::from_static(b":status"),
        Bytes::copy_from_slice(status.as_str().as_bytes()),
    ));
    head.extend(pairs(headers));
    head
}

/// Every entry of a header map, repeated names as separate pairs.
fn pairs(headers: &HeaderMap) -> Vec<(Bytes, Bytes)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                Bytes::copy_from_slice(name.as_str().as_bytes()),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect()
}
