//! TLS for both sides of the proxy, on rustls with the `ring` provider.
//!
//! [`ServerTls`] terminates downstream TLS (optionally requiring client certificates) and
//! reloads its files when they change; [`client_config`] and [`server_name`] build what an
//! upstream connection needs. Every file problem is a [`TlsError`] naming the file — bad
//! certificates never panic.

pub mod client;
pub mod server;
#[cfg(test)]
mod testing;

use std::{
    fs::File,
    hash::{DefaultHasher, Hasher},
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use rustls::crypto::CryptoProvider;
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer,
    pem::{self, PemObject},
};

pub use client::{client_config, server_name};
pub use server::{PeerIdentity, ServerTls};

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file expected to hold certificates holds none.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A file expected to hold a private key holds none.
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A file is not well-formed PEM.
    #[error("{path} is not valid PEM: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser reported.
        message: String,
    },
    /// The material parsed but cannot be used: a key that does not match its certificate, a
    /// CA rustls rejects, a rustls configuration error.
    #[error("{what}: {message}")]
    Invalid {
        /// What was being built, naming the files involved.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// A name that is neither a DNS name nor an IP address, so it cannot be used as SNI.
    #[error("{name:?} is not a valid TLS server name (DNS name or IP address)")]
    ServerName {
        /// The rejected name.
        name: String,
    },
}

/// The crypto provider every weft TLS config is built with; never the process default.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a file looked like when it was read: enough to tell a rewrite apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    hash: u64,
}

/// Largest certificate, key or CA file read; guards against pointing at a device or a log.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads a whole file, returning its bytes and stamp.
pub(crate) fn read_file(path: &Path) -> Result<(Vec<u8>, FileStamp), TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let mut bytes =
        Vec::with_capacity(usize::try_from(meta.len().min(MAX_FILE_BYTES)).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(read_err(std::io::Error::other(
            "file is larger than 16 MiB; not a certificate or key",
        )));
    }
    let mut hasher = DefaultHasher::new();
    hasher.write(&bytes);
    let stamp = FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        hash: hasher.finish(),
    };
    Ok((bytes, stamp))
}

/// Parses every PEM certificate in `bytes`, read from `path`; at least one is required.
pub(crate) fn parse_certs(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Parses the first PEM private key in `bytes`, read from `path`.
pub(crate) fn parse_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => pem_error(path, &other),
    })
}

/// Reads and parses a certificate file.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let (bytes, _) = read_file(path)?;
    parse_certs(path, &bytes)
}

/// Reads and parses a private key file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let (bytes, _) = read_file(path)?;
    parse_key(path, &bytes)
}

/// Builds a root store from a CA bundle, rejecting certificates rustls cannot use as anchors.
pub(crate) fn root_store(
    path: &Path,
    certs: Vec<CertificateDer<'static>>,
) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            what: format!("CA bundle {}", path.display()),
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A rustls error met while pairing a certificate chain with its key, named by both files.
pub(crate) fn cert_key_error(cert: &Path, key: &Path, err: &rustls::Error) -> TlsError {
    let message = match err {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            "the private key does not match the certificate".to_owned()
        }
        other => other.to_string(),
    };
    TlsError::Invalid {
        what: format!(
            "certificate {} with private key {}",
            cert.display(),
            key.display()
        ),
        message,
    }
}

fn pem_error(path: &Path, err: &pem::Error) -> TlsError {
    match err {
        pem::Error::Io(e) => TlsError::Read {
            path: path.to_owned(),
            source: std::io::Error::new(e.kind(), e.to_string()),
        },
        other => TlsError::Pem {
            path: path.to_owned(),
            message: other.to_string(),
        },
    }
}
