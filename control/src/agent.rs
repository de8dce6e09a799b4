//! The proxy side of discovery: a proxy fed by the control plane (`weft proxy --control`).
//!
//! [`run_agent`] holds one `Discovery.Subscribe` call. For every [`Snapshot`] it fetches each
//! module it does not have by digest (`Registry.Fetch`) into `CACHE/modules/SHA256.wasm`
//! (digest verified, written atomically), rewrites every `registry://` Plugin url of the
//! snapshot's YAML to the cached `file://` module, writes the result to `CACHE/snapshot.yaml`
//! and applies it through the proxy's all-or-nothing reload ([`App::start`] the first time,
//! [`App::reload`] afterwards). Success is ACKed and kept as `CACHE/last-good.yaml` (its version
//! in `CACHE/last-good.version`); failure is NACKed with the reason and the last good file is
//! put back, so the running configuration is untouched.
//!
//! A module whose reload generation grew since the last applied snapshot (`weft plugin
//! reload`) has its filters replaced with fresh instances ([`App::reload_renewing`]), even
//! when nothing else changed.
//!
//! Losing the control plane changes nothing: the proxy keeps serving and reconnects with capped
//! exponential backoff. Started while the control plane is down, it serves
//! `CACHE/last-good.yaml` at once when there is one.

use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use sha2::{Digest as _, Sha256};
use weft_host::{
    app::{App, AppOptions},
    config::ConfigError,
};

use crate::{
    client::{self, Clients},
    proto::{DiscoveryRequest, FetchRequest, ModuleRef, Snapshot},
};

/// The file the running configuration is loaded from.
pub const SNAPSHOT_FILE: &str = "snapshot.yaml";
/// The last configuration the proxy applied and ACKed.
pub const LAST_GOOD_FILE: &str = "last-good.yaml";
/// The version of [`LAST_GOOD_FILE`].
pub const LAST_GOOD_VERSION_FILE: &str = "last-good.version";
/// The directory of cached modules, `SHA256.wasm`.
pub const MODULES_DIR: &str = "modules";

/// How to run a proxy fed by the control plane.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The control plane's URL, e.g. `http://127.0.0.1:18000`.
    pub control: String,
    /// This proxy's node name.
    pub node: String,
    /// The API token.
    pub token: String,
    /// The on-disk cache: modules, the running snapshot and the last good one.
    pub cache: PathBuf,
    /// How to run the proxy; `config_path` is replaced by `CACHE/snapshot.yaml`.
    pub app: AppOptions,
    /// The first reconnection delay; doubled after each failure.
    pub backoff_initial: Duration,
    /// The longest reconnection delay.
    pub backoff_max: Duration,
}

