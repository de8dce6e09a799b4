//! Domain errors become gRPC statuses here, and only here: a refused module or resource is
//! `InvalidArgument` (the message names the line and field), a missing one `NotFound`, a
//! delete of something in use `FailedPrecondition`, a republished version with other bytes
//! `AlreadyExists`, and a store failure `Internal`.

use tonic::Status;

use crate::{registry::RegistryError, resources::ResourceError, store::StoreError};

/// The status for a registry failure.
pub(crate) fn registry(error: RegistryError) -> Status {
    let message = error.to_string();
    match error {
        RegistryError::InvalidName(_)
        | RegistryError::InvalidVersion(_)
        | RegistryError::NotProxyWasm { .. } => Status::invalid_argument(message),
        RegistryError::VersionExists { .. } => Status::already_exists(message),
        RegistryError::NotFound(_) => Status::not_found(message),
        RegistryError::InUse { .. } | RegistryError::NotUsed(_) => {
            Status::failed_precondition(message)
        }
        RegistryError::Store(e) => store(e),
    }
}

/// The status for a resource failure.
pub(crate) fn resources(error: ResourceError) -> Status {
    let message = error.to_string();
    match error {
        ResourceError::Empty | ResourceError::UnknownKind(_) | ResourceError::Invalid(_) => {
            Status::invalid_argument(message)
        }
        ResourceError::NotFound { .. } => Status::not_found(message),
        ResourceError::InUse { .. } => Status::failed_precondition(message),
        ResourceError::Store(e) => store(e),
    }
}

/// The status for a store failure: the operator's request was fine, the control plane is not.
pub(crate) fn store(error: StoreError) -> Status {
    tracing::error!(error = %error, "store failure");
    Status::internal(error.to_string())
}

/// Runs blocking store work (redb transactions, module compilation) off the async executor.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Status> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("control plane task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::resources::{Location, Rejection};

    #[test]
    fn each_error_maps_to_its_code() {
        let cases = [
            (
                registry(RegistryError::InvalidName("X".into())),
                Code::InvalidArgument,
            ),
            (
                registry(RegistryError::VersionExists {
                    name: "a".into(),
                    version: "1".into(),
                    existing: "x".into(),
                    offered: "y".into(),
                }),
                Code::AlreadyExists,
            ),
            (
                registry(RegistryError::NotFound("plugin `a`".into())),
                Code::NotFound,
            ),
            (
                registry(RegistryError::InUse {
                    name: "a".into(),
                    version: "1".into(),
                    users: "Plugin `a`".into(),
                }),
                Code::FailedPrecondition,
            ),
            (
                resources(ResourceError::Invalid(Rejection {
                    location: Location::Input(Some(3)),
                    field: "spec.filterChain".into(),
                    message: "no FilterChain named `x`".into(),
                })),
                Code::InvalidArgument,
            ),
            (
                resources(ResourceError::NotFound {
                    kind: "Cluster".into(),
                    name: "web".into(),
                }),
                Code::NotFound,
            ),
            (
                store(StoreError::Backend("disk full".into())),
                Code::Internal,
            ),
        ];
        for (status, code) in cases {
            assert_eq!(status.code(), code, "{}", status.message());
        }
    }

    #[test]
    fn a_rejection_keeps_its_line_and_field_in_the_message() {
        let status = resources(ResourceError::Invalid(Rejection {
            location: Location::Input(Some(3)),
            field: "spec.filterChain".into(),
            message: "no FilterChain named `x`".into(),
        }));
        assert_eq!(
            status.message(),
            "line 3: field `spec.filterChain`: no FilterChain named `x`"
        );
    }
}
