//! [`Error`]: what a host call or a filter's own logic reports instead of panicking.

use std::fmt;

use weft_abi::Status;

/// A failed host call, or a filter's own error.
///
/// The SDK turns every non-OK status from the host into an `Error` — it never panics on one
/// the way the upstream proxy-wasm SDK does. A phase that returns `Err` is answered with a
/// `500` local reply and logged (see [`Filter`](crate::Filter)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The host answered `call` with `status`.
    Host {
        /// The host function, e.g. `proxy_get_header_map_value`.
        call: &'static str,
        /// What the host answered.
        status: Status,
    },
    /// A filter's own error, with its message.
    Filter(String),
}

impl Error {
    /// A filter's own error.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::Filter(message.into())
    }

    /// The host's status, for a failed host call.
    pub fn status(&self) -> Option<Status> {
        match self {
            Error::Host { status, .. } => Some(*status),
            Error::Filter(_) => None,
        }
    }

    /// The host refused a compare-and-swap write of shared data: someone wrote it first.
    pub fn is_cas_mismatch(&self) -> bool {
        self.status() == Some(Status::CasMismatch)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Host { call, status } => write!(f, "{call} failed: {}", status.spec_name()),
            Error::Filter(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps a raw status from host function `call` to `Ok` or [`Error::Host`].
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn check(call: &'static str, raw: u32) -> Result<()> {
    match Status::try_from(raw) {
        Ok(Status::Ok) => Ok(()),
        Ok(status) => Err(Error::Host { call, status }),
        Err(_) => Err(Error::Host {
            call,
            status: Status::InternalFailure,
        }),
    }
}

/// Like [`check`], with `NotFound` as `Ok(None)`.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn found<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::Host {
            status: Status::NotFound,
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}
