//! The proxy under test, started in-process from a YAML string: its config file lives in a
//! temporary directory, its admin server on `127.0.0.1:0`, and it watches its files every
//! 100 ms. Dropping a [`Weft`] stops its listeners and tasks.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use weft_e2e::{client, upstream::Upstream, weft::Weft};
//! let up = Upstream::http1("web").await?;
//! let weft = Weft::start(&format!(r#"
//! apiVersion: weft/v1
//! kind: Cluster
//! metadata: {{name: web}}
//! spec: {{endpoints: ["{}"]}}
//! ---
//! apiVersion: weft/v1
//! kind: Listener
//! metadata: {{name: public}}
//! spec: {{address: "127.0.0.1:0", defaultCluster: web}}
//! "#, up.addr)).await?;
//! let reply = client::h1(weft.addr("public"), client::get("/")).await?;
//! assert_eq!(reply.header("x-upstream"), Some("web"));
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::Method;
use weft_host::app::{App, AppOptions};

use crate::certs::write_atomic;
use crate::client::{self, Reply};
use crate::upstream::loopback;

pub use crate::wait_for;

/// A running proxy and the directory holding its configuration.
pub struct Weft {
    /// The proxy itself.
    pub app: App,
    /// The directory holding `weft.yaml` (and anything else the test writes next to it).
    pub dir: tempfile::TempDir,
    /// `dir/weft.yaml`.
    pub config_path: PathBuf,
}

impl std::fmt::Debug for Weft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weft")
            .field("config_path", &self.config_path)
            .finish()
    }
}

impl Weft {
    /// Writes `yaml` to a fresh directory's `weft.yaml` and starts the proxy on it.
    pub async fn start(yaml: &str) -> Result<Weft> {
        let dir = tempfile::tempdir().context("creating the proxy's directory")?;
        Weft::start_in(dir, yaml).await
    }

    /// Like [`Weft::start`] in a directory the test prepared (e.g. holding certificates or
    /// plugins that the YAML names by relative path).
    pub async fn start_in(dir: tempfile::TempDir, yaml: &str) -> Result<Weft> {
        let config_path = dir.path().join("weft.yaml");
        write_atomic(&config_path, yaml.as_bytes())?;
        Weft::start_with(dir, |_| {}).await
    }

    /// Starts on the `weft.yaml` already in `dir`, after `adjust` has tuned the options (the
    /// defaults here: admin on `127.0.0.1:0`, files watched every 100 ms).
    pub async fn start_with(
        dir: tempfile::TempDir,
        adjust: impl FnOnce(&mut AppOptions),
    ) -> Result<Weft> {
        let config_path = dir.path().join("weft.yaml");
        let mut options = AppOptions::new(&config_path);
        options.admin = Some(loopback());
        options.watch_interval = Duration::from_millis(100);
        adjust(&mut options);
        let app = App::start(options)
            .await
            .with_context(|| format!("starting weft on {}", config_path.display()))?;
        Ok(Weft {
            app,
            dir,
            config_path,
        })
    }

    /// Where listener `name` is bound; panics if there is no such listener.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.app
            .listener_addr(listener)
            .unwrap_or_else(|| panic!("weft has no listener named {listener:?}"))
    }

    /// Where the admin server is bound.
    pub fn admin(&self) -> SocketAddr {
        self.app
            .admin_addr()
            .expect("Weft::start always runs an admin server")
    }

    /// A path inside [`Weft::dir`].
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the config file atomically (temporary file, then rename). The proxy's watcher
    /// picks it up within ~100 ms; call `self.app.reload()` to apply it now and see the verdict.
    pub async fn rewrite_config(&self, yaml: &str) -> Result<()> {
        write_atomic(&self.config_path, yaml.as_bytes())
    }

    /// Rewrites the config and waits (up to 5 s) until the proxy serves a newer version;
    /// fails if it rejected the file.
    pub async fn apply_config(&self, yaml: &str) -> Result<u64> {
        let before = self.app.config_version();
        self.rewrite_config(yaml).await?;
        self.app
            .reload()
            .await
            .context("weft rejected the new configuration")?;
        let newer = wait_for(
            || async { self.app.config_version() > before },
            Duration::from_secs(5),
        )
        .await;
        anyhow::ensure!(newer, "config version stayed at {before}");
        Ok(self.app.config_version())
    }

    /// `GET path` on the admin server.
    pub async fn admin_get(&self, path: &str) -> Result<Reply> {
        client::h1(self.admin(), client::get(path)).await
    }

    /// `POST path` (empty body) on the admin server.
    pub async fn admin_post(&self, path: &str) -> Result<Reply> {
        let req = client::request(Method::POST, path, Bytes::new());
        client::h1(self.admin(), req).await
    }

    /// The Prometheus text from `/stats/prometheus`.
    pub async fn metrics(&self) -> Result<String> {
        let reply = self.admin_get("/stats/prometheus").await?;
        anyhow::ensure!(
            reply.status == 200,
            "/stats/prometheus answered {}",
            reply.status
        );
        Ok(reply.text())
    }

    /// The sum of every sample whose line starts with `prefix` (e.g. `weft_requests_total` or
    /// `istio_requests_total{response_code="200"`); `None` if no line matched or the scrape
    /// failed.
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        sum_samples(&self.metrics().await.ok()?, prefix)
    }

    /// Drains the proxy (stop accepting, finish in-flight requests) and drops it.
    pub async fn shutdown(self) {
        self.app.drain().await;
    }
}

/// Sums the values of the Prometheus text-format samples whose line starts with `prefix`.
pub fn sum_samples(text: &str, prefix: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with(prefix) {
            continue;
        }
        // Label values may hold spaces: the value follows the closing brace, if any.
        let rest = match line.rfind('}') {
            Some(end) => &line[end + 1..],
            None => line.split_once(char::is_whitespace).map_or("", |(_, v)| v),
        };
        if let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::sum_samples;

    #[test]
    fn samples_are_summed_by_prefix() {
        let text = "# HELP x_total a counter\n# TYPE x_total counter\n\
                    x_total{code=\"200\",route=\"a b\"} 3\nx_total{code=\"500\"} 2\nx_other 9\ny 1\n";
        assert_eq!(sum_samples(text, "x_total"), Some(5.0));
        assert_eq!(sum_samples(text, "x_total{code=\"500\""), Some(2.0));
        assert_eq!(sum_samples(text, "x_other"), Some(9.0));
        assert_eq!(sum_samples(text, "z"), None);
    }
}
