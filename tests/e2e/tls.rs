//! TLS on both sides of the proxy: a TLS listener negotiating HTTP/2 or HTTP/1.1 by ALPN (with
//! relative certificate paths), mTLS listeners accepting the test CA's client and refusing a
//! missing or rogue certificate (counted in `weft_downstream_tls_errors_total`), the
//! `x-forwarded-client-cert` header set from the verified certificate and never taken from the
//! client, upstream TLS (CA verification, ALPN `h2`) and upstream mTLS, and certificate files
//! rotated under a running listener without dropping open connections.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Version};
use weft_e2e::certs::{Identity, TestPki, der_mentions};
use weft_e2e::client::{self, Conn, Reply};
use weft_e2e::upstream::Upstream;
use weft_e2e::wait_for;
use weft_e2e::weft::Weft;

/// Every network step of these tests is bounded by this.
const STEP: Duration = Duration::from_secs(3);

/// Runs `fut`, panicking with `what` if it takes longer than [`STEP`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {STEP:?}"))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A cluster `web` on `upstream` and a listener `secure` with the given `tls:` flow mapping.
fn tls_listener_config(upstream: std::net::SocketAddr, tls: &str) -> String {
    format!(
        r#"apiVersion: weft/v1
kind: Cluster
metadata: {{name: web}}
spec:
  endpoints: ["{upstream}"]
  connectTimeout: 500ms
  timeout: 2s
---
apiVersion: weft/v1
kind: Listener
metadata: {{name: secure}}
spec:
  address: "127.0.0.1:0"
  defaultCluster: web
  tls: {tls}
"#
    )
}

