//! Builds the built-in plugins of `plugins/` for `wasm32-wasip1` and writes
//! `$OUT_DIR/builtins.rs`: `pub static BUILTINS: &[(&str, &[u8])]`, each plugin's name (its
//! directory) and module bytes (`include_bytes!`), sorted by name. The host serves them as
//! `builtin://NAME` (see `src/wasm/builtin.rs`).
//!
//! A built-in plugin is a directory `plugins/NAME/` holding the crate `weft-plugin-NAME`
//! (a member of the main workspace, `crate-type = ["cdylib", "rlib"]`). All of them are built
//! by one nested `cargo build --release --target wasm32-wasip1 -p weft-plugin-A -p ...` of the
//! main workspace into `$OUT_DIR/plugins-target` — a target directory of its own, so the nested
//! cargo never waits on the outer one's lock — with the release profile tuned for small
//! modules (`panic = abort`, fat LTO, no debug info). With no plugins, nothing is built and the
//! table is empty. The shape follows `tests/artifacts/build.rs`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target built-in plugins are built for.
const TARGET: &str = "wasm32-wasip1";

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

/// The release profile of the nested build: small modules without debug info.
const PROFILE: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_PANIC", "abort"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
    ("CARGO_PROFILE_RELEASE_STRIP", "debuginfo"),
    ("CARGO_PROFILE_RELEASE_LTO", "true"),
];

/// Set on the nested build, so a plugin that (wrongly) depends on the host cannot recurse.
const NESTED: &str = "WEFT_BUILDING_BUILTINS";

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = env_path("CARGO_MANIFEST_DIR")?;
    let out_dir = env_path("OUT_DIR")?;
    let root = manifest_dir
        .parent()
        .ok_or("CARGO_MANIFEST_DIR has no parent")?
        .to_path_buf();
    let plugins_dir = root.join("plugins");
    println!("cargo:rerun-if-env-changed={NESTED}");

    let plugins = if env::var_os(NESTED).is_some() {
        Vec::new()
    } else {
        find_plugins(&plugins_dir)?
    };
    for path in [
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
        plugins_dir.clone(),
        root.join("sdk").join("Cargo.toml"),
        root.join("sdk").join("src"),
        root.join("abi").join("Cargo.toml"),
        root.join("abi").join("src"),
    ] {
        rerun_if_changed(&path);
    }

    let target_dir = out_dir.join("plugins-target");
    if !plugins.is_empty() {
        build(&root, &target_dir, &plugins)?;
    }

    let mut code = String::from(
        "/// The built-in plugins, as `(name, module bytes)`, sorted by name.\n\
         pub static BUILTINS: &[(&str, &[u8])] = &[\n",
    );
    for name in &plugins {
        let wasm = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("weft_plugin_{}.wasm", name.replace('-', "_")));
        if !wasm.is_file() {
            return Err(format!(
                "{} was not built; does {} build a cdylib?",
                wasm.display(),
                plugins_dir.join(name).join("Cargo.toml").display()
            ));
        }
        let path = wasm
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", wasm.display()))?;
        code += &format!("    ({name:?}, include_bytes!({path:?})),\n");
    }
    code += "];\n";

    let generated = out_dir.join("builtins.rs");
    fs::write(&generated, code).map_err(|e| format!("writing {}: {e}", generated.display()))
}

/// Runs the nested `cargo build` of every plugin at once.
fn build(root: &Path, target_dir: &Path, plugins: &[String]) -> Result<(), String> {
    // The cargo running this build script, so the toolchain of `rust-toolchain.toml` is used.
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(root)
        // Cargo reads build-script stdout as directives; the nested build reports on stderr.
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit());
    for name in plugins {
        cmd.arg("-p").arg(format!("weft-plugin-{name}"));
    }
    for name in SCRUBBED_ENV {
        cmd.env_remove(name);
    }
    for (name, value) in PROFILE {
        cmd.env(name, value);
    }
    cmd.env(NESTED, "1");
    eprintln!("running: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not run cargo for the built-in plugins: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the built-in plugins failed ({status}); the nested cargo's output is \
             above (shown by `cargo build -vv`, or at once on failure)"
        ))
    }
}

/// The plugins: every directory of `plugins` with a `Cargo.toml`, by name. Each must be the
/// crate `weft-plugin-NAME`.
fn find_plugins(plugins: &Path) -> Result<Vec<String>, String> {
    let entries = match fs::read_dir(plugins) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", plugins.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let dir = entry
            .map_err(|e| format!("reading {}: {e}", plugins.display()))?
            .path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{} has no UTF-8 name", dir.display()))?
            .to_owned();
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(format!(
                "plugin directory `{name}` must be a lowercase letter, then lowercase letters, \
                 digits or `-`"
            ));
        }
        let text = fs::read_to_string(&manifest)
            .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
        let package = format!("name=\"weft-plugin-{name}\"");
        let declares = text
            .lines()
            .map(|line| line.replace([' ', '\t'], ""))
            .any(|line| line == package);
        if !declares {
            return Err(format!(
                "{} must declare the package `weft-plugin-{name}`",
                manifest.display()
            ));
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// Watches `path`, if it exists (a missing path would rerun the script on every build).
fn rerun_if_changed(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn env_path(name: &str) -> Result<PathBuf, String> {
    env::var_os(name)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{name} is not set; run this through cargo"))
}
