//! Wasm filters on the request path, each run from both builds (`wasm32-wasip1` and
//! `wasm32-unknown-unknown`) of a test filter and over HTTP/1.1 and h2c: request phases in chain
//! order and response phases in reverse, headers added and removed, a local reply that skips
//! the rest of the chain and the upstream, a request body buffered whole and rewritten (413
//! past the listener's `maxBufferedBodyBytes`), host properties with Envoy's names and
//! encodings (the telemetry ones — sizes, duration, cluster — read in `on_log`), and metrics a
//! plugin defines (plain and labeled) exported on `/stats/prometheus`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Version};
use weft_e2e::client::{self, H1Conn, H2Conn, Reply};
use weft_e2e::filters::{STEP, VERSIONS, module, send, start, start_one_filter, step};
use weft_e2e::resources::{Chain, Cluster, Filter, Listener, Plugin, edge, join};
use weft_e2e::upstream::{Upstream, header_values};
use weft_e2e::{stream, wait_for};
use weft_test_artifacts::TARGETS;

/// The values of response header `name`, in order.
fn response_values(reply: &Reply, name: &str) -> Vec<String> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// `headers` twice, as `a` then `b`.
fn two_headers_filters(up: SocketAddr, target: &str) -> String {
    edge(
        up,
        &[Plugin::new("headers", module("headers", target))],
        [
            Filter::new("headers").named("a"),
            Filter::new("headers").named("b"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_phases_run_in_chain_order_and_response_phases_in_reverse() {
    for target in TARGETS {
        let up = Upstream::http1("web").await.expect("upstream");
        let weft = start(&two_headers_filters(up.addr, target), target).await;
        for version in VERSIONS {
            let mut req = client::get("/chain?q=1");
            let headers = req.headers_mut();
            headers.insert("x-remove-me", HeaderValue::from_static("secret"));
            headers.insert("x-keep-me", HeaderValue::from_static("kept"));
            let reply = send(weft.addr("public"), version, req).await;
            let ctx = format!("{target} over {version:?}");
            assert_eq!(reply.status, 200, "{ctx}: {}", reply.text());
            let seen = reply.json();
            assert_eq!(
                header_values(&seen, "x-filtered-by"),
                ["a", "b"],
                "{ctx}: the upstream sees one x-filtered-by per filter, in chain order: {seen}"
            );
            assert!(
                seen["headers"].get("x-remove-me").is_none(),
                "{ctx}: x-remove-me is removed before the upstream: {seen}"
            );
            assert_eq!(seen["headers"]["x-keep-me"], "kept", "{ctx}");
            assert_eq!(seen["path"], "/chain?q=1", "{ctx}");
            assert_eq!(
                response_values(&reply, "x-response-filtered-by"),
                ["b", "a"],
                "{ctx}: response phases run bottom-up"
            );
            assert_eq!(
                response_values(&reply, "x-response-filter"),
                ["1", "1"],
                "{ctx}"
            );
            assert_eq!(reply.header("x-upstream"), Some("web"), "{ctx}");
        }
        assert_eq!(up.requests(), 2, "{target}: one upstream request each");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reply_skips_the_rest_of_the_chain_and_the_upstream() {
    for target in TARGETS {
        let up = Upstream::http1("web").await.expect("upstream");
        let weft = start(&two_headers_filters(up.addr, target), target).await;
        for version in VERSIONS {
            let mut req = client::get("/private");
            req.headers_mut()
                .insert("x-deny", HeaderValue::from_static("1"));
            let reply = send(weft.addr("public"), version, req).await;
            let ctx = format!("{target} over {version:?}");
            assert_eq!(reply.status, 403, "{ctx}: {}", reply.text());
            assert_eq!(reply.header("x-denied-by"), Some("a"), "{ctx}");
            assert_eq!(reply.text(), "denied by a\n", "{ctx}");
            assert_eq!(reply.header("x-upstream"), None, "{ctx}");
        }
        // The chain still serves normal requests afterwards.
        let reply = send(weft.addr("public"), Version::HTTP_11, client::get("/")).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.text());
        assert_eq!(
            up.requests(),
            1,
            "{target}: the denied requests never reached the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_is_buffered_whole_and_rewritten() {
    for target in TARGETS {
        let (_up, weft) = start_one_filter(target, Filter::new("body")).await;
        let addr = weft.addr("public");
        for version in VERSIONS {
            let body = "Hello, Weft! 123 \u{fc}ber";
            let reply = send(addr, version, client::post("/echo", body)).await;
            assert_eq!(reply.status, 200, "{target} over {version:?}");
            assert_eq!(
                reply.text(),
                "HELLO, WEFT! 123 \u{fc}BER",
                "{target} over {version:?}: ASCII letters uppercased, other bytes untouched"
            );
        }

        // A body arriving in several chunks is handed to the filter whole: every chunk is
        // uppercased, not only the last.
        for version in VERSIONS {
            let chunks = ["first chunk, ", "second chunk, ", "last"].map(str::as_bytes);
            let reply = post_chunks(addr, version, "/echo", &chunks).await;
            assert_eq!(reply.status, 200, "{target} over {version:?}");
            assert_eq!(
                reply.text(),
                "FIRST CHUNK, SECOND CHUNK, LAST",
                "{target} over {version:?}: the filter saw the whole body at once"
            );
        }
    }
}

/// `req` with header `name` set (to `1`).
fn with_header(
    mut req: Request<http_body_util::Full<Bytes>>,
    name: &'static str,
) -> Request<http_body_util::Full<Bytes>> {
    req.headers_mut()
        .insert(name, HeaderValue::from_static("1"));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_is_buffered_whole_and_rewritten_small_large_or_chunked() {
    let (_up, weft) = start_one_filter(TARGETS[0], Filter::new("body")).await;
    let addr = weft.addr("public");
    let large = "weft ".repeat(20 << 10); // 100 KiB: past the size read whole
    for version in VERSIONS {
        // Echoed bodies (streamed through the phase while the request body may still arrive;
        // the filter holds them until their end): a small one, a large one, and a chunked one.
        for (what, req, expected) in [
            (
                "small",
                client::post("/echo", "hello, whole body"),
                "HELLO, WHOLE BODY".to_string(),
            ),
            (
                "large",
                client::post("/echo", large.clone()),
                large.to_ascii_uppercase(),
            ),
            ("chunked", client::get("/stream/3"), "CHUNK\n".repeat(3)),
        ] {
            let reply = send(addr, version, with_header(req, "x-upper-response")).await;
            assert_eq!(reply.status, 200, "{what} over {version:?}");
            assert!(
                reply.text() == expected,
                "{what} over {version:?}: the filter rewrote the whole response body, got \
                 {} bytes: {:.80}",
                reply.body.len(),
                reply.text()
            );
        }
        // A request body of known length still arriving in chunks while the upstream (`/echo`)
        // already answered with a head of that length: the response body waits for the request
        // body, which must not wait for the response.
        let chunks = ["echo ", "in ", "chunks"].map(str::as_bytes);
        let headers = [
            ("x-upper-response", "1".to_string()),
            ("content-length", chunks.concat().len().to_string()),
        ];
        let reply = post_chunks_with(addr, version, "/echo", &headers, &chunks).await;
        assert_eq!(reply.status, 200, "chunked echo over {version:?}");
        assert_eq!(
            reply.text(),
            "ECHO IN CHUNKS",
            "chunked echo over {version:?}: request and response bodies both rewritten"
        );

        // Untouched without the header: the filter's body phase passes it on as it is.
        let reply = send(addr, version, client::get("/stream/1")).await;
        assert_eq!(reply.text(), "chunk\n", "{version:?}");

        // A small body of known length, for a request without one, is read whole before the
        // head leaves: rewritten there, and a local reply from its phase is the client's answer,
        // not a response cut short.
        let reply = send(
            addr,
            version,
            with_header(client::get("/"), "x-upper-response"),
        )
        .await;
        assert_eq!(reply.status, 200, "{version:?}");
        let text = reply.text();
        assert!(
            text.contains("\"UPSTREAM\":\"WEB\"") && text == text.to_ascii_uppercase(),
            "{version:?}: the upstream's JSON uppercased whole: {text:.200}"
        );
        let reply = send(
            addr,
            version,
            with_header(client::get("/"), "x-reject-response"),
        )
        .await;
        assert_eq!(reply.status, 418, "{version:?}: {}", reply.text());
        assert_eq!(
            reply.text(),
            "rejected by the response-body phase",
            "{version:?}"
        );
    }
}

/// POSTs `chunks` to `path` as a streamed body on a fresh connection of `version`, 30 ms
/// apart (so each arrives as a frame of its own), and reads the response. Stops sending once
/// the request is gone (the proxy answered early).
async fn post_chunks(addr: SocketAddr, version: Version, path: &str, chunks: &[&[u8]]) -> Reply {
    post_chunks_with(addr, version, path, &[], chunks).await
}

/// [`post_chunks`] with request headers `headers`.
async fn post_chunks_with(
    addr: SocketAddr,
    version: Version,
    path: &str,
    headers: &[(&'static str, String)],
    chunks: &[&[u8]],
) -> Reply {
    let what = format!("POST {path} in {} chunks over {version:?}", chunks.len());
    let mut req = Request::post(path).body(()).expect("a request");
    for (name, value) in headers {
        let value = HeaderValue::from_str(value).expect("a header value");
        req.headers_mut().insert(*name, value);
    }
    let (body, pending) = match version {
        Version::HTTP_2 => step(&what, stream::h2c(addr, req)).await,
        _ => step(&what, stream::h1(addr, req)).await,
    };
    for chunk in chunks {
        if body.send(chunk.to_vec()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    body.finish();
    let response = step(&format!("{what}: the response head"), pending.response()).await;
    step(&format!("{what}: the response body"), response.finish()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_buffer_limit_is_413() {
    let up = Upstream::http1("web").await.expect("upstream");
    let yaml = join([
        Cluster::new("web", &[up.addr]).to_string(),
        Plugin::new("body", module("body", TARGETS[0])).to_string(),
        Chain::new("edge", [Filter::new("body")]).to_string(),
        Listener::new("public", "web")
            .chain("edge")
            .field("limits", "{maxBufferedBodyBytes: 1024}")
            .to_string(),
    ]);
    let weft = start(&yaml, "maxBufferedBodyBytes: 1024").await;
    let addr = weft.addr("public");
    let kib = [b'a'; 1024];
    for version in VERSIONS {
        // The filter holds the body until its end: past 1024 bytes held, the request fails.
        // (Not on `/echo`, which answers before the body arrives: once a response has begun,
        // a request failure can only cut it short.)
        let reply = post_chunks(addr, version, "/upload", &[&kib, &kib, &kib, &kib]).await;
        assert_eq!(
            reply.status,
            413,
            "{version:?}: 4096 bytes buffered past a 1024-byte limit: {:.200}",
            reply.text()
        );
        assert!(
            !reply.body.windows(64).any(|w| w == [b'A'; 64]),
            "{version:?}: no rewritten body leaks out"
        );
        // A body within the limit still goes through.
        let reply = post_chunks(addr, version, "/echo", &[&kib[..500], &kib[..500]]).await;
        assert_eq!(reply.status, 200, "{version:?}: {:.200}", reply.text());
        assert_eq!(reply.body, Bytes::from(vec![b'A'; 1000]), "{version:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_properties_reach_the_filter_in_envoys_encodings() {
    for target in TARGETS {
        let (_up, weft) =
            start_one_filter(target, Filter::new("properties").named("inspector")).await;
        let addr = weft.addr("public");
        for version in VERSIONS {
            let ctx = format!("{target} over {version:?}");
            let tcp = client::tcp(addr).await.expect("connecting to public");
            let local = tcp.local_addr().expect("the client's address");
            let mut req = client::post("/props/x?y=1&z=two", "body");
            let headers = req.headers_mut();
            // A client cannot supply what the filter sets.
            for (name, spoof) in [
                ("x-prop-request-path", "/spoofed"),
                ("x-prop-request-method", "DELETE"),
                ("x-prop-source-address", "203.0.113.9:1"),
                ("x-prop-connection-mtls", "true"),
                ("x-prop-plugin-name", "admin"),
            ] {
                headers.insert(name, HeaderValue::from_static(spoof));
            }
            let reply = step(&ctx, async {
                match version {
                    Version::HTTP_2 => {
                        let conn = H2Conn::handshake(tcp, "http", addr.to_string()).await?;
                        conn.send(req).await
                    }
                    _ => {
                        let mut conn = H1Conn::handshake(tcp, addr.to_string()).await?;
                        conn.send(req).await
                    }
                }
            })
            .await;
            assert_eq!(reply.status, 200, "{ctx}: {}", reply.text());
            let seen = reply.json();
            let expected = [
                ("x-prop-request-path", "/props/x?y=1&z=two".to_owned()),
                ("x-prop-request-method", "POST".to_owned()),
                ("x-prop-source-address", local.to_string()),
                ("x-prop-connection-mtls", "false".to_owned()),
                ("x-prop-plugin-name", "inspector".to_owned()),
            ];
            for (header, value) in expected {
                assert_eq!(
                    header_values(&seen, header),
                    [value.as_str()],
                    "{ctx}: {header} (exactly one value, set by the filter): {seen}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_a_plugin_defines_are_exported_and_count_every_request() {
    for target in TARGETS {
        let (_up, weft) = start_one_filter(target, Filter::new("metrics")).await;
        let requests = 6;
        for i in 1..=requests {
            let version = VERSIONS[i % 2];
            let reply = send(weft.addr("public"), version, client::get("/")).await;
            assert_eq!(reply.status, 200, "{target}: {}", reply.text());
            assert_eq!(
                header_values(&reply.json(), "x-requests"),
                [i.to_string()],
                "{target}: request {i} reads the counter it just incremented"
            );
        }
        let k = requests as f64;
        assert_eq!(
            weft.metric("weft_test_requests").await,
            Some(k),
            "{target}: the counter on /stats/prometheus"
        );
        assert_eq!(
            weft.metric("weft_test_request_headers_count").await,
            Some(k),
            "{target}: one histogram sample per request"
        );
        let idle = wait_for(
            || async { weft.metric("weft_test_active_requests").await == Some(0.0) },
            STEP,
        )
        .await;
        assert!(
            idle,
            "{target}: the gauge returns to 0 once every request is logged, got {:?}",
            weft.metric("weft_test_active_requests").await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_without_the_chain_is_not_filtered() {
    let up = Upstream::http1("web").await.expect("upstream");
    let mut yaml = two_headers_filters(up.addr, TARGETS[0]);
    yaml.push_str("---\n");
    yaml.push_str(&Listener::new("plain", "web").to_string());
    let weft = start(&yaml, "a filtered and a plain listener").await;
    let mut req = client::get("/");
    req.headers_mut()
        .insert("x-remove-me", HeaderValue::from_static("kept"));
    let reply = send(weft.addr("plain"), Version::HTTP_11, req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    assert!(header_values(&seen, "x-filtered-by").is_empty(), "{seen}");
    assert_eq!(seen["headers"]["x-remove-me"], "kept");
    assert!(response_values(&reply, "x-response-filtered-by").is_empty());
}

/// A guest (in WAT) that, in `on_log`, reads the telemetry properties and exports them: the
/// integers as gauges `e2e_<property>` (last request wins), `xds.cluster_name` and
/// `weft.upstream_cluster` as labeled counters `e2e_routed{cluster="…"}` and
/// `e2e_upstream{cluster="…"}` (built as labeled metric names, one series per value).
const TELEMETRY_PROBE: &str = r#"(module
  (import "env" "proxy_get_property" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_record_metric" (func $record (param i32 i64) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment (param i32 i64) (result i32)))
  (memory (export "memory") 4)
  (global $heap (mut i32) (i32.const 65536))
  (data (i32.const 1024) "request\00size")
  (data (i32.const 1040) "request\00total_size")
  (data (i32.const 1060) "response\00size")
  (data (i32.const 1080) "response\00total_size")
  (data (i32.const 1100) "request\00duration")
  (data (i32.const 1120) "xds\00cluster_name")
  (data (i32.const 1140) "weft\00upstream_cluster")
  (data (i32.const 2048) "e2e_request_size")
  (data (i32.const 2080) "e2e_request_total_size")
  (data (i32.const 2112) "e2e_response_size")
  (data (i32.const 2144) "e2e_response_total_size")
  (data (i32.const 2176) "e2e_request_duration_ns")
  (data (i32.const 4096) "e2e_routed{cluster=\"")
  (data (i32.const 8192) "e2e_upstream{cluster=\"")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap (i32.add (global.get $heap)
      (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $at))
  ;; Property `path` (an integer) into gauge `name`.
  (func $gauge (param $path i32) (param $path_len i32) (param $name i32) (param $name_len i32)
    (if (i32.eqz (call $get (local.get $path) (local.get $path_len) (i32.const 0) (i32.const 4)))
      (then
        (drop (call $define (i32.const 1) (local.get $name) (local.get $name_len) (i32.const 8)))
        (drop (call $record (i32.load (i32.const 8)) (i64.load (i32.load (i32.const 0))))))))
  ;; Property `path` (a string) as the label value after the prefix at `name`: +1 on that series.
  (func $labeled (param $path i32) (param $path_len i32) (param $name i32) (param $prefix i32)
    (local $len i32) (local $end i32)
    (if (i32.eqz (call $get (local.get $path) (local.get $path_len) (i32.const 0) (i32.const 4)))
      (then
        (local.set $len (i32.load (i32.const 4)))
        (local.set $end (i32.add (i32.add (local.get $name) (local.get $prefix)) (local.get $len)))
        (memory.copy (i32.add (local.get $name) (local.get $prefix))
          (i32.load (i32.const 0)) (local.get $len))
        (i32.store16 (local.get $end) (i32.const 0x7d22))
        (drop (call $define (i32.const 0) (local.get $name)
          (i32.add (i32.sub (local.get $end) (local.get $name)) (i32.const 2)) (i32.const 8)))
        (drop (call $increment (i32.load (i32.const 8)) (i64.const 1))))))
  (func (export "proxy_on_log") (param $context i32)
    (call $gauge (i32.const 1024) (i32.const 12) (i32.const 2048) (i32.const 16))
    (call $gauge (i32.const 1040) (i32.const 18) (i32.const 2080) (i32.const 22))
    (call $gauge (i32.const 1060) (i32.const 13) (i32.const 2112) (i32.const 17))
    (call $gauge (i32.const 1080) (i32.const 19) (i32.const 2144) (i32.const 23))
    (call $gauge (i32.const 1100) (i32.const 16) (i32.const 2176) (i32.const 23))
    (call $labeled (i32.const 1120) (i32.const 16) (i32.const 4096) (i32.const 20))
    (call $labeled (i32.const 1140) (i32.const 21) (i32.const 8192) (i32.const 22))
    (global.set $heap (i32.const 65536))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_log_reads_sizes_duration_and_cluster_and_exports_labeled_metrics() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let wat = dir.path().join("telemetry-probe.wat");
    std::fs::write(&wat, TELEMETRY_PROBE).expect("writing the probe");
    let up = Upstream::http1("web").await.expect("upstream");
    let plugin = Plugin::new("probe", wat.to_str().expect("a UTF-8 path"));
    let weft = start(
        &edge(up.addr, &[plugin], [Filter::new("probe")]),
        "the telemetry probe",
    )
    .await;
    let addr = weft.addr("public");
    for (i, version) in VERSIONS.into_iter().enumerate() {
        let ctx = format!("{version:?}");
        // Streamed without a content-length: the size is what arrived.
        let reply = post_chunks(addr, version, "/sized", &[b"hello ", b"weft"]).await;
        assert_eq!(reply.status, 200, "{ctx}: {}", reply.text());
        let sent = reply.body.len() as f64;
        let logged = wait_for(
            || async { weft.metric("e2e_routed{cluster=\"web\"}").await == Some((i + 1) as f64) },
            STEP,
        )
        .await;
        assert!(
            logged,
            "{ctx}: on_log read xds.cluster_name = web: {:?}",
            weft.metrics().await
        );
        assert_eq!(
            weft.metric("e2e_upstream{cluster=\"web\"}").await,
            Some((i + 1) as f64),
            "{ctx}: the default cluster reads back as weft.upstream_cluster"
        );
        assert_eq!(weft.metric("e2e_request_size").await, Some(10.0), "{ctx}");
        assert_eq!(weft.metric("e2e_response_size").await, Some(sent), "{ctx}");
        let request_total = weft.metric("e2e_request_total_size").await.unwrap_or(0.0);
        assert!(
            request_total > 10.0 + "/sized".len() as f64,
            "{ctx}: headers count in request.total_size: {request_total}"
        );
        let response_total = weft.metric("e2e_response_total_size").await.unwrap_or(0.0);
        assert!(
            response_total > sent,
            "{ctx}: headers count in response.total_size: {response_total}"
        );
        let duration = weft.metric("e2e_request_duration_ns").await.unwrap_or(0.0);
        assert!(
            duration > 0.0 && duration < STEP.as_nanos() as f64,
            "{ctx}: request.duration in ns: {duration}"
        );
    }
}
