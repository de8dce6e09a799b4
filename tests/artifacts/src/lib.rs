//! The test filters of `tests/programs`, built for wasm32 and exposed as file paths.
//!
//! Each filter there is a `cdylib` written only against the upstream `proxy-wasm` SDK (0.2.x),
//! as an Envoy filter author would write it. `build.rs` compiles all of them with
//! `cargo build --release` for `wasm32-wasip1` and `wasm32-unknown-unknown` into this crate's
//! `OUT_DIR`, so `cargo test` on a fresh machine builds everything it needs, and generates one
//! constant per filter and target — `HEADERS_WASIP1`, `HEADERS_UNKNOWN`, … — holding the
//! absolute path of the `.wasm` file, plus [`ALL`] listing every `(name, target, path)`.
//!
//! ```no_run
//! // Load a module as a Plugin's `url: file:///...` would point at it.
//! let wasm = std::fs::read(weft_test_artifacts::HEADERS_WASIP1)?;
//! assert_eq!(&wasm[..4], b"\0asm");
//!
//! // Run the same test against both targets.
//! for target in weft_test_artifacts::TARGETS {
//!     let path = weft_test_artifacts::path("passthrough", target).expect("built for every target");
//!     println!("file://{path}");
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The filters (the `//!` docs in `tests/programs/<name>/src/lib.rs` say exactly what each does
//! and what it needs from the host): `passthrough`, `headers`, `body`, `properties`, `route`, `shared`,
//! `metrics`, `callout`, `grpc`, `tick`, `broken`.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// Variables of the outer `cargo test` build that must not reach a cargo a test runs itself
/// (flags, wrappers and target settings meant for the workspace, not for the crate it builds).
pub const OUTER_CARGO_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
];

/// `command` (a nested cargo) without any of [`OUTER_CARGO_ENV`]; set its target directory
/// after this.
pub fn without_outer_cargo_env(command: &mut std::process::Command) -> &mut std::process::Command {
    for name in OUTER_CARGO_ENV {
        command.env_remove(name);
    }
    command
}

/// The targets every filter is built for, in the order [`ALL`] lists them.
pub const TARGETS: [&str; 2] = ["wasm32-wasip1", "wasm32-unknown-unknown"];

/// The path of filter `name` built for `target`, if there is such a filter.
pub fn path(name: &str, target: &str) -> Option<&'static str> {
    ALL.iter()
        .find(|&&(n, t, _)| n == name && t == target)
        .map(|&(_, _, path)| path)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wasm;
