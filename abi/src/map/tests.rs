//! Golden bytes, round trips and malformed input for the header-map wire format.

use super::*;

type Pairs<'a> = Vec<Pair<'a>>;

#[test]
fn empty_map_golden() {
    assert_eq!(encode_map(&[]), [0, 0, 0, 0]);
    assert_eq!(encoded_map_len([]), 4);
}

#[test]
fn one_pair_golden() {
    let pairs: [(&[u8], &[u8]); 1] = [(b":path", b"/x")];
    #[rustfmt::skip]
    let golden: &[u8] = &[
        1, 0, 0, 0,                // one pair
        5, 0, 0, 0, 2, 0, 0, 0,    // key 5 bytes, value 2 bytes
        b':', b'p', b'a', b't', b'h', 0,
        b'/', b'x', 0,
    ];
    assert_eq!(encode_map(&pairs), golden);
    assert_eq!(encoded_map_len(pairs), golden.len());
    assert_eq!(decode_map(golden), Ok(pairs.to_vec()));
}

#[test]
fn spec_example_golden() {
    // The spec's example `{"a": "1", "b": "22"}` (it prints the ASCII codes in decimal).
    let pairs: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"22")];
    #[rustfmt::skip]
    let golden: &[u8] = &[
        2, 0, 0, 0,
        1, 0, 0, 0, 1, 0, 0, 0,
        1, 0, 0, 0, 2, 0, 0, 0,
        0x61, 0, 0x31, 0,
        0x62, 0, 0x32, 0x32, 0,
    ];
    assert_eq!(encode_map(&pairs), golden);
    assert_eq!(decode_map(golden), Ok(pairs.to_vec()));
}

#[test]
fn several_pairs_with_empty_keys_and_values_golden() {
    let pairs: [(&[u8], &[u8]); 4] = [(b"", b"v"), (b"k", b""), (b"", b""), (b"x-a", b"bc")];
    #[rustfmt::skip]
    let golden: &[u8] = &[
        4, 0, 0, 0,
        0, 0, 0, 0, 1, 0, 0, 0,
        1, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0,
        3, 0, 0, 0, 2, 0, 0, 0,
        0, b'v', 0,
        b'k', 0, 0,
        0, 0,
        b'x', b'-', b'a', 0, b'b', b'c', 0,
    ];
    assert_eq!(encode_map(&pairs), golden);
    assert_eq!(decode_map(golden), Ok(pairs.to_vec()));
}

#[test]
fn lengths_are_little_endian() {
    let value = vec![b'z'; 0x0102];
    let encoded = encode_map(&[(b"k", &value)]);
    assert_eq!(&encoded[4..12], &[1, 0, 0, 0, 0x02, 0x01, 0, 0]);
}

#[test]
fn encode_into_appends_and_takes_iterators() {
    let mut out = vec![0xff];
    let headers = [("a", "1"), ("b", "22")];
    encode_map_into(
        headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        &mut out,
    );
    assert_eq!(out[0], 0xff);
    assert_eq!(&out[1..], encode_map(&[(b"a", b"1"), (b"b", b"22")]));
}

#[test]
fn round_trips() {
    let big = vec![7u8; 70_000];
    let cases: [Pairs<'_>; 4] = [
        vec![],
        vec![(b"host", b"example.com")],
        vec![(b"a", b"1"), (b"a", b"2"), (b"A", b"")],
        // NULs inside keys and values survive: the lengths delimit, not the NULs.
        vec![(b"bin\0ary", b"\0\0"), (b"big", &big)],
    ];
    for pairs in cases {
        let encoded = encode_map(&pairs);
        assert_eq!(encoded.len(), encoded_map_len(pairs.iter().copied()));
        assert_eq!(decode_map(&encoded), Ok(pairs));
    }
}

#[test]
fn accepts_every_empty_form() {
    for empty in [&[][..], &[0], &[0, 0, 0, 0]] {
        assert_eq!(decode_map(empty), Ok(vec![]), "{empty:?}");
    }
}

#[test]
fn rejects_truncated_count() {
    assert_eq!(decode_map(&[1]), Err(MapError::Truncated { len: 1 }));
    assert_eq!(decode_map(&[0, 0, 0]), Err(MapError::Truncated { len: 3 }));
}