impl AgentOptions {
    /// Options with the default backoff (100 ms doubling to 5 s) and proxy settings.
    pub fn new(control: &str, node: &str, token: &str, cache: impl Into<PathBuf>) -> Self {
        let cache = cache.into();
        Self {
            control: control.to_owned(),
            node: node.to_owned(),
            token: token.to_owned(),
            app: AppOptions::new(cache.join(SNAPSHOT_FILE)),
            cache,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// The agent's running state.
struct Agent {
    options: AgentOptions,
    /// Absolute cache directory.
    cache: PathBuf,
    app: Option<App>,
    /// The version the proxy runs (0: none yet).
    version: u64,
    /// The reload generation of each registry module in the running snapshot.
    generations: BTreeMap<String, u64>,
}

/// Runs the proxy fed by the control plane until `shutdown` completes, then drains it.
pub async fn run_agent(
    options: AgentOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(options.cache.join(MODULES_DIR))
        .map_err(|e| anyhow::anyhow!("cannot create the cache {}: {e}", options.cache.display()))?;
    let cache = std::fs::canonicalize(&options.cache)?;
    let mut agent = Agent {
        options,
        cache,
        app: None,
        version: 0,
        generations: BTreeMap::new(),
    };
    agent.options.app.config_path = agent.cache.join(SNAPSHOT_FILE);
    agent.start_from_last_good().await;

    tokio::pin!(shutdown);
    let mut backoff = agent.options.backoff_initial;
    loop {
        let mut received = false;
        tokio::select! {
            () = &mut shutdown => break,
            result = agent.session(&mut received) => match result {
                Ok(()) => tracing::warn!("the control plane ended the discovery stream; reconnecting"),
                Err(e) => tracing::warn!(error = %e, "lost the control plane; still serving, reconnecting"),
            },
        }
        if received {
            backoff = agent.options.backoff_initial;
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(agent.options.backoff_max);
    }
    if let Some(app) = &agent.app {
        tracing::info!("draining");
        app.drain().await;
    }
    Ok(())
}

impl Agent {
    /// Serves `CACHE/last-good.yaml` when there is one (a restart while the control plane is
    /// down serves the last good snapshot).
    async fn start_from_last_good(&mut self) {
        let last_good = self.cache.join(LAST_GOOD_FILE);
        let Ok(text) = std::fs::read(&last_good) else {
            return;
        };
        if let Err(e) = write_atomic(&self.options.app.config_path, &text) {
            tracing::error!(error = %e, "cannot restore the last good snapshot");
            return;
        }
        match App::start(self.options.app.clone()).await {
            Ok(app) => {
                self.version = std::fs::read_to_string(self.cache.join(LAST_GOOD_VERSION_FILE))
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                tracing::info!(version = self.version, "serving the last good snapshot");
                self.app = Some(app);
            }
            Err(e) => tracing::error!(error = %e, "the last good snapshot does not start"),
        }
    }

    /// One Subscribe call: connects, then applies and answers every snapshot until the stream
    /// ends. Sets `received` once a snapshot arrived.
    async fn session(&mut self, received: &mut bool) -> anyhow::Result<()> {
        let mut clients = client::connect(&self.options.control, &self.options.token).await?;
        let (requests, mut snapshots) = clients.subscribe(&self.options.node, self.version).await?;
        tracing::info!(control = %self.options.control, node = %self.options.node, "subscribed");
        while let Some(snapshot) = snapshots.message().await? {
            *received = true;
            let (version, nonce) = (snapshot.version, snapshot.nonce.clone());
            let error_detail = match self.apply(&mut clients, snapshot).await {
                Ok(()) => {
                    tracing::info!(version, "snapshot applied; ACK");
                    String::new()
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    tracing::error!(version, error = %text, "snapshot rejected; NACK");
                    text
                }
            };
            requests
                .send(DiscoveryRequest {
                    node: self.options.node.clone(),
                    version_info: self.version,
                    response_nonce: nonce,
                    error_detail,
                })
                .await?;
        }
        Ok(())
    }

    /// Fetches the snapshot's modules, writes and applies it; on failure restores the last
    /// good file so the running configuration stays as it is.
    async fn apply(&mut self, clients: &mut Clients, snapshot: Snapshot) -> anyhow::Result<()> {
        let result = self.try_apply(clients, &snapshot).await;
        match &result {
            Ok(()) => {
                self.version = snapshot.version;
                self.generations = snapshot
                    .modules
                    .iter()
                    .map(|m| (m.name.clone(), m.generation))
                    .collect();
                let path = &self.options.app.config_path;
                let text = std::fs::read(path)?;
                write_atomic(&self.cache.join(LAST_GOOD_FILE), &text)?;
                write_atomic(
                    &self.cache.join(LAST_GOOD_VERSION_FILE),
                    format!("{}\n", snapshot.version).as_bytes(),
                )?;
            }
            Err(_) => self.restore_last_good().await,
        }
        result
    }

    async fn try_apply(
        &mut self,
        clients: &mut Clients,
        snapshot: &Snapshot,
    ) -> anyhow::Result<()> {
        for module in &snapshot.modules {
            self.ensure_module(clients, module).await?;
        }
        let yaml = rewrite_registry_urls(&snapshot.yaml, &snapshot.modules, &self.modules_dir());
        write_atomic(&self.options.app.config_path, yaml.as_bytes())?;
        let outcome = match &self.app {
            Some(app) => {
                let renew = self.renewed(&snapshot.modules)?;
                app.reload_renewing(&renew)
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::new)
            }
            None => App::start(self.options.app.clone())
                .await
                .map(|app| self.app = Some(app)),
        };
        outcome.map_err(|e| match e.downcast_ref::<ConfigError>() {
            Some(rejected) => anyhow::anyhow!(in_snapshot(rejected, snapshot)),
            None => e,
        })
    }

    async fn restore_last_good(&mut self) {
        let path = &self.options.app.config_path;
        match std::fs::read(self.cache.join(LAST_GOOD_FILE)) {
            Ok(text) => {
                if let Err(e) = write_atomic(path, &text) {
                    tracing::error!(error = %e, "cannot restore the last good snapshot");
                    return;
                }
                if let Some(app) = &self.app
                    && let Err(e) = app.reload().await
                {
                    tracing::error!(error = %e, "the last good snapshot no longer loads");
                }
            }
            Err(_) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// The digests of the modules reloaded since the running snapshot: their generation grew.
    fn renewed(&self, modules: &[ModuleRef]) -> anyhow::Result<Vec<[u8; 32]>> {
        let mut renew = Vec::new();
        for module in modules {
            let grew = self
                .generations
                .get(&module.name)
                .is_some_and(|&running| module.generation > running);
            if grew {
                renew.push(digest(&module.sha256).ok_or_else(|| {
                    anyhow::anyhow!(
                        "module `{}`: invalid sha256 `{}`",
                        module.url,
                        module.sha256
                    )
                })?);
            }
        }
        Ok(renew)
    }

    fn modules_dir(&self) -> PathBuf {
        self.cache.join(MODULES_DIR)
    }

    /// Makes sure `CACHE/modules/SHA256.wasm` holds the module, fetching it if not.
    async fn ensure_module(&self, clients: &mut Clients, module: &ModuleRef) -> anyhow::Result<()> {
        let sha = &module.sha256;
        if digest(sha).is_none() {
            anyhow::bail!("module `{}`: invalid sha256 `{sha}`", module.url);
        }
        let path = self.modules_dir().join(format!("{sha}.wasm"));
        if path.exists() {
            return Ok(());
        }
        let mut stream = clients
            .registry
            .fetch(FetchRequest {
                sha256: sha.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("fetching module {sha}: {}", s.message()))?
            .into_inner();
        let mut bytes = Vec::with_capacity(usize::try_from(module.size).unwrap_or(0));
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| anyhow::anyhow!("fetching module {sha}: {}", s.message()))?
        {
            bytes.extend_from_slice(&chunk.data);
        }
        let got = hex(&Sha256::digest(&bytes));
        if &got != sha {
            anyhow::bail!("module {sha} fetched with digest {got}");
        }
        write_atomic(&path, &bytes)?;
        tracing::info!(module = %module.url, sha256 = %sha, size = bytes.len(), "module cached");
        Ok(())
    }
}

/// A rejection worded for the operator: the resource and field as the control plane holds
/// them, with the line in the snapshot's text, instead of the proxy's cache file.
fn in_snapshot(error: &ConfigError, snapshot: &Snapshot) -> String {
    let version = snapshot.version;
    let mut text = match (error.resource.as_deref(), error.line) {
        (Some((kind, name)), Some(line)) => {
            format!("{kind} `{name}` (line {line} of snapshot version {version})")
        }
        (Some((kind, name)), None) => format!("{kind} `{name}` (snapshot version {version})"),
        (None, Some(line)) => format!("line {line} of snapshot version {version}"),
        (None, None) => format!("snapshot version {version}"),
    };
    if !error.field.is_empty() {
        text.push_str(&format!(", field `{}`", error.field));
    }
    text.push_str(": ");
    text.push_str(&error.message);
    text
}

/// The 32 bytes of a lowercase hex sha256; `None` unless it is exactly 64 lowercase hex digits.
fn digest(hex: &str) -> Option<[u8; 32]> {
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Replaces every `registry://` url of `modules` in `yaml` with `file://DIR/SHA256.wasm`,
/// textually, so line numbers in errors still match the snapshot. A url is replaced only where
/// it is not the prefix of a longer one (`registry://a` in `registry://a@1.0`).
pub fn rewrite_registry_urls(yaml: &str, modules: &[ModuleRef], dir: &Path) -> String {
    let mut out = yaml.to_owned();
    for module in modules {
        let target = format!(
            "file://{}",
            dir.join(format!("{}.wasm", module.sha256)).display()
        );
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(&module.url) {
            let after = &rest[at + module.url.len()..];
            let continues = after
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '-' | '.' | '_'));
            result.push_str(&rest[..at]);
            result.push_str(if continues { &module.url } else { &target });
            rest = after;
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_names_the_resource_and_the_snapshot_line() {
        let snapshot = Snapshot {
            version: 7,
            nonce: "1".into(),
            yaml: String::new(),
            modules: Vec::new(),
        };
        let mut error = ConfigError {
            file: "/var/cache/weft/snapshot.yaml".into(),
            line: Some(12),
            field: "spec.filters[0]".into(),
            message: "the plugin rejected its configuration".into(),
            resource: Some(Box::new(("FilterChain".into(), "edge".into()))),
        };
        assert_eq!(
            in_snapshot(&error, &snapshot),
            "FilterChain `edge` (line 12 of snapshot version 7), field `spec.filters[0]`: the plugin rejected its configuration"
        );
        error.resource = None;
        error.field.clear();
        assert_eq!(
            in_snapshot(&error, &snapshot),
            "line 12 of snapshot version 7: the plugin rejected its configuration"
        );
    }

    #[test]
    fn digests_are_64_lowercase_hex_digits() {
        let sha = format!("{}{}", "0f".repeat(31), "a9");
        let bytes = digest(&sha).expect("valid");
        assert_eq!(bytes[0], 0x0f);
        assert_eq!(bytes[31], 0xa9);
        assert_eq!(hex(&bytes), sha);
        assert_eq!(digest(&sha.to_uppercase()), None);
        assert_eq!(digest(&sha[..62]), None);
        assert_eq!(digest(&format!("{}zz", &sha[..62])), None);
    }

    #[test]
    fn registry_urls_become_cached_files_and_longer_urls_are_left_alone() {
        let modules = vec![ModuleRef {
            name: "a".into(),
            version: "1.0.0".into(),
            sha256: "ab".repeat(32),
            size: 1,
            url: "registry://a".into(),
            generation: 0,
        }];
        let yaml = "url: registry://a\n---\nurl: registry://a@2.0\n---\nurl: registry://ab\n";
        let out = rewrite_registry_urls(yaml, &modules, Path::new("/c/modules"));
        let file = format!("file:///c/modules/{}.wasm", "ab".repeat(32));
        assert_eq!(
            out,
            format!("url: {file}\n---\nurl: registry://a@2.0\n---\nurl: registry://ab\n")
        );
    }
}
