//! Unit tests for properties: Envoy's names and byte encodings, NotFound for what is unknown or
//! not known yet (or not there at all, on a root context), values stored by filters, and the
//! verified mTLS identity.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use weft_abi::{
    Status, decode_map, decode_property_bool, decode_property_i64, split_property_path,
};

use super::*;
use crate::{
    http::{
        headers::client_address_value,
        proxy::{Downstream, TlsInfo},
    },
    tls::PeerIdentity,
    wasm::{context::ResponseHead, hostcalls::tests::stream_data},
};

fn downstream(peer: Option<PeerIdentity>) -> Downstream {
    let client = "10.1.2.3:45678".parse().expect("addr");
    Downstream {
        listener: "public".into(),
        peer: client,
        client_address: client_address_value(client.ip()),
        local: "127.0.0.1:8443".parse().expect("addr"),
        tls: Some(TlsInfo {
            version: "TLSv1.3",
            peer,
        }),
    }
}

fn plugin() -> PluginIdentity {
    PluginIdentity {
        name: "auth".into(),
        root_id: "auth-root".into(),
        vm_id: "vm-1".into(),
    }
}

/// A `GET /` stream on a TLS connection from `10.1.2.3:45678`, before any response.
fn stream(peer: Option<PeerIdentity>) -> StreamData {
    stream_data(downstream(peer), "/", HeaderMap::new()).0
}

fn request_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-request-id", HeaderValue::from_static("rid-7"));
    headers.insert("user-agent", HeaderValue::from_static("curl/8"));
    headers
}

/// Looks `path` up the way a guest asks: a NUL-separated path.
fn get(props: &Properties<'_>, path: &str) -> Result<Vec<u8>, Status> {
    let wire = path.replace('.', "\0");
    props.get(&split_property_path(wire.as_bytes()))
}

#[test]
fn request_and_connection_properties_use_envoys_names_and_encodings() {
    let mut stream = stream(None);
    stream.method = Method::POST;
    stream.path = Bytes::from_static(b"/v1/items?limit=5");
    stream.version = Version::HTTP_2;
    stream.request_headers = request_headers();
    stream.started = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let plugin = plugin();
    let props = Properties::for_stream(&stream, &plugin);
    let text = |path: &str| String::from_utf8(get(&props, path).expect(path)).expect("utf8");
    assert_eq!(
        text("request.path"),
        "/v1/items?limit=5",
        "path with the query"
    );
    assert_eq!(text("request.url_path"), "/v1/items");
    assert_eq!(text("request.query"), "limit=5");
    assert_eq!(text("request.method"), "POST");
    assert_eq!(text("request.host"), "api.example");
    assert_eq!(text("request.scheme"), "https");
    assert_eq!(text("request.protocol"), "HTTP/2");
    assert_eq!(text("request.id"), "rid-7");
    assert_eq!(text("request.useragent"), "curl/8");
    assert_eq!(text("source.address"), "10.1.2.3:45678");
    assert_eq!(text("destination.address"), "127.0.0.1:8443");
    assert_eq!(text("connection.tls_version"), "TLSv1.3");
    assert_eq!(text("plugin_name"), "auth");
    assert_eq!(text("plugin_root_id"), "auth-root");
    assert_eq!(text("plugin_vm_id"), "vm-1");
    assert_eq!(
        get(&props, "source.port").expect("port"),
        45678i64.to_le_bytes(),
        "integers are 8-byte little-endian"
    );
    assert_eq!(
        decode_property_i64(&get(&props, "request.time").expect("time")).expect("i64"),
        1_700_000_000_000_000_000
    );
    let headers = get(&props, "request.headers").expect("headers");
    let pairs = decode_map(&headers).expect("pair encoding");
    // weft keeps the host out of the header fields: it is the `:authority` pseudo-header.
    assert!(
        pairs.contains(&(&b":authority"[..], &b"api.example"[..])),
        "{pairs:?}"
    );
    assert!(
        pairs.contains(&(&b"x-request-id"[..], &b"rid-7"[..])),
        "{pairs:?}"
    );
    assert_eq!(
        decode_property_bool(&get(&props, "connection.mtls").expect("mtls")),
        Ok(false)
    );
}

