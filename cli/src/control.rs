//! `weft control` (the control plane itself) and what every client command shares: the
//! `--control`/`--token` flags, connecting, and turning a gRPC status into one line.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use weft_control::{
    client::{self, Clients},
    server::{self, ServeOptions},
    token::TOKEN_FILE,
};

/// The data directory `weft control` uses without `--data`, and where client commands look
/// for the token without `--token`.
const DEFAULT_DATA: &str = "./weft-data";

/// Flags of `weft control`.
#[derive(clap::Args)]
pub struct ControlArgs {
    /// Address of the gRPC API (Registry, Resources, Discovery).
    #[arg(long, value_name = "ADDR", default_value = server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Data directory: the embedded store and the API token (`DIR/token`, created on first start).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// Address of the metrics endpoint (/stats/prometheus, /ready); off when absent.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
}

/// Runs the control plane until SIGTERM or Ctrl-C; prints where it listens and where the token is.
pub async fn control(args: ControlArgs) -> anyhow::Result<()> {
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut options = ServeOptions::new(args.listen, args.data);
    options.admin = args.admin;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    server::serve(options, shutdown).await?;
    Ok(())
}

/// How a client command reaches the control plane (flattened into every such command).
#[derive(clap::Args)]
pub struct ClientArgs {
    /// URL of the control plane's gRPC API.
    #[arg(
        long,
        value_name = "URL",
        env = "WEFT_CONTROL",
        default_value = "http://127.0.0.1:18000"
    )]
    control: String,
    /// API token, sent as `authorization: Bearer TOKEN` (default: the contents of
    /// ./weft-data/token when that file exists).
    #[arg(long, value_name = "TOKEN", env = "WEFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ClientArgs {
    /// Connects with the token from `--token`, `WEFT_TOKEN` or `./weft-data/token`.
    pub async fn connect(&self) -> anyhow::Result<Clients> {
        let token = match &self.token {
            Some(token) => token.clone(),
            None => default_token(&Path::new(DEFAULT_DATA).join(TOKEN_FILE))?,
        };
        client::connect(&self.control, &token)
            .await
            .map_err(|e| anyhow::anyhow!(one_line_chain(&e)))
    }
}

/// `error` and its causes on one line, each repeated message (tonic's transport errors name
/// themselves at several levels) said once.
fn one_line_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        if parts.last().is_none_or(|last| !last.ends_with(&text)) {
            parts.push(text);
        }
        next = error.source();
    }
    parts.join(": ")
}

/// The token stored in `path` by a `weft control` started in this directory.
fn default_token(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no API token: pass --token, set WEFT_TOKEN, or run where {} exists",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// A failed call as one line: `what: code: message` (e.g. `apply: invalid argument: ...`).
pub fn call_error(what: &str, status: tonic::Status) -> anyhow::Error {
    let message = status.message();
    let code = code_name(status.code());
    if message.is_empty() {
        anyhow::anyhow!("{what}: {code}")
    } else {
        anyhow::anyhow!("{what}: {code}: {message}")
    }
}

/// The gRPC code's name in lowercase words (`unauthenticated`, `invalid argument`).
fn code_name(code: tonic::Code) -> String {
    let name = format!("{code:?}");
    let mut words = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_as_words() {
        assert_eq!(code_name(tonic::Code::Unauthenticated), "unauthenticated");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "invalid argument");
        let error = call_error("apply", tonic::Status::not_found("no Cluster named `x`"));
        assert_eq!(error.to_string(), "apply: not found: no Cluster named `x`");
    }

    #[test]
    fn a_missing_token_file_says_how_to_pass_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = default_token(&dir.path().join("token")).expect_err("no token");
        assert!(error.to_string().contains("--token"), "{error}");
        std::fs::write(dir.path().join("token"), "s3cret\n").expect("write");
        assert_eq!(
            default_token(&dir.path().join("token")).expect("token"),
            "s3cret"
        );
    }
}
