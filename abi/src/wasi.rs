//! The WASI preview 1 subset the v0.2.1 spec requires of a host, with the numbers it uses
//! (spec sections "Logging", "Clocks", "Randomness", "Environment variables", "Unimplemented
//! WASI functions" and the `wasi_*` types).
//!
//! Modules built for `wasm32-wasip1` import these from [`WASI_MODULE`]; `fd_write` to stdout
//! and stderr is logging (at `INFO` and `ERROR`), and `args_sizes_get` must report zero
//! arguments.

use crate::enums::abi_enum;

/// The import module of the WASI functions.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// The WASI functions the v0.2.1 spec requires, in its order.
pub const WASI_FUNCTIONS: [&str; 8] = [
    "fd_write",
    "clock_time_get",
    "random_get",
    "environ_sizes_get",
    "environ_get",
    "args_sizes_get",
    "args_get",
    "proc_exit",
];

abi_enum! {
    /// `wasi_errno_t`: the errors the spec's WASI functions return (returned as an `i32`).
    pub enum WasiErrno: "wasi_errno_t" {
        /// Success.
        Success = 0 => "SUCCESS",
        /// Bad file descriptor, e.g. `fd_write` to anything but stdout or stderr.
        Badf = 8 => "BADF",
        /// A pointer lies outside the guest's memory.
        Fault = 21 => "FAULT",
        /// Invalid argument, e.g. an unknown clock.
        Inval = 28 => "INVAL",
        /// Not supported.
        Notsup = 58 => "NOTSUP",
    }
}

abi_enum! {
    /// `wasi_fd_id_t`: the file descriptors `fd_write` accepts.
    pub enum WasiFd: "wasi_fd_id_t" {
        /// Standard output, logged at `INFO`.
        Stdout = 1 => "STDOUT",
        /// Standard error, logged at `ERROR`.
        Stderr = 2 => "STDERR",
    }
}

abi_enum! {
    /// `wasi_clock_id_t`: the clocks `clock_time_get` reads.
    pub enum WasiClockId: "wasi_clock_id_t" {
        /// Wall-clock time since the Unix epoch.
        Realtime = 0 => "REALTIME",
        /// A monotonic clock.
        Monotonic = 1 => "MONOTONIC",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_numbers() {
        let expected = [
            (WasiErrno::Success, 0),
            (WasiErrno::Badf, 8),
            (WasiErrno::Fault, 21),
            (WasiErrno::Inval, 28),
            (WasiErrno::Notsup, 58),
        ];
        for (errno, number) in expected {
            assert_eq!(u32::from(errno), number);
            assert_eq!(WasiErrno::try_from(number), Ok(errno));
        }
        assert_eq!(WasiErrno::ALL.len(), expected.len());
        assert!(WasiErrno::try_from(1).is_err());
    }

    #[test]
    fn fd_and_clock_numbers() {
        assert_eq!(u32::from(WasiFd::Stdout), 1);
        assert_eq!(u32::from(WasiFd::Stderr), 2);
        assert!(WasiFd::try_from(0).is_err());
        assert_eq!(u32::from(WasiClockId::Realtime), 0);
        assert_eq!(u32::from(WasiClockId::Monotonic), 1);
        assert!(WasiClockId::try_from(2).is_err());
    }

    #[test]
    fn function_names() {
        assert_eq!(WASI_MODULE, "wasi_snapshot_preview1");
        assert_eq!(WASI_FUNCTIONS.len(), 8);
        assert!(WASI_FUNCTIONS.contains(&"fd_write"));
        assert!(WASI_FUNCTIONS.contains(&"proc_exit"));
    }
}
