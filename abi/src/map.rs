//! The header-map wire format: what `proxy_get_header_map_pairs` returns and
//! `proxy_set_header_map_pairs`, `proxy_send_local_response`, `proxy_http_call` and
//! `proxy_grpc_*` take; also how Envoy encodes map- and list-valued properties.
//!
//! All integers are 32-bit little-endian. An encoded map is:
//!
//! 1. the number of pairs `n`;
//! 2. `n` pairs of lengths: key length, value length;
//! 3. `n` pairs of bytes: the key, a NUL (`0x00`), the value, a NUL.
//!
//! So `{"a": "1", "b": "22"}` is
//! `02000000 01000000 01000000 01000000 02000000 6100 3100 6200 323200`.
//! The NULs are terminators, not separators: keys and values are delimited by their lengths
//! and may themselves contain NUL bytes.
//!
//! An empty map is `00000000` when encoded here (as the Rust SDK and Envoy's `marshalPairs`
//! write it), but the spec also allows zero bytes or a single `0x00`, and Envoy's
//! `proxy_get_header_map_pairs` answers an empty map with zero bytes; [`decode_map`] accepts
//! all three.
//!
//! Sources: spec `abi-versions/v0.2.1/README.md` "Serialization"; Rust SDK `proxy-wasm`
//! 0.2.5 `src/hostcalls.rs` (`utils::serialize_map`, `deserialize_map`);
//! `proxy-wasm-cpp-host` `src/pairs_util.cc` (Envoy's encoder and strict decoder) and
//! `include/proxy-wasm/limits.h` (its limits, [`MapLimits::ENVOY`]).

use std::fmt;

/// Why bytes are not a well-formed encoded header map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// Fewer than the 4 bytes of the pair count (and not one of the empty forms).
    #[error("encoded map of {len} bytes is too short to hold its 4-byte pair count")]
    Truncated {
        /// The length of the input.
        len: usize,
    },
    /// The pair count needs more bytes than there are (each pair takes at least 10).
    #[error("encoded map claims {count} pairs, more than its {len} bytes can hold")]
    CountTooLarge {
        /// The pair count read from the input.
        count: u32,
        /// The length of the input.
        len: usize,
    },
    /// A key or value, with its NUL, runs past the end of the input.
    #[error("{part} of pair {index} ({part_len} bytes) runs past the end of the encoded map")]
    OutOfBounds {
        /// The index of the pair, from 0.
        index: usize,
        /// Whether the key or the value overruns.
        part: MapPart,
        /// The length given for it.
        part_len: u32,
    },
    /// A key or value is not followed by its NUL terminator.
    #[error("{part} of pair {index} is not followed by a NUL byte")]
    MissingNul {
        /// The index of the pair, from 0.
        index: usize,
        /// Whether it is the key or the value.
        part: MapPart,
    },
    /// Bytes are left after the last pair.
    #[error("{extra} bytes left after the last pair of the encoded map")]
    TrailingBytes {
        /// How many bytes are left over.
        extra: usize,
    },
    /// The input is longer than [`MapLimits::max_bytes`].
    #[error("encoded map of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The length of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The pair count is over [`MapLimits::max_pairs`].
    #[error("encoded map of {count} pairs is over the limit of {max}")]
    TooManyPairs {
        /// The pair count read from the input.
        count: u32,
        /// The limit.
        max: usize,
    },
}

/// Which half of a pair a [`MapError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapPart {
    /// The key (header name).
    Key,
    /// The value.
    Value,
}

impl fmt::Display for MapPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MapPart::Key => "key",
            MapPart::Value => "value",
        })
    }
}

/// Upper bounds [`decode_map_limited`] enforces on untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLimits {
    /// The longest input accepted, in bytes.
    pub max_bytes: usize,
    /// The most pairs accepted.
    pub max_pairs: usize,
}

impl MapLimits {
    /// No limits beyond the input's own length.
    pub const NONE: MapLimits = MapLimits {
        max_bytes: usize::MAX,
        max_pairs: usize::MAX,
    };

    /// Envoy's limits on maps a guest hands to the host (`PROXY_WASM_HOST_PAIRS_MAX_BYTES`,
    /// 1 MiB, and `PROXY_WASM_HOST_PAIRS_MAX_COUNT`, 1024).
    pub const ENVOY: MapLimits = MapLimits {
        max_bytes: 1024 * 1024,
        max_pairs: 1024,
    };
}

/// One header: its name and value, borrowed.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// The length of the pair count and of each key or value length.
const WORD: usize = 4;

/// The exact length of the encoding of `pairs`, for sizing a guest allocation up front.
pub fn encoded_map_len<'a, I>(pairs: I) -> usize
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    pairs.into_iter().fold(WORD, |len, (key, value)| {
        len + 2 * WORD + key.len() + 1 + value.len() + 1
    })
}

