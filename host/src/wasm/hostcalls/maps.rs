//! Header maps (`proxy_*_header_map_*`): the request and response headers and trailers of the
//! stream the effective context is on, and the headers and trailers of the callout answer the
//! current call delivers.
//!
//! Behaviour follows Envoy (`source/extensions/common/wasm/context.cc`):
//!
//! - `HttpRequestHeaders` is `:authority`, `:path`, `:method`, `:scheme`, then the request
//!   headers; `HttpResponseHeaders` is `:status`, then the response headers. Writing a
//!   pseudo-header updates the stream's field (`:path`, `:method`, `:authority`, `:scheme`,
//!   `:status`); removing one is `Ok` and changes nothing. weft keeps `Host` out of the header
//!   map, so the key `host` is `:authority` there.
//! - Keys are matched lowercased. A key with several values reads as the values joined
//!   with `,`; a missing key is `NotFound`.
//! - A map that is not available now — no stream for the effective context, response headers
//!   before the response, callout maps outside a delivery, any write to a callout map — is
//!   `BadArgument`, except `proxy_get_header_map_pairs`, which answers an empty map then, as
//!   Envoy's `getHeaderMapPairs` does.
//! - Trailers that have not arrived read as an empty map; adding or replacing one creates them.
//! - An invalid name or value, or a malformed encoded map, is `BadArgument`. A map grown past
//!   [`MAX_MAP_BYTES`] of names and values traps: a guest may not exhaust host memory.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, uri::PathAndQuery};
use weft_abi::{HOST_MODULE, MapLimits, MapType, Status, decode_map_limited, encode_map};

use super::memory::{
    Ctx, Fault, HostLinker, HostResult, copy_to_guest, finish, read, slice, state, with_memory,
    write_u32,
};
use crate::wasm::context::{HostData, ResponseHead, StreamData};

/// The most bytes of names and values a guest may grow one header map to (Envoy's limit on a
/// map a guest hands the host).
pub(super) const MAX_MAP_BYTES: usize = MapLimits::ENVOY.max_bytes;

/// Defines the seven header-map functions.
pub(super) fn add_to_linker(linker: &mut HostLinker) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        "proxy_get_header_map_pairs",
        |caller: Ctx<'_>, map: u32, ptr_ptr: u32, size_ptr: u32| {
            finish(get_pairs_abi(caller, map, ptr_ptr, size_ptr))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_get_header_map_value",
        |caller: Ctx<'_>, map: u32, key: u32, key_size: u32, ptr_ptr: u32, size_ptr: u32| {
            finish(get_value_abi(caller, map, key, key_size, ptr_ptr, size_ptr))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_get_header_map_size",
        |mut caller: Ctx<'_>, map: u32, size_ptr: u32| {
            finish(map_type(map).and_then(|map| {
                let size = size(state(&mut caller), map)?;
                write_u32(&mut caller, size_ptr, size)
            }))
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "proxy_set_header_map_pairs",
        |mut caller: Ctx<'_>, map: u32, ptr: u32, size: u32| {
            finish((|| -> HostResult {
                let map = map_type(map)?;
                let encoded = read(&mut caller, ptr, size)?;
                set_pairs(state(&mut caller), map, &encoded)
            })())
        },
    )?;
    for (name, op) in [
        ("proxy_add_header_map_value", Op::Add),
        ("proxy_replace_header_map_value", Op::Replace),
    ] {
        linker.func_wrap(
            HOST_MODULE,
            name,
            move |mut caller: Ctx<'_>,
                  map: u32,
                  key: u32,
                  key_size: u32,
                  value: u32,
                  value_size: u32| {
                finish((|| -> HostResult {
                    let map = map_type(map)?;
                    with_memory(&mut caller, |view, data| {
                        let key = slice(view, key, key_size)?;
                        let value = slice(view, value, value_size)?;
                        write_value(data, map, key, op, value)
                    })?
                })())
            },
        )?;
    }
    linker.func_wrap(
        HOST_MODULE,
        "proxy_remove_header_map_value",
        |mut caller: Ctx<'_>, map: u32, key: u32, key_size: u32| {
            finish((|| -> HostResult {
                let map = map_type(map)?;
                with_memory(&mut caller, |view, data| {
                    write_value(data, map, slice(view, key, key_size)?, Op::Remove, &[])
                })?
            })())
        },
    )?;
    Ok(())
}

fn map_type(raw: u32) -> Result<MapType, Status> {
    MapType::try_from(raw).map_err(|_| Status::BadArgument)
}

fn get_pairs_abi(mut caller: Ctx<'_>, map: u32, ptr_ptr: u32, size_ptr: u32) -> HostResult {
    let encoded = get_pairs(state(&mut caller), map_type(map)?);
    copy_to_guest(caller, &encoded, ptr_ptr, size_ptr)
}

