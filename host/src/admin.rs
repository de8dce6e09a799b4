//! The admin server, on loopback, with Envoy's paths: `/ready`, `/stats/prometheus`,
//! `/config_dump`, `/clusters`, `/listeners`. Read-only endpoints answer GET; anything else is
//! 405. `/clusters` and `/listeners` speak Envoy's text format, or JSON with `?format=json`.

use std::{
    convert::Infallible, fmt::Write as _, sync::Arc, sync::atomic::Ordering, time::UNIX_EPOCH,
};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::{
    http::body::{ProxyBody, full},
    runtime::Shared,
};

/// Accepts admin connections until the task is aborted.
pub async fn serve(socket: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, &request)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(shared: &Shared, request: &Request<Incoming>) -> Response<ProxyBody> {
    let path = request.uri().path();
    let json_format = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "format=json"));
    let known = matches!(
        path,
        "/ready" | "/stats/prometheus" | "/config_dump" | "/clusters" | "/listeners"
    );
    if !known {
        return text(StatusCode::NOT_FOUND, format!("no admin endpoint {path}\n"));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} only answers GET\n"),
        );
    }
    match path {
        "/ready" if shared.draining.load(Ordering::Relaxed) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n".into())
        }
        "/ready" => text(StatusCode::OK, "LIVE\n".into()),
        "/stats/prometheus" => {
            let mut response = text(StatusCode::OK, shared.metrics.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/config_dump" => config_dump(shared),
        "/clusters" => clusters(shared, json_format),
        _ => listeners(shared, json_format),
    }
}

fn config_dump(shared: &Shared) -> Response<ProxyBody> {
    let runtime = shared.runtime.load_full();
    let loaded_at = runtime
        .loaded_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dump = json!({
        "version": runtime.version.to_string(),
        "loadedAt": loaded_at,
        "source": shared.config_path.display().to_string(),
        "config": &*runtime.config,
    });
    json_response(&dump)
}

fn clusters(shared: &Shared, as_json: bool) -> Response<ProxyBody> {
    let runtime = shared.runtime.load_full();
    if as_json {
        let clusters: Vec<_> = runtime
            .clusters
            .iter()
            .map(|(name, cluster)| json!({"name": name, "loadBalancer": cluster.config.load_balancer, "endpoints": cluster.status()}))
            .collect();
        return json_response(&json!({"clusters": clusters}));
    }
    let mut out = String::new();
    for (name, cluster) in &runtime.clusters {
        for e in cluster.status() {
            let prefix = format!("{name}::{}", e.address);
            let _ = writeln!(
                out,
                "{prefix}::health_flags::{}",
                if e.health == "healthy" {
                    "healthy"
                } else {
                    "/failed_outlier_check"
                }
            );
            let _ = writeln!(out, "{prefix}::rq_active::{}", e.active_requests);
            let _ = writeln!(out, "{prefix}::rq_total::{}", e.requests_total);
            let _ = writeln!(out, "{prefix}::rq_error::{}", e.failures_total);
            let _ = writeln!(out, "{prefix}::ejections::{}", e.ejections_total);
            let _ = writeln!(out, "{prefix}::cx_idle::{}", e.idle_connections);
        }
    }
    text(StatusCode::OK, out)
}

fn listeners(shared: &Shared, as_json: bool) -> Response<ProxyBody> {
    let runtime = shared.runtime.load_full();
    let bound = shared.bound.read().map(|b| b.clone()).unwrap_or_default();
    if as_json {
        let listeners: Vec<_> = runtime
            .config
            .listeners
            .values()
            .map(|l| {
                json!({
                    "name": l.name,
                    "address": bound.get(&l.name).map(|a| a.to_string()),
                    "tls": l.tls.is_some(),
                    "mtls": l.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
                    "filterChain": l.filter_chain,
                    "defaultCluster": l.default_cluster,
                })
            })
            .collect();
        return json_response(&json!({"listeners": listeners}));
    }
    let mut out = String::new();
    for (name, address) in &bound {
        let _ = writeln!(out, "{name}::{address}");
    }
    text(StatusCode::OK, out)
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json_response(value: &serde_json::Value) -> Response<ProxyBody> {
    let body =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let mut response = Response::new(full(body + "\n"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
