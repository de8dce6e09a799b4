//! Header rewriting at the proxy boundary: hop-by-hop headers removed both ways (RFC 9110
//! §7.6.1), `x-forwarded-for` / `x-forwarded-proto` / `x-request-id` set on the way up, and the
//! size and count limits checked on the way in.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::error::ProxyError;
use crate::tls::PeerIdentity;

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-client-cert` (Envoy's XFCC).
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Headers that describe one connection, never forwarded.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The position of `name` in [`HOP_BY_HOP`]: a match on the name's text, which compiles to a
/// length switch, costs less than eight name comparisons for every header of every message.
fn hop_by_hop(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "transfer-encoding" => 6,
        "upgrade" => 7,
        _ => return None,
    })
}

/// The comma-separated tokens of every `name` header, trimmed, empty ones skipped:
/// `Connection: keep-alive, x-a` gives `keep-alive` and `x-a`.
pub fn list_tokens<'a>(
    headers: &'a HeaderMap,
    name: HeaderName,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// Removes hop-by-hop headers, including those the `Connection` header names. A `te` that
/// accepts `trailers` is reduced to `te: trailers` when `keep_te_trailers` is set: the upstream
/// then knows the client takes trailers (gRPC needs it), as Envoy does.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // One pass to find what is there: most requests carry none of these, and a lookup per
    // name on every request costs more than a scan of a dozen keys.
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop(name) {
            present[i] = true;
        }
    }
    let named_by_connection = present[0];
    if !present.contains(&true) {
        return;
    }
    let te_trailers = keep_te_trailers
        && list_tokens(headers, header::TE).any(|t| t.eq_ignore_ascii_case(b"trailers"));
    if named_by_connection {
        // `Connection: keep-alive` / `close` are the common cases and name nothing else to
        // remove; only other tokens cost a parse.
        let named: Vec<HeaderName> = list_tokens(headers, header::CONNECTION)
            .filter(|token| {
                !token.eq_ignore_ascii_case(b"keep-alive") && !token.eq_ignore_ascii_case(b"close")
            })
            .filter_map(|token| HeaderName::from_bytes(token).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The client address as `x-forwarded-for` carries it; rendered once per connection.
pub fn client_address_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Appends the client address (from [`client_address_value`]) to `x-forwarded-for` and sets
/// `x-forwarded-proto`.
pub fn set_forwarded(headers: &mut HeaderMap, client: &HeaderValue, scheme: &'static str) {
    let previous = headers
        .get(&X_FORWARDED_FOR)
        .filter(|v| !v.as_bytes().trim_ascii().is_empty());
    let value = match previous {
        Some(previous) => {
            let mut joined = Vec::with_capacity(previous.len() + 2 + client.len());
            joined.extend_from_slice(previous.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.clone())
        }
        None => client.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), value);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
}

/// Envoy's `SANITIZE_SET`: a client-supplied `x-forwarded-client-cert` is always dropped (a
/// client must not claim an identity), and on mTLS connections it is set from the verified
/// certificate: `By` is absent, `URI` and `DNS` list the SANs, `Subject` the subject.
pub fn set_client_cert(headers: &mut HeaderMap, peer: Option<&PeerIdentity>) {
    headers.remove(&X_FORWARDED_CLIENT_CERT);
    let Some(peer) = peer else { return };
    let mut parts = vec![format!("Subject=\"{}\"", peer.subject.replace('"', "'"))];
    parts.extend(peer.uri_sans.iter().map(|uri| format!("URI={uri}")));
    parts.extend(peer.dns_sans.iter().map(|dns| format!("DNS={dns}")));
    if let Ok(value) = HeaderValue::from_str(&parts.join(";")) {
        headers.insert(X_FORWARDED_CLIENT_CERT.clone(), value);
    }
}

/// Returns the request's `x-request-id`, generating a UUIDv4 when it is absent or empty.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID)
        && !id.is_empty()
    {
        return id.clone();
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    let value = HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("0"));
    headers.insert(X_REQUEST_ID.clone(), value.clone());
    value
}

/// Checks the header count and the header block size (name + value + 4 bytes of framing per
/// header, as HTTP/1.1 puts it on the wire) against a listener's limits.
pub fn check_limits(
    headers: &HeaderMap,
    max_headers: usize,
    max_bytes: usize,
) -> Result<(), ProxyError> {
    let count = headers.len();
    if count > max_headers {
        return Err(ProxyError::TooManyHeaders {
            count,
            limit: max_headers,
        });
    }
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if size > max_bytes {
        return Err(ProxyError::HeadersTooLarge {
            size,
            limit: max_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn list_tokens_split_trim_and_skip_empties_across_header_lines() {
        let headers = map(&[
            ("connection", " keep-alive ,, x-a"),
            ("connection", "close"),
            ("te", "trailers"),
        ]);
        let tokens: Vec<&[u8]> = list_tokens(&headers, header::CONNECTION).collect();
        assert_eq!(tokens, vec![&b"keep-alive"[..], b"x-a", b"close"]);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers, gzip"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-kept"], "yes");
    }

    #[test]
    fn te_trailers_survives_when_asked() {
        let mut headers = map(&[("te", "trailers"), ("connection", "te")]);
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers["te"], "trailers");
    }

    #[test]
    fn forwarded_for_appends_and_proto_is_set() {
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "ftp"),
        ]);
        set_forwarded(
            &mut headers,
            &client_address_value("10.1.2.3".parse().expect("ip")),
            "https",
        );
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "https");
        let mut fresh = HeaderMap::new();
        set_forwarded(
            &mut fresh,
            &client_address_value("::1".parse().expect("ip")),
            "http",
        );
        assert_eq!(fresh["x-forwarded-for"], "::1");
    }

    #[test]
    fn client_cert_header_is_sanitized_and_set_from_the_verified_peer() {
        let mut headers = map(&[("x-forwarded-client-cert", "URI=spiffe://evil/admin")]);
        set_client_cert(&mut headers, None);
        assert!(
            headers.get("x-forwarded-client-cert").is_none(),
            "a client cannot claim an identity"
        );
        let peer = PeerIdentity {
            principal: Some("spiffe://weft.test/sa/client".into()),
            uri_sans: vec!["spiffe://weft.test/sa/client".into()],
            dns_sans: vec!["client.test".into()],
            subject: "CN=client".into(),
        };
        let mut headers = map(&[("x-forwarded-client-cert", "URI=spiffe://evil/admin")]);
        set_client_cert(&mut headers, Some(&peer));
        assert_eq!(
            headers["x-forwarded-client-cert"],
            "Subject=\"CN=client\";URI=spiffe://weft.test/sa/client;DNS=client.test"
        );
    }

    #[test]
    fn request_id_is_kept_or_generated() {
        let mut headers = map(&[("x-request-id", "abc")]);
        assert_eq!(ensure_request_id(&mut headers), "abc");
        let mut fresh = HeaderMap::new();
        let id = ensure_request_id(&mut fresh);
        assert_eq!(id.len(), 36);
        assert_eq!(fresh["x-request-id"], id);
        assert_ne!(
            ensure_request_id(&mut HeaderMap::new()),
            id,
            "ids are unique"
        );
    }

    #[test]
    fn limits_count_and_size() {
        let headers = map(&[("a", "1"), ("b", "2"), ("c", "3")]);
        assert!(check_limits(&headers, 3, 100).is_ok());
        assert!(matches!(
            check_limits(&headers, 2, 100),
            Err(ProxyError::TooManyHeaders { count: 3, limit: 2 })
        ));
        assert!(matches!(
            check_limits(&headers, 3, 17),
            Err(ProxyError::HeadersTooLarge {
                size: 18,
                limit: 17
            })
        ));
    }
}