fn get_value_abi(
    mut caller: Ctx<'_>,
    map: u32,
    key: u32,
    key_size: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> HostResult {
    let map = map_type(map)?;
    let value = with_memory(&mut caller, |view, data| {
        get_value(data, map, slice(view, key, key_size)?)
    })??;
    copy_to_guest(caller, &value, ptr_ptr, size_ptr)
}

/// A map as it reads now.
enum View<'a> {
    Request(&'a StreamData),
    Response(&'a ResponseHead),
    Fields(&'a HeaderMap),
    Pairs(&'a [(Bytes, Bytes)]),
    Empty,
}

fn view(data: &mut HostData, map: MapType) -> Result<View<'_>, Status> {
    use MapType::*;
    match map {
        HttpCallResponseHeaders | GrpcReceiveInitialMetadata => data
            .delivery
            .as_ref()
            .map(|d| View::Pairs(&d.headers))
            .ok_or(Status::BadArgument),
        HttpCallResponseTrailers | GrpcReceiveTrailingMetadata => data
            .delivery
            .as_ref()
            .map(|d| View::Pairs(&d.trailers))
            .ok_or(Status::BadArgument),
        HttpRequestHeaders | HttpRequestTrailers | HttpResponseHeaders | HttpResponseTrailers => {
            let stream: &StreamData = data.current_stream().ok_or(Status::BadArgument)?;
            Ok(match map {
                HttpRequestHeaders => View::Request(stream),
                HttpRequestTrailers => stream
                    .request_trailers
                    .as_ref()
                    .map_or(View::Empty, View::Fields),
                HttpResponseHeaders => {
                    View::Response(stream.response.as_ref().ok_or(Status::BadArgument)?)
                }
                _ => {
                    if stream.response.is_none() {
                        return Err(Status::BadArgument);
                    }
                    stream
                        .response_trailers
                        .as_ref()
                        .map_or(View::Empty, View::Fields)
                }
            })
        }
    }
}

impl View<'_> {
    /// Every pair, pseudo-headers first.
    fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        match self {
            View::Request(stream) => {
                let mut pairs: Vec<(&[u8], &[u8])> = vec![
                    (b":authority", stream.authority.as_bytes()),
                    (b":path", &stream.path),
                    (b":method", stream.method.as_str().as_bytes()),
                    (b":scheme", stream.scheme.as_bytes()),
                ];
                pairs.extend(fields(&stream.request_headers));
                pairs
            }
            View::Response(response) => {
                let mut pairs: Vec<(&[u8], &[u8])> =
                    vec![(b":status", response.status.as_str().as_bytes())];
                pairs.extend(fields(&response.headers));
                pairs
            }
            View::Fields(map) => fields(map).collect(),
            View::Pairs(pairs) => pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect(),
            View::Empty => Vec::new(),
        }
    }
}

impl View<'_> {
    /// Calls `f` with each value of `key` as [`canonical`] leaves it (`name`, when it is a
    /// header name; a pseudo-header lowercase; any case for the callout maps, matched without
    /// regard to case), in the order [`View::pairs`] has them, looking the key up instead of
    /// going through every pair.
    fn each_value(&self, key: &[u8], name: Option<&HeaderName>, mut f: impl FnMut(&[u8])) {
        let fields = match self {
            View::Request(stream) => {
                match key {
                    b":authority" => f(stream.authority.as_bytes()),
                    b":path" => f(&stream.path),
                    b":method" => f(stream.method.as_str().as_bytes()),
                    b":scheme" => f(stream.scheme.as_bytes()),
                    _ => {}
                }
                &stream.request_headers
            }
            View::Response(response) => {
                if key == b":status" {
                    f(response.status.as_str().as_bytes());
                }
                &response.headers
            }
            View::Fields(map) => map,
            View::Pairs(pairs) => {
                for (name, value) in pairs.iter() {
                    if name.eq_ignore_ascii_case(key) {
                        f(value);
                    }
                }
                return;
            }
            View::Empty => return,
        };
        // A key that is no header name (a pseudo-header, invalid bytes) names no field.
        if let Some(name) = name {
            for value in fields.get_all(name) {
                f(value.as_bytes());
            }
        }
    }
}

fn fields(map: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    map.iter()
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
}

