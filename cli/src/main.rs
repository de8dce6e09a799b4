//! `weft`: the command line. Parses flags, sets up logging, and runs the chosen command.
//!
//! Each command lives in its own module: [`proxy`] (`weft proxy`), [`up`] (`weft up`),
//! [`plugin`] (`weft plugin ...`), [`control`] (`weft control`, and the connection every
//! client command shares) and [`resources`] (`weft apply`, `get`, `delete`, `status`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod control;
mod plugin;
mod proxy;
mod resources;
mod up;

/// mimalloc: the proxy allocates many small, short-lived buffers per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// weft: a WebAssembly-extensible programmable proxy.
#[derive(Parser)]
#[command(name = "weft", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a proxy from local YAML resources (reload on file change and on SIGHUP) or fed by the
    /// control plane (--control URL --node NAME); drain on SIGTERM.
    Proxy(proxy::ProxyArgs),
    /// Quick start: the five built-in plugins chained in front of a demo service, on embedded
    /// defaults (examples/quickstart/weft.yaml).
    Up(up::UpArgs),
    /// Work with plugins (Wasm filters): scaffold one, publish to and list the registry.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run the control plane: registry, resources and discovery over gRPC, stored in --data.
    Control(control::ControlArgs),
    /// Send YAML resources to the control plane; prints the new version and what changed.
    Apply(resources::ApplyArgs),
    /// Show the control plane's resources of a kind, or one of them.
    Get(resources::GetArgs),
    /// Delete a resource from the control plane.
    Delete(resources::DeleteArgs),
    /// Every proxy the control plane has seen: node, connected, applied version, last NACK.
    Status(resources::StatusArgs),
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
            Command::Proxy(args) => proxy::proxy(args).await,
            Command::Up(args) => up::up(args).await,
            Command::Plugin(command) => plugin::run(command).await,
            Command::Control(args) => control::control(args).await,
            Command::Apply(args) => resources::apply(args).await,
            Command::Get(args) => resources::get(args).await,
            Command::Delete(args) => resources::delete(args).await,
            Command::Status(args) => resources::status(args).await,
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
