//! Golden bytes for property values and paths.

use super::*;

#[test]
fn integers_are_eight_bytes_little_endian() {
    assert_eq!(encode_property_i64(200), [200, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(encode_property_i64(-1), [0xff; 8]);
    assert_eq!(
        encode_property_u64(0x0102_0304_0506_0708),
        [8, 7, 6, 5, 4, 3, 2, 1]
    );
    assert_eq!(
        decode_property_i64(&[0x90, 0x1f, 0, 0, 0, 0, 0, 0]),
        Ok(8080)
    );
    assert_eq!(decode_property_u64(&[0xff; 8]), Ok(u64::MAX));
    for value in [0, 1, -1, i64::MIN, i64::MAX] {
        assert_eq!(decode_property_i64(&encode_property_i64(value)), Ok(value));
    }
}

#[test]
fn doubles_are_eight_bytes_little_endian() {
    assert_eq!(encode_property_f64(1.0), [0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
    assert_eq!(decode_property_f64(&encode_property_f64(-2.5)), Ok(-2.5));
}

#[test]
fn integers_reject_other_lengths() {
    assert_eq!(
        decode_property_u64(&[1, 0, 0, 0]),
        Err(PropertyError::WrongLength {
            expected: 8,
            actual: 4
        })
    );
    assert_eq!(
        decode_property_i64(&[0; 9]),
        Err(PropertyError::WrongLength {
            expected: 8,
            actual: 9
        })
    );
    assert!(decode_property_i64(&[]).is_err());
}

#[test]
fn bools_are_one_byte() {
    assert_eq!(encode_property_bool(true), [1]);
    assert_eq!(encode_property_bool(false), [0]);
    assert_eq!(decode_property_bool(&[1]), Ok(true));
    assert_eq!(decode_property_bool(&[0]), Ok(false));
    assert_eq!(
        decode_property_bool(&[2]),
        Err(PropertyError::InvalidBool(2))
    );
    assert_eq!(
        decode_property_bool(&[]),
        Err(PropertyError::WrongLength {
            expected: 1,
            actual: 0
        })
    );
    assert_eq!(
        decode_property_bool(b"true"),
        Err(PropertyError::WrongLength {
            expected: 1,
            actual: 4
        })
    );
}

#[test]
fn times_are_signed_nanoseconds() {
    let time = UNIX_EPOCH + Duration::new(1, 5);
    assert_eq!(
        decode_property_i64(&encode_property_timestamp(time)),
        Ok(1_000_000_005)
    );
    let before = UNIX_EPOCH - Duration::from_nanos(3);
    assert_eq!(
        decode_property_i64(&encode_property_timestamp(before)),
        Ok(-3)
    );
    assert_eq!(
        encode_property_duration(Duration::from_millis(2)),
        encode_property_i64(2_000_000)
    );
    assert_eq!(
        encode_property_duration(Duration::MAX),
        encode_property_i64(i64::MAX)
    );
}

#[test]
fn lists_are_maps_with_empty_values() {
    let sans: [&[u8]; 2] = [b"spiffe://a", b"b"];
    let encoded = encode_property_list(sans);
    assert_eq!(
        encoded,
        crate::encode_map(&[(sans[0], b""), (sans[1], b"")])
    );
    #[rustfmt::skip]
    let golden: &[u8] = &[
        1, 0, 0, 0,
        1, 0, 0, 0, 0, 0, 0, 0,
        b'x', 0, 0,
    ];
    assert_eq!(encode_property_list([&b"x"[..]]), golden);
    assert_eq!(encode_property_list([]), [0, 0, 0, 0]);
}

#[test]
fn paths_split_on_nul() {
    assert_eq!(
        split_property_path(b"request\0path"),
        [&b"request"[..], b"path"]
    );
    assert_eq!(split_property_path(b"plugin_name"), [&b"plugin_name"[..]]);
    assert_eq!(
        split_property_path(b"request\0headers\0x-id\0"),
        [&b"request"[..], b"headers", b"x-id"]
    );
    assert_eq!(split_property_path(b"a\0\0b"), [&b"a"[..], b"", b"b"]);
    assert_eq!(split_property_path(b"\0a"), [&b""[..], b"a"]);
    assert!(split_property_path(b"").is_empty());
    assert!(split_property_path(b"\0").is_empty());
    // A dotted name is one segment.
    assert_eq!(split_property_path(b"request.path"), [&b"request.path"[..]]);
}

#[test]
fn paths_join_with_nul_and_no_trailing_nul() {
    assert_eq!(join_property_path(&["request", "path"]), b"request\0path");
    assert_eq!(join_property_path(&["plugin_name"]), b"plugin_name");
    assert_eq!(join_property_path(&[]), b"");
    assert_eq!(join_property_path(&["a", "", "b"]), b"a\0\0b");
}

#[test]
fn paths_are_written_into_a_buffer_when_they_fit() {
    // A buffer with stale bytes: the separators are written, not assumed.
    let mut buffer = [0xaa; 12];
    assert_eq!(
        write_property_path(&["request", "path"], &mut buffer),
        Some(12)
    );
    assert_eq!(&buffer, b"request\0path");
    assert_eq!(write_property_path(&["a", "", "b"], &mut buffer), Some(4));
    assert_eq!(&buffer[..4], b"a\0\0b");
    assert_eq!(write_property_path(&[], &mut buffer), Some(0));
    // One byte short: nothing is claimed written.
    assert_eq!(
        write_property_path(&["request", "path"], &mut [0; 11]),
        None
    );
}

#[test]
fn paths_round_trip() {
    for segments in [
        vec!["source", "address"],
        vec!["connection", "uri_san_peer_certificate"],
        vec!["x"],
    ] {
        let path = join_property_path(&segments);
        let split: Vec<&[u8]> = segments.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(split_property_path(&path), split);
    }
}

#[test]
fn errors_read_well() {
    assert_eq!(
        PropertyError::InvalidBool(7).to_string(),
        "property bool byte 0x07 is neither 0 nor 1"
    );
}