/// The upstream's view of a request header, from its JSON answer.
fn seen_header(reply: &Reply, name: &str) -> Option<String> {
    reply.json()["headers"][name].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_h2_or_http11_by_alpn() {
    let pki = TestPki::new().expect("generating the test PKI");
    let up = Upstream::http1("web").await.expect("starting upstream web");
    // Certificate paths relative to the config file: copy the server pair next to it.
    let dir = tempfile::tempdir().expect("creating the proxy directory");
    std::fs::copy(&pki.server_cert, dir.path().join("server.pem")).expect("copying server.pem");
    std::fs::copy(&pki.server_key, dir.path().join("server.key")).expect("copying server.key");
    let yaml = tls_listener_config(up.addr, "{certificate: server.pem, privateKey: server.key}");
    let weft = Weft::start_in(dir, &yaml)
        .await
        .expect("weft starts with relative certificate paths");
    let addr = weft.addr("secure");

    let h2 = pki.client_config(&[b"h2", b"http/1.1"], None);
    let reply = within(
        "an h2 request over TLS",
        client::tls(addr, h2, "localhost", client::get("/over-h2")),
    )
    .await
    .expect("a client offering h2 gets an answer");
    assert_eq!(reply.status, 200, "h2 over TLS: {}", reply.text());
    assert_eq!(
        reply.version,
        Version::HTTP_2,
        "a client offering ALPN h2 must be served HTTP/2"
    );
    assert_eq!(reply.header("x-upstream"), Some("web"));
    assert_eq!(
        seen_header(&reply, "x-forwarded-proto").as_deref(),
        Some("https"),
        "the upstream must learn the client spoke TLS"
    );

    let h1 = pki.client_config(&[b"http/1.1"], None);
    let reply = within(
        "an HTTP/1.1 request over TLS",
        client::tls(addr, h1, "localhost", client::get("/over-h1")),
    )
    .await
    .expect("a client offering only http/1.1 gets an answer");
    assert_eq!(reply.status, 200, "HTTP/1.1 over TLS: {}", reply.text());
    assert_eq!(
        reply.version,
        Version::HTTP_11,
        "a client offering only http/1.1 must be served HTTP/1.1"
    );
    assert_eq!(
        seen_header(&reply, "x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(reply.json()["path"], "/over-h1");
    assert_eq!(up.requests(), 2, "both requests reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_listener_forwards_the_verified_identity_in_xfcc() {
    let pki = TestPki::new().expect("generating the test PKI");
    let up = Upstream::http1("web").await.expect("starting upstream web");
    let tls = format!(
        r#"{{certificate: "{}", privateKey: "{}", clientCa: "{}"}}"#,
        path(&pki.server_cert),
        path(&pki.server_key),
        path(&pki.ca)
    );
    let weft = Weft::start(&tls_listener_config(up.addr, &tls))
        .await
        .expect("weft starts with an mTLS listener");

    let config = pki.client_config(&[b"h2", b"http/1.1"], Some(Identity::Client));
    let mut req = client::get("/whoami");
    // A client must not be able to claim another identity, even with a valid certificate.
    req.headers_mut().insert(
        "x-forwarded-client-cert",
        HeaderValue::from_static("URI=spiffe://evil.test/ns/admin/sa/root"),
    );
    let reply = within(
        "a request with the client certificate",
        client::tls(weft.addr("secure"), config, "localhost", req),
    )
    .await
    .expect("a client with a certificate from the client CA is accepted");
    assert_eq!(reply.status, 200, "mTLS request: {}", reply.text());
    let xfcc = seen_header(&reply, "x-forwarded-client-cert").unwrap_or_else(|| {
        panic!(
            "the upstream got no x-forwarded-client-cert from an mTLS listener; headers: {}",
            reply.json()["headers"]
        )
    });
    assert!(
        xfcc.contains(&format!("URI={}", pki.client_spiffe)),
        "x-forwarded-client-cert must carry the verified SPIFFE ID: {xfcc}"
    );
    assert!(
        !xfcc.contains("evil.test"),
        "the client's forged x-forwarded-client-cert must be replaced, not kept: {xfcc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_listener_refuses_missing_and_rogue_client_certs() {
    let pki = TestPki::new().expect("generating the test PKI");
    let up = Upstream::http1("web").await.expect("starting upstream web");
    let tls = format!(
        r#"{{certificate: "{}", privateKey: "{}", clientCa: "{}"}}"#,
        path(&pki.server_cert),
        path(&pki.server_key),
        path(&pki.ca)
    );
    let weft = Weft::start(&tls_listener_config(up.addr, &tls))
        .await
        .expect("weft starts with an mTLS listener");
    let addr = weft.addr("secure");

    for identity in [None, Some(Identity::Rogue)] {
        let config = pki.client_config(&[b"h2", b"http/1.1"], identity);
        let outcome = within(
            "a request without an acceptable client certificate",
            client::tls(addr, config, "localhost", client::get("/sneak")),
        )
        .await;
        if let Ok(reply) = &outcome {
            panic!(
                "a client presenting {identity:?} was served {}: {}",
                reply.status,
                reply.text()
            );
        }
    }
    assert_eq!(
        up.requests(),
        0,
        "a refused client must not reach the upstream"
    );

    let errors = r#"weft_downstream_tls_errors_total{listener="secure"}"#;
    let counted = wait_for(
        || async { weft.metric(errors).await == Some(2.0) },
        Duration::from_secs(2),
    )
    .await;
    assert!(
        counted,
        "{errors} should count both refused handshakes, got {:?}",
        weft.metric(errors).await
    );

    // The listener itself is fine: the right certificate still gets in.
    let config = pki.client_config(&[b"http/1.1"], Some(Identity::Client));
    let reply = within(
        "a request with the client certificate",
        client::tls(addr, config, "localhost", client::get("/ok")),
    )
    .await
    .expect("a client with the client certificate is accepted");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        weft.metric(errors).await,
        Some(2.0),
        "an accepted client is no error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_xfcc_from_a_plaintext_client_is_dropped() {
    let up = Upstream::http1("web").await.expect("starting upstream web");
    let yaml = format!(
        r#"apiVersion: weft/v1
kind: Cluster
metadata: {{name: web}}
spec: {{endpoints: ["{}"], connectTimeout: 500ms, timeout: 2s}}
---
apiVersion: weft/v1
kind: Listener
metadata: {{name: public}}
spec: {{address: "127.0.0.1:0", defaultCluster: web}}
"#,
        up.addr
    );
    let weft = Weft::start(&yaml).await.expect("weft starts");
    let mut req = client::get("/forged");
    req.headers_mut().insert(
        "x-forwarded-client-cert",
        HeaderValue::from_static("URI=spiffe://weft.test/ns/default/sa/admin"),
    );
    let reply = within("a plaintext request", client::h1(weft.addr("public"), req))
        .await
        .expect("a plaintext request is proxied");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        seen_header(&reply, "x-forwarded-client-cert"),
        None,
        "a client-supplied x-forwarded-client-cert must never reach the upstream"
    );
}

/// One cluster per `(name, extra spec lines)` on the same upstream, each behind a listener of
/// the same name.
fn upstream_tls_config(up: std::net::SocketAddr, clusters: &[(&str, &str)]) -> String {
    let mut yaml = String::new();
    for (name, spec) in clusters {
        yaml.push_str(&format!(
            r#"apiVersion: weft/v1
kind: Cluster
metadata: {{name: {name}}}
spec:
  endpoints: ["{up}"]
  connectTimeout: 1s
  timeout: 2s
  retries: 0
{spec}
---
apiVersion: weft/v1
kind: Listener
metadata: {{name: {name}}}
spec: {{address: "127.0.0.1:0", defaultCluster: {name}}}
---
"#
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_the_ca_and_negotiates_h2() {
    let pki = TestPki::new().expect("generating the test PKI");
    let up = Upstream::tls("secure-up", &pki, false)
        .await
        .expect("starting the TLS upstream");
    let ca = path(&pki.ca);
    let rogue = path(&pki.rogue_ca);
    let h1 = format!("  tls: {{ca: \"{ca}\", serverName: localhost}}");
    let h2 = format!("  protocol: HTTP2\n  tls: {{ca: \"{ca}\", serverName: localhost}}");
    let untrusted = format!("  tls: {{ca: \"{rogue}\", serverName: localhost}}");
    let yaml = upstream_tls_config(
        up.addr,
        &[("tls-h1", &h1), ("tls-h2", &h2), ("untrusted", &untrusted)],
    );
    let weft = Weft::start(&yaml)
        .await
        .expect("weft starts with TLS clusters");

    let reply = within(
        "a request to the HTTP/1.1 TLS cluster",
        client::h1(weft.addr("tls-h1"), client::get("/h1")),
    )
    .await
    .expect("the TLS cluster answers");
    assert_eq!(
        reply.status,
        200,
        "TLS upstream over HTTP/1.1: {}",
        reply.text()
    );
    let json = reply.json();
    assert_eq!(json["upstream"], "secure-up");
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(
        json["client_cert"], false,
        "no client certificate was configured"
    );

    let reply = within(
        "a request to the HTTP/2 TLS cluster",
        client::h1(weft.addr("tls-h2"), client::get("/h2")),
    )
    .await
    .expect("the HTTP2 TLS cluster answers");
    assert_eq!(reply.status, 200, "TLS upstream over h2: {}", reply.text());
    assert_eq!(
        reply.json()["version"],
        "HTTP/2",
        "a cluster with protocol HTTP2 must negotiate ALPN h2 with a TLS upstream"
    );

    let reply = within(
        "a request to a cluster that does not trust the upstream",
        client::h1(weft.addr("untrusted"), client::get("/nope")),
    )
    .await
    .expect("weft answers even when the upstream is not trusted");
    assert_eq!(
        reply.status,
        503,
        "an upstream certificate outside the cluster's CA must fail the connection: {}",
        reply.text()
    );
    assert!(
        reply.text().contains("untrusted"),
        "the error names the cluster: {}",
        reply.text()
    );
    assert_eq!(
        up.requests(),
        2,
        "the untrusted cluster never sent a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mtls_presents_the_cluster_certificate() {
    let pki = TestPki::new().expect("generating the test PKI");
    let up = Upstream::tls("strict-up", &pki, true)
        .await
        .expect("starting the mTLS upstream");
    let ca = path(&pki.ca);
    let with_cert = format!(
        "  tls:\n    ca: \"{ca}\"\n    serverName: localhost\n    certificate: \"{}\"\n    privateKey: \"{}\"",
        path(&pki.client_cert),
        path(&pki.client_key)
    );
    let without_cert = format!("  tls: {{ca: \"{ca}\", serverName: localhost}}");
    let yaml = upstream_tls_config(
        up.addr,
        &[("with-cert", &with_cert), ("without-cert", &without_cert)],
    );
    let weft = Weft::start(&yaml)
        .await
        .expect("weft starts with mTLS clusters");

    let reply = within(
        "a request to the cluster with a client certificate",
        client::h1(weft.addr("with-cert"), client::get("/mtls")),
    )
    .await
    .expect("the mTLS cluster answers");
    assert_eq!(reply.status, 200, "upstream mTLS: {}", reply.text());
    assert_eq!(
        reply.json()["client_cert"],
        true,
        "the upstream must have seen the cluster's client certificate"
    );

    let reply = within(
        "a request to the cluster without a client certificate",
        client::h1(weft.addr("without-cert"), client::get("/no-cert")),
    )
    .await
    .expect("weft answers even when the upstream refuses it");
    assert_eq!(
        reply.status,
        503,
        "an upstream refusing the TLS handshake is a connect failure: {}",
        reply.text()
    );
    assert!(
        reply.text().contains("without-cert"),
        "the error names the cluster: {}",
        reply.text()
    );
    assert_eq!(
        up.requests(),
        1,
        "only the request with a certificate was served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_is_served_without_dropping_connections() {
    let pki = TestPki::new().expect("generating the test PKI");
    let up = Upstream::http1("web").await.expect("starting upstream web");
    let tls = format!(
        r#"{{certificate: "{}", privateKey: "{}"}}"#,
        path(&pki.server_cert),
        path(&pki.server_key)
    );
    let weft = Weft::start(&tls_listener_config(up.addr, &tls))
        .await
        .expect("weft starts with a TLS listener");
    let addr = weft.addr("secure");
    let config: Arc<rustls::ClientConfig> = pki.client_config(&[b"http/1.1"], None);

    let mut old = within(
        "opening a keep-alive TLS connection",
        Conn::tls(addr, config.clone(), "localhost"),
    )
    .await
    .expect("a TLS connection to the listener");
    let reply = within("a first request", old.get("/before"))
        .await
        .expect("the first request on the kept-alive connection");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let before = within(
        "reading the served certificate",
        client::peer_certificate(addr, config.clone(), "localhost"),
    )
    .await
    .expect("the served certificate");
    assert!(
        !der_mentions(&before, "rotated.test"),
        "the original certificate must not already be the rotated one"
    );

    pki.rotate_server_cert("rotated.test")
        .expect("rotating the server certificate");
    let rotated = wait_for(
        || {
            let config = config.clone();
            async move {
                client::peer_certificate(addr, config, "localhost")
                    .await
                    .is_ok_and(|der| der_mentions(&der, "rotated.test"))
            }
        },
        Duration::from_secs(3),
    )
    .await;
    assert!(
        rotated,
        "a new TLS connection must see the rotated certificate within 3 s"
    );

    let reply = within("a request on the old connection", old.get("/after"))
        .await
        .expect("the connection opened before the rotation must keep working");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["path"], "/after");

    let reloads = r#"weft_tls_reloads_total{listener="secure",result="success"}"#;
    let value = weft.metric(reloads).await;
    assert!(
        value.is_some_and(|v| v >= 1.0),
        "{reloads} should count the rotation, got {value:?}"
    );
}