/// The key as the maps' lookups take it: a pseudo-header lowercase, and `host` as
/// `:authority` among request headers. A header name is left as it is: `HeaderName` and the
/// header map's lookups lowercase it themselves, so checking it here was the same work twice.
/// Borrowed unless a pseudo-header had uppercase letters.
fn canonical(key: &[u8], request_headers: bool) -> Cow<'_, [u8]> {
    match key {
        [b':', ..] if key.iter().any(u8::is_ascii_uppercase) => {
            Cow::Owned(key.to_ascii_lowercase())
        }
        [b'h' | b'H', _, _, _] if request_headers && key.eq_ignore_ascii_case(b"host") => {
            Cow::Borrowed(b":authority")
        }
        _ => Cow::Borrowed(key),
    }
}

/// The header name `key` spells, from the instance's parsed names, for the stream's maps;
/// `None` for pseudo-headers, invalid names and the callout maps (matched by bytes).
fn header_name(data: &mut HostData, map: MapType, key: &[u8]) -> Option<HeaderName> {
    if !is_stream_map(map) || key.starts_with(b":") {
        return None;
    }
    data.header_names.get(key)
}

/// Whether `map` is one of the stream's header maps (not a callout's).
fn is_stream_map(map: MapType) -> bool {
    use MapType::*;
    matches!(
        map,
        HttpRequestHeaders | HttpRequestTrailers | HttpResponseHeaders | HttpResponseTrailers
    )
}

/// `proxy_get_header_map_pairs`: the encoded map; empty (zero bytes) when the map has no pairs
/// or is not available now.
pub(super) fn get_pairs(data: &mut HostData, map: MapType) -> Vec<u8> {
    match view(data, map) {
        Ok(view) => {
            let pairs = view.pairs();
            if pairs.is_empty() {
                Vec::new()
            } else {
                encode_map(&pairs)
            }
        }
        Err(_) => Vec::new(),
    }
}

/// `proxy_get_header_map_size`: the length of what `proxy_get_header_map_pairs` returns.
pub(super) fn size(data: &mut HostData, map: MapType) -> Result<u32, Status> {
    let view = view(data, map)?;
    let pairs = view.pairs();
    let len = if pairs.is_empty() {
        0
    } else {
        weft_abi::encoded_map_len(pairs)
    };
    u32::try_from(len).map_err(|_| Status::InternalFailure)
}

/// `proxy_get_header_map_value`: the value of `key`, several values joined with `,`.
pub(super) fn get_value(data: &mut HostData, map: MapType, key: &[u8]) -> Result<Vec<u8>, Status> {
    let key = canonical(key, map == MapType::HttpRequestHeaders);
    let name = header_name(data, map, &key);
    let view = view(data, map)?;
    let mut joined: Option<Vec<u8>> = None;
    view.each_value(&key, name.as_ref(), |value| match &mut joined {
        None => joined = Some(value.to_vec()),
        Some(joined) => {
            joined.push(b',');
            joined.extend_from_slice(value);
        }
    });
    joined.ok_or(Status::NotFound)
}

/// A change to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// `proxy_add_header_map_value`: one more value.
    Add,
    /// `proxy_replace_header_map_value`: this value only.
    Replace,
    /// `proxy_remove_header_map_value`: no value.
    Remove,
}