/// Encodes header pairs, in order, into a new buffer.
///
/// An empty map encodes as `[0, 0, 0, 0]`.
///
/// # Panics
///
/// If there are more than `u32::MAX` pairs or a key or value is longer than `u32::MAX` bytes,
/// which the format cannot express (and no header map comes near).
pub fn encode_map(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_map_len(pairs.iter().copied()));
    encode_map_into(pairs.iter().copied(), &mut out);
    out
}

/// Appends the encoding of `pairs` to `out`, walking the pairs twice (lengths, then bytes) so
/// that any cloneable iterator — e.g. over an `http::HeaderMap` — encodes without an
/// intermediate list.
///
/// # Panics
///
/// As [`encode_map`].
pub fn encode_map_into<'a, I>(pairs: I, out: &mut Vec<u8>)
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    I::IntoIter: Clone,
{
    let pairs = pairs.into_iter();
    let count_at = out.len();
    out.extend_from_slice(&[0; WORD]);
    let mut count = 0usize;
    for (key, value) in pairs.clone() {
        out.extend_from_slice(&wire_len(key.len()).to_le_bytes());
        out.extend_from_slice(&wire_len(value.len()).to_le_bytes());
        count += 1;
    }
    out[count_at..count_at + WORD].copy_from_slice(&wire_len(count).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(key);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
}

/// Converts a length or count to its 32-bit wire form.
fn wire_len(len: usize) -> u32 {
    u32::try_from(len).expect("header map part longer than u32::MAX cannot be encoded")
}

/// Decodes an encoded header map into its pairs, borrowing from `bytes`.
///
/// Accepts the three empty forms (zero bytes, one `0x00`, a zero count) and otherwise
/// requires exactly one well-formed encoding: every length within the input, every key and
/// value NUL-terminated, nothing left over. Never panics and never allocates more than the
/// input can describe.
pub fn decode_map(bytes: &[u8]) -> Result<Vec<Pair<'_>>, MapError> {
    decode_map_limited(bytes, MapLimits::NONE)
}

/// [`decode_map`] that also rejects input over `limits`; use [`MapLimits::ENVOY`] for maps
/// coming from a guest.
pub fn decode_map_limited(bytes: &[u8], limits: MapLimits) -> Result<Vec<Pair<'_>>, MapError> {
    let len = bytes.len();
    if len > limits.max_bytes {
        return Err(MapError::TooLarge {
            len,
            max: limits.max_bytes,
        });
    }
    if bytes.is_empty() || bytes == [0] {
        return Ok(Vec::new());
    }
    let count = read_u32(bytes, 0).ok_or(MapError::Truncated { len })?;
    let too_many = MapError::CountTooLarge { count, len };
    let pairs_len = usize::try_from(count).map_err(|_| too_many)?;
    if pairs_len > limits.max_pairs {
        return Err(MapError::TooManyPairs {
            count,
            max: limits.max_pairs,
        });
    }
    // Each pair takes 8 bytes of lengths and at least 2 NULs.
    let minimum = pairs_len
        .checked_mul(2 * WORD + 2)
        .and_then(|n| n.checked_add(WORD));
    if minimum.is_none_or(|minimum| minimum > len) {
        return Err(too_many);
    }
    let mut pairs = Vec::with_capacity(pairs_len);
    let mut at = WORD + pairs_len * 2 * WORD;
    for index in 0..pairs_len {
        let lengths_at = WORD + index * 2 * WORD;
        let key_len = read_u32(bytes, lengths_at).ok_or(too_many)?;
        let value_len = read_u32(bytes, lengths_at + WORD).ok_or(too_many)?;
        let key = take_terminated(bytes, &mut at, key_len, index, MapPart::Key)?;
        let value = take_terminated(bytes, &mut at, value_len, index, MapPart::Value)?;
        pairs.push((key, value));
    }
    if at != len {
        return Err(MapError::TrailingBytes { extra: len - at });
    }
    Ok(pairs)
}

/// The little-endian `u32` at `at`, if all four bytes are there.
fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(WORD)?)?;
    Some(u32::from_le_bytes(word.try_into().ok()?))
}

/// Takes `part_len` bytes at `*at` followed by a NUL, and moves `*at` past the NUL.
fn take_terminated<'a>(
    bytes: &'a [u8],
    at: &mut usize,
    part_len: u32,
    index: usize,
    part: MapPart,
) -> Result<&'a [u8], MapError> {
    let out_of_bounds = MapError::OutOfBounds {
        index,
        part,
        part_len,
    };
    let end = usize::try_from(part_len)
        .ok()
        .and_then(|n| at.checked_add(n))
        .ok_or(out_of_bounds)?;
    let (Some(data), Some(&nul)) = (bytes.get(*at..end), bytes.get(end)) else {
        return Err(out_of_bounds);
    };
    if nul != 0 {
        return Err(MapError::MissingNul { index, part });
    }
    *at = end + 1;
    Ok(data)
}

#[cfg(test)]
mod tests;
