//! `weft`: the command line. Parses flags, sets up logging, and runs the chosen command.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use weft_host::{
    app::{App, AppOptions},
    config::model::DurationSpec,
    demo,
    scaffold::{self, SdkSource},
};

/// weft: a WebAssembly-extensible programmable proxy.
#[derive(Parser)]
#[command(name = "weft", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a proxy from local YAML resources; reload on file change and on SIGHUP, drain on SIGTERM.
    Proxy(ProxyArgs),
    /// Quick start: the five built-in plugins chained in front of a demo service, on embedded
    /// defaults (examples/quickstart/weft.yaml).
    Up(UpArgs),
    /// Work with plugins (Wasm filters).
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a ready-to-build filter crate: a cdylib on the weft SDK, one filter, one test.
    New(PluginNewArgs),
}

#[derive(clap::Args)]
struct PluginNewArgs {
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

#[derive(clap::Args)]
struct ProxyArgs {
    /// YAML file of Listener, Cluster, FilterChain and Plugin resources.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Address of the admin server (/ready, /stats/prometheus, /config_dump, /clusters, /listeners).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// How long SIGTERM waits for in-flight requests before closing connections.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// How often the config and certificate files are checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    watch_interval: Duration,
    /// Most plugin instances alive at once; each reserves address space for its largest
    /// memory (256 MiB), so lower it where address space is scarce (valgrind).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    wasm_instances: u32,
}

#[derive(clap::Args)]
struct UpArgs {
    /// Address the proxy listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin server.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
}

/// mimalloc: the proxy allocates many small, short-lived buffers per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<DurationSpec>().map(|d| d.0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weft: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Proxy(args) => proxy(args).await,
            Command::Up(args) => up(args).await,
            Command::Plugin(PluginCommand::New(args)) => plugin_new(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let options = AppOptions {
        config_path: args.config,
        admin: Some(args.admin),
        drain_timeout: args.drain_timeout,
        watch_interval: args.watch_interval,
        wasm_instances: args.wasm_instances,
    };
    run(options).await
}

/// The quick start's resources: `examples/quickstart/weft.yaml`, whose demo services (v1 on
/// 127.0.0.1:9001, v2 on :9002) and listener (:8080) `weft up` moves to where it runs them.
const QUICKSTART: &str = include_str!("../../examples/quickstart/weft.yaml");

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let v1 = demo::spawn("127.0.0.1:0".parse()?, "demo-v1")
        .await
        .context("cannot start the demo upstream")?;
    let v2 = demo::spawn("127.0.0.1:0".parse()?, "demo-v2")
        .await
        .context("cannot start the demo upstream")?;
    let dir = std::env::temp_dir().join(format!("weft-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config_path = dir.join("weft.yaml");
    let config = QUICKSTART
        .replace("127.0.0.1:9001", &v1.to_string())
        .replace("127.0.0.1:9002", &v2.to_string())
        .replace("127.0.0.1:8080", &args.listen.to_string());
    std::fs::write(&config_path, config)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let proxy = args.listen;
    println!("weft is up: the five built-in plugins in front of a demo service (v1 and v2)");
    println!(
        "  proxy     http://{proxy}/   admin http://{}/stats/prometheus",
        args.admin
    );
    println!(
        "  config    {}  (from examples/quickstart/weft.yaml)",
        config_path.display()
    );
    println!("try:");
    println!("  curl -s  http://{proxy}/hello                                # public");
    println!("  curl -si http://{proxy}/api/orders                           # 401, no API key");
    println!(
        "  curl -s  -H 'x-api-key: demo-key' http://{proxy}/api/orders  # 90% v1 / 10% v2, 10/min"
    );
    println!("  curl -si -H 'x-fault-abort: 1' http://{proxy}/hello          # 503, injected");
    println!(
        "  curl -s  http://{}/stats/prometheus | grep istio_requests_total",
        args.admin
    );
    let mut options = AppOptions::new(config_path);
    options.admin = Some(args.admin);
    let result = run(options).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn plugin_new(args: PluginNewArgs) -> anyhow::Result<()> {
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

/// Runs the proxy until SIGTERM or Ctrl-C, reloading on SIGHUP.
async fn run(options: AppOptions) -> anyhow::Result<()> {
    let mut hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let app = App::start(options).await?;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading configuration");
                let _ = app.reload().await;
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("draining");
    app.drain().await;
    Ok(())
}
