//! The story's filter modules: `examples/hello-filter` built to `wasm32-wasip1` as it is (v1)
//! and changed into v2 in a temporary copy, both into `target/story-e2e` of the workspace.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::{V1, V2, path};

/// The story's two filter modules.
pub struct Filters {
    /// `examples/hello-filter` as it is.
    pub v1: PathBuf,
    /// The same filter, its responses saying `x-served-by: hello-filter-v2`.
    pub v2: PathBuf,
}

/// Builds `examples/hello-filter` (v1), then a copy of it changed into v2 in a temporary
/// directory: its own workspace, renamed `hello-filter-v2` (so its module does not overwrite
/// v1's in the shared target directory), on this checkout's SDK by absolute path.
pub fn build_filters() -> Filters {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf();
    let target = workspace.join("target").join("story-e2e");
    let example = workspace.join("examples/hello-filter");
    build_wasm(&example, &target);

    let copy = tempfile::tempdir().expect("a directory for the v2 crate");
    let manifest =
        std::fs::read_to_string(example.join("Cargo.toml")).expect("the example's Cargo.toml");
    let sdk = workspace.join("sdk");
    let manifest = replaced(
        &manifest,
        "name = \"hello-filter\"",
        "name = \"hello-filter-v2\"",
    );
    let manifest = replaced(
        &manifest,
        "path = \"../../sdk\"",
        &format!("path = {:?}", path(&sdk)),
    );
    let source = std::fs::read_to_string(example.join("src/lib.rs")).expect("the example's lib.rs");
    let source = replaced(
        &source,
        &format!("set_header(\"x-served-by\", \"{V1}\")"),
        &format!("set_header(\"x-served-by\", \"{V2}\")"),
    );
    std::fs::create_dir(copy.path().join("src")).expect("create src/");
    std::fs::write(
        copy.path().join("Cargo.toml"),
        format!("{manifest}\n[workspace]\n"),
    )
    .expect("write Cargo.toml");
    std::fs::write(copy.path().join("src/lib.rs"), source).expect("write lib.rs");
    // The workspace's lock file: v2 builds on exactly v1's dependency versions.
    std::fs::copy(workspace.join("Cargo.lock"), copy.path().join("Cargo.lock"))
        .expect("copy Cargo.lock");
    build_wasm(copy.path(), &target);

    let release = target.join("wasm32-wasip1/release");
    Filters {
        v1: release.join("hello_filter.wasm"),
        v2: release.join("hello_filter_v2.wasm"),
    }
}

/// `text` with `from` replaced by `to`; panics if `from` is not there (the example changed).
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` not found in:\n{text}");
    text.replace(from, to)
}

/// `cargo build --release --target wasm32-wasip1` in `dir` into `target`; panics with cargo's
/// output on failure.
fn build_wasm(dir: &Path, target: &Path) {
    let mut command = Command::new(env!("CARGO"));
    command
        .args(["build", "--release", "--target", "wasm32-wasip1"])
        .current_dir(dir);
    let output = weft_test_artifacts::without_outer_cargo_env(&mut command)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo build in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
