//! Properties (`proxy_get_property`) with Envoy's names and encodings, so filters written for
//! Envoy read the same bytes here: strings raw, integers 8-byte little-endian, booleans one
//! byte, header maps in the pair encoding, times as nanoseconds; an unknown path or a value not
//! known yet (a response code during the request phase) is `NotFound`.
//!
//! | path | value |
//! |---|---|
//! | `request.path` / `url_path` / `query` | path with query / without / the query alone |
//! | `request.method`, `host`, `scheme`, `protocol`, `id`, `referer`, `useragent` | strings |
//! | `request.headers`, `response.headers`, `response.trailers` | header maps (with `:authority`, `:path`, `:method`, `:scheme` / `:status`, as the header-map functions show them) |
//! | `request.time` | timestamp (ns) |
//! | `request.duration` | duration (ns) from `request.time` to the end of the request; `NotFound` until it ended (in `on_done` / `on_log`) |
//! | `request.size` | integer: the `content-length` when there is a valid one, else the body bytes received so far |
//! | `request.total_size` | integer: body bytes received + header bytes (names and values, pseudo-headers included) |
//! | `response.code` | integer |
//! | `response.size` | integer: body bytes passed on to the client so far (0 before any) |
//! | `response.total_size` | integer: `response.size` + header and trailer bytes |
//! | `xds.cluster_name` | the cluster the request was routed to; `NotFound` until it was |
//! | `source.address` / `destination.address` | `ip:port`; `.port` as integer |
//! | `connection.mtls` | bool; `connection.tls_version` (`TLSv1.3`) |
//! | `connection.uri_san_peer_certificate`, `dns_san_peer_certificate`, `subject_peer_certificate` | the verified peer's first URI SAN (a SPIFFE ID), first DNS SAN, subject |
//! | `plugin_name`, `plugin_root_id`, `plugin_vm_id` | strings |
//! | anything a filter stored with `proxy_set_property` | its bytes, per stream |
//!
//! weft's own: **`weft.upstream_cluster`** — a filter sets it (`set_property`) to choose the
//! cluster a request goes to; it reads back what a filter set, else (once routed) the cluster
//! the request went to, as `xds.cluster_name` does; **`weft.peer_principal`** — the verified peer's identity (URI SAN,
//! else DNS SAN).
//!
//! Lookups are made for one plugin, on one stream ([`Properties::for_stream`]) or on a root
//! context, where there is no stream ([`Properties::for_root`]): the `plugin_*` properties and
//! the values set on the root context still read, everything about a stream is `NotFound`.
//! A path is read as NUL-separated segments; a value stored with `proxy_set_property` is kept
//! under its segments joined with `.`.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, Version};
use weft_abi::{
    Status, encode_map, encode_property_bool, encode_property_duration, encode_property_i64,
    encode_property_timestamp,
};

use super::context::StreamData;

/// The values filters set with `proxy_set_property`, by dotted path: a few per stream, named
/// by the filters, so hashed with foldhash rather than SipHash.
pub type PropertyMap = HashMap<String, Bytes, foldhash::fast::RandomState>;

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

/// Everything a property can be read from, for one plugin and (on a stream context) one
/// stream.
pub struct Properties<'a> {
    /// The stream, on a stream context.
    pub stream: Option<&'a StreamData>,
    /// The plugin asking.
    pub plugin: &'a PluginIdentity,
    /// Values set with `proxy_set_property` (on the stream, or on the root context), by dotted
    /// path.
    pub stored: &'a PropertyMap,
}

impl<'a> Properties<'a> {
    /// Lookups on `stream`, with the values filters stored on it.
    pub fn for_stream(stream: &'a StreamData, plugin: &'a PluginIdentity) -> Self {
        Self {
            stream: Some(stream),
            plugin,
            stored: &stream.properties,
        }
    }

    /// Lookups on a root context: no stream, the values stored on the root context.
    pub fn for_root(plugin: &'a PluginIdentity, stored: &'a PropertyMap) -> Self {
        Self {
            stream: None,
            plugin,
            stored,
        }
    }

