//! Builds the test filters of `tests/programs` for both wasm targets and writes
//! `$OUT_DIR/artifacts.rs`, one path constant per filter and target (the shape of wasmtime's
//! `crates/test-programs/artifacts/build.rs`).
//!
//! `tests/programs` is a cargo workspace of its own (excluded from the main one, with its own
//! Cargo.lock); it is built by a nested `cargo build --release` into `$OUT_DIR/programs-target`.
//! That target directory is not the outer build's, so the nested cargo never waits on the outer
//! one's target-dir lock; the package-cache lock the outer cargo holds while resolving is
//! released before build scripts run.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The targets every filter is built for, with the suffix of their constants.
const TARGETS: &[(&str, &str)] = &[
    ("wasm32-wasip1", "WASIP1"),
    ("wasm32-unknown-unknown", "UNKNOWN"),
];

/// Variables of the outer build that must not reach the nested one: its flags (which may
/// carry host-only options or a clippy driver) and its target directory.
const SCRUBBED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
];

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = env_path("CARGO_MANIFEST_DIR")?;
    let out_dir = env_path("OUT_DIR")?;
    let programs = manifest_dir
        .parent()
        .ok_or("CARGO_MANIFEST_DIR has no parent")?
        .join("programs");
    let target_dir = out_dir.join("programs-target");

    let filters = find_filters(&programs)?;
    for file in ["Cargo.toml", "Cargo.lock"] {
        rerun_if_changed(&programs.join(file));
    }
    for name in filters.keys() {
        rerun_if_changed(&programs.join(name).join("Cargo.toml"));
        rerun_if_changed(&programs.join(name).join("src"));
    }

    build(&programs, &target_dir)?;

    let mut code = String::new();
    let mut all = String::new();
    for (name, summary) in &filters {
        for (target, suffix) in TARGETS {
            let wasm = target_dir
                .join(target)
                .join("release")
                .join(format!("{}.wasm", name.replace('-', "_")));
            if !wasm.is_file() {
                return Err(format!(
                    "{} was not built; is `{name}` listed in `members` of {}?",
                    wasm.display(),
                    programs.join("Cargo.toml").display()
                ));
            }
            let path = wasm
                .to_str()
                .ok_or_else(|| format!("{} is not UTF-8", wasm.display()))?;
            let constant = format!("{}_{suffix}", name.to_uppercase().replace('-', "_"));
            code += &format!("/// `{name}` for `{target}`: {summary}\n");
            code += &format!("pub const {constant}: &str = {path:?};\n");
            all += &format!("    ({name:?}, {target:?}, {constant}),\n");
        }
    }
    code += "/// Every filter for every target, as `(name, target, path)`: by name, and for each name\n";
    code += "/// `wasm32-wasip1` before `wasm32-unknown-unknown`.\n";
    code += &format!("pub const ALL: &[(&str, &str, &str)] = &[\n{all}];\n");

    let generated = out_dir.join("artifacts.rs");
    fs::write(&generated, code).map_err(|e| format!("writing {}: {e}", generated.display()))
}

/// Runs the nested `cargo build` of the programs workspace for both targets at once.
fn build(programs: &Path, target_dir: &Path) -> Result<(), String> {
    // The cargo running this build script, so the toolchain of `rust-toolchain.toml` is used.
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(programs.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(programs)
        // Cargo reads build-script stdout as directives; the nested build reports on stderr.
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit());
    for (target, _) in TARGETS {
        cmd.arg("--target").arg(target);
    }
    for name in SCRUBBED_ENV {
        cmd.env_remove(name);
    }
    eprintln!("running: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not run cargo for {}: {e}", programs.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the test filters failed ({status}); the nested cargo's output is above \
             (shown by `cargo build -vv`, or at once on failure)"
        ))
    }
}

/// The filters: every directory of `programs` with a `Cargo.toml`, by name, with the first
/// line of its crate docs (`//! ...`) as a summary.
fn find_filters(programs: &Path) -> Result<BTreeMap<String, String>, String> {
    let entries =
        fs::read_dir(programs).map_err(|e| format!("reading {}: {e}", programs.display()))?;
    let mut filters = BTreeMap::new();
    for entry in entries {
        let dir = entry
            .map_err(|e| format!("reading {}: {e}", programs.display()))?
            .path();
        if !dir.join("Cargo.toml").is_file() {
            continue;
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{} has no UTF-8 name", dir.display()))?
            .to_owned();
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(format!(
                "filter directory `{name}` must be lowercase letters, digits, `-` or `_`"
            ));
        }
        let lib = dir.join("src").join("lib.rs");
        let source =
            fs::read_to_string(&lib).map_err(|e| format!("reading {}: {e}", lib.display()))?;
        let first_line = source
            .lines()
            .find_map(|line| line.strip_prefix("//!"))
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .ok_or_else(|| format!("{} must open with a `//!` doc line", lib.display()))?;
        // "`headers`: rewrites ..." → "rewrites ..."
        let summary = first_line
            .strip_prefix(&format!("`{name}`: "))
            .unwrap_or(first_line)
            .to_owned();
        filters.insert(name, summary);
    }
    if filters.is_empty() {
        return Err(format!("no filters found in {}", programs.display()));
    }
    Ok(filters)
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

fn env_path(name: &str) -> Result<PathBuf, String> {
    env::var_os(name)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{name} is not set; run this through cargo"))
}