/// A map as it is written.
enum Target<'a> {
    Request(&'a mut StreamData),
    Response(&'a mut ResponseHead),
    Trailers(&'a mut Option<HeaderMap>),
}

fn target(data: &mut HostData, map: MapType) -> Result<Target<'_>, Status> {
    use MapType::*;
    if !is_stream_map(map) {
        return Err(Status::BadArgument);
    }
    let stream = data.current_stream().ok_or(Status::BadArgument)?;
    match map {
        HttpRequestHeaders => Ok(Target::Request(stream)),
        HttpRequestTrailers => Ok(Target::Trailers(&mut stream.request_trailers)),
        HttpResponseHeaders => stream
            .response
            .as_mut()
            .map(Target::Response)
            .ok_or(Status::BadArgument),
        _ if stream.response.is_none() => Err(Status::BadArgument),
        _ => Ok(Target::Trailers(&mut stream.response_trailers)),
    }
}

/// `proxy_add_header_map_value`, `proxy_replace_header_map_value` and
/// `proxy_remove_header_map_value`.
pub(super) fn write_value(
    data: &mut HostData,
    map: MapType,
    key: &[u8],
    op: Op,
    value: &[u8],
) -> HostResult {
    let key = canonical(key, map == MapType::HttpRequestHeaders);
    let name = header_name(data, map, &key);
    let target = target(data, map)?;
    if key.starts_with(b":") {
        if op == Op::Remove {
            // Pseudo-headers cannot be removed; Envoy answers Ok all the same.
            return Ok(());
        }
        if value.len() > MAX_MAP_BYTES {
            return Err(Fault::limit("a header map", MAX_MAP_BYTES));
        }
        return match target {
            Target::Request(stream) => {
                let mut pseudo = RequestPseudo::of(stream);
                pseudo.set(&key, value)?;
                pseudo.store(stream);
                Ok(())
            }
            Target::Response(response) if *key == *b":status" => {
                response.status = status_code(value)?;
                Ok(())
            }
            Target::Response(_) | Target::Trailers(_) => Err(Status::BadArgument.into()),
        };
    }
    let name = match name {
        Some(name) => name,
        // A name that cannot exist is already absent.
        None if op == Op::Remove => return Ok(()),
        None => return Err(Status::BadArgument.into()),
    };
    let fields = match target {
        Target::Request(stream) => &mut stream.request_headers,
        Target::Response(response) => &mut response.headers,
        Target::Trailers(trailers) if op == Op::Remove => match trailers {
            Some(map) => map,
            None => return Ok(()),
        },
        Target::Trailers(trailers) => trailers.get_or_insert_with(HeaderMap::new),
    };
    if op == Op::Remove {
        fields.remove(name);
        return Ok(());
    }
    let value = header_value(value)?;
    if map_bytes(fields).saturating_add(key.len() + value.len()) > MAX_MAP_BYTES {
        return Err(Fault::limit("a header map", MAX_MAP_BYTES));
    }
    let stored = if op == Op::Add {
        fields.try_append(name, value).map(drop)
    } else {
        fields.try_insert(name, value).map(drop)
    };
    stored.map_err(|_| Fault::limit("a header map", MAX_MAP_BYTES))
}

/// The bytes of names and values in `map`.
fn map_bytes(map: &HeaderMap) -> usize {
    map.iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// `proxy_set_header_map_pairs`: replaces the whole map. Pseudo-headers the new map leaves
/// out keep their values.
pub(super) fn set_pairs(data: &mut HostData, map: MapType, encoded: &[u8]) -> HostResult {
    // The decoding limit keeps the new map within `MAX_MAP_BYTES`.
    let pairs = decode_map_limited(encoded, MapLimits::ENVOY).map_err(|_| Status::BadArgument)?;
    let target = target(data, map)?;
    let request = matches!(target, Target::Request(_));
    let mut fields = HeaderMap::new();
    let mut pseudo = Vec::new();
    for (key, value) in pairs {
        let key = canonical(key, request);
        if key.starts_with(b":") {
            pseudo.push((key, value));
        } else {
            let name = HeaderName::from_bytes(&key).map_err(|_| Status::BadArgument)?;
            fields.append(name, header_value(value)?);
        }
    }
    match target {
        Target::Request(stream) => {
            let mut line = RequestPseudo::of(stream);
            for (key, value) in &pseudo {
                line.set(key, value)?;
            }
            line.store(stream);
            stream.request_headers = fields;
        }
        Target::Response(response) => {
            let mut status = response.status;
            for (key, value) in &pseudo {
                if **key != *b":status" {
                    return Err(Status::BadArgument.into());
                }
                status = status_code(value)?;
            }
            response.status = status;
            response.headers = fields;
        }
        Target::Trailers(trailers) => {
            if !pseudo.is_empty() {
                return Err(Status::BadArgument.into());
            }
            *trailers = Some(fields);
        }
    }
    Ok(())
}

/// The request's pseudo-headers, changed on a copy so a bad value changes nothing.
struct RequestPseudo {
    authority: HeaderValue,
    path: Bytes,
    method: Method,
    scheme: &'static str,
}

impl RequestPseudo {
    fn of(stream: &StreamData) -> Self {
        Self {
            authority: stream.authority.clone(),
            path: stream.path.clone(),
            method: stream.method.clone(),
            scheme: stream.scheme,
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), Status> {
        match key {
            b":authority" => self.authority = header_value(value)?,
            b":path" => {
                if value.is_empty() || PathAndQuery::try_from(value).is_err() {
                    return Err(Status::BadArgument);
                }
                self.path = Bytes::copy_from_slice(value);
            }
            b":method" => {
                self.method = Method::from_bytes(value).map_err(|_| Status::BadArgument)?;
            }
            b":scheme" => {
                self.scheme = match value {
                    b"http" => "http",
                    b"https" => "https",
                    _ => return Err(Status::BadArgument),
                };
            }
            _ => return Err(Status::BadArgument),
        }
        Ok(())
    }

    fn store(self, stream: &mut StreamData) {
        stream.authority = self.authority;
        stream.path = self.path;
        stream.method = self.method;
        stream.scheme = self.scheme;
    }
}

fn header_value(value: &[u8]) -> Result<HeaderValue, Status> {
    HeaderValue::from_bytes(value).map_err(|_| Status::BadArgument)
}

fn status_code(value: &[u8]) -> Result<StatusCode, Status> {
    StatusCode::from_bytes(value).map_err(|_| Status::BadArgument)
}
