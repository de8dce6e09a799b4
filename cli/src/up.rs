//! `weft up`: the quick start — the five built-in plugins chained in front of two demo
//! services, on the embedded resources of `examples/quickstart/weft.yaml`.

use std::net::SocketAddr;

use anyhow::Context as _;
use weft_host::{app::AppOptions, demo};

use crate::proxy::run;

/// Flags of `weft up`.
#[derive(clap::Args)]
pub struct UpArgs {
    /// Address the proxy listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin server.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
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
