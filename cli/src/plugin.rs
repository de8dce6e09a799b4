//! `weft plugin ...`: scaffold a new filter crate (`new`), and the control plane's registry
//! (`publish`, `list`, `reload`).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use weft_control::{
    client::Clients,
    proto::{ListPluginsRequest, ProxyStatus, PublishChunk, ReloadRequest, StatusRequest},
    server::{CHUNK_BYTES, MAX_MODULE_BYTES},
};
use weft_host::scaffold::{self, SdkSource};

use crate::control::{ClientArgs, call_error};

/// The `weft plugin` subcommands.
#[derive(clap::Subcommand)]
pub enum PluginCommand {
    /// Write a ready-to-build filter crate: a cdylib on the weft SDK, one filter, one test.
    New(PluginNewArgs),
    /// Upload a Wasm module to the control plane's registry as NAME@VERSION.
    #[command(disable_version_flag = true)]
    Publish(PublishArgs),
    /// List the registry's plugins and their versions.
    List(ListArgs),
    /// Make every proxy move to the newest version of NAME and re-instantiate it; waits until
    /// every connected proxy ACKed, or one NACKed, and says which.
    Reload(ReloadArgs),
}

/// Flags of `weft plugin reload`.
#[derive(clap::Args)]
pub struct ReloadArgs {
    /// The plugin's registry name.
    name: String,
    /// How long to wait for every proxy's answer.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::proxy::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    client: ClientArgs,
}

/// Flags of `weft plugin publish`.
#[derive(clap::Args)]
pub struct PublishArgs {
    /// The plugin's registry name: lowercase letters, digits and `-`.
    name: String,
    /// The compiled module (`.wasm`).
    #[arg(value_name = "FILE.wasm")]
    file: PathBuf,
    /// The version label, e.g. 1.2.0 (`registry://NAME` follows the newest).
    #[arg(long, value_name = "V")]
    version: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Flags of `weft plugin list`.
#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// Flags of `weft plugin new`.
#[derive(clap::Args)]
pub struct PluginNewArgs {
    /// The plugin's name: lowercase letters, digits and `-` (also the crate's name).
    name: String,
    /// Directory to create (default: ./NAME).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Path of a weft-sdk checkout to depend on (default: the SDK next to this build's
    /// sources if present, else the weft repository).
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

/// Runs one `weft plugin` subcommand.
pub async fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New(args) => new(args),
        PluginCommand::Publish(args) => publish(args).await,
        PluginCommand::List(args) => list(args).await,
        PluginCommand::Reload(args) => reload(args).await,
    }
}

/// How often `weft plugin reload` asks the control plane for the proxies' answers.
const RELOAD_POLL: Duration = Duration::from_millis(100);

/// `weft plugin reload`: asks the control plane for the reload, then follows `Status` until
/// every proxy connected at that moment answered the reload's version.
async fn reload(args: ReloadArgs) -> anyhow::Result<()> {
    let mut clients = args.client.connect().await?;
    let what = format!("reload {}", args.name);
    let reply = clients
        .registry
        .reload(ReloadRequest {
            name: args.name.clone(),
        })
        .await
        .map_err(|status| call_error(&what, status))?
        .into_inner();
    let module = reply.module.unwrap_or_default();
    let target = format!("{}@{}", module.name, module.version);
    let nodes: Vec<String> = proxies(&mut clients)
        .await?
        .iter()
        .filter(|p| p.connected)
        .map(|p| p.node.clone())
        .collect();
    if nodes.is_empty() {
        println!(
            "reload of {target} is version {}; no proxy is connected: each moves to it when it subscribes",
            reply.version
        );
        return Ok(());
    }
    let deadline = Instant::now() + args.timeout;
    let mut reported: BTreeMap<String, Answer> = BTreeMap::new();
    loop {
        let proxies = proxies(&mut clients).await?;
        for node in &nodes {
            let answer = answer(proxies.iter().find(|p| &p.node == node), reply.version);
            if answer != Answer::Pending && !reported.contains_key(node) {
                if let Answer::Ack = answer {
                    println!("{node:<24} ACK   version {}", reply.version);
                }
                reported.insert(node.clone(), answer.clone());
            }
        }
        if let Some((node, Answer::Nack(reason))) =
            reported.iter().find(|(_, a)| matches!(a, Answer::Nack(_)))
        {
            anyhow::bail!(
                "{what}: proxy `{node}` NACKed version {} ({target}): {reason}",
                reply.version
            );
        }
        if reported.len() == nodes.len() {
            break;
        }
        if Instant::now() >= deadline {
            let pending: Vec<&str> = nodes
                .iter()
                .filter(|n| !reported.contains_key(*n))
                .map(String::as_str)
                .collect();
            anyhow::bail!(
                "{what}: no answer for version {} from {} within {:?}",
                reply.version,
                pending.join(", "),
                args.timeout
            );
        }
        tokio::time::sleep(RELOAD_POLL).await;
    }
    println!(
        "reloaded {target} (sha256:{}) on {} prox{}: Plugin {}; resource version {}",
        module.sha256,
        nodes.len(),
        if nodes.len() == 1 { "y" } else { "ies" },
        reply.plugins.join(", "),
        reply.version
    );
    Ok(())
}

/// Every proxy the control plane knows, with its answers.
async fn proxies(clients: &mut Clients) -> anyhow::Result<Vec<ProxyStatus>> {
    Ok(clients
        .discovery
        .status(StatusRequest {})
        .await
        .map_err(|status| call_error("status", status))?
        .into_inner()
        .proxies)
}

