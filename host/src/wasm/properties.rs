//! Properties (`proxy_get_property`) with Envoy's names and encodings, so filters written for
//! Envoy read the same bytes here: strings raw, integers 8-byte little-endian, booleans one
//! byte, header maps in the pair encoding, times as nanoseconds; an unknown path or a value not
//! known yet (a response code during the request phase) is `NotFound`.
//!
//! | path | value |
//! |---|---|
//! | `request.path` / `url_path` / `query` | path with query / without / the query alone |
//! | `request.method`, `host`, `scheme`, `protocol`, `id`, `referer`, `useragent` | strings |
//! | `request.headers`, `response.headers`, `response.trailers` | header maps |
//! | `request.time` | timestamp (ns) |
//! | `response.code` | integer |
//! | `source.address` / `destination.address` | `ip:port`; `.port` as integer |
//! | `connection.mtls` | bool; `connection.tls_version` (`TLSv1.3`) |
//! | `connection.uri_san_peer_certificate`, `dns_san_peer_certificate`, `subject_peer_certificate` | the verified peer's first URI SAN (a SPIFFE ID), first DNS SAN, subject |
//! | `plugin_name`, `plugin_root_id`, `plugin_vm_id` | strings |
//! | anything a filter stored with `proxy_set_property` | its bytes, per stream |
//!
//! weft's own: **`weft.upstream_cluster`** — a filter sets it (`set_property`) to choose the
//! cluster a request goes to; **`weft.peer_principal`** — the verified peer's identity (URI SAN,
//! else DNS SAN).

use std::{collections::HashMap, time::SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Uri, Version};
use weft_abi::{
    Status, encode_map, encode_property_bool, encode_property_i64, encode_property_timestamp,
};

use crate::http::proxy::Downstream;

/// The property a filter sets to route a request to a cluster.
pub const UPSTREAM_CLUSTER: &str = "weft.upstream_cluster";

/// The plugin a property lookup is made for.
#[derive(Debug, Clone)]
pub struct PluginIdentity {
    /// Filter instance name.
    pub name: String,
    /// Root id.
    pub root_id: String,
    /// VM id.
    pub vm_id: String,
}

/// The request as the filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// Target (path and query).
    pub uri: &'a Uri,
    /// Protocol version.
    pub version: Version,
    /// Headers (the host is `host` or the URI's authority).
    pub headers: &'a HeaderMap,
    /// When the request started.
    pub time: SystemTime,
}

/// The response, once there is one.
#[derive(Debug, Clone, Copy)]
pub struct ResponseView<'a> {
    /// Status code.
    pub code: u16,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// Trailers, when they have arrived.
    pub trailers: Option<&'a HeaderMap>,
}

/// Everything a property can be read from, for one stream and one plugin.
pub struct Properties<'a> {
    /// The downstream connection.
    pub downstream: &'a Downstream,
    /// The request, when in an HTTP stream.
    pub request: Option<RequestView<'a>>,
    /// The response, once its headers arrived.
    pub response: Option<ResponseView<'a>>,
    /// The plugin asking.
    pub plugin: &'a PluginIdentity,
    /// Values set with `proxy_set_property` on this stream, by dotted path.
    pub stored: &'a HashMap<String, Bytes>,
}

impl Properties<'_> {
    /// The value at `path` (segments, as `proxy_get_property` splits them on NUL).
    pub fn get(&self, path: &[&[u8]]) -> Result<Vec<u8>, Status> {
        let segments: Vec<&str> = path
            .iter()
            .map(|s| std::str::from_utf8(s))
            .collect::<Result<_, _>>()
            .map_err(|_| Status::NotFound)?;
        let value = match segments.as_slice() {
            ["request", field] => self.request_field(field),
            ["response", field] => self.response_field(field),
            ["source", field] => address(self.downstream.peer, field),
            ["destination", field] => address(self.downstream.local, field),
            ["connection", field] => self.connection_field(field),
            ["plugin_name"] => Some(self.plugin.name.clone().into_bytes()),
            ["plugin_root_id"] => Some(self.plugin.root_id.clone().into_bytes()),
            ["plugin_vm_id"] => Some(self.plugin.vm_id.clone().into_bytes()),
            ["weft", "peer_principal"] => self
                .peer()
                .and_then(|p| p.principal.clone())
                .map(String::into_bytes),
            _ => None,
        };
        value
            .or_else(|| self.stored.get(&segments.join(".")).map(|v| v.to_vec()))
            .ok_or(Status::NotFound)
    }

    fn request_field(&self, field: &str) -> Option<Vec<u8>> {
        let request = self.request?;
        let header =
            |name: http::HeaderName| request.headers.get(name).map(|v| v.as_bytes().to_vec());
        Some(match field {
            "path" => request
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes()
                .to_vec(),
            "url_path" => request.uri.path().as_bytes().to_vec(),
            "query" => request.uri.query().unwrap_or("").as_bytes().to_vec(),
            "method" => request.method.as_str().as_bytes().to_vec(),
            "host" => {
                return header(http::header::HOST).or_else(|| {
                    request
                        .uri
                        .authority()
                        .map(|a| a.as_str().as_bytes().to_vec())
                });
            }
            "scheme" => self.downstream.scheme().as_bytes().to_vec(),
            "protocol" => protocol(request.version).as_bytes().to_vec(),
            "id" => return header(http::HeaderName::from_static("x-request-id")),
            "referer" => return header(http::header::REFERER),
            "useragent" => return header(http::header::USER_AGENT),
            "headers" => headers(request.headers),
            "time" => encode_property_timestamp(request.time).to_vec(),
            _ => return None,
        })
    }

    fn response_field(&self, field: &str) -> Option<Vec<u8>> {
        let response = self.response?;
        Some(match field {
            "code" => encode_property_i64(i64::from(response.code)).to_vec(),
            "headers" => headers(response.headers),
            "trailers" => headers(response.trailers?),
            _ => return None,
        })
    }

    fn connection_field(&self, field: &str) -> Option<Vec<u8>> {
        let tls = self.downstream.tls.as_ref();
        Some(match field {
            "mtls" => encode_property_bool(self.peer().is_some()).to_vec(),
            "tls_version" => tls?.version.as_bytes().to_vec(),
            "uri_san_peer_certificate" => self.peer()?.uri_sans.first()?.clone().into_bytes(),
            "dns_san_peer_certificate" => self.peer()?.dns_sans.first()?.clone().into_bytes(),
            "subject_peer_certificate" => self.peer()?.subject.clone().into_bytes(),
            _ => return None,
        })
    }

    fn peer(&self) -> Option<&crate::tls::PeerIdentity> {
        self.downstream.tls.as_ref()?.peer.as_ref()
    }
}

fn address(addr: std::net::SocketAddr, field: &str) -> Option<Vec<u8>> {
    match field {
        "address" => Some(addr.to_string().into_bytes()),
        "port" => Some(encode_property_i64(i64::from(addr.port())).to_vec()),
        _ => None,
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn headers(map: &HeaderMap) -> Vec<u8> {
    let pairs: Vec<(&[u8], &[u8])> = map
        .iter()
        .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
        .collect();
    encode_map(&pairs)
}

#[cfg(test)]
mod tests;