#[test]
fn unknown_paths_and_values_not_yet_known_are_not_found() {
    let plugin = plugin();
    let stored = PropertyMap::default();
    let root = Properties::for_root(&plugin, &stored);
    for path in [
        "request.path",
        "response.code",
        "request.nonsense",
        "nonsense",
        "connection.uri_san_peer_certificate",
        "weft.peer_principal",
        "source.address",
    ] {
        assert_eq!(
            get(&root, path),
            Err(Status::NotFound),
            "root context: {path}"
        );
    }
    assert_eq!(
        get(&root, "plugin_name").expect("plugin properties need no stream"),
        b"auth"
    );

    let stream = stream(None);
    let props = Properties::for_stream(&stream, &plugin);
    for path in [
        "response.code",
        "response.headers",
        "request.nonsense",
        "nonsense",
        "connection.uri_san_peer_certificate",
        "weft.peer_principal",
    ] {
        assert_eq!(get(&props, path), Err(Status::NotFound), "stream: {path}");
    }
}

#[test]
fn the_response_code_is_an_integer_once_there_is_a_response() {
    let mut stream = stream(None);
    stream.response = Some(ResponseHead {
        status: StatusCode::SERVICE_UNAVAILABLE,
        headers: HeaderMap::new(),
    });
    let plugin = plugin();
    let props = Properties::for_stream(&stream, &plugin);
    assert_eq!(
        decode_property_i64(&get(&props, "response.code").expect("code")),
        Ok(503)
    );
    assert_eq!(
        get(&props, "response.trailers"),
        Err(Status::NotFound),
        "no trailers yet"
    );
    let headers = get(&props, "response.headers").expect("headers");
    assert_eq!(
        decode_map(&headers).expect("pair encoding"),
        [(&b":status"[..], &b"503"[..])]
    );
}

#[test]
fn the_verified_peer_identity_is_readable() {
    let identity = PeerIdentity {
        principal: Some("spiffe://weft.test/ns/default/sa/client".into()),
        uri_sans: vec![
            "spiffe://weft.test/ns/default/sa/client".into(),
            "spiffe://other".into(),
        ],
        dns_sans: vec!["client.test".into()],
        subject: "CN=client".into(),
    };
    let stream = stream(Some(identity));
    let plugin = plugin();
    let props = Properties::for_stream(&stream, &plugin);
    let text = |path: &str| String::from_utf8(get(&props, path).expect(path)).expect("utf8");
    assert_eq!(
        text("connection.uri_san_peer_certificate"),
        "spiffe://weft.test/ns/default/sa/client",
        "the first URI SAN"
    );
    assert_eq!(text("connection.dns_san_peer_certificate"), "client.test");
    assert_eq!(text("connection.subject_peer_certificate"), "CN=client");
    assert_eq!(
        text("weft.peer_principal"),
        "spiffe://weft.test/ns/default/sa/client"
    );
    assert_eq!(
        decode_property_bool(&get(&props, "connection.mtls").expect("mtls")),
        Ok(true)
    );
}

#[test]
fn values_stored_by_filters_read_back_by_path() {
    let mut stream = stream(None);
    stream
        .properties
        .insert(UPSTREAM_CLUSTER.to_owned(), Bytes::from_static(b"canary"));
    stream
        .properties
        .insert("my.filter.state".to_owned(), Bytes::from_static(b"x"));
    let plugin = plugin();
    let props = Properties::for_stream(&stream, &plugin);
    assert_eq!(
        get(&props, "weft.upstream_cluster").expect("cluster"),
        b"canary"
    );
    assert_eq!(get(&props, "my.filter.state").expect("state"), b"x");

    let mut stored = PropertyMap::default();
    stored.insert("root.state".to_owned(), Bytes::from_static(b"r"));
    let root = Properties::for_root(&plugin, &stored);
    assert_eq!(get(&root, "root.state").expect("root state"), b"r");
}

