//! Results and verdicts: the status every host function returns ([`Status`]), the verdict a
//! stream callback returns ([`Action`]), log levels ([`LogLevel`]) and gRPC status codes
//! ([`GrpcStatus`]).
//!
//! Numbers are those of the v0.2.1 spec (`proxy-wasm/spec`, `abi-versions/v0.2.1/README.md`,
//! section "Types"), of Envoy's `WasmResult` (`proxy-wasm-cpp-sdk`, `proxy_wasm_common.h`) and
//! of the Rust SDK's `src/types.rs` (crates.io `proxy-wasm` 0.2.5).

use crate::enums::abi_enum;

abi_enum! {
    /// `proxy_status_t`: what every `proxy_*` host function returns.
    ///
    /// The v0.2.1 spec lists 0, 1, 2, 3, 4, 6, 7, 8, 10 and 12; Envoy's `WasmResult` also
    /// defines 5, 9 and 11, so all thirteen are here.
    ///
    /// **The Rust SDK knows only eight of them** (see [`Status::known_to_rust_sdk`]): it reads
    /// the returned number straight into its own `#[repr(u32)]` enum and panics on statuses it
    /// does not expect, so a host must return exactly what Envoy returns in each situation.
    pub enum Status: "proxy_status_t" {
        /// Success.
        Ok = 0 => "OK",
        /// Nothing was found under the given key, path, name or id.
        NotFound = 1 => "NOT_FOUND",
        /// An argument was out of range, e.g. an unknown buffer or map type.
        BadArgument = 2 => "BAD_ARGUMENT",
        /// The host could not serialize a value (e.g. a property).
        SerializationFailure = 3 => "SERIALIZATION_FAILURE",
        /// The host could not parse a value the guest gave it.
        ParseFailure = 4 => "PARSE_FAILURE",
        /// An expression was illegal or unrecognized (Envoy only; not in the v0.2.1 list).
        BadExpression = 5 => "BAD_EXPRESSION",
        /// A pointer or length given by the guest lies outside its memory.
        InvalidMemoryAccess = 6 => "INVALID_MEMORY_ACCESS",
        /// Data was requested from an empty container, e.g. an empty shared queue.
        Empty = 7 => "EMPTY",
        /// The compare-and-swap token of a shared-data write did not match.
        CasMismatch = 8 => "CAS_MISMATCH",
        /// A result was unexpected, e.g. of the wrong size (Envoy only; not in the v0.2.1 list).
        ResultMismatch = 9 => "RESULT_MISMATCH",
        /// An internal failure in the host.
        InternalFailure = 10 => "INTERNAL_FAILURE",
        /// A connection, stream or pipe broke (Envoy only; not in the v0.2.1 list).
        BrokenConnection = 11 => "BROKEN_CONNECTION",
        /// The feature is not implemented by the host.
        Unimplemented = 12 => "UNIMPLEMENTED",
    }
}

impl Status {
    /// Whether the upstream Rust SDK (`proxy-wasm` 0.2.x) has this status in its `Status` enum
    /// (`Ok`, `NotFound`, `BadArgument`, `SerializationFailure`, `ParseFailure`, `Empty`,
    /// `CasMismatch`, `InternalFailure`).
    ///
    /// Returning any other status to a guest built with that SDK is at best a trap.
    pub const fn known_to_rust_sdk(self) -> bool {
        matches!(
            self,
            Status::Ok
                | Status::NotFound
                | Status::BadArgument
                | Status::SerializationFailure
                | Status::ParseFailure
                | Status::Empty
                | Status::CasMismatch
                | Status::InternalFailure
        )
    }
}

abi_enum! {
    /// `proxy_action_t`: what the stream callbacks (`proxy_on_request_headers`, …,
    /// `proxy_on_downstream_data`, …) return.
    ///
    /// v0.2.1 has no separate headers/data/trailers statuses: every stream callback returns an
    /// `Action`.
    pub enum Action: "proxy_action_t" {
        /// Go on processing the stream.
        Continue = 0 => "CONTINUE",
        /// Hold the stream until the guest calls `proxy_continue_stream` (or answers with
        /// `proxy_send_local_response`).
        Pause = 1 => "PAUSE",
    }
}

