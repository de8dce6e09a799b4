//! Reading a response from upstream: the head (parsed by `httparse`, with 1xx informational
//! responses skipped) and the body framing of RFC 9112 §6.3 — none, `content-length`, chunked
//! (with trailers), or until the connection closes.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header};

use crate::http::headers::list_tokens;

/// The largest response head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

/// A response head is not valid HTTP/1.1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (HEAD, 1xx, 204, 304, or `content-length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head.
pub struct Head {
    /// Status, version and headers; the body is attached by the caller.
    pub response: Response<()>,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Parses a final (non-1xx) response head from the front of `buf`, consuming it. `Ok(None)`
/// means more bytes are needed; informational 1xx heads are consumed and skipped.
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Malformed> {
    loop {
        // Where each header sits in `buf`: the values are sliced out of the head's bytes once
        // they are frozen, instead of being copied one by one.
        let mut fields: Vec<(HeaderName, std::ops::Range<usize>)> = Vec::new();
        let (len, code, version) = {
            let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            let config = httparse::ParserConfig::default();
            let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut slots)
            {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                    return Err(Malformed(format!(
                        "response head larger than {MAX_HEAD_BYTES} bytes"
                    )));
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(Malformed(format!("invalid response head: {e}"))),
            };
            let base = buf.as_ptr() as usize;
            fields.reserve_exact(parsed.headers.len());
            for h in parsed.headers.iter() {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| Malformed(format!("invalid header name {:?}", h.name)))?;
                let start = h.value.as_ptr() as usize - base;
                fields.push((name, start..start + h.value.len()));
            }
            (len, parsed.code.unwrap_or(0), parsed.version)
        };
        let status = StatusCode::from_u16(code)
            .map_err(|_| Malformed(format!("invalid status code {code}")))?;
        let head_bytes = buf.split_to(len).freeze();
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        let version = if version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let mut headers = HeaderMap::with_capacity(fields.len());
        for (name, range) in fields {
            let value = HeaderValue::from_maybe_shared(head_bytes.slice(range))
                .map_err(|_| Malformed(format!("invalid value for header {name}")))?;
            headers.append(name, value);
        }
        let framing = framing(status, method, &headers)?;
        let keep_alive = version == Version::HTTP_11
            && !list_tokens(&headers, header::CONNECTION).any(|t| t.eq_ignore_ascii_case(b"close"))
            && framing != BodyFraming::UntilClose
            && status != StatusCode::SWITCHING_PROTOCOLS;
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some(Head {
            response,
            framing,
            keep_alive,
        }));
    }
}

fn framing(
    status: StatusCode,
    method: &Method,
    headers: &HeaderMap,
) -> Result<BodyFraming, Malformed> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(BodyFraming::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // The last coding decides; a body that is not chunked last runs until close.
        let last = list_tokens(headers, header::TRANSFER_ENCODING).last();
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case(b"chunked") => BodyFraming::Chunked,
            _ => BodyFraming::UntilClose,
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let text = std::str::from_utf8(part.trim_ascii()).unwrap_or("");
            let n: u64 = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                text.parse()
                    .map_err(|_| Malformed(format!("invalid content-length {text:?}")))?
            } else {
                return Err(Malformed(format!("invalid content-length {text:?}")));
            };
            if length.is_some_and(|l| l != n) {
                return Err(Malformed("conflicting content-length values".into()));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => BodyFraming::Empty,
        Some(n) => BodyFraming::Length(n),
        None => BodyFraming::UntilClose,
    })
}

/// What the body decoder produced from the buffered bytes.
#[derive(Debug)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailer section of a chunked body; the body is over.
    Trailers(HeaderMap),
    /// The body is over.
    End,
    /// More bytes are needed.
    NeedMore,
}

/// Incremental body decoder over a read buffer.
#[derive(Debug)]
pub enum Decoder {
    /// Bytes left of a `content-length` body.
    Length(u64),
    /// Chunked: between chunks, expecting a size line.
    ChunkSize,
    /// Chunked: inside a chunk with this many data bytes left.
    ChunkData(u64),
    /// Chunked: after a chunk's data, expecting its CRLF.
    ChunkEnd,
    /// Chunked: after the last chunk, expecting trailers and the final CRLF.
    Trailers,
    /// Until the connection closes.
    UntilClose,
    /// Finished.
    Done,
}

