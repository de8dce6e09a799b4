//! Writing a request upstream: the head (request line and headers, with the framing this proxy
//! chooses for the body) and a pump that streams the body — as it arrives, chunk-encoded when its
//! length is unknown, trailers included — interleaved with reading the response.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Method, header, request::Parts};
use http_body::Body;
use tokio::io::AsyncWrite;

use crate::http::body::ProxyBody;

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `content-length` from the client; bytes pass through.
    Length,
    /// Unknown length: `transfer-encoding: chunked`.
    Chunked,
}

/// Chooses the framing and encodes the request head into `out`.
pub fn encode_head(parts: &Parts, body_empty: bool, out: &mut Vec<u8>) -> Framing {
    let has_length = parts.headers.contains_key(header::CONTENT_LENGTH);
    let framing = match (body_empty, has_length) {
        (true, _) => Framing::Empty,
        (false, true) => Framing::Length,
        (false, false) => Framing::Chunked,
    };
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(&parts.headers, out);
    match framing {
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty if !has_length && expects_body(&parts.method) => {
            out.extend_from_slice(b"content-length: 0\r\n")
        }
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// Methods whose requests normally carry a body: an empty one is announced as such.
fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

fn write_headers(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Streams a request body upstream, frame by frame.
pub struct BodyPump {
    body: ProxyBody,
    chunked: bool,
    /// Encoded bytes not yet written.
    pending: Bytes,
    /// A chunk's data waiting behind its size line in `pending`.
    pending_data: Option<Bytes>,
    finished: bool,
}

impl BodyPump {
    /// A pump for `body` with `framing` (not `Empty`).
    pub fn new(body: ProxyBody, framing: Framing) -> Self {
        Self {
            body,
            chunked: framing == Framing::Chunked,
            pending: Bytes::new(),
            pending_data: None,
            finished: false,
        }
    }

    /// Writes as much of the body as is available; `Ready(Ok)` once all of it (and the final
    /// chunk) is written and flushed. `Pending` when waiting on the body or the socket.
    pub fn poll_pump<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            while !self.pending.is_empty() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.pending))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pending.advance(n);
                if self.pending.is_empty()
                    && let Some(data) = self.pending_data.take()
                {
                    self.pending = data;
                }
            }
            if self.finished {
                return Pin::new(&mut *io).poll_flush(cx);
            }
            // Nothing buffered: flush what was written before waiting on the client.
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => {
                    ready!(Pin::new(&mut *io).poll_flush(cx))?;
                    return Poll::Pending;
                }
                Poll::Ready(frame) => frame,
            };
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if self.chunked => {
                        self.pending = Bytes::from(format!("{:x}\r\n", data.len()));
                        let mut with_crlf = Vec::with_capacity(data.len() + 2);
                        with_crlf.extend_from_slice(&data);
                        with_crlf.extend_from_slice(b"\r\n");
                        self.pending_data = Some(Bytes::from(with_crlf));
                    }
                    Ok(data) => self.pending = data,
                    Err(frame) => {
                        if let (true, Ok(trailers)) = (self.chunked, frame.into_trailers()) {
                            let mut end = b"0\r\n".to_vec();
                            write_headers(&trailers, &mut end);
                            end.extend_from_slice(b"\r\n");
                            self.pending = Bytes::from(end);
                            self.chunked = false;
                        }
                        // Trailers end the body; with a content-length they cannot be sent.
                        self.finished = true;
                    }
                },
                Some(Err(e)) => {
                    return Poll::Ready(Err(io::Error::other(format!("request body: {e}"))));
                }
                None => {
                    if self.chunked {
                        self.pending = Bytes::from_static(b"0\r\n\r\n");
                        self.chunked = false;
                    }
                    self.finished = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;
    use crate::http::body::full;

    fn head(request: Request<()>, empty: bool) -> (String, Framing) {
        let (parts, ()) = request.into_parts();
        let mut out = Vec::new();
        let framing = encode_head(&parts, empty, &mut out);
        (String::from_utf8(out).expect("utf8"), framing)
    }

    #[test]
    fn a_bodiless_get_is_a_bare_head() {
        let request = Request::get("/a?b=1")
            .header("host", "x")
            .body(())
            .expect("request");
        assert_eq!(
            head(request, true),
            (
                "GET /a?b=1 HTTP/1.1\r\nhost: x\r\n\r\n".into(),
                Framing::Empty
            )
        );
    }

    #[test]
    fn framing_follows_the_client() {
        let request = Request::post("/")
            .header("content-length", "3")
            .body(())
            .expect("request");
        assert_eq!(head(request, false).1, Framing::Length);
        let (text, framing) = head(Request::post("/").body(()).expect("request"), false);
        assert_eq!(framing, Framing::Chunked);
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
        let (text, _) = head(Request::post("/").body(()).expect("request"), true);
        assert!(
            text.ends_with("content-length: 0\r\n\r\n"),
            "an empty POST says so: {text}"
        );
    }

    #[tokio::test]
    async fn the_pump_chunk_encodes_and_ends_the_body() {
        let mut pump = BodyPump::new(full("hello"), Framing::Chunked);
        let mut out: Vec<u8> = Vec::new();
        std::future::poll_fn(|cx| pump.poll_pump(&mut out, cx))
            .await
            .expect("pump");
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");
        let mut pump = BodyPump::new(full("hello"), Framing::Length);
        let mut out: Vec<u8> = Vec::new();
        std::future::poll_fn(|cx| pump.poll_pump(&mut out, cx))
            .await
            .expect("pump");
        assert_eq!(out, b"hello");
    }
}