#[test]
fn sizes_duration_and_cluster_read_as_envoy_encodes_them() {
    let mut stream = stream(None);
    stream.request_headers = request_headers();
    let plugin = plugin();
    let int = |stream: &StreamData, path: &str| {
        let props = Properties::for_stream(stream, &plugin);
        decode_property_i64(&get(&props, path).expect(path)).expect("8-byte integer")
    };
    // `:authority` api.example, `:path` /, `:method` GET, `:scheme` https: 49 bytes;
    // x-request-id: rid-7 and user-agent: curl/8: 33 more.
    let request_headers = 49 + 33;
    assert_eq!(int(&stream, "request.size"), 0, "no body yet");
    assert_eq!(int(&stream, "request.total_size"), request_headers);
    assert_eq!(int(&stream, "response.size"), 0, "nothing sent yet");
    assert_eq!(int(&stream, "response.total_size"), 0);
    {
        let props = Properties::for_stream(&stream, &plugin);
        for path in [
            "request.duration",
            "xds.cluster_name",
            "weft.upstream_cluster",
        ] {
            assert_eq!(get(&props, path), Err(Status::NotFound), "{path} not yet");
        }
    }

    // Routed to `web`; 1000 body bytes in, a 200 with 2500 body bytes and trailers out.
    stream.cluster = Some("web".into());
    stream.request_body_bytes = 1000;
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain")); // 22
    stream.response = Some(ResponseHead {
        status: StatusCode::OK,
        headers,
    });
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0")); // 12
    stream.response_trailers = Some(trailers);
    stream.response_body_bytes = 2500;
    stream.duration = Some(Duration::from_millis(1500));

    assert_eq!(int(&stream, "request.size"), 1000);
    assert_eq!(int(&stream, "request.total_size"), 1000 + request_headers);
    assert_eq!(int(&stream, "response.size"), 2500);
    assert_eq!(
        int(&stream, "response.total_size"),
        2500 + (":status".len() + 3) as i64 + 22 + 12
    );
    assert_eq!(
        int(&stream, "request.duration"),
        1_500_000_000,
        "a duration is nanoseconds"
    );
    let props = Properties::for_stream(&stream, &plugin);
    assert_eq!(get(&props, "xds.cluster_name").expect("routed"), b"web");
    assert_eq!(
        get(&props, "weft.upstream_cluster").expect("routed"),
        b"web",
        "the listener's default reads back as the upstream cluster"
    );

    stream.request_headers.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from_static("1200"),
    );
    assert_eq!(
        int(&stream, "request.size"),
        1200,
        "a declared content-length is the request size, as in Envoy"
    );
}

#[test]
fn the_cluster_a_filter_chose_reads_back_from_both_properties() {
    let mut stream = stream(None);
    stream
        .properties
        .insert(UPSTREAM_CLUSTER.to_owned(), Bytes::from_static(b"canary"));
    let plugin = plugin();
    {
        let props = Properties::for_stream(&stream, &plugin);
        assert_eq!(
            get(&props, "weft.upstream_cluster").expect("set"),
            b"canary"
        );
        assert_eq!(
            get(&props, "xds.cluster_name"),
            Err(Status::NotFound),
            "not routed yet"
        );
    }
    stream.cluster = Some("canary".into());
    let props = Properties::for_stream(&stream, &plugin);
    assert_eq!(get(&props, "xds.cluster_name").expect("routed"), b"canary");
    assert_eq!(
        get(&props, "weft.upstream_cluster").expect("set"),
        b"canary"
    );
}

#[test]
fn addresses_read_as_socket_addresses_display_them() {
    for addr in [
        "0.0.0.0:0",
        "9.10.99.100:9",
        "255.255.255.255:65535",
        "127.0.0.1:10000",
        "[::1]:8080",
        "[2001:db8::7]:443",
    ] {
        let addr: std::net::SocketAddr = addr.parse().expect("address");
        assert_eq!(super::address_bytes(addr), addr.to_string().into_bytes());
    }
}
