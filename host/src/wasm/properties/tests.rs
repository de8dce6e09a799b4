//! Unit tests for properties: Envoy's names and byte encodings, NotFound for what is unknown or
//! not known yet, values stored by filters, and the verified mTLS identity.

use std::{
    collections::HashMap,
    time::{Duration, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use weft_abi::{
    Status, decode_map, decode_property_bool, decode_property_i64, split_property_path,
};

use super::*;
use crate::{
    http::{headers::client_address_value, proxy::TlsInfo},
    tls::PeerIdentity,
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

/// What every lookup needs besides the request and response: a connection, a plugin, and the
/// values filters stored.
struct Fixture {
    down: Downstream,
    plugin: PluginIdentity,
    stored: HashMap<String, Bytes>,
}

impl Fixture {
    fn new(peer: Option<PeerIdentity>) -> Self {
        Self {
            down: downstream(peer),
            plugin: plugin(),
            stored: HashMap::new(),
        }
    }

    fn props<'a>(
        &'a self,
        request: Option<RequestView<'a>>,
        response: Option<ResponseView<'a>>,
    ) -> Properties<'a> {
        Properties {
            downstream: &self.down,
            request,
            response,
            plugin: &self.plugin,
            stored: &self.stored,
        }
    }
}

fn request_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("api.example"));
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
    let uri: Uri = "/v1/items?limit=5".parse().expect("uri");
    let headers = request_headers();
    let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let fixture = Fixture::new(None);
    let props = fixture.props(
        Some(RequestView {
            method: &Method::POST,
            uri: &uri,
            version: Version::HTTP_2,
            headers: &headers,
            time,
        }),
        None,
    );
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
    assert!(
        pairs.contains(&(&b"host"[..], &b"api.example"[..])),
        "{pairs:?}"
    );
    assert_eq!(
        decode_property_bool(&get(&props, "connection.mtls").expect("mtls")),
        Ok(false)
    );
}

#[test]
fn unknown_paths_and_values_not_yet_known_are_not_found() {
    let fixture = Fixture::new(None);
    let props = fixture.props(None, None);
    for path in [
        "request.path",
        "response.code",
        "request.nonsense",
        "nonsense",
        "connection.uri_san_peer_certificate",
        "weft.peer_principal",
    ] {
        assert_eq!(get(&props, path), Err(Status::NotFound), "{path}");
    }
}

#[test]
fn the_response_code_is_an_integer_once_there_is_a_response() {
    let fixture = Fixture::new(None);
    let headers = HeaderMap::new();
    let props = fixture.props(
        None,
        Some(ResponseView {
            code: 503,
            headers: &headers,
            trailers: None,
        }),
    );
    assert_eq!(
        decode_property_i64(&get(&props, "response.code").expect("code")),
        Ok(503)
    );
    assert_eq!(
        get(&props, "response.trailers"),
        Err(Status::NotFound),
        "no trailers yet"
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
    let fixture = Fixture::new(Some(identity));
    let props = fixture.props(None, None);
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
    let mut fixture = Fixture::new(None);
    fixture
        .stored
        .insert(UPSTREAM_CLUSTER.to_owned(), Bytes::from_static(b"canary"));
    fixture
        .stored
        .insert("my.filter.state".to_owned(), Bytes::from_static(b"x"));
    let props = fixture.props(None, None);
    assert_eq!(
        get(&props, "weft.upstream_cluster").expect("cluster"),
        b"canary"
    );
    assert_eq!(get(&props, "my.filter.state").expect("state"), b"x");
}
