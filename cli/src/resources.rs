//! `weft apply`, `weft get`, `weft delete` and `weft status`: the control plane's resources
//! and what each proxy made of them.

use std::path::PathBuf;

use anyhow::Context as _;
use weft_control::proto::{
    ApplyRequest, ChangeAction, DeleteResourceRequest, GetResourceRequest, ListResourcesRequest,
    Resource, StatusRequest,
};

use crate::control::{ClientArgs, call_error};

/// Flags of `weft apply`.
#[derive(clap::Args)]
pub struct ApplyArgs {
    /// YAML file of Listener, Cluster, FilterChain and Plugin documents (`-` for stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
}

/// How `weft get` prints resources.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    /// The documents as applied, separated by `---`.
    Yaml,
    /// One JSON object (a name given) or an array of them.
    Json,
}

/// Flags of `weft get`.
#[derive(clap::Args)]
pub struct GetArgs {
    /// Listener, Cluster, FilterChain or Plugin (any case).
    kind: String,
    /// One resource's name (default: every resource of the kind).
    name: Option<String>,
    /// Print the documents instead of a table of names.
    #[arg(short = 'o', long, value_name = "FORMAT")]
    output: Option<Output>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Flags of `weft delete`.
#[derive(clap::Args)]
pub struct DeleteArgs {
    /// Listener, Cluster, FilterChain or Plugin (any case).
    kind: String,
    /// The resource's name.
    name: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Flags of `weft status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// `weft apply -f FILE`: prints the new version and what changed.
pub async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let yaml = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let mut clients = args.client.connect().await?;
    let reply = clients
        .resources
        .apply(ApplyRequest { yaml })
        .await
        .map_err(|status| call_error(&format!("apply {}", args.file.display()), status))?
        .into_inner();
    println!("version {}", reply.version);
    for change in reply.changes {
        let action = match change.action() {
            ChangeAction::Created => "created",
            ChangeAction::Updated => "updated",
            ChangeAction::Unchanged => "unchanged",
            ChangeAction::Unspecified => "applied",
        };
        println!("  {}/{} {action}", change.kind, change.name);
    }
    Ok(())
}

/// `weft get KIND [NAME]`: a table of names, or the documents as YAML or JSON.
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let mut clients = args.client.connect().await?;
    let resources = match &args.name {
        Some(name) => vec![
            clients
                .resources
                .get(GetResourceRequest {
                    kind: args.kind.clone(),
                    name: name.clone(),
                })
                .await
                .map_err(|status| call_error(&format!("get {} {name}", args.kind), status))?
                .into_inner(),
        ],
        None => {
            clients
                .resources
                .list(ListResourcesRequest {
                    kind: Some(args.kind.clone()),
                })
                .await
                .map_err(|status| call_error(&format!("get {}", args.kind), status))?
                .into_inner()
                .resources
        }
    };
    match args.output {
        None => {
            println!("{:<14} NAME", "KIND");
            for resource in &resources {
                println!("{:<14} {}", resource.kind, resource.name);
            }
        }
        Some(Output::Yaml) => {
            let documents: Vec<&str> = resources.iter().map(|r| r.yaml.trim_end()).collect();
            println!("{}", documents.join("\n---\n"));
        }
        Some(Output::Json) => {
            let mut values = resources
                .iter()
                .map(to_json)
                .collect::<anyhow::Result<Vec<_>>>()?;
            let value = match (&args.name, values.pop()) {
                (Some(_), Some(one)) if values.is_empty() => one,
                (_, last) => {
                    values.extend(last);
                    serde_json::Value::Array(values)
                }
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
    }
    Ok(())
}

/// One stored document as JSON.
fn to_json(resource: &Resource) -> anyhow::Result<serde_json::Value> {
    serde_yaml::from_str(&resource.yaml).with_context(|| {
        format!(
            "the control plane sent {}/{} as invalid YAML",
            resource.kind, resource.name
        )
    })
}

/// `weft delete KIND NAME`: prints the new version.
pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let mut clients = args.client.connect().await?;
    let reply = clients
        .resources
        .delete(DeleteResourceRequest {
            kind: args.kind.clone(),
            name: args.name.clone(),
        })
        .await
        .map_err(|status| call_error(&format!("delete {} {}", args.kind, args.name), status))?
        .into_inner();
    println!(
        "deleted {} {}; version {}",
        args.kind, args.name, reply.version
    );
    Ok(())
}

/// `weft status`: every proxy the control plane has seen, one line each.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let mut clients = args.client.connect().await?;
    let reply = clients
        .discovery
        .status(StatusRequest {})
        .await
        .map_err(|status| call_error("status", status))?
        .into_inner();
    println!("control plane version {}", reply.version);
    println!(
        "{:<24} {:<10} {:>8}  LAST NACK",
        "NODE", "CONNECTED", "APPLIED"
    );
    for proxy in reply.proxies {
        let nack = if proxy.last_nack_version == 0 {
            "-".to_owned()
        } else {
            format!(
                "version {}: {}",
                proxy.last_nack_version,
                one_line(&proxy.last_nack_error)
            )
        };
        let connected = if proxy.connected { "yes" } else { "no" };
        println!(
            "{:<24} {:<10} {:>8}  {nack}",
            proxy.node, connected, proxy.applied_version
        );
    }
    Ok(())
}

/// A rejection reason on one table line.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
