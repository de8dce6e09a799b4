//! The YAML resources of a proxy configuration (`Cluster`, `Plugin`, `FilterChain`, `Listener`),
//! built in block style so every field sits on its own line — a rejection then names a line a
//! test can find with [`line_of`]. Each builder renders one document; [`join`] makes a file.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use weft_e2e::resources::{Chain, Cluster, Filter, Listener, Plugin, join};
//! use weft_e2e::{client, upstream::Upstream, weft::Weft};
//! let up = Upstream::http1("web").await?;
//! let yaml = join([
//!     Cluster::new("web", &[up.addr]).to_string(),
//!     Plugin::new("headers", "/abs/path/headers.wasm").deadline("50ms").to_string(),
//!     Chain::new("edge", [Filter::new("headers").named("a")]).to_string(),
//!     Listener::new("public", "web").chain("edge").to_string(),
//! ]);
//! let weft = Weft::start(&yaml).await?;
//! let reply = client::h1(weft.addr("public"), client::get("/")).await?;
//! assert_eq!(reply.json()["headers"]["x-filtered-by"], "a");
//! # Ok(()) }
//! ```

use std::fmt;
use std::net::SocketAddr;

/// Joins documents into one file, separated by `---`.
pub fn join(docs: impl IntoIterator<Item = String>) -> String {
    docs.into_iter().collect::<Vec<_>>().join("---\n")
}

/// The usual shape of a filter test: cluster `web` over `upstream`, the `plugins`, chain `edge`
/// of `filters`, and listener `public` running requests through `edge` to `web`.
pub fn edge(
    upstream: SocketAddr,
    plugins: &[Plugin],
    filters: impl IntoIterator<Item = Filter>,
) -> String {
    let mut docs = vec![Cluster::new("web", &[upstream]).to_string()];
    docs.extend(plugins.iter().map(Plugin::to_string));
    docs.push(Chain::new("edge", filters).to_string());
    docs.push(Listener::new("public", "web").chain("edge").to_string());
    join(docs)
}

/// The 1-based number of the first line of `yaml` containing `marker`; panics (a test bug) if
/// there is none.
pub fn line_of(yaml: &str, marker: &str) -> usize {
    yaml.lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("test bug: {marker:?} is not in the config:\n{yaml}"))
        + 1
}

/// `kind: Cluster`.
#[derive(Clone, Debug)]
pub struct Cluster {
    name: String,
    endpoints: Vec<String>,
    extra: Vec<String>,
}

impl Cluster {
    /// A cluster over `endpoints`, with the default settings.
    pub fn new(name: &str, endpoints: &[SocketAddr]) -> Self {
        Cluster {
            name: name.to_owned(),
            endpoints: endpoints.iter().map(|e| format!("\"{e}\"")).collect(),
            extra: Vec::new(),
        }
    }

    /// Adds a spec field, e.g. `.field("connectTimeout", "300ms")`.
    pub fn field(mut self, key: &str, value: &str) -> Self {
        self.extra.push(format!("{key}: {value}"));
        self
    }
}

impl fmt::Display for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "apiVersion: weft/v1\nkind: Cluster\nmetadata:")?;
        writeln!(f, "  name: {}\nspec:", self.name)?;
        writeln!(f, "  endpoints: [{}]", self.endpoints.join(", "))?;
        for line in &self.extra {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// `kind: Plugin`.
#[derive(Clone, Debug)]
pub struct Plugin {
    name: String,
    url: String,
    sha256: Option<String>,
    deadline: Option<String>,
    memory_limit: Option<String>,
}

impl Plugin {
    /// A plugin whose module is the file at the absolute path `module` (`url: file://…`).
    pub fn new(name: &str, module: &str) -> Self {
        Plugin {
            name: name.to_owned(),
            url: format!("file://{module}"),
            sha256: None,
            deadline: None,
            memory_limit: None,
        }
    }

    /// Replaces the `url` as written.
    pub fn url(mut self, url: &str) -> Self {
        self.url = url.to_owned();
        self
    }

    /// Pins the module's sha256 (as written: any text).
    pub fn sha256(mut self, digest: &str) -> Self {
        self.sha256 = Some(digest.to_owned());
        self
    }

    /// The per-call deadline, e.g. `100ms`.
    pub fn deadline(mut self, deadline: &str) -> Self {
        self.deadline = Some(deadline.to_owned());
        self
    }

    /// The per-instance memory cap, e.g. `16Mi`.
    pub fn memory_limit(mut self, limit: &str) -> Self {
        self.memory_limit = Some(limit.to_owned());
        self
    }
}

impl fmt::Display for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "apiVersion: weft/v1\nkind: Plugin\nmetadata:")?;
        writeln!(f, "  name: {}\nspec:", self.name)?;
        writeln!(f, "  url: \"{}\"", self.url)?;
        if let Some(sha) = &self.sha256 {
            writeln!(f, "  sha256: \"{sha}\"")?;
        }
        if let Some(deadline) = &self.deadline {
            writeln!(f, "  deadline: {deadline}")?;
        }
        if let Some(limit) = &self.memory_limit {
            writeln!(f, "  memoryLimit: {limit}")?;
        }
        Ok(())
    }
}