impl Decoder {
    /// The decoder for a body framed as `framing`.
    pub fn new(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::Empty => Self::Done,
            BodyFraming::Length(n) => Self::Length(n),
            BodyFraming::Chunked => Self::ChunkSize,
            BodyFraming::UntilClose => Self::UntilClose,
        }
    }

    /// Decodes what it can from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match self {
                Self::Done => return Ok(Decoded::End),
                Self::Length(0) => {
                    *self = Self::Done;
                    return Ok(Decoded::End);
                }
                Self::Length(left) | Self::ChunkData(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    *left -= take as u64;
                    if matches!(self, Self::ChunkData(0)) {
                        *self = Self::ChunkEnd;
                    }
                    return Ok(Decoded::Data(data));
                }
                Self::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Self::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((len, 0))) => {
                        buf.advance(len);
                        *self = Self::Trailers;
                    }
                    Ok(httparse::Status::Complete((len, size))) => {
                        buf.advance(len);
                        *self = Self::ChunkData(size);
                    }
                    Ok(httparse::Status::Partial) if buf.len() > 1024 => {
                        return Err(Malformed("chunk size line too long".into()));
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                    Err(_) => return Err(Malformed("invalid chunk size".into())),
                },
                Self::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("chunk data not followed by CRLF".into()));
                    }
                    buf.advance(2);
                    *self = Self::ChunkSize;
                }
                Self::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = Self::Done;
                        return Ok(Decoded::End);
                    }
                    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (len, trailers) = match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete((len, parsed))) => {
                            let mut trailers = HeaderMap::with_capacity(parsed.len());
                            for h in parsed {
                                if let (Ok(name), Ok(value)) = (
                                    HeaderName::from_bytes(h.name.as_bytes()),
                                    HeaderValue::from_bytes(h.value),
                                ) {
                                    trailers.append(name, value);
                                }
                            }
                            (len, trailers)
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                            return Err(Malformed("trailer section too large".into()));
                        }
                        Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                        Err(e) => return Err(Malformed(format!("invalid trailers: {e}"))),
                    };
                    buf.advance(len);
                    *self = Self::Done;
                    return Ok(Decoded::Trailers(trailers));
                }
            }
        }
    }

    /// The end of the connection: the end of an until-close body, an error for any other.
    pub fn at_eof(&mut self) -> Result<(), Malformed> {
        match self {
            Self::UntilClose | Self::Done => {
                *self = Self::Done;
                Ok(())
            }
            _ => Err(Malformed(
                "upstream closed the connection before the end of the body".into(),
            )),
        }
    }

    /// Whether nothing more will be produced.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done | Self::Length(0))
    }

    /// Bytes left, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Self::Length(n) => Some(*n),
            Self::Done => Some(0),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: Method) -> Result<Option<Head>, Malformed> {
        parse_head(&mut BytesMut::from(text), &method)
    }

    fn decode_all(
        framing: BodyFraming,
        wire: &[u8],
    ) -> Result<(Vec<u8>, Option<HeaderMap>), Malformed> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let (mut body, mut trailers) = (Vec::new(), None);
        // Feed one byte at a time: every state must cope with partial input.
        for &b in wire {
            buf.extend_from_slice(&[b]);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(d) => body.extend_from_slice(&d),
                    Decoded::Trailers(t) => trailers = Some(t),
                    Decoded::End | Decoded::NeedMore => break,
                }
            }
        }
        Ok((body, trailers))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = |text: &str, method| head(text, method).expect("valid").expect("complete");
        let h = ok("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.keep_alive), (BodyFraming::Length(5), true));
        let h = ok("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::HEAD);
        assert_eq!(h.framing, BodyFraming::Empty);
        let h = ok("HTTP/1.1 204 No Content\r\n\r\n", Method::GET);
        assert_eq!(h.framing, BodyFraming::Empty);
        let h = ok(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n",
            Method::GET,
        );
        assert_eq!(
            h.framing,
            BodyFraming::Chunked,
            "transfer-encoding wins over content-length"
        );
        let h = ok("HTTP/1.1 200 OK\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.keep_alive), (BodyFraming::UntilClose, false));
        let h = ok(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            Method::GET,
        );
        assert!(!h.keep_alive);
        let h = ok("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", Method::GET);
        assert!(!h.keep_alive);
    }

    #[test]
    fn informational_heads_are_skipped() {
        let h = head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
            Method::POST,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(h.response.status(), 201);
    }

    #[test]
    fn partial_and_malformed_heads() {
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-le", Method::GET)
                .expect("partial is fine")
                .is_none()
        );
        assert!(
            head(
                "HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n",
                Method::GET
            )
            .is_err()
        );
        assert!(
            head(
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                Method::GET
            )
            .is_err()
        );
        assert!(head("garbage\r\n\r\n", Method::GET).is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert!(head(&huge, Method::GET).is_err());
    }

    #[test]
    fn chunked_bodies_decode_with_trailers_from_any_split() {
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n";
        let (body, trailers) = decode_all(BodyFraming::Chunked, wire).expect("valid");
        assert_eq!(body, b"hello world");
        assert_eq!(trailers.expect("trailers")["x-checksum"], "abc");
        let (body, trailers) =
            decode_all(BodyFraming::Chunked, b"3\r\nabc\r\n0\r\n\r\n").expect("valid");
        assert_eq!((body.as_slice(), trailers.is_none()), (&b"abc"[..], true));
        assert!(decode_all(BodyFraming::Chunked, b"3\r\nabcXX").is_err());
        assert!(decode_all(BodyFraming::Chunked, b"zz\r\n").is_err());
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut decoder = Decoder::new(BodyFraming::Length(3));
        let mut buf = BytesMut::from(&b"abcHTTP/1.1"[..]);
        assert!(matches!(decoder.decode(&mut buf), Ok(Decoded::Data(d)) if d == "abc"));
        assert!(matches!(decoder.decode(&mut buf), Ok(Decoded::End)));
        assert_eq!(
            &buf[..],
            b"HTTP/1.1",
            "bytes past the body stay for the next response"
        );
        let mut short = Decoder::new(BodyFraming::Length(3));
        assert!(short.at_eof().is_err());
        assert!(Decoder::new(BodyFraming::UntilClose).at_eof().is_ok());
    }
}