    /// The value at `path` (segments, as `proxy_get_property` splits them on NUL).
    pub fn get(&self, path: &[&[u8]]) -> Result<Vec<u8>, Status> {
        // Matched as bytes: a path that is not UTF-8 matches nothing, as before, without a
        // check per segment on every read.
        let value = match path {
            [b"request", field] => self.request_field(field),
            [b"response", field] => self.response_field(field),
            [b"source", field] => self.stream.and_then(|s| address(s.downstream.peer, field)),
            [b"destination", field] => self.stream.and_then(|s| address(s.downstream.local, field)),
            [b"connection", field] => self.connection_field(field),
            [b"plugin_name"] => Some(self.plugin.name.clone().into_bytes()),
            [b"plugin_root_id"] => Some(self.plugin.root_id.clone().into_bytes()),
            [b"plugin_vm_id"] => Some(self.plugin.vm_id.clone().into_bytes()),
            [b"xds", b"cluster_name"] => self.routed_cluster(),
            [b"weft", b"upstream_cluster"] => self
                .stored
                .get(UPSTREAM_CLUSTER)
                .map(|v| v.to_vec())
                .or_else(|| self.routed_cluster()),
            [b"weft", b"peer_principal"] => self
                .peer()
                .and_then(|p| p.principal.clone())
                .map(String::into_bytes),
            _ => None,
        };
        value
            .or_else(|| self.stored_value(path))
            .ok_or(Status::NotFound)
    }

    /// What a filter stored at `path` with `proxy_set_property`, kept under the segments
    /// joined with `.`.
    fn stored_value(&self, path: &[&[u8]]) -> Option<Vec<u8>> {
        if self.stored.is_empty() {
            return None;
        }
        let dotted = path.join(&b'.');
        let key = std::str::from_utf8(&dotted).ok()?;
        self.stored.get(key).map(|v| v.to_vec())
    }

    fn request_field(&self, field: &[u8]) -> Option<Vec<u8>> {
        let stream = self.stream?;
        let header = |name: http::HeaderName| {
            stream
                .request_headers
                .get(name)
                .map(|v| v.as_bytes().to_vec())
        };
        let path = &stream.path[..];
        let query_at = || path.iter().position(|&b| b == b'?');
        Some(match field {
            b"path" => path.to_vec(),
            b"url_path" => path[..query_at().unwrap_or(path.len())].to_vec(),
            b"query" => query_at().map_or(Vec::new(), |at| path[at + 1..].to_vec()),
            b"method" => stream.method.as_str().as_bytes().to_vec(),
            b"host" if stream.authority.is_empty() => return None,
            b"host" => stream.authority.as_bytes().to_vec(),
            b"scheme" => stream.scheme.as_bytes().to_vec(),
            b"protocol" => protocol(stream.version).as_bytes().to_vec(),
            b"id" => return header(http::HeaderName::from_static("x-request-id")),
            b"referer" => return header(http::header::REFERER),
            b"useragent" => return header(http::header::USER_AGENT),
            b"headers" => {
                let mut pairs: Vec<(&[u8], &[u8])> = vec![
                    (b":authority", stream.authority.as_bytes()),
                    (b":path", path),
                    (b":method", stream.method.as_str().as_bytes()),
                    (b":scheme", stream.scheme.as_bytes()),
                ];
                pairs.extend(fields(&stream.request_headers));
                encode_map(&pairs)
            }
            b"time" => encode_property_timestamp(stream.started).to_vec(),
            b"duration" => encode_property_duration(stream.duration?).to_vec(),
            b"size" => {
                let declared = stream
                    .request_headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                integer(declared.unwrap_or(stream.request_body_bytes))
            }
            b"total_size" => integer(
                stream
                    .request_body_bytes
                    .saturating_add(request_header_bytes(stream)),
            ),
            _ => return None,
        })
    }

