//! `weft up`: the quick start in one process — a control plane, a proxy that follows it, and
//! two demo services, with the resources of `examples/quickstart/weft.yaml` (the five built-in
//! plugins chained) applied to the control plane.

use std::net::SocketAddr;

use anyhow::Context as _;
use weft_control::agent::{AgentOptions, run_agent};
use weft_control::client;
use weft_control::proto::ApplyRequest;
use weft_control::server::{ServeOptions, start};
use weft_host::{app::AppOptions, demo};

use crate::proxy::shutdown_signal;

/// Flags of `weft up`.
#[derive(clap::Args)]
pub struct UpArgs {
    /// Address the proxy listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin server.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Address of the control plane's gRPC API.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:18000")]
    control: SocketAddr,
}

/// The quick start's resources: `examples/quickstart/weft.yaml`, whose demo services (v1 on
/// 127.0.0.1:9001, v2 on :9002) and listener (:8080) `weft up` moves to where it runs them.
const QUICKSTART: &str = include_str!("../../examples/quickstart/weft.yaml");

/// Runs the quick start until SIGTERM or Ctrl-C.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let v1 = demo::spawn("127.0.0.1:0".parse()?, "demo-v1")
        .await
        .context("cannot start the demo upstream")?;
    let v2 = demo::spawn("127.0.0.1:0".parse()?, "demo-v2")
        .await
        .context("cannot start the demo upstream")?;
    let dir = std::env::temp_dir().join(format!("weft-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = QUICKSTART
        .replace("127.0.0.1:9001", &v1.to_string())
        .replace("127.0.0.1:9002", &v2.to_string())
        .replace("127.0.0.1:8080", &args.listen.to_string());

    // The control plane, with the quick start applied to it.
    let control = start(ServeOptions::new(args.control, dir.join("control")))
        .await
        .context("cannot start the control plane")?;
    let url = format!("http://{}", control.addr);
    let mut clients = client::connect(&url, &control.token).await?;
    let applied = clients
        .resources
        .apply(ApplyRequest { yaml: config })
        .await
        .map_err(|status| anyhow::anyhow!("the quick start was refused: {}", status.message()))?
        .into_inner();

    let proxy = args.listen;
    println!("weft is up: the five built-in plugins in front of a demo service (v1 and v2)");
    println!(
        "  proxy     http://{proxy}/   admin http://{}/stats/prometheus",
        args.admin
    );
    println!(
        "  control   {url}   (version {}; token in {})",
        applied.version,
        control.token_path.display()
    );
    println!("  resources examples/quickstart/weft.yaml, applied to the control plane");
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
    println!(
        "  WEFT_CONTROL={url} WEFT_TOKEN=$(cat {}) weft status",
        control.token_path.display()
    );

    // The proxy follows the control plane, as `weft proxy --control` does.
    let mut agent = AgentOptions::new(&url, "weft-up", &control.token, dir.join("proxy-cache"));
    agent.app = AppOptions {
        admin: Some(args.admin),
        ..AppOptions::new(agent.app.config_path.clone())
    };
    let result = run_agent(agent, shutdown_signal()?).await;
    let _ = control.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
