//! `weft plugin new NAME`: writes a ready-to-build filter crate — a `cdylib` on the weft SDK
//! with one filter, its native unit test, a README with the build and run commands, and a
//! YAML chain that runs it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Where the generated crate takes `weft-sdk` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A local checkout of the SDK (`sdk/` of the weft repository).
    Path(PathBuf),
    /// The weft repository on GitHub.
    Git(String),
}

impl SdkSource {
    /// The SDK next to the sources this binary was built from, if they are still there;
    /// otherwise the weft repository.
    pub fn default_for_this_build() -> SdkSource {
        let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        match local.canonicalize() {
            Ok(path) if path.join("Cargo.toml").is_file() => SdkSource::Path(path),
            _ => SdkSource::Git("https://github.com/weft-proxy/weft".into()),
        }
    }

    fn dependency(&self) -> String {
        match self {
            SdkSource::Path(path) => format!("{{ path = {:?} }}", path.display().to_string()),
            SdkSource::Git(url) => format!("{{ git = {url:?} }}"),
        }
    }
}

/// Checks `name` is usable as a crate and plugin name: lowercase ASCII letters, digits and
/// `-`, starting with a letter, at most 64 characters.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "invalid plugin name `{name}`: use lowercase letters, digits and `-`, starting with a letter"
        );
    }
    Ok(())
}

/// Writes the crate for filter `name` into `dir` (which must not exist yet); returns the
/// files written.
pub fn new_plugin(name: &str, dir: &Path, sdk: &SdkSource) -> anyhow::Result<Vec<PathBuf>> {
    check_name(name)?;
    if dir.exists() {
        bail!("{} already exists; choose another directory", dir.display());
    }
    let files = [
        ("Cargo.toml", cargo_toml(name, sdk)),
        ("src/lib.rs", lib_rs(name)),
        ("README.md", readme(name)),
        ("weft.yaml", chain_yaml(name)),
        (".gitignore", "/target\n".to_owned()),
    ];
    let mut written = Vec::new();
    for (relative, contents) in files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// `my-filter` → `MyFilter`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn cargo_toml(name: &str, sdk: &SdkSource) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the .wasm weft loads; rlib: so `cargo test` runs the native unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
weft-sdk = {dependency}
serde = {{ version = "1", features = ["derive"] }}

# Its own workspace, wherever it is created.
[workspace]

# Small, fast modules whose panics trap instead of unwinding.
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = "debuginfo"
"#,
        dependency = sdk.dependency()
    )
}

fn lib_rs(name: &str) -> String {
    let ty = type_name(name);
    format!(
        r##"//! `{name}`: a weft filter. It adds a header to every request on its way upstream and
//! stamps every response.

use std::rc::Rc;

use serde::Deserialize;
use weft_sdk::{{Action, Filter, Request, Response, Result}};

/// The filter's configuration: the `config` of its chain entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {{
    /// The value of the `x-{name}` request header.
    #[serde(default = "default_value")]
    pub value: String,
}}

fn default_value() -> String {{
    "on".into()
}}

/// One request's filter.
pub struct {ty} {{
    config: Rc<Config>,
}}

impl Filter for {ty} {{
    type Config = Config;

    fn new(config: &Rc<Config>) -> Self {{
        {ty} {{
            config: config.clone(),
        }}
    }}

    fn on_request_headers(&mut self, request: &mut Request) -> Result<Action> {{
        request.set_header("x-{name}", &self.config.value)?;
        Ok(Action::Continue)
    }}

    fn on_response_headers(&mut self, response: &mut Response) -> Result<Action> {{
        response.set_header("x-filtered-by", "{name}")?;
        Ok(Action::Continue)
    }}
}}

weft_sdk::export_filter!({ty});

#[cfg(test)]
mod tests {{
    use weft_sdk::testing::{{Harness, TestRequest, TestResponse}};

    use super::*;

    #[test]
    fn adds_its_header_upstream_and_stamps_the_response() {{
        let harness = Harness::<{ty}>::new(r#"{{"value": "yes"}}"#).expect("valid config");
        let exchange = harness.request(TestRequest::get("/"));
        assert_eq!(exchange.action(), Action::Continue);
        assert_eq!(exchange.request_header("x-{name}").as_deref(), Some("yes"));
        exchange.respond(TestResponse::new(200));
        assert_eq!(exchange.response_header("x-filtered-by").as_deref(), Some("{name}"));
    }}
}}
"##
    )
}

fn readme(name: &str) -> String {
    let wasm = name.replace('-', "_");
    let mut text = String::new();
    let _ = write!(
        text,
        r#"# {name}

A weft filter, written with the weft SDK.

```sh
cargo test                                          # native unit tests, no Wasm needed
cargo build --release --target wasm32-wasip1        # target/wasm32-wasip1/release/{wasm}.wasm
weft proxy --config weft.yaml                       # runs it in front of 127.0.0.1:9001
curl -si http://127.0.0.1:8080/                     # x-filtered-by: {name}
```

The `wasm32-wasip1` target comes with `rustup target add wasm32-wasip1`.
"#
    );
    text
}

fn chain_yaml(name: &str) -> String {
    let wasm = name.replace('-', "_");
    format!(
        r#"# Runs {name} in front of a service on 127.0.0.1:9001. Build it first:
#   cargo build --release --target wasm32-wasip1
apiVersion: weft/v1
kind: Plugin
metadata: {{name: {name}}}
spec:
  url: target/wasm32-wasip1/release/{wasm}.wasm
---
apiVersion: weft/v1
kind: FilterChain
metadata: {{name: main}}
spec:
  filters:
    - plugin: {name}
      config: {{value: "on"}}
---
apiVersion: weft/v1
kind: Cluster
metadata: {{name: app}}
spec:
  endpoints: ["127.0.0.1:9001"]
---
apiVersion: weft/v1
kind: Listener
metadata: {{name: public}}
spec:
  address: 127.0.0.1:8080
  filterChain: main
  defaultCluster: app
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("rate-limit2").is_ok());
        for bad in ["", "Rate", "2fast", "a_b", "a b", "trailing-", "x/../y"] {
            let error = check_name(bad).expect_err(bad).to_string();
            assert!(error.contains("invalid plugin name"), "{bad}: {error}");
        }
    }

    #[test]
    fn writes_a_crate_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("my-filter");
        let sdk = SdkSource::Path("/opt/weft/sdk".into());
        let files = new_plugin("my-filter", &target, &sdk).expect("written");
        assert_eq!(files.len(), 5);
        let lib = std::fs::read_to_string(target.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.contains("pub struct MyFilter"));
        assert!(lib.contains("weft_sdk::export_filter!(MyFilter);"));
        let manifest = std::fs::read_to_string(target.join("Cargo.toml")).expect("Cargo.toml");
        assert!(manifest.contains(r#"weft-sdk = { path = "/opt/weft/sdk" }"#));
        assert!(manifest.contains(r#"crate-type = ["cdylib", "rlib"]"#));
        let error = new_plugin("my-filter", &target, &sdk).expect_err("exists");
        assert!(error.to_string().contains("already exists"));
    }
}
