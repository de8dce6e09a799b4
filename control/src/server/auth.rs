//! The bearer-token check every RPC passes: `authorization: Bearer <token>` metadata with the
//! token from `DATA/token`; anything else is `Unauthenticated`.

use std::sync::Arc;

use tonic::{Request, Status, service::Interceptor};

/// A tonic interceptor that admits calls carrying the control plane's token.
#[derive(Clone)]
pub(crate) struct RequireToken {
    expected: Arc<str>,
}

impl RequireToken {
    /// Admits calls presenting `token`.
    pub(crate) fn new(token: &str) -> Self {
        Self {
            expected: Arc::from(format!("Bearer {token}")),
        }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        match presented {
            Some(presented) if constant_time_eq(presented, self.expected.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated(
                "invalid token: present the token from the control plane's DATA/token file",
            )),
            None => Err(Status::unauthenticated(
                "missing `authorization: Bearer <token>` metadata: present the token from the control plane's DATA/token file",
            )),
        }
    }
}

/// Compares without an early exit, so timing says nothing about how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use tonic::{Code, metadata::MetadataValue};

    use super::*;

    fn call(header: Option<&'static str>) -> Result<Request<()>, Status> {
        let mut request = Request::new(());
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert("authorization", MetadataValue::from_static(header));
        }
        RequireToken::new("s3cret").call(request)
    }

    #[test]
    fn only_the_right_bearer_token_is_admitted() {
        assert!(call(Some("Bearer s3cret")).is_ok());
        for header in [
            None,
            Some("Bearer s3cre"),
            Some("s3cret"),
            Some("Bearer s3cret2"),
        ] {
            match call(header) {
                Err(status) => assert_eq!(status.code(), Code::Unauthenticated),
                Ok(_) => panic!("{header:?} was admitted"),
            }
        }
    }
}
