//! The views a filter's phases get: [`Request`], [`Response`], [`Log`] and a callout's
//! [`CallResponse`]. They are thin handles: every read and write is a host call on the stream
//! the phase runs for.

use std::time::Duration;

use weft_abi::{Action, BufferType, MapType};

use crate::error::Result;
use crate::ffi::host;
use crate::host::{encoded_i64, encoded_string, text};

/// The property a filter sets to choose the upstream cluster (weft's routing).
pub const UPSTREAM_CLUSTER: &[&str] = &["weft", "upstream_cluster"];
/// The property with the verified mTLS identity (SPIFFE URI) of the downstream peer.
pub const PEER_PRINCIPAL: &[&str] = &["weft", "peer_principal"];

// The properties the views read, in the ABI's encoding (segments joined by NUL): no encoding
// per read. A test below checks each against its segments.
const UPSTREAM_CLUSTER_PATH: &[u8] = b"weft\0upstream_cluster";
const PEER_PRINCIPAL_PATH: &[u8] = b"weft\0peer_principal";
const SOURCE_ADDRESS: &[u8] = b"source\0address";
const RESPONSE_CODE: &[u8] = b"response\0code";
const REQUEST_DURATION: &[u8] = b"request\0duration";
const REQUEST_SIZE: &[u8] = b"request\0size";
const RESPONSE_SIZE: &[u8] = b"response\0size";
const CLUSTER_NAME: &[u8] = b"xds\0cluster_name";

fn get(map: MapType, name: &str) -> Result<Option<String>> {
    Ok(host(|h| h.get_map_value(map, name))?.map(text))
}

fn all(map: MapType) -> Result<Vec<(String, String)>> {
    let pairs = host(|h| h.get_map(map))?;
    Ok(pairs.into_iter().map(|(k, v)| (k, text(v))).collect())
}

fn reply(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<Action> {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    host(|h| h.send_local_response(u32::from(status), "weft_sdk_local_reply", body, &headers))?;
    Ok(Action::Pause)
}

fn body(kind: BufferType, size: usize) -> Result<Vec<u8>> {
    if size == 0 {
        return Ok(Vec::new());
    }
    host(|h| h.get_buffer(kind, 0, size))
}

/// The request, in a request phase (headers or body) or a callout's answer.
#[derive(Debug, Default)]
pub struct Request {
    pub(crate) body_size: usize,
    pub(crate) end_of_stream: bool,
    pub(crate) delay: Option<Duration>,
}

impl Request {
    /// The first value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Result<Option<String>> {
        get(MapType::HttpRequestHeaders, name)
    }

    /// Every header, pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`) first.
    pub fn headers(&self) -> Result<Vec<(String, String)>> {
        all(MapType::HttpRequestHeaders)
    }

    /// Sets header `name` to `value`, replacing every earlier value.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<()> {
        host(|h| h.replace_map_value(MapType::HttpRequestHeaders, name, value.as_bytes()))
    }

    /// Adds a value for header `name`, keeping earlier ones.
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<()> {
        host(|h| h.add_map_value(MapType::HttpRequestHeaders, name, value.as_bytes()))
    }

    /// Removes header `name`.
    pub fn remove_header(&mut self, name: &str) -> Result<()> {
        host(|h| h.remove_map_value(MapType::HttpRequestHeaders, name))
    }

    /// `:method`.
    pub fn method(&self) -> Result<String> {
        Ok(self.header(":method")?.unwrap_or_default())
    }

    /// `:path`, with the query.
    pub fn path(&self) -> Result<String> {
        Ok(self.header(":path")?.unwrap_or_default())
    }

    /// Rewrites `:path` (what the upstream sees).
    pub fn set_path(&mut self, path: &str) -> Result<()> {
        self.set_header(":path", path)
    }

    /// `:authority` (the `Host` header on HTTP/1.1).
    pub fn authority(&self) -> Result<Option<String>> {
        self.header(":authority")
    }

    /// The body bytes this phase sees (empty in the headers phase).
    pub fn body(&self) -> Result<Vec<u8>> {
        body(BufferType::HttpRequestBody, self.body_size)
    }

    /// Replaces the body bytes this phase sees.
    pub fn set_body(&mut self, body: &[u8]) -> Result<()> {
        host(|h| h.set_buffer(BufferType::HttpRequestBody, 0, self.body_size, body))?;
        self.body_size = body.len();
        Ok(())
    }

    /// Whether nothing follows what this phase sees.
    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    /// Answers the request here: the upstream is never reached and the rest of the chain is
    /// skipped. Return the [`Action`] it gives.
    pub fn respond(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Action> {
        reply(status, headers, body)
    }

    /// The downstream's verified mTLS identity (its SPIFFE URI), if it presented one.
    pub fn peer_principal(&self) -> Result<Option<String>> {
        encoded_string(PEER_PRINCIPAL_PATH)
    }

    /// The downstream's address, `ip:port`.
    pub fn client_address(&self) -> Result<Option<String>> {
        encoded_string(SOURCE_ADDRESS)
    }

    /// Sends the request to cluster `name` (weft's `weft.upstream_cluster` property).
    pub fn set_cluster(&mut self, name: &str) -> Result<()> {
        host(|h| h.set_property(UPSTREAM_CLUSTER_PATH, name.as_bytes()))
    }

    /// The cluster a filter chose so far, if any.
    pub fn cluster(&self) -> Result<Option<String>> {
        encoded_string(UPSTREAM_CLUSTER_PATH)
    }

    /// Holds the request for `duration` without blocking anything else, then lets it go on
    /// (or not: see [`Filter::on_delay_elapsed`](crate::Filter::on_delay_elapsed)). Return
    /// the [`Action`] it gives.
    pub fn delay(&mut self, duration: Duration) -> Action {
        self.delay = Some(duration);
        Action::Pause
    }
}

