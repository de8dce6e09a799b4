//! The API token: created on the control plane's first start as `DIR/token` (32 random bytes
//! as hex, readable by its owner only) and read back on every later start. Clients present it
//! as a bearer token.

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Write},
    path::{Path, PathBuf},
};

/// The token's file name inside the data directory.
pub const TOKEN_FILE: &str = "token";

/// A failure to create or read the token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be created, written or read.
    #[error("token file {path}: {source}")]
    Io {
        /// The token file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file exists but holds no usable token.
    #[error(
        "token file {0}: empty or not a single line of printable ASCII; delete it to create a new token"
    )]
    Malformed(PathBuf),
}

/// Returns the token in `dir` and whether it was created just now. Creates `dir` if needed.
/// The file is created exclusively, so two starts racing on a fresh directory agree on one
/// token.
pub fn ensure_token(dir: &Path) -> Result<(String, bool), TokenError> {
    let path = dir.join(TOKEN_FILE);
    let io = |source| TokenError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            let token: String = rand::random::<[u8; 32]>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            file.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            Ok((token, true))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let token = text.trim();
            if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err(TokenError::Malformed(path));
            }
            Ok((token.to_owned(), false))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_a_private_token_and_later_starts_read_it() -> Result<(), TokenError> {
        let dir = tempfile::tempdir().map_err(|source| TokenError::Io {
            path: "tempdir".into(),
            source,
        })?;
        let data = dir.path().join("data");
        let (token, created) = ensure_token(&data)?;
        assert!(created);
        assert_eq!(token.len(), 64);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.join(TOKEN_FILE))
                .map_err(|source| TokenError::Io {
                    path: data.join(TOKEN_FILE),
                    source,
                })?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, created) = ensure_token(&data)?;
        assert!(!created);
        assert_eq!(again, token);
        Ok(())
    }

    #[test]
    fn tokens_differ_between_data_directories() -> Result<(), TokenError> {
        let a = tempfile::tempdir().map_err(|source| TokenError::Io {
            path: "tempdir".into(),
            source,
        })?;
        let b = tempfile::tempdir().map_err(|source| TokenError::Io {
            path: "tempdir".into(),
            source,
        })?;
        assert_ne!(ensure_token(a.path())?.0, ensure_token(b.path())?.0);
        Ok(())
    }

    #[test]
    fn an_empty_token_file_is_refused_not_replaced() -> Result<(), TokenError> {
        let dir = tempfile::tempdir().map_err(|source| TokenError::Io {
            path: "tempdir".into(),
            source,
        })?;
        let path = dir.path().join(TOKEN_FILE);
        std::fs::write(&path, "\n").map_err(|source| TokenError::Io {
            path: path.clone(),
            source,
        })?;
        match ensure_token(dir.path()) {
            Err(TokenError::Malformed(p)) => assert_eq!(p, path),
            other => panic!("expected Malformed, got {other:?}"),
        }
        Ok(())
    }
}
