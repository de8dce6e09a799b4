//! Property paths and values as Envoy encodes them for `proxy_get_property` and
//! `proxy_set_property`.
//!
//! **Paths** are segments joined by NUL: `request.path` is `request\0path`; the Rust SDK's
//! `get_property(vec!["request", "path"])` sends exactly that, without a trailing NUL. A
//! dotted name in one segment (`request.path`) is not the same path — Envoy answers it with
//! `NOT_FOUND`.
//!
//! **Values** carry no type tag; the reader must know the type (Envoy's `serializeValue` in
//! `source/extensions/common/wasm/context.cc`):
//!
//! | type                      | bytes                                                  |
//! |---------------------------|--------------------------------------------------------|
//! | string, bytes             | raw, no terminator                                     |
//! | int64, uint64, double     | 8 bytes, little-endian                                 |
//! | bool                      | 1 byte, `0` or `1`                                     |
//! | timestamp                 | int64 nanoseconds since the Unix epoch                 |
//! | duration                  | int64 nanoseconds                                      |
//! | map (e.g. request.headers)| the [header-map encoding](crate::encode_map)           |
//! | list                      | the header-map encoding, items as keys, empty values   |
//!
//! So `response.code` and `source.port` are 8-byte integers and `source.address` is the
//! string `ip:port`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why bytes are not a property value of the expected type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    /// The value has the wrong number of bytes for its type.
    #[error("property value of {actual} bytes, expected {expected}")]
    WrongLength {
        /// The length the type has.
        expected: usize,
        /// The length of the value.
        actual: usize,
    },
    /// A one-byte bool that is neither `0` nor `1`.
    #[error("property bool byte {0:#04x} is neither 0 nor 1")]
    InvalidBool(u8),
}

/// Splits a property path into its NUL-separated segments, as Envoy reads it.
///
/// One trailing NUL is ignored (`request\0path\0` is `[request, path]`); empty segments in
/// the middle are kept; an empty path has no segments.
pub fn split_property_path(path: &[u8]) -> Vec<&[u8]> {
    property_segments(path).collect()
}

/// The segments of a property path, as [`split_property_path`] has them, without collecting
/// them.
pub fn property_segments(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let path = path.strip_suffix(&[0]).unwrap_or(path);
    // An empty path has no segments (a plain split would give one empty segment).
    (!path.is_empty())
        .then(|| path.split(|&byte| byte == 0))
        .into_iter()
        .flatten()
}

/// Joins segments into a property path, as the Rust SDK writes it: NUL between segments, none
/// at the end.
pub fn join_property_path(segments: &[&str]) -> Vec<u8> {
    let mut path = vec![0; property_path_len(segments)];
    let written = write_property_path(segments, &mut path);
    debug_assert_eq!(written, Some(path.len()));
    path
}

/// Writes the path [`join_property_path`] builds into the start of `out` (a buffer on the
/// stack, say) and returns its length; `None` when it does not fit.
pub fn write_property_path(segments: &[&str], out: &mut [u8]) -> Option<usize> {
    let out = out.get_mut(..property_path_len(segments))?;
    let mut at = 0;
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out[at] = 0;
            at += 1;
        }
        out[at..at + segment.len()].copy_from_slice(segment.as_bytes());
        at += segment.len();
    }
    Some(at)
}

/// The length of the path of `segments`: theirs, and a NUL between each two.
fn property_path_len(segments: &[&str]) -> usize {
    segments
        .iter()
        .map(|s| s.len() + 1)
        .sum::<usize>()
        .saturating_sub(1)
}

/// Encodes a signed integer property (e.g. `response.code`, `source.port`).
pub fn encode_property_i64(value: i64) -> [u8; 8] {
    value.to_le_bytes()
}

/// Encodes an unsigned integer property (e.g. `connection.id`).
pub fn encode_property_u64(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

/// Encodes a floating-point property.
pub fn encode_property_f64(value: f64) -> [u8; 8] {
    value.to_le_bytes()
}

/// Encodes a bool property (e.g. `connection.mtls`) as one byte, `0` or `1`.
pub fn encode_property_bool(value: bool) -> [u8; 1] {
    [u8::from(value)]
}

/// Encodes a timestamp property (e.g. `request.time`) as signed nanoseconds since the Unix
/// epoch, saturating outside the years 1677–2262.
pub fn encode_property_timestamp(time: SystemTime) -> [u8; 8] {
    let nanos = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos())
            .map(|n| -n)
            .unwrap_or(i64::MIN),
    };
    encode_property_i64(nanos)
}

/// Encodes a duration property (e.g. `request.duration`) as signed nanoseconds, saturating
/// past about 292 years.
pub fn encode_property_duration(duration: Duration) -> [u8; 8] {
    encode_property_i64(i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX))
}

/// Encodes a list property (e.g. a certificate's SANs): the header-map encoding with each
/// item as a key and an empty value.
pub fn encode_property_list<'a, I>(items: I) -> Vec<u8>
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: Clone,
{
    let mut out = Vec::new();
    crate::encode_map_into(items.into_iter().map(|item| (item, &[][..])), &mut out);
    out
}

/// Decodes a signed integer property.
pub fn decode_property_i64(bytes: &[u8]) -> Result<i64, PropertyError> {
    eight_bytes(bytes).map(i64::from_le_bytes)
}

/// Decodes an unsigned integer property.
pub fn decode_property_u64(bytes: &[u8]) -> Result<u64, PropertyError> {
    eight_bytes(bytes).map(u64::from_le_bytes)
}

/// Decodes a floating-point property.
pub fn decode_property_f64(bytes: &[u8]) -> Result<f64, PropertyError> {
    eight_bytes(bytes).map(f64::from_le_bytes)
}

/// Decodes a bool property: exactly one byte, `0` or `1`.
pub fn decode_property_bool(bytes: &[u8]) -> Result<bool, PropertyError> {
    match bytes {
        [0] => Ok(false),
        [1] => Ok(true),
        [other] => Err(PropertyError::InvalidBool(*other)),
        _ => Err(PropertyError::WrongLength {
            expected: 1,
            actual: bytes.len(),
        }),
    }
}

/// The value as exactly eight bytes.
fn eight_bytes(bytes: &[u8]) -> Result<[u8; 8], PropertyError> {
    bytes.try_into().map_err(|_| PropertyError::WrongLength {
        expected: 8,
        actual: bytes.len(),
    })
}

#[cfg(test)]
mod tests;
