//! The control plane under test: `weft control` as a child process over a temporary data
//! directory, and what `/proc/PID/status` says about its memory.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weft_control::{
    client::{self, Clients},
    proto::StatusRequest,
    token::TOKEN_FILE,
};

use crate::TIMEOUT;

/// The `weft control` child process; killed when dropped (also when the bench fails).
pub(crate) struct ControlPlane {
    child: Child,
    pub(crate) url: String,
    admin: SocketAddr,
    pub(crate) token: String,
    log: PathBuf,
    /// Holds the data directory and the log until the control plane is gone.
    _dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts `weft control` on two free loopback ports over a fresh data directory.
    pub(crate) fn spawn() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating the data directory")?;
        let (listen, admin) = (free_port()?, free_port()?);
        let log = dir.path().join("control.log");
        let log_file = std::fs::File::create(&log).context("creating the control plane's log")?;
        let child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("control")
            .args(["--listen", &listen.to_string()])
            .args(["--admin", &admin.to_string()])
            .arg("--data")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("opening the log")?)
            .stderr(log_file)
            .spawn()
            .context("spawning `weft control`")?;
        Ok(Self {
            child,
            url: format!("http://{listen}"),
            admin,
            token: String::new(),
            log,
            _dir: dir,
        })
    }

    /// Waits until the token exists and `Discovery.Status` answers; the clients of that call.
    pub(crate) async fn connect(&mut self) -> anyhow::Result<Clients> {
        let token_path = self.log.with_file_name("data").join(TOKEN_FILE);
        let deadline = Instant::now() + TIMEOUT;
        let mut last_error = String::from("not started");
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .try_wait()
                .context("checking the control plane")?
            {
                anyhow::bail!("`weft control` exited ({status}):\n{}", self.log_tail());
            }
            if let Ok(token) = std::fs::read_to_string(&token_path) {
                self.token = token.trim().to_owned();
                match client::connect(&self.url, &self.token).await {
                    Ok(mut clients) => match clients.discovery.status(StatusRequest {}).await {
                        Ok(_) => return Ok(clients),
                        Err(e) => last_error = e.to_string(),
                    },
                    Err(e) => last_error = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!(
            "`weft control` did not serve within {TIMEOUT:?} ({last_error}):\n{}",
            self.log_tail()
        )
    }

    /// Its memory now.
    pub(crate) fn memory(&self) -> anyhow::Result<Memory> {
        Memory::read(&PathBuf::from(format!("/proc/{}/status", self.child.id())))
    }

    /// The size of the files in its data directory.
    pub(crate) fn data_bytes(&self) -> u64 {
        std::fs::read_dir(self.log.with_file_name("data"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// `GET /stats/prometheus` on its admin address.
    pub(crate) async fn metrics(&self) -> anyhow::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(self.admin).await?;
        stream
            .write_all(b"GET /stats/prometheus HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
            _ => anyhow::bail!("unexpected answer: {response:.200}"),
        }
    }

    /// SIGTERM, then up to 5 s for a clean stop (the drop kills it otherwise).
    pub(crate) async fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id())
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of its log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free loopback port (bound, read, released: the child binds it right after).
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// A process's resident memory and threads, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// `VmRSS`, KiB.
    pub(crate) rss_kib: u64,
    /// `VmHWM` (peak RSS), KiB.
    pub(crate) hwm_kib: u64,
    /// `Threads` (tokio's workers and its blocking pool, which grows on demand).
    pub(crate) threads: u64,
}

impl Memory {
    pub(crate) fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in {}", path.display()))
        };
        Ok(Self {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            threads: field("Threads:")?,
        })
    }
}
