//! What an upstream answers, by request path (the table in [`crate::upstream`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};

use super::{ConnCtx, RespBody};

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(super) async fn handle(
    req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
) -> Result<Response<RespBody>, Infallible> {
    ctx.shared.counters.requests.fetch_add(1, Ordering::SeqCst);
    let version = version_name(req.version());
    let path = req.uri().path().to_string();
    let mut resp = if path == "/echo" {
        let trailer = req.headers().get(http::header::TRAILER).cloned();
        let mut resp = Response::new(req.into_body().boxed());
        if let Some(t) = trailer {
            resp.headers_mut().insert(http::header::TRAILER, t);
        }
        resp
    } else {
        answer(&path, req, &ctx).await
    };
    let headers = resp.headers_mut();
    if let Ok(name) = HeaderValue::from_str(&ctx.shared.name) {
        headers.insert("x-upstream", name);
    }
    headers.insert("x-upstream-protocol", HeaderValue::from_static(version));
    Ok(resp)
}

/// Every path but `/echo`: read the whole body, then answer.
async fn answer(path: &str, req: Request<Incoming>, ctx: &ConnCtx) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    let body_len = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(e) => return status(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    if path == "/trailers" {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
        let frames = [
            Frame::data(Bytes::from_static(b"ok")),
            Frame::trailers(trailers),
        ];
        let body = StreamBody::new(stream::iter(frames.map(Ok::<_, hyper::Error>)));
        let mut resp = Response::new(body.boxed());
        let h = resp.headers_mut();
        h.insert(
            http::header::TRAILER,
            HeaderValue::from_static("x-checksum"),
        );
        return resp;
    }
    if let Some(n) = path.strip_prefix("/stream/") {
        let Ok(n) = n.parse::<usize>() else {
            return status(StatusCode::BAD_REQUEST, "bad /stream/<n>");
        };
        let chunks = stream::unfold(0, move |i| async move {
            if i >= n {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some((Ok(Frame::data(Bytes::from_static(b"chunk\n"))), i + 1))
        });
        return Response::new(StreamBody::new(chunks).boxed());
    }
    let mut code = StatusCode::OK;
    if let Some(ms) = path.strip_prefix("/delay/") {
        let Ok(ms) = ms.parse::<u64>() else {
            return status(StatusCode::BAD_REQUEST, "bad /delay/<ms>");
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
    } else if let Some(c) = path.strip_prefix("/status/") {
        match c
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(c) => code = c,
            None => return status(StatusCode::BAD_REQUEST, "bad /status/<code>"),
        }
    }
    let json = serde_json::json!({
        "upstream": ctx.shared.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "version": version_name(parts.version),
        "headers": headers_json(&parts.headers),
        "body_len": body_len,
        "client_cert": ctx.client_cert,
        "peer": ctx.peer.to_string(),
        "connection": ctx.id,
    });
    let bodyless = code.is_informational()
        || code == StatusCode::NO_CONTENT
        || code == StatusCode::NOT_MODIFIED;
    let mut resp = Response::new(full(if bodyless {
        String::new()
    } else {
        json.to_string()
    }));
    *resp.status_mut() = code;
    if !bodyless {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    resp
}

fn status(code: StatusCode, text: impl Into<String>) -> Response<RespBody> {
    let mut resp = Response::new(full(text.into()));
    *resp.status_mut() = code;
    resp
}

/// Lowercase name → value, or an array of values when the header is repeated.
fn headers_json(map: &HeaderMap) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for name in map.keys() {
        let values: Vec<serde_json::Value> = map
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
            .collect();
        let value = match <[_; 1]>::try_from(values) {
            Ok([one]) => one,
            Err(many) => many.into(),
        };
        headers.insert(name.as_str().to_string(), value);
    }
    headers.into()
}
