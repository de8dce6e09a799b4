//! W3C trace context (`traceparent`) and request ids (`x-request-id`): parsing, generating and
//! formatting, without allocation, from a fast generator seeded once from the host's
//! randomness (so a request costs no randomness host call).

use std::cell::Cell;

/// A `traceparent` value: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
pub const TRACEPARENT_LEN: usize = 55;

/// An `x-request-id` in UUID v4 form: `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
pub const UUID_LEN: usize = 36;

const HEX: &[u8; 16] = b"0123456789abcdef";

thread_local! {
    /// splitmix64's state; 0 until seeded.
    static STATE: Cell<u64> = const { Cell::new(0) };
}

/// A random `u64`: splitmix64, seeded from the host's randomness on first use. Ids need to be
/// unique and unpredictable enough for tracing, not secret.
pub fn random() -> u64 {
    STATE.with(|state| {
        if state.get() == 0 {
            state.set(weft_sdk::random_u64() | 1);
        }
        let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A non-zero random `u64` (trace and span ids must not be all zeros).
fn random_nonzero() -> u64 {
    loop {
        let value = random();
        if value != 0 {
            return value;
        }
    }
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn hex(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The parts of a valid incoming `traceparent` that go on: its trace id and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming<'a> {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: &'a str,
    /// 2 lowercase hex digits.
    pub flags: &'a str,
}

/// Parses a `traceparent` per W3C Trace Context level 1: version 00 exactly 55 characters; a
/// later version (not `ff`) at least 55, read as 00; lowercase hex; trace and parent ids not
/// all zeros. `None` for anything else.
pub fn parse(value: &str) -> Option<Incoming<'_>> {
    let value = value.trim_matches([' ', '\t']);
    let version = value.get(0..2)?;
    if !is_lower_hex(version) || version == "ff" {
        return None;
    }
    let valid_length = if version == "00" {
        value.len() == TRACEPARENT_LEN
    } else {
        value.len() == TRACEPARENT_LEN || value.get(55..56) == Some("-")
    };
    if !valid_length {
        return None;
    }
    let dashes = [value.get(2..3), value.get(35..36), value.get(52..53)];
    if dashes.iter().any(|d| *d != Some("-")) {
        return None;
    }
    let trace_id = value.get(3..35)?;
    let parent_id = value.get(36..52)?;
    let flags = value.get(53..55)?;
    let nonzero = |id: &str| id.bytes().any(|b| b != b'0');
    if !is_lower_hex(trace_id) || !is_lower_hex(parent_id) || !is_lower_hex(flags) {
        return None;
    }
    if !nonzero(trace_id) || !nonzero(parent_id) {
        return None;
    }
    Some(Incoming { trace_id, flags })
}

/// The `traceparent` to send upstream: the incoming trace with a new span id as parent, or a
/// new sampled trace (flags `01`) when there is no valid incoming one. Written into `out`.
pub fn next_traceparent<'b>(
    incoming: Option<Incoming<'_>>,
    out: &'b mut [u8; TRACEPARENT_LEN],
) -> &'b str {
    out.copy_from_slice(b"00-00000000000000000000000000000000-0000000000000000-01");
    match incoming {
        Some(incoming) => {
            out[3..35].copy_from_slice(incoming.trace_id.as_bytes());
            out[53..55].copy_from_slice(incoming.flags.as_bytes());
        }
        None => {
            let mut trace = [0; 16];
            trace[..8].copy_from_slice(&random_nonzero().to_be_bytes());
            trace[8..].copy_from_slice(&random().to_be_bytes());
            hex(&trace, &mut out[3..35]);
        }
    }
    hex(&random_nonzero().to_be_bytes(), &mut out[36..52]);
    // Only ASCII was written.
    std::str::from_utf8(out).unwrap_or_default()
}

/// A new request id: a random UUID v4, written into `out`.
pub fn new_request_id(out: &mut [u8; UUID_LEN]) -> &str {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&random().to_be_bytes());
    bytes[8..].copy_from_slice(&random().to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[at] = b'-';
            at += 1;
        }
        hex(&[*byte], &mut out[at..at + 2]);
        at += 2;
    }
    std::str::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_valid_traceparents_and_refuses_the_rest() {
        let parsed = parse(VALID).expect("valid");
        assert_eq!(parsed.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.flags, "01");
        // A later version with more fields is read as version 00.
        let future = format!("01{}-extra", &VALID[2..]);
        assert!(parse(&future).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn continues_an_incoming_trace_with_a_new_parent() {
        let mut out = [0; TRACEPARENT_LEN];
        let next = next_traceparent(parse(VALID), &mut out);
        assert_eq!(&next[..36], &VALID[..36]);
        assert_ne!(&next[36..52], &VALID[36..52]);
        assert_eq!(&next[52..], "-01");
        assert!(parse(next).is_some());
    }

    #[test]
    fn starts_new_sampled_traces_with_fresh_ids() {
        let mut one = [0; TRACEPARENT_LEN];
        let mut two = [0; TRACEPARENT_LEN];
        let first = next_traceparent(None, &mut one).to_owned();
        let second = next_traceparent(None, &mut two);
        assert!(parse(&first).is_some() && parse(second).is_some());
        assert!(first.starts_with("00-") && first.ends_with("-01"));
        assert_ne!(first[3..35], second[3..35]);
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let mut out = [0; UUID_LEN];
        let id = new_request_id(&mut out).to_owned();
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups.iter().all(|g| is_lower_hex(g)));
        assert!(groups[2].starts_with('4'));
        assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        let mut again = [0; UUID_LEN];
        assert_ne!(new_request_id(&mut again), id);
    }
}
