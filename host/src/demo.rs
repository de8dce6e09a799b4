//! The demo upstream `weft up` puts behind the proxy: answers every request with a small JSON
//! document showing what arrived — method, path, and the headers the proxy added.

use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr};

use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

use crate::http::body::{ProxyBody, full};

/// Binds the demo upstream `service` and serves it in the background; returns its address.
/// Its answers name the service (`"service"` in the body, an `x-demo-service` header), so a
/// split between two of them is visible.
pub async fn spawn(addr: SocketAddr, service: &'static str) -> std::io::Result<SocketAddr> {
    let socket = TcpListener::bind(addr).await?;
    let local = socket.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = socket.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |request| answer(service, request)),
                    )
                    .await;
            });
        }
    });
    Ok(local)
}

async fn answer(
    service: &'static str,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let received = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let headers: BTreeMap<&str, &str> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let document = serde_json::json!({
        "service": service,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "bodyBytes": received,
        "headers": headers,
    });
    let mut response = Response::new(full(format!("{document:#}\n")));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert("x-demo-service", HeaderValue::from_static(service));
    Ok(response)
}