impl Action {
    /// Reads a callback's return value the way Envoy does: `0` continues, any other number
    /// stops.
    ///
    /// Envoy treats every value above the largest status it knows as a stop; guests built with
    /// the Rust SDK only ever return `0` or `1`. Use this rather than `try_from` where a guest's
    /// odd return value must not fail the request.
    pub const fn from_guest_lenient(raw: u32) -> Action {
        if raw == 0 {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

abi_enum! {
    /// `proxy_log_level_t`: the level of a `proxy_log` message and the answer of
    /// `proxy_get_log_level`.
    pub enum LogLevel: "proxy_log_level_t" {
        /// Finest detail.
        Trace = 0 => "TRACE",
        /// Debugging detail.
        Debug = 1 => "DEBUG",
        /// Normal operation.
        Info = 2 => "INFO",
        /// Something unexpected that did not fail.
        Warn = 3 => "WARN",
        /// A failure.
        Error = 4 => "ERROR",
        /// A failure that threatens the whole plugin.
        Critical = 5 => "CRITICAL",
    }
}

/// The `grpc_status` argument of `proxy_send_local_response` meaning "no gRPC status": the
/// Rust SDK's `send_http_response` passes `-1` (as an `i32`).
pub const GRPC_STATUS_NONE: i32 = -1;

abi_enum! {
    /// gRPC status codes, as in `proxy_on_grpc_close`'s `status_code` and
    /// `proxy_send_local_response`'s `grpc_status` (the standard gRPC numbering).
    pub enum GrpcStatus: "grpc_status_t" {
        /// Not an error.
        Ok = 0 => "OK",
        /// The operation was cancelled, typically by the caller.
        Cancelled = 1 => "CANCELLED",
        /// Unknown error.
        Unknown = 2 => "UNKNOWN",
        /// The client gave an invalid argument.
        InvalidArgument = 3 => "INVALID_ARGUMENT",
        /// The deadline expired before the operation completed.
        DeadlineExceeded = 4 => "DEADLINE_EXCEEDED",
        /// Some requested entity was not found.
        NotFound = 5 => "NOT_FOUND",
        /// The entity a client tried to create already exists.
        AlreadyExists = 6 => "ALREADY_EXISTS",
        /// The caller may not execute the operation.
        PermissionDenied = 7 => "PERMISSION_DENIED",
        /// Some resource has been exhausted.
        ResourceExhausted = 8 => "RESOURCE_EXHAUSTED",
        /// The system is not in a state the operation requires.
        FailedPrecondition = 9 => "FAILED_PRECONDITION",
        /// The operation was aborted.
        Aborted = 10 => "ABORTED",
        /// The operation went past the valid range.
        OutOfRange = 11 => "OUT_OF_RANGE",
        /// The operation is not implemented or supported.
        Unimplemented = 12 => "UNIMPLEMENTED",
        /// Internal error.
        Internal = 13 => "INTERNAL",
        /// The service is currently unavailable.
        Unavailable = 14 => "UNAVAILABLE",
        /// Unrecoverable data loss or corruption.
        DataLoss = 15 => "DATA_LOSS",
        /// The request lacks valid authentication credentials.
        Unauthenticated = 16 => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts every value of an enum against the spec's numbers, one by one, and that the
    /// list is complete: adding, removing or renumbering a value fails the test.
    fn assert_numbers<T>(expected: &[(T, u32)], all: &[T])
    where
        T: Copy + PartialEq + std::fmt::Debug + Into<u32> + TryFrom<u32>,
        <T as TryFrom<u32>>::Error: std::fmt::Debug,
    {
        for &(value, number) in expected {
            assert_eq!(value.into(), number, "{value:?}");
            assert_eq!(T::try_from(number).ok(), Some(value), "{number}");
        }
        let listed: Vec<T> = expected.iter().map(|&(value, _)| value).collect();
        assert_eq!(listed, all);
    }

    #[test]
    fn status_numbers() {
        use Status::*;
        assert_numbers(
            &[
                (Ok, 0),
                (NotFound, 1),
                (BadArgument, 2),
                (SerializationFailure, 3),
                (ParseFailure, 4),
                (BadExpression, 5),
                (InvalidMemoryAccess, 6),
                (Empty, 7),
                (CasMismatch, 8),
                (ResultMismatch, 9),
                (InternalFailure, 10),
                (BrokenConnection, 11),
                (Unimplemented, 12),
            ],
            Status::ALL,
        );
        assert!(Status::try_from(13).is_err());
        assert_eq!(Status::try_from(1), std::result::Result::Ok(NotFound));
    }

    #[test]
    fn status_known_to_rust_sdk() {
        let known: Vec<u32> = Status::ALL
            .iter()
            .filter(|status| status.known_to_rust_sdk())
            .map(|&status| status.into())
            .collect();
        assert_eq!(known, [0, 1, 2, 3, 4, 7, 8, 10]);
    }

    #[test]
    fn action_numbers() {
        assert_numbers(&[(Action::Continue, 0), (Action::Pause, 1)], Action::ALL);
        assert!(Action::try_from(2).is_err());
        assert_eq!(Action::from_guest_lenient(0), Action::Continue);
        assert_eq!(Action::from_guest_lenient(1), Action::Pause);
        assert_eq!(Action::from_guest_lenient(4), Action::Pause);
    }

    #[test]
    fn log_level_numbers() {
        use LogLevel::*;
        assert_numbers(
            &[
                (Trace, 0),
                (Debug, 1),
                (Info, 2),
                (Warn, 3),
                (Error, 4),
                (Critical, 5),
            ],
            LogLevel::ALL,
        );
        assert!(LogLevel::try_from(6).is_err());
    }

    #[test]
    fn grpc_status_numbers() {
        use GrpcStatus::*;
        assert_numbers(
            &[
                (Ok, 0),
                (Cancelled, 1),
                (Unknown, 2),
                (InvalidArgument, 3),
                (DeadlineExceeded, 4),
                (NotFound, 5),
                (AlreadyExists, 6),
                (PermissionDenied, 7),
                (ResourceExhausted, 8),
                (FailedPrecondition, 9),
                (Aborted, 10),
                (OutOfRange, 11),
                (Unimplemented, 12),
                (Internal, 13),
                (Unavailable, 14),
                (DataLoss, 15),
                (Unauthenticated, 16),
            ],
            GrpcStatus::ALL,
        );
        assert!(GrpcStatus::try_from(17).is_err());
        assert_eq!(GRPC_STATUS_NONE, -1);
    }
}
