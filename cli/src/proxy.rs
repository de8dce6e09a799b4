//! `weft proxy`: a proxy fed by local YAML resources (`--config`) or by the control plane
//! (`--control URL --node NAME`), and the run loop every proxy-running command shares (reload
//! on SIGHUP, drain on SIGTERM or Ctrl-C).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use weft_control::agent::{AgentOptions, run_agent};
use weft_host::{
    app::{App, AppOptions},
    config::model::DurationSpec,
};

/// Flags of `weft proxy`.
#[derive(clap::Args)]
pub struct ProxyArgs {
    /// YAML file of Listener, Cluster, FilterChain and Plugin resources.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "control",
        conflicts_with = "control"
    )]
    config: Option<PathBuf>,
    /// Be fed by the control plane at this URL (e.g. http://127.0.0.1:18000) instead of a file.
    #[arg(long, value_name = "URL", requires = "node")]
    control: Option<String>,
    /// This proxy's node name, reported to the control plane (with --control).
    #[arg(long, value_name = "NAME", requires = "control")]
    node: Option<String>,
    /// API token for --control (default: the contents of ./weft-data/token when it exists).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "WEFT_TOKEN",
        hide_env_values = true,
        requires = "control"
    )]
    token: Option<String>,
    /// Where --control keeps fetched modules, the running snapshot and the last good one.
    #[arg(long, value_name = "DIR", default_value = "./weft-proxy-cache")]
    cache: PathBuf,
    /// Address of the admin server (/ready, /stats/prometheus, /config_dump, /clusters, /listeners).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// How long SIGTERM waits for in-flight requests before closing connections.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// How often the config and certificate files are checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    watch_interval: Duration,
    /// Most plugin instances alive at once; each reserves 4 GiB of address space (not memory)
    /// so that guest code runs without bounds checks, so lower it where address space is
    /// scarce (valgrind maps about 50 GiB: 12).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    wasm_instances: u32,
}

/// A duration flag in the config's syntax (`10s`, `250ms`, `1h`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<DurationSpec>().map(|d| d.0)
}

/// Runs `weft proxy` until SIGTERM or Ctrl-C.
pub async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let options = AppOptions {
        config_path: args.config.clone().unwrap_or_default(),
        admin: Some(args.admin),
        drain_timeout: args.drain_timeout,
        watch_interval: args.watch_interval,
        wasm_instances: args.wasm_instances,
    };
    match (args.control, args.node) {
        (Some(control), Some(node)) => {
            let token = match args.token {
                Some(token) => token,
                None => std::fs::read_to_string("./weft-data/token")
                    .map(|t| t.trim().to_owned())
                    .unwrap_or_default(),
            };
            let mut agent = AgentOptions::new(&control, &node, &token, args.cache);
            agent.app = AppOptions {
                config_path: agent.app.config_path,
                ..options
            };
            // The configuration comes from the control plane, so SIGHUP has nothing to
            // re-read; it must not terminate the proxy (its default action) either.
            let mut hangup =
                signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!(
                        "SIGHUP ignored: this proxy's configuration comes from the control plane"
                    );
                }
            });
            run_agent(agent, shutdown_signal()?).await
        }
        _ => run(options).await,
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
}

/// Runs the proxy until SIGTERM or Ctrl-C, reloading on SIGHUP.
pub async fn run(options: AppOptions) -> anyhow::Result<()> {
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
