//! `weft plugin ...`: scaffold a new filter crate (`new`), and the control plane's registry
//! (`publish`, `list`).

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use weft_control::{
    proto::{ListPluginsRequest, PublishChunk},
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