    fn response_field(&self, field: &[u8]) -> Option<Vec<u8>> {
        let stream = self.stream?;
        match field {
            b"size" => return Some(integer(stream.response_body_bytes)),
            b"total_size" => {
                let head = stream.response.as_ref().map_or(0, |r| {
                    (":status".len() + 3) as u64 + header_bytes(&r.headers)
                });
                let trailers = stream.response_trailers.as_ref().map_or(0, header_bytes);
                return Some(integer(
                    stream
                        .response_body_bytes
                        .saturating_add(head)
                        .saturating_add(trailers),
                ));
            }
            _ => {}
        }
        let response = stream.response.as_ref()?;
        Some(match field {
            b"code" => encode_property_i64(i64::from(response.status.as_u16())).to_vec(),
            b"headers" => {
                let mut pairs: Vec<(&[u8], &[u8])> =
                    vec![(b":status", response.status.as_str().as_bytes())];
                pairs.extend(fields(&response.headers));
                encode_map(&pairs)
            }
            b"trailers" => {
                let pairs: Vec<_> = fields(stream.response_trailers.as_ref()?).collect();
                encode_map(&pairs)
            }
            _ => return None,
        })
    }

    fn connection_field(&self, field: &[u8]) -> Option<Vec<u8>> {
        let tls = self.stream?.downstream.tls.as_ref();
        Some(match field {
            b"mtls" => encode_property_bool(self.peer().is_some()).to_vec(),
            b"tls_version" => tls?.version.as_bytes().to_vec(),
            b"uri_san_peer_certificate" => self.peer()?.uri_sans.first()?.clone().into_bytes(),
            b"dns_san_peer_certificate" => self.peer()?.dns_sans.first()?.clone().into_bytes(),
            b"subject_peer_certificate" => self.peer()?.subject.clone().into_bytes(),
            _ => return None,
        })
    }

    fn routed_cluster(&self) -> Option<Vec<u8>> {
        Some(self.stream?.cluster.as_deref()?.as_bytes().to_vec())
    }

    fn peer(&self) -> Option<&crate::tls::PeerIdentity> {
        self.stream?.downstream.tls.as_ref()?.peer.as_ref()
    }
}

fn address(addr: std::net::SocketAddr, field: &[u8]) -> Option<Vec<u8>> {
    match field {
        b"address" => Some(address_bytes(addr)),
        b"port" => Some(encode_property_i64(i64::from(addr.port())).to_vec()),
        _ => None,
    }
}

/// `ip:port` (`[ip]:port` for IPv6), as `SocketAddr` displays it. An IPv4 address, the common
/// case, is written number by number with `itoa`: formatting through `Display` costs ten times
/// as much, on a property a rate limit reads on every request.
fn address_bytes(addr: std::net::SocketAddr) -> Vec<u8> {
    let std::net::SocketAddr::V4(v4) = addr else {
        return addr.to_string().into_bytes();
    };
    let mut digits = itoa::Buffer::new();
    let mut out = Vec::with_capacity(21);
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(digits.format(octet).as_bytes());
    }
    out.push(b':');
    out.extend_from_slice(digits.format(v4.port()).as_bytes());
    out
}

/// An integer property, saturating at `i64::MAX`.
fn integer(value: u64) -> Vec<u8> {
    encode_property_i64(i64::try_from(value).unwrap_or(i64::MAX)).to_vec()
}

/// The request's header bytes as Envoy counts them: every name and value, the pseudo-headers
/// included.
fn request_header_bytes(stream: &StreamData) -> u64 {
    let pseudo = ":authority".len()
        + stream.authority.len()
        + ":path".len()
        + stream.path.len()
        + ":method".len()
        + stream.method.as_str().len()
        + ":scheme".len()
        + stream.scheme.len();
    pseudo as u64 + header_bytes(&stream.request_headers)
}

/// The bytes of `map`'s names and values.
fn header_bytes(map: &HeaderMap) -> u64 {
    map.iter()
        .map(|(k, v)| (k.as_str().len() + v.len()) as u64)
        .sum()
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

fn fields(map: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    map.iter()
        .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
}

#[cfg(test)]
mod tests;
