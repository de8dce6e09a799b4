//! A throw-away PKI for tests, generated with rcgen into a temporary directory: a CA, a server
//! certificate for `localhost`, `upstream.test` and `127.0.0.1`, a client certificate carrying
//! a SPIFFE identity, and a "rogue" client certificate of the same shape signed by another CA.
//! Also the rustls configurations tests need, always on the ring provider.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The SPIFFE identity carried by the client (and rogue client) certificate.
pub const CLIENT_SPIFFE: &str = "spiffe://weft.test/ns/default/sa/client";

/// The ring crypto provider every rustls configuration in the tests uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which client certificate a client presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The client certificate signed by the test CA ([`TestPki::client_cert`]).
    Client,
    /// The look-alike client certificate signed by a different CA ([`TestPki::rogue_client_cert`]).
    Rogue,
}

/// The test PKI; every file lives in [`TestPki::dir`] and disappears with it.
pub struct TestPki {
    /// The directory holding every file below.
    pub dir: tempfile::TempDir,
    /// The CA certificate (`ca.pem`) that signs the server and client certificates.
    pub ca: PathBuf,
    /// The server certificate (`server.pem`): SANs `localhost`, `upstream.test`, `127.0.0.1`.
    pub server_cert: PathBuf,
    /// The server's private key (`server.key`, PKCS#8 PEM).
    pub server_key: PathBuf,
    /// The client certificate (`client.pem`) with URI SAN [`TestPki::client_spiffe`].
    pub client_cert: PathBuf,
    /// The client's private key (`client.key`).
    pub client_key: PathBuf,
    /// The CA (`rogue-ca.pem`) that signed the rogue client certificate; not trusted by anyone.
    pub rogue_ca: PathBuf,
    /// A client certificate with the same SPIFFE identity, signed by the rogue CA.
    pub rogue_client_cert: PathBuf,
    /// The rogue client's private key.
    pub rogue_client_key: PathBuf,
    /// The SPIFFE URI in the client certificate ([`CLIENT_SPIFFE`]).
    pub client_spiffe: String,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    client_chain: (CertificateDer<'static>, Vec<u8>),
    rogue_chain: (CertificateDer<'static>, Vec<u8>),
}

impl fmt::Debug for TestPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// One generated leaf: the certificate and its PKCS#8 key.
struct Leaf {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(common_name: &str) -> Result<(rcgen::Certificate, KeyPair)> {
    let key = KeyPair::generate().context("generating a CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).context("self-signing the CA")?;
    Ok((cert, key))
}

fn leaf(
    common_name: &str,
    sans: Vec<SanType>,
    usages: Vec<ExtendedKeyUsagePurpose>,
    issuer: &rcgen::Certificate,
    issuer_key: &KeyPair,
) -> Result<Leaf> {
    let key = KeyPair::generate().context("generating a leaf key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = sans;
    params.extended_key_usages = usages;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, issuer, issuer_key)
        .with_context(|| format!("signing the certificate for {common_name}"))?;
    Ok(Leaf { cert, key })
}

fn server_leaf(common_name: &str, ca: &rcgen::Certificate, ca_key: &KeyPair) -> Result<Leaf> {
    let sans = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::DnsName("upstream.test".try_into()?),
        SanType::IpAddress([127, 0, 0, 1].into()),
    ];
    let usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf(common_name, sans, usages, ca, ca_key)
}

fn client_leaf(common_name: &str, ca: &rcgen::Certificate, ca_key: &KeyPair) -> Result<Leaf> {
    let sans = vec![SanType::URI(CLIENT_SPIFFE.try_into()?)];
    leaf(
        common_name,
        sans,
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        ca,
        ca_key,
    )
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, then rename.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .context("a file path without a parent directory")?;
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::fs::write(tmp.path(), contents)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

impl TestPki {
    /// Generates the PKI into a fresh temporary directory.
    pub fn new() -> Result<TestPki> {
        let dir = tempfile::tempdir().context("creating the PKI directory")?;
        let file = |name: &str| dir.path().join(name);
        let (ca_cert, ca_key) = ca("weft test CA")?;
        let (rogue_ca_cert, rogue_ca_key) = ca("weft rogue CA")?;
        let server = server_leaf("localhost", &ca_cert, &ca_key)?;
        let client = client_leaf("client", &ca_cert, &ca_key)?;
        let rogue = client_leaf("client", &rogue_ca_cert, &rogue_ca_key)?;

        let pki = TestPki {
            ca: file("ca.pem"),
            server_cert: file("server.pem"),
            server_key: file("server.key"),
            client_cert: file("client.pem"),
            client_key: file("client.key"),
            rogue_ca: file("rogue-ca.pem"),
            rogue_client_cert: file("rogue-client.pem"),
            rogue_client_key: file("rogue-client.key"),
            client_spiffe: CLIENT_SPIFFE.to_string(),
            client_chain: (client.cert.der().clone(), client.key.serialize_der()),
            rogue_chain: (rogue.cert.der().clone(), rogue.key.serialize_der()),
            ca_cert,
            ca_key,
            dir,
        };
        write_atomic(&pki.ca, pki.ca_cert.pem().as_bytes())?;
        write_atomic(&pki.rogue_ca, rogue_ca_cert.pem().as_bytes())?;
        pki.write_leaf(&server, &pki.server_cert, &pki.server_key)?;
        pki.write_leaf(&client, &pki.client_cert, &pki.client_key)?;
        pki.write_leaf(&rogue, &pki.rogue_client_cert, &pki.rogue_client_key)?;
        Ok(pki)
    }

    fn write_leaf(&self, leaf: &Leaf, cert: &Path, key: &Path) -> Result<()> {
        // Key first: a reader that sees the new certificate must also find the new key.
        write_atomic(key, leaf.key.serialize_pem().as_bytes())?;
        write_atomic(cert, leaf.cert.pem().as_bytes())
    }

    /// Replaces `server_cert`/`server_key` (each atomically) with a new certificate whose subject
    /// CN is `common_name`, with the same SANs, signed by the same CA.
    pub fn rotate_server_cert(&self, common_name: &str) -> Result<()> {
        let server = server_leaf(common_name, &self.ca_cert, &self.ca_key)?;
        self.write_leaf(&server, &self.server_cert, &self.server_key)
    }

    /// The CA certificate in DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_cert.der().clone()
    }

    /// Trust roots holding only the test CA.
    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der())
            .expect("the generated CA is a valid trust anchor");
        Arc::new(roots)
    }

    /// A client configuration trusting the test CA, offering `alpn` (e.g. `&[b"h2", b"http/1.1"]`)
    /// and presenting `identity`'s certificate, or none.
    pub fn client_config(&self, alpn: &[&[u8]], identity: Option<Identity>) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(self.roots());
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let (cert, key) = match identity {
                    Identity::Client => &self.client_chain,
                    Identity::Rogue => &self.rogue_chain,
                };
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone()));
                builder
                    .with_client_auth_cert(vec![cert.clone()], key)
                    .expect("the generated client key matches its certificate")
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A server configuration for test upstreams, offering `alpn`. It serves whatever
    /// `server_cert`/`server_key` hold at each handshake (so [`TestPki::rotate_server_cert`] takes
    /// effect on the next connection). Client certificates from the test CA are requested always
    /// and required when `require_client_cert` is set.
    pub fn server_config(&self, alpn: &[&[u8]], require_client_cert: bool) -> Arc<ServerConfig> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots(), provider());
        let verifier = if require_client_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let verifier = verifier
            .build()
            .expect("a client verifier over the test CA");
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(FileCertResolver::new(
                &self.server_cert,
                &self.server_key,
            )));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// Reads a PEM certificate chain and private key from disk.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading a private key from {}", key.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).context("pairing certificate and key")
}

/// Serves the certificate currently on disk, re-reading it at every handshake; keeps the last
/// good pair when a read fails (e.g. mid-rotation).
#[derive(Debug)]
pub struct FileCertResolver {
    cert: PathBuf,
    key: PathBuf,
    last: Mutex<Option<Arc<CertifiedKey>>>,
}

impl FileCertResolver {
    /// A resolver over the given PEM files.
    pub fn new(cert: &Path, key: &Path) -> FileCertResolver {
        FileCertResolver {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            last: Mutex::new(None),
        }
    }
}

impl ResolvesServerCert for FileCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(fresh) = load_certified_key(&self.cert, &self.key) {
            *last = Some(Arc::new(fresh));
        }
        last.clone()
    }
}

/// Whether a DER certificate contains `text` verbatim — enough to spot a subject CN or SAN
/// chosen by the test (names are stored as plain strings in DER).
pub fn der_mentions(der: &[u8], text: &str) -> bool {
    let needle = text.as_bytes();
    !needle.is_empty() && der.windows(needle.len()).any(|w| w == needle)
}