/// A proxy's answer to the reload's version, as `Status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// It runs the version, or a newer one.
    Ack,
    /// It rejected the version, or a newer one; why.
    Nack(String),
    /// It has not answered yet.
    Pending,
}

/// What `proxy` (absent: no longer known) answered to `version`. A proxy that disconnected
/// without answering counts as a NACK: it does not run the reload.
fn answer(proxy: Option<&ProxyStatus>, version: u64) -> Answer {
    let Some(proxy) = proxy else {
        return Answer::Nack("the control plane no longer knows this proxy".into());
    };
    if proxy.applied_version >= version {
        Answer::Ack
    } else if proxy.last_nack_version >= version {
        Answer::Nack(crate::resources::one_line(&proxy.last_nack_error))
    } else if !proxy.connected {
        Answer::Nack("it disconnected before answering".into())
    } else {
        Answer::Pending
    }
}

/// `weft plugin publish`: streams the module in [`CHUNK_BYTES`] chunks, the first naming it.
async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let module = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    anyhow::ensure!(
        module.len() <= MAX_MODULE_BYTES,
        "{}: {} bytes, more than the registry's limit of {MAX_MODULE_BYTES}",
        args.file.display(),
        module.len()
    );
    let mut clients = args.client.connect().await?;
    let chunks = publish_chunks(args.name.clone(), args.version.clone(), module);
    let reply = clients
        .registry
        .publish(futures_util::stream::iter(chunks))
        .await
        .map_err(|status| call_error(&format!("publish {}@{}", args.name, args.version), status))?
        .into_inner();
    let module = reply.module.unwrap_or_default();
    let verb = if reply.created {
        "published"
    } else {
        "already published"
    };
    println!(
        "{verb} {}@{} sha256:{} ({} bytes); resource version {}",
        module.name, module.version, module.sha256, module.size, reply.resource_version
    );
    Ok(())
}

/// The Publish stream for `module`: one chunk per [`CHUNK_BYTES`] (at least one), the first
/// carrying the name and version; each chunk is copied out only when the stream sends it.
fn publish_chunks(
    name: String,
    version: String,
    module: Vec<u8>,
) -> impl Iterator<Item = PublishChunk> + Send + 'static {
    let module = Arc::new(module);
    let count = module.len().div_ceil(CHUNK_BYTES).max(1);
    (0..count).map(move |i| {
        let start = i * CHUNK_BYTES;
        let end = (start + CHUNK_BYTES).min(module.len());
        let (name, version) = if i == 0 {
            (name.clone(), version.clone())
        } else {
            (String::new(), String::new())
        };
        PublishChunk {
            name,
            version,
            data: module[start..end].to_vec(),
        }
    })
}

/// `weft plugin list`: one line per version.
async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut clients = args.client.connect().await?;
    let plugins = clients
        .registry
        .list(ListPluginsRequest {})
        .await
        .map_err(|status| call_error("plugin list", status))?
        .into_inner()
        .plugins;
    println!("{:<24} {:<12} {:>10}  SHA256", "NAME", "VERSION", "SIZE");
    for plugin in plugins {
        for version in plugin.versions {
            println!(
                "{:<24} {:<12} {:>10}  {}",
                plugin.name, version.version, version.size, version.sha256
            );
        }
    }
    Ok(())
}

/// `weft plugin new`: writes the crate and says how to build and run it.
fn new(args: PluginNewArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let sdk = match args.sdk {
        Some(path) => {
            let path = path
                .canonicalize()
                .with_context(|| format!("--sdk {}", path.display()))?;
            SdkSource::Path(path)
        }
        None => SdkSource::default_for_this_build(),
    };
    scaffold::new_plugin(&args.name, &dir, &sdk)?;
    println!("created {} (plugin `{}`)", dir.display(), args.name);
    println!("  cd {}", dir.display());
    println!("  cargo test                                     # native unit test");
    println!("  cargo build --release --target wasm32-wasip1   # the .wasm");
    println!("  weft proxy --config weft.yaml                  # run it");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_is_answered_by_the_version_acked_or_nacked() {
        let proxy = |applied, nack, connected| ProxyStatus {
            node: "edge-a".into(),
            connected,
            applied_version: applied,
            last_nack_version: nack,
            last_nack_error: "filter `hello`:\n bad".into(),
            last_seen_unix_ms: 0,
        };
        assert_eq!(answer(Some(&proxy(7, 0, true)), 7), Answer::Ack);
        assert_eq!(answer(Some(&proxy(8, 0, true)), 7), Answer::Ack);
        assert_eq!(answer(Some(&proxy(6, 5, true)), 7), Answer::Pending);
        assert_eq!(
            answer(Some(&proxy(6, 7, true)), 7),
            Answer::Nack("filter `hello`: bad".into())
        );
        assert!(matches!(
            answer(Some(&proxy(6, 0, false)), 7),
            Answer::Nack(_)
        ));
        assert!(matches!(answer(None, 7), Answer::Nack(_)));
    }

    #[test]
    fn modules_go_in_one_mib_chunks_the_first_named() {
        let chunks: Vec<_> =
            publish_chunks("a".into(), "1.0.0".into(), vec![7; CHUNK_BYTES * 2 + 1]).collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            (chunks[0].name.as_str(), chunks[0].version.as_str()),
            ("a", "1.0.0")
        );
        assert!(chunks[1].name.is_empty() && chunks[2].version.is_empty());
        assert_eq!(chunks[2].data.len(), 1);
        let empty: Vec<_> = publish_chunks("a".into(), "1".into(), Vec::new()).collect();
        assert_eq!(empty.len(), 1, "an empty module still names itself");
    }
}