/// The response, in a response phase (headers or body).
#[derive(Debug, Default)]
pub struct Response {
    pub(crate) body_size: usize,
    pub(crate) end_of_stream: bool,
}

impl Response {
    /// `:status`, if the host has it as a number.
    pub fn status(&self) -> Result<Option<u16>> {
        Ok(get(MapType::HttpResponseHeaders, ":status")?.and_then(|s| s.parse().ok()))
    }

    /// The first value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Result<Option<String>> {
        get(MapType::HttpResponseHeaders, name)
    }

    /// Every header, `:status` first.
    pub fn headers(&self) -> Result<Vec<(String, String)>> {
        all(MapType::HttpResponseHeaders)
    }

    /// Sets header `name` to `value`, replacing every earlier value.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<()> {
        host(|h| h.replace_map_value(MapType::HttpResponseHeaders, name, value.as_bytes()))
    }

    /// Adds a value for header `name`, keeping earlier ones.
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<()> {
        host(|h| h.add_map_value(MapType::HttpResponseHeaders, name, value.as_bytes()))
    }

    /// Removes header `name`.
    pub fn remove_header(&mut self, name: &str) -> Result<()> {
        host(|h| h.remove_map_value(MapType::HttpResponseHeaders, name))
    }

    /// The body bytes this phase sees (empty in the headers phase).
    pub fn body(&self) -> Result<Vec<u8>> {
        body(BufferType::HttpResponseBody, self.body_size)
    }

    /// Replaces the body bytes this phase sees.
    pub fn set_body(&mut self, body: &[u8]) -> Result<()> {
        host(|h| h.set_buffer(BufferType::HttpResponseBody, 0, self.body_size, body))?;
        self.body_size = body.len();
        Ok(())
    }

    /// Whether nothing follows what this phase sees.
    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    /// Replaces the response with a local one (in the response headers phase).
    pub fn respond(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Action> {
        reply(status, headers, body)
    }
}

/// The finished exchange, in [`Filter::on_log`](crate::Filter::on_log): what an access log or
/// a metric needs.
#[derive(Debug, Default)]
pub struct Log {
    _private: (),
}

impl Log {
    /// The first value of request header `name`.
    pub fn request_header(&self, name: &str) -> Result<Option<String>> {
        get(MapType::HttpRequestHeaders, name)
    }

    /// The first value of response header `name`.
    pub fn response_header(&self, name: &str) -> Result<Option<String>> {
        get(MapType::HttpResponseHeaders, name)
    }

    /// The response status, if there was a response.
    pub fn status(&self) -> Result<Option<u16>> {
        Ok(encoded_i64(RESPONSE_CODE)?.and_then(|code| u16::try_from(code).ok()))
    }

    /// How long the exchange took, if the host knows.
    pub fn duration(&self) -> Result<Option<Duration>> {
        Ok(encoded_i64(REQUEST_DURATION)?
            .map(|nanos| Duration::from_nanos(nanos.max(0).unsigned_abs())))
    }

    /// Request body bytes received.
    pub fn request_size(&self) -> Result<Option<u64>> {
        self.size(REQUEST_SIZE)
    }

    /// Response body bytes sent.
    pub fn response_size(&self) -> Result<Option<u64>> {
        self.size(RESPONSE_SIZE)
    }

    fn size(&self, path: &[u8]) -> Result<Option<u64>> {
        Ok(encoded_i64(path)?.map(|n| n.max(0).unsigned_abs()))
    }

    /// The upstream cluster the request went to.
    pub fn cluster(&self) -> Result<Option<String>> {
        match encoded_string(CLUSTER_NAME)? {
            Some(name) => Ok(Some(name)),
            None => encoded_string(UPSTREAM_CLUSTER_PATH),
        }
    }

    /// The downstream's verified mTLS identity, if any.
    pub fn peer_principal(&self) -> Result<Option<String>> {
        encoded_string(PEER_PRINCIPAL_PATH)
    }
}

/// The answer to an [`HttpCall`](crate::HttpCall).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallResponse {
    /// The status; `None` when the call failed (refused, reset or timed out).
    pub status: Option<u16>,
    /// The headers, `:status` included.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl CallResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads the answer the host delivers in `proxy_on_http_call_response`.
    pub(crate) fn read(headers: usize, body_size: usize) -> Result<CallResponse> {
        let headers = if headers == 0 {
            Vec::new()
        } else {
            all(MapType::HttpCallResponseHeaders)?
        };
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse().ok());
        let body = body(BufferType::HttpCallResponseBody, body_size)?;
        Ok(CallResponse {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_paths_are_their_segments_joined_by_nul() {
        let join = |segments: &[&str]| weft_abi::join_property_path(segments);
        assert_eq!(UPSTREAM_CLUSTER_PATH, join(UPSTREAM_CLUSTER));
        assert_eq!(PEER_PRINCIPAL_PATH, join(PEER_PRINCIPAL));
        assert_eq!(SOURCE_ADDRESS, join(&["source", "address"]));
        assert_eq!(RESPONSE_CODE, join(&["response", "code"]));
        assert_eq!(REQUEST_DURATION, join(&["request", "duration"]));
        assert_eq!(REQUEST_SIZE, join(&["request", "size"]));
        assert_eq!(RESPONSE_SIZE, join(&["response", "size"]));
        assert_eq!(CLUSTER_NAME, join(&["xds", "cluster_name"]));
    }
}
