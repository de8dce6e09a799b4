//! Test fixtures for the TLS module: a throwaway PKI written to a temp dir, and a real
//! TLS handshake over loopback TCP.

#![allow(clippy::unwrap_used, reason = "test fixtures fail loudly")]

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::{ClientConfig, ProtocolVersion, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::server::{PeerIdentity, peer_identity};
use crate::config::{ClientTlsConfig, ServerTlsConfig};

/// The SPIFFE ID in the test client certificate.
pub(crate) const CLIENT_ID: &str = "spiffe://weft.test/ns/default/sa/client";

/// A certificate authority that can issue leaves.
pub(crate) struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// An issued certificate and its key.
pub(crate) struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }

    fn issue(
        &self,
        cn: &str,
        serial: u64,
        sans: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
    ) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(serial.into());
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![eku];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A server leaf for `localhost` and 127.0.0.1.
    pub(crate) fn server_leaf(&self, cn: &str, serial: u64) -> Issued {
        let sans = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        self.issue(cn, serial, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client leaf whose only SAN is the URI `id`.
    pub(crate) fn client_leaf(&self, id: &str) -> Issued {
        let sans = vec![SanType::URI(id.try_into().unwrap())];
        self.issue("client", 7, sans, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A CA, a server leaf and a client leaf, written to a temp dir.
pub(crate) struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub server: Issued,
    pub client: Issued,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("weft test CA");
        let server = ca.server_leaf("server-1", 1);
        let client = ca.client_leaf(CLIENT_ID);
        write(dir.path(), "ca.pem", &ca.pem());
        write(dir.path(), "server.pem", &server.cert_pem);
        write(dir.path(), "server.key", &server.key_pem);
        write(dir.path(), "client.pem", &client.cert_pem);
        write(dir.path(), "client.key", &client.key_pem);
        Pki {
            dir,
            ca,
            server,
            client,
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server files; `mtls` requires client certificates from the CA.
    pub(crate) fn server_spec(&self, mtls: bool) -> ServerTlsConfig {
        ServerTlsConfig {
            certificate: self.path("server.pem"),
            private_key: self.path("server.key"),
            client_ca: mtls.then(|| self.path("ca.pem")),
        }
    }

    /// Trust the CA; `with_cert` presents the client leaf.
    pub(crate) fn client_spec(&self, with_cert: bool) -> ClientTlsConfig {
        ClientTlsConfig {
            ca: self.path("ca.pem"),
            certificate: with_cert.then(|| self.path("client.pem")),
            private_key: with_cert.then(|| self.path("client.key")),
            server_name: None,
        }
    }
}

/// Writes `contents` to `dir/name`, returning the path.
pub(crate) fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// What the server saw of a completed handshake.
#[derive(Debug)]
pub(crate) struct ServerSeen {
    pub identity: Option<PeerIdentity>,
    pub alpn: Option<Vec<u8>>,
    pub version: Option<ProtocolVersion>,
}

/// What the client saw: the server's leaf and the negotiated ALPN.
#[derive(Debug)]
pub(crate) struct ClientSeen {
    pub leaf: Option<CertificateDer<'static>>,
    pub alpn: Option<Vec<u8>>,
}

/// Runs one TLS connection over loopback; the server answers `ok` once the handshake is done,
/// so the client only succeeds if the server accepted it (TLS 1.3 client auth fails late).
pub(crate) async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> (Result<ServerSeen, String>, Result<ClientSeen, String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server);
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let conn = tls.get_ref().1;
        let seen = ServerSeen {
            identity: peer_identity(conn.peer_certificates()),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version(),
        };
        tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(seen)
    });
    let client_side = async move {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let connector = TlsConnector::from(client);
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let conn = tls.get_ref().1;
        let seen = ClientSeen {
            leaf: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned()),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        };
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        match reply.as_slice() {
            b"ok" => Ok(seen),
            other => Err(format!("server replied {other:?}")),
        }
    };
    let limit = Duration::from_secs(10);
    let client_result = tokio::time::timeout(limit, client_side).await.unwrap();
    let server_result = tokio::time::timeout(limit, server_side)
        .await
        .unwrap()
        .unwrap();
    (server_result, client_result)
}

/// The name `localhost`.
pub(crate) fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}