/// One entry of a [`Chain`].
#[derive(Clone, Debug)]
pub struct Filter {
    plugin: String,
    name: Option<String>,
    config: Option<String>,
    fail_open: bool,
}

impl Filter {
    /// An instance of plugin `plugin`: default name, no config, `FAIL_CLOSE`.
    pub fn new(plugin: &str) -> Self {
        Filter {
            plugin: plugin.to_owned(),
            name: None,
            config: None,
            fail_open: false,
        }
    }

    /// The instance name (the `plugin_name` property).
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// The config as a YAML flow value, e.g. `{mode: panic}`.
    pub fn config(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.to_owned());
        self
    }

    /// `failStrategy: FAIL_OPEN`.
    pub fn fail_open(mut self) -> Self {
        self.fail_open = true;
        self
    }

    /// The plugin this filter is an instance of.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }
}

/// `kind: FilterChain`.
#[derive(Clone, Debug)]
pub struct Chain {
    name: String,
    filters: Vec<Filter>,
}

impl Chain {
    /// A chain of `filters`, request phases in this order.
    pub fn new(name: &str, filters: impl IntoIterator<Item = Filter>) -> Self {
        Chain {
            name: name.to_owned(),
            filters: filters.into_iter().collect(),
        }
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "apiVersion: weft/v1\nkind: FilterChain\nmetadata:")?;
        writeln!(f, "  name: {}\nspec:\n  filters:", self.name)?;
        for filter in &self.filters {
            writeln!(f, "    - plugin: {}", filter.plugin)?;
            if let Some(name) = &filter.name {
                writeln!(f, "      name: {name}")?;
            }
            if let Some(config) = &filter.config {
                writeln!(f, "      config: {config}")?;
            }
            if filter.fail_open {
                writeln!(f, "      failStrategy: FAIL_OPEN")?;
            }
        }
        Ok(())
    }
}

/// `kind: Listener` on `127.0.0.1:0`.
#[derive(Clone, Debug)]
pub struct Listener {
    name: String,
    cluster: String,
    chain: Option<String>,
    extra: Vec<String>,
}

impl Listener {
    /// A listener sending every request to `cluster`, without a filter chain.
    pub fn new(name: &str, cluster: &str) -> Self {
        Listener {
            name: name.to_owned(),
            cluster: cluster.to_owned(),
            chain: None,
            extra: Vec::new(),
        }
    }

    /// Runs requests through the filter chain `chain`.
    pub fn chain(mut self, chain: &str) -> Self {
        self.chain = Some(chain.to_owned());
        self
    }

    /// Adds a spec field, e.g. `.field("limits", "{maxBufferedBodyBytes: 1024}")`.
    pub fn field(mut self, key: &str, value: &str) -> Self {
        self.extra.push(format!("{key}: {value}"));
        self
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "apiVersion: weft/v1\nkind: Listener\nmetadata:")?;
        writeln!(f, "  name: {}\nspec:", self.name)?;
        writeln!(f, "  address: \"127.0.0.1:0\"")?;
        if let Some(chain) = &self.chain {
            writeln!(f, "  filterChain: {chain}")?;
        }
        writeln!(f, "  defaultCluster: {}", self.cluster)?;
        for line in &self.extra {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_render_in_block_style() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("an address");
        let yaml = join([
            Cluster::new("web", &[addr])
                .field("connectTimeout", "300ms")
                .to_string(),
            Plugin::new("broken", "/m/broken.wasm")
                .deadline("50ms")
                .memory_limit("16Mi")
                .to_string(),
            Chain::new(
                "edge",
                [
                    Filter::new("headers").named("a"),
                    Filter::new("broken").config("{mode: panic}").fail_open(),
                ],
            )
            .to_string(),
            Listener::new("public", "web").chain("edge").to_string(),
        ]);
        let expected = r#"apiVersion: weft/v1
kind: Cluster
metadata:
  name: web
spec:
  endpoints: ["127.0.0.1:9"]
  connectTimeout: 300ms
---
apiVersion: weft/v1
kind: Plugin
metadata:
  name: broken
spec:
  url: "file:///m/broken.wasm"
  deadline: 50ms
  memoryLimit: 16Mi
---
apiVersion: weft/v1
kind: FilterChain
metadata:
  name: edge
spec:
  filters:
    - plugin: headers
      name: a
    - plugin: broken
      config: {mode: panic}
      failStrategy: FAIL_OPEN
---
apiVersion: weft/v1
kind: Listener
metadata:
  name: public
spec:
  address: "127.0.0.1:0"
  filterChain: edge
  defaultCluster: web
"#;
        assert_eq!(yaml, expected);
        assert_eq!(line_of(&yaml, "deadline: 50ms"), 15);
    }
}
