//! Upstream TLS: the `rustls::ClientConfig` a cluster connects with (only its own CA bundle
//! is trusted, never the system roots) and the server name each endpoint is verified against.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use super::{TlsError, cert_key_error, load_certs, load_key, provider, root_store};
use crate::config::{ClientTlsConfig, resolved::UpstreamProtocol};

/// Builds the client config for a cluster: roots from `cfg.ca`, a client certificate for
/// upstream mTLS when both `certificate` and `private_key` are set, and ALPN `h2` or
/// `http/1.1` to match `protocol`. Setting only one of certificate and key is an error.
pub fn client_config(
    cfg: &ClientTlsConfig,
    protocol: UpstreamProtocol,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_store(&cfg.ca, load_certs(&cfg.ca)?)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            what: "client TLS protocol versions".to_owned(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots);
    let mut config = match (&cfg.certificate, &cfg.private_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| cert_key_error(cert, key, &e))?,
        (None, None) => builder.with_no_client_auth(),
        (Some(path), None) | (None, Some(path)) => {
            return Err(TlsError::Invalid {
                what: format!("upstream client TLS {}", path.display()),
                message: "a client certificate and private key must be set together".to_owned(),
            });
        }
    };
    config.alpn_protocols = vec![match protocol {
        UpstreamProtocol::Http1 => b"http/1.1".to_vec(),
        UpstreamProtocol::Http2 => b"h2".to_vec(),
    }];
    Ok(Arc::new(config))
}

/// The name sent as SNI and verified in the upstream certificate: `cfg.server_name` if set,
/// else the endpoint host. IP addresses (IPv6 with or without brackets) are allowed.
pub fn server_name(
    cfg: &ClientTlsConfig,
    endpoint_host: &str,
) -> Result<ServerName<'static>, TlsError> {
    let name = cfg.server_name.as_deref().unwrap_or(endpoint_host);
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName {
        name: name.to_owned(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::tls::{
        ServerTls,
        server::peer_identity,
        testing::{CLIENT_ID, Pki, handshake},
    };

    #[tokio::test]
    async fn upstream_mtls_over_h2_against_a_server_requiring_client_certs() {
        let pki = Pki::new();
        let server = ServerTls::load(&pki.server_spec(true)).unwrap();
        let spec = pki.client_spec(true);
        let config = client_config(&spec, UpstreamProtocol::Http2).unwrap();
        // No configured server name: the endpoint IP is verified against the IP SAN.
        let name = server_name(&spec, "127.0.0.1").unwrap();
        let (server_seen, client_seen) = handshake(server.config(), config, name).await;
        let (server_seen, client_seen) = (server_seen.unwrap(), client_seen.unwrap());
        assert_eq!(client_seen.alpn.as_deref(), Some(&b"h2"[..]));
        let identity = server_seen.identity.unwrap();
        assert_eq!(identity.principal.as_deref(), Some(CLIENT_ID));
        assert_eq!(
            Some(identity),
            peer_identity(Some(std::slice::from_ref(&pki.client.der)))
        );
    }

    #[tokio::test]
    async fn http1_offers_only_http11_and_verifies_the_configured_name() {
        let pki = Pki::new();
        let server = ServerTls::load(&pki.server_spec(false)).unwrap();
        let mut spec = pki.client_spec(false);
        spec.server_name = Some("localhost".to_owned());
        let config = client_config(&spec, UpstreamProtocol::Http1).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let name = server_name(&spec, "10.1.2.3").unwrap();
        let (server_seen, client_seen) = handshake(server.config(), config.clone(), name).await;
        assert_eq!(server_seen.unwrap().alpn.as_deref(), Some(&b"http/1.1"[..]));
        client_seen.unwrap();

        // A name the server certificate does not cover is refused.
        spec.server_name = Some("other.test".to_owned());
        let name = server_name(&spec, "127.0.0.1").unwrap();
        let (_, client_seen) = handshake(server.config(), config, name).await;
        let err = client_seen.unwrap_err();
        assert!(err.contains("not valid for name"), "{err}");
    }

    #[test]
    fn server_name_defaults_to_the_endpoint_host() {
        let pki = Pki::new();
        let mut spec = pki.client_spec(false);
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(
            server_name(&spec, "127.0.0.1").unwrap(),
            ServerName::from(v4)
        );
        assert_eq!(server_name(&spec, "[::1]").unwrap(), ServerName::from(v6));
        assert_eq!(
            server_name(&spec, "backend.svc").unwrap(),
            ServerName::try_from("backend.svc").unwrap()
        );
        let err = server_name(&spec, "not a host!").unwrap_err();
        assert!(matches!(&err, TlsError::ServerName { name } if name == "not a host!"));

        spec.server_name = Some("api.internal".to_owned());
        assert_eq!(
            server_name(&spec, "127.0.0.1").unwrap(),
            ServerName::try_from("api.internal").unwrap()
        );
    }

    #[test]
    fn config_errors_name_the_file() {
        let pki = Pki::new();
        let mut spec = pki.client_spec(false);
        spec.ca = pki.path("missing-ca.pem");
        let err = client_config(&spec, UpstreamProtocol::Http1).unwrap_err();
        assert!(matches!(&err, TlsError::Read { path, .. } if *path == pki.path("missing-ca.pem")));

        let mut spec = pki.client_spec(true);
        spec.private_key = None;
        let err = client_config(&spec, UpstreamProtocol::Http1).unwrap_err();
        assert!(err.to_string().contains("client.pem"), "{err}");

        let mut spec = pki.client_spec(true);
        spec.private_key = Some(pki.path("server.key"));
        let err = client_config(&spec, UpstreamProtocol::Http1).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");

        let mut spec = pki.client_spec(false);
        spec.ca = pki.path("server.key");
        let err = client_config(&spec, UpstreamProtocol::Http1).unwrap_err();
        assert!(
            matches!(&err, TlsError::NoCertificate { path } if *path == pki.path("server.key"))
        );
    }
}
