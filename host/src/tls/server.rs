//! Downstream TLS termination: a [`ServerTls`] holds the listener's current
//! `rustls::ServerConfig` and swaps in a new one when the certificate files change, so new
//! connections get the new certificate while open connections keep theirs.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::{ProtocolVersion, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use x509_parser::extensions::GeneralName;

use super::{FileStamp, TlsError, cert_key_error, parse_certs, parse_key, provider, read_file};
use crate::config::ServerTlsConfig;

/// ALPN protocols a weft listener offers, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A listener's TLS configuration, reloadable. Cloning is cheap and clones share state.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    spec: ServerTlsConfig,
    current: ArcSwap<ServerConfig>,
    /// Stamps of the files the current config was built from, in [`files`] order.
    loaded: Mutex<Vec<FileStamp>>,
}

impl ServerTls {
    /// Reads the certificate, key and (if set) client CA, and builds the server config.
    /// With a client CA, every client must present a certificate chaining to it.
    pub fn load(cfg: &ServerTlsConfig) -> Result<ServerTls, TlsError> {
        let (config, stamps) = build(cfg)?;
        Ok(ServerTls {
            inner: Arc::new(Inner {
                spec: cfg.clone(),
                current: ArcSwap::from(config),
                loaded: Mutex::new(stamps),
            }),
        })
    }

    /// The config new connections should use; open connections hold the one they started with.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.inner.current.load_full()
    }

    /// Rebuilds the config if any file's modification time, length or content changed since
    /// the last successful load. `Ok(true)` means the new config is now served; `Ok(false)`
    /// means nothing changed. On error the previous config keeps serving, and the next call
    /// tries again (and fails again while the files stay broken).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let mut loaded = self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut stamps = Vec::with_capacity(loaded.len());
        for path in files(&self.inner.spec) {
            stamps.push(read_file(path)?.1);
        }
        if stamps == *loaded {
            return Ok(false);
        }
        let (config, stamps) = build(&self.inner.spec)?;
        self.inner.current.store(config);
        *loaded = stamps;
        tracing::info!(
            certificate = %self.inner.spec.certificate.display(),
            "reloaded TLS certificate"
        );
        Ok(true)
    }

    /// The files this TLS config is loaded from.
    pub fn spec(&self) -> &ServerTlsConfig {
        &self.inner.spec
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("spec", &self.inner.spec)
            .finish_non_exhaustive()
    }
}

/// The files a spec reads, in a fixed order.
fn files(spec: &ServerTlsConfig) -> impl Iterator<Item = &std::path::Path> {
    [
        Some(&spec.certificate),
        Some(&spec.private_key),
        spec.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| p.as_path())
}

/// Reads every file once and builds the config from exactly the bytes that were stamped.
fn build(spec: &ServerTlsConfig) -> Result<(Arc<ServerConfig>, Vec<FileStamp>), TlsError> {
    let (cert_bytes, cert_stamp) = read_file(&spec.certificate)?;
    let (key_bytes, key_stamp) = read_file(&spec.private_key)?;
    let mut stamps = vec![cert_stamp, key_stamp];
    let certs = parse_certs(&spec.certificate, &cert_bytes)?;
    let key = parse_key(&spec.private_key, &key_bytes)?;

    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            what: "server TLS protocol versions".to_owned(),
            message: e.to_string(),
        })?;
    let builder = match &spec.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let (ca_bytes, ca_stamp) = read_file(ca_path)?;
            stamps.push(ca_stamp);
            let roots = super::root_store(ca_path, parse_certs(ca_path, &ca_bytes)?)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Invalid {
                    what: format!("client CA {}", ca_path.display()),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| cert_key_error(&spec.certificate, &spec.private_key, &e))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), stamps))
}

/// Who the peer is, from its leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerIdentity {
    /// The first URI SAN (e.g. a SPIFFE ID), else the first DNS SAN.
    pub principal: Option<String>,
    /// All URI SANs, in certificate order.
    pub uri_sans: Vec<String>,
    /// All DNS SANs, in certificate order.
    pub dns_sans: Vec<String>,
    /// The subject distinguished name, e.g. `CN=client, O=weft`.
    pub subject: String,
}