#[test]
fn rejects_count_too_large_for_the_buffer() {
    // One pair needs at least 4 + 8 + 2 bytes.
    let short = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        decode_map(&short),
        Err(MapError::CountTooLarge { count: 1, len: 13 })
    );
    // A huge count must fail fast, without allocating for it.
    let huge = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    assert_eq!(
        decode_map(&huge),
        Err(MapError::CountTooLarge {
            count: u32::MAX,
            len: 8
        })
    );
}

#[test]
fn rejects_lengths_past_the_end() {
    let mut bytes = encode_map(&[(b"key", b"value")]);
    bytes[4] = 200; // key length
    assert_eq!(
        decode_map(&bytes),
        Err(MapError::OutOfBounds {
            index: 0,
            part: MapPart::Key,
            part_len: 200
        })
    );
    let mut bytes = encode_map(&[(b"key", b"value")]);
    bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes()); // value length
    assert_eq!(
        decode_map(&bytes),
        Err(MapError::OutOfBounds {
            index: 0,
            part: MapPart::Value,
            part_len: u32::MAX
        })
    );
    // The value fits but its NUL would be one past the end.
    let bytes = encode_map(&[(b"k", b"v")]);
    assert_eq!(
        decode_map(&bytes[..bytes.len() - 1]),
        Err(MapError::OutOfBounds {
            index: 0,
            part: MapPart::Value,
            part_len: 1
        })
    );
}

#[test]
fn rejects_missing_nul() {
    let mut bytes = encode_map(&[(b"k", b"v"), (b"key", b"value")]);
    let key_nul = 4 + 16 + 1;
    bytes[key_nul] = b'!';
    assert_eq!(
        decode_map(&bytes),
        Err(MapError::MissingNul {
            index: 0,
            part: MapPart::Key
        })
    );
    let mut bytes = encode_map(&[(b"k", b"v"), (b"key", b"value")]);
    let last = bytes.len() - 1;
    bytes[last] = b'\n';
    assert_eq!(
        decode_map(&bytes),
        Err(MapError::MissingNul {
            index: 1,
            part: MapPart::Value
        })
    );
}

#[test]
fn rejects_trailing_bytes() {
    let mut bytes = encode_map(&[(b"k", b"v")]);
    bytes.extend_from_slice(b"xy");
    assert_eq!(
        decode_map(&bytes),
        Err(MapError::TrailingBytes { extra: 2 })
    );
    assert_eq!(
        decode_map(&[0, 0, 0, 0, 0]),
        Err(MapError::TrailingBytes { extra: 1 })
    );
}

#[test]
fn enforces_limits() {
    let bytes = encode_map(&[(b"a", b"1"), (b"b", b"2")]);
    let pairs = MapLimits {
        max_bytes: usize::MAX,
        max_pairs: 1,
    };
    assert_eq!(
        decode_map_limited(&bytes, pairs),
        Err(MapError::TooManyPairs { count: 2, max: 1 })
    );
    let size = MapLimits {
        max_bytes: bytes.len() - 1,
        max_pairs: 10,
    };
    assert_eq!(
        decode_map_limited(&bytes, size),
        Err(MapError::TooLarge {
            len: bytes.len(),
            max: bytes.len() - 1
        })
    );
    assert!(decode_map_limited(&bytes, MapLimits::ENVOY).is_ok());
    assert_eq!(MapLimits::ENVOY.max_bytes, 1 << 20);
    assert_eq!(MapLimits::ENVOY.max_pairs, 1024);
}

#[test]
fn no_prefix_or_single_byte_change_panics() {
    let bytes = encode_map(&[(b":method", b"GET"), (b"", b"x"), (b"k", b"")]);
    for cut in 1..bytes.len() {
        // Every proper prefix is malformed (the one-byte prefix is not the `[0]` empty form).
        assert!(decode_map(&bytes[..cut]).is_err(), "prefix of {cut} bytes");
    }
    for at in 0..bytes.len() {
        for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut changed = bytes.clone();
            changed[at] = byte;
            let _ = decode_map(&changed);
        }
    }
}

#[test]
fn errors_read_well() {
    let err = MapError::OutOfBounds {
        index: 2,
        part: MapPart::Value,
        part_len: 9,
    };
    assert_eq!(
        err.to_string(),
        "value of pair 2 (9 bytes) runs past the end of the encoded map"
    );
}