/// The identity in the leaf (first) certificate of a peer chain, or `None` if there is no
/// chain or the leaf does not parse.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<PeerIdentity> {
    let leaf = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let mut uri_sans = Vec::new();
    let mut dns_sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => uri_sans.push((*uri).to_owned()),
                GeneralName::DNSName(dns) => dns_sans.push((*dns).to_owned()),
                _ => {}
            }
        }
    }
    let principal = uri_sans.first().or(dns_sans.first()).cloned();
    Some(PeerIdentity {
        principal,
        uri_sans,
        dns_sans,
        subject: cert.subject().to_string(),
    })
}

/// A TLS version as Envoy spells `connection.tls_version`: `TLSv1.2`, `TLSv1.3`.
pub fn tls_version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::TLSv1_3 => "TLSv1.3",
        ProtocolVersion::TLSv1_2 => "TLSv1.2",
        ProtocolVersion::TLSv1_1 => "TLSv1.1",
        ProtocolVersion::TLSv1_0 => "TLSv1",
        _ => "unknown",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use crate::{
        config::resolved::UpstreamProtocol,
        tls::{
            client_config,
            testing::{CLIENT_ID, Ca, Pki, handshake, localhost, write},
        },
    };

    fn connector(pki: &Pki, with_cert: bool) -> Arc<rustls::ClientConfig> {
        client_config(&pki.client_spec(with_cert), UpstreamProtocol::Http2).unwrap()
    }

    #[tokio::test]
    async fn handshake_negotiates_h2_without_client_auth() {
        let pki = Pki::new();
        let tls = ServerTls::load(&pki.server_spec(false)).unwrap();
        let (server, client) = handshake(tls.config(), connector(&pki, false), localhost()).await;
        let (server, client) = (server.unwrap(), client.unwrap());
        assert_eq!(server.alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(client.alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(client.leaf, Some(pki.server.der.clone()));
        assert_eq!(server.identity, None);
        assert_eq!(server.version.map(tls_version_name), Some("TLSv1.3"));
        assert_eq!(tls.spec(), &pki.server_spec(false));
    }

    #[tokio::test]
    async fn mtls_accepts_client_cert_and_reports_spiffe_identity() {
        let pki = Pki::new();
        let tls = ServerTls::load(&pki.server_spec(true)).unwrap();
        let (server, client) = handshake(tls.config(), connector(&pki, true), localhost()).await;
        client.unwrap();
        let identity = server.unwrap().identity.unwrap();
        assert_eq!(identity.principal.as_deref(), Some(CLIENT_ID));
        assert_eq!(identity.uri_sans, vec![CLIENT_ID.to_owned()]);
        assert!(identity.dns_sans.is_empty());
        assert_eq!(identity.subject, "CN=client");
    }

    #[tokio::test]
    async fn mtls_refuses_client_without_cert() {
        let pki = Pki::new();
        let tls = ServerTls::load(&pki.server_spec(true)).unwrap();
        let (server, client) = handshake(tls.config(), connector(&pki, false), localhost()).await;
        assert!(server.is_err(), "{server:?}");
        assert!(client.is_err(), "{client:?}");
    }

    #[tokio::test]
    async fn mtls_refuses_client_cert_from_another_ca() {
        let pki = Pki::new();
        let rogue = Ca::new("rogue CA").client_leaf(CLIENT_ID);
        write(pki.dir.path(), "client.pem", &rogue.cert_pem);
        write(pki.dir.path(), "client.key", &rogue.key_pem);
        let tls = ServerTls::load(&pki.server_spec(true)).unwrap();
        let (server, client) = handshake(tls.config(), connector(&pki, true), localhost()).await;
        let err = server.unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert!(client.is_err(), "{client:?}");
    }

    #[tokio::test]
    async fn reload_swaps_new_certificate_and_keeps_old_on_error() {
        let pki = Pki::new();
        let tls = ServerTls::load(&pki.server_spec(false)).unwrap();
        assert!(!tls.reload_if_changed().unwrap());

        let next = pki.ca.server_leaf("server-2", 2);
        write(pki.dir.path(), "server.pem", &next.cert_pem);
        write(pki.dir.path(), "server.key", &next.key_pem);
        assert!(tls.reload_if_changed().unwrap());
        assert!(!tls.reload_if_changed().unwrap());
        let (_, client) = handshake(tls.config(), connector(&pki, false), localhost()).await;
        assert_eq!(client.unwrap().leaf, Some(next.der.clone()));

        let cert_path = write(pki.dir.path(), "server.pem", "garbage\n");
        let err = tls.reload_if_changed().unwrap_err();
        assert!(matches!(&err, TlsError::NoCertificate { path } if *path == cert_path));
        assert!(err.to_string().contains(&cert_path.display().to_string()));
        let (_, client) = handshake(tls.config(), connector(&pki, false), localhost()).await;
        assert_eq!(client.unwrap().leaf, Some(next.der.clone()));
        // Still broken: still an error, old config still served.
        assert!(tls.reload_if_changed().is_err());

        // A clone shares state; a half-finished rotation (new cert, old key) is refused.
        let clone = tls.clone();
        let third = pki.ca.server_leaf("server-3", 3);
        write(pki.dir.path(), "server.pem", &third.cert_pem);
        assert!(matches!(
            clone.reload_if_changed(),
            Err(TlsError::Invalid { .. })
        ));
        write(pki.dir.path(), "server.key", &third.key_pem);
        assert!(clone.reload_if_changed().unwrap());
        let (_, client) = handshake(tls.config(), connector(&pki, false), localhost()).await;
        assert_eq!(client.unwrap().leaf, Some(third.der));
    }

    #[test]
    fn load_errors_name_the_file() {
        let pki = Pki::new();
        let spec = |cert: &str, key: &str, ca: Option<&str>| ServerTlsConfig {
            certificate: pki.path(cert),
            private_key: pki.path(key),
            client_ca: ca.map(|c| pki.path(c)),
        };
        let load = |s: &ServerTlsConfig| ServerTls::load(s).map(|_| ()).unwrap_err();

        let err = load(&spec("missing.pem", "server.key", None));
        assert!(matches!(&err, TlsError::Read { path, .. } if *path == pki.path("missing.pem")));
        assert!(err.to_string().starts_with("cannot read "), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let err = load(&spec("server.key", "server.key", None));
        assert!(
            matches!(&err, TlsError::NoCertificate { path } if *path == pki.path("server.key"))
        );

        let err = load(&spec("server.pem", "server.pem", None));
        assert!(matches!(&err, TlsError::NoPrivateKey { path } if *path == pki.path("server.pem")));

        let err = load(&spec("server.pem", "client.key", None));
        assert!(matches!(err, TlsError::Invalid { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("does not match"), "{text}");
        assert!(
            text.contains("server.pem") && text.contains("client.key"),
            "{text}"
        );

        write(
            pki.dir.path(),
            "bad.pem",
            "-----BEGIN CERTIFICATE-----\n!!!\n",
        );
        let err = load(&spec("server.pem", "server.key", Some("bad.pem")));
        assert!(matches!(&err, TlsError::Pem { path, .. } if *path == pki.path("bad.pem")));
    }

    #[test]
    fn peer_identity_falls_back_to_dns_and_tolerates_garbage() {
        let pki = Pki::new();
        let certs = [pki.server.der.clone()];
        let identity = peer_identity(Some(&certs)).unwrap();
        assert_eq!(identity.principal.as_deref(), Some("localhost"));
        assert_eq!(identity.dns_sans, vec!["localhost".to_owned()]);
        assert!(identity.uri_sans.is_empty());
        assert_eq!(peer_identity(None), None);
        assert_eq!(peer_identity(Some(&[])), None);
        assert_eq!(
            peer_identity(Some(&[CertificateDer::from(vec![1, 2, 3])])),
            None
        );
        assert_eq!(tls_version_name(ProtocolVersion::TLSv1_2), "TLSv1.2");
    }
}
