//! The story's processes — `weft control`, `weft proxy --control`, each killed on drop — and
//! the client commands run against the control plane.

use std::{
    collections::BTreeMap,
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Output},
};

use super::{NODES, PATIENCE, WEFT, free_port, path, traffic::get, wait_until};

/// A `weft` process, SIGKILLed on drop. Its output (the log is on stdout) goes to
/// `DIR/NAME.log`, appended to, so a restarted process adds to it.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `weft ARGS` in `dir` with the WEFT_* variables cleared and `RUST_LOG=info`.
    pub fn spawn(name: &str, dir: &Path, args: &[&str]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let output = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("the process's log file");
        let child = Command::new(WEFT)
            .args(args)
            .current_dir(dir)
            .env_remove("WEFT_CONTROL")
            .env_remove("WEFT_TOKEN")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(output.try_clone().expect("the log file, again for stdout"))
            .stderr(output)
            .spawn()
            .expect("weft starts");
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends signal `name` (e.g. `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{name} {}", self.name);
    }

    /// SIGKILL (no drain, no clean shutdown), then reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `weft control` on fixed ports, so it can be restarted where the proxies look for it.
pub struct Control {
    /// The process.
    pub process: Process,
    /// The API token it created in (or read from) `DATA/token`.
    pub token: String,
}

impl Control {
    /// Starts it over `data`, waits for its admin `/ready`, reads the token from `DATA/token`.
    pub fn start(dir: &Path, data: &Path, port: u16, admin: u16) -> Self {
        let mut process = Process::spawn(
            "control",
            dir,
            &[
                "control",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data",
                path(data),
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ],
        );
        wait_until("weft control is ready", PATIENCE, || {
            process.assert_running();
            match get(admin, "/ready") {
                Ok(reply) if reply.status == 200 => Ok(()),
                Ok(reply) => Err(format!("/ready: {}", reply.status)),
                Err(e) => Err(e),
            }
        });
        let token = std::fs::read_to_string(data.join("token")).expect("DATA/token exists");
        Self {
            process,
            token: token.trim().to_owned(),
        }
    }
}

/// A `weft proxy --control` with its admin server on a port of its own.
pub struct Proxy {
    pub node: &'static str,
    pub process: Process,
    admin: u16,
}

impl Proxy {
    /// Starts node `node` following `client`'s control plane, its cache in `DIR/NODE-cache`;
    /// it serves nothing until the control plane's snapshot has a listener.
    pub fn start(node: &'static str, dir: &Path, client: &Client) -> Self {
        let admin = free_port();
        let cache = dir.join(format!("{node}-cache"));
        let process = Process::spawn(
            node,
            dir,
            &[
                "proxy",
                "--control",
                &client.url,
                "--node",
                node,
                "--token",
                &client.token,
                "--cache",
                path(&cache),
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ],
        );
        Self {
            node,
            process,
            admin,
        }
    }

    /// The port the `public` listener (configured as 127.0.0.1:0) was bound to, from the
    /// admin server's `/listeners` (`NAME::ADDRESS` lines), once there is one.
    pub fn listener_port(&mut self) -> u16 {
        let what = format!("{} binds the public listener", self.node);
        wait_until(&what, PATIENCE, || {
            self.process.assert_running();
            let listeners = get(self.admin, "/listeners")?.body;
            listeners
                .lines()
                .find_map(|line| line.strip_prefix("public::"))
                .and_then(|addr| addr.parse::<SocketAddr>().ok())
                .map(|addr| addr.port())
                .filter(|port| *port != 0)
                .ok_or(format!("/listeners: {listeners:?}"))
        })
    }
}

/// How the client commands reach the control plane; run in the work directory with the
/// WEFT_* variables cleared.
pub struct Client {
    pub url: String,
    pub token: String,
    pub dir: PathBuf,
}

/// One proxy's line of `weft status`.
pub struct NodeStatus {
    pub connected: bool,
    pub applied: u64,
    /// `-`, or `version N: REASON`.
    pub last_nack: String,
}

impl Client {
    /// `weft ARGS... --control URL --token TOKEN FLAGS...`.
    pub fn run(&self, args: &[&str], flags: &[&str]) -> Output {
        Command::new(WEFT)
            .args(args)
            .args(["--control", &self.url, "--token", &self.token])
            .args(flags)
            .current_dir(&self.dir)
            .env_remove("WEFT_CONTROL")
            .env_remove("WEFT_TOKEN")
            .output()
            .expect("weft runs")
    }

    /// Like [`Client::run`], asserting success; its stdout.
    pub fn ok(&self, args: &[&str], flags: &[&str]) -> String {
        let output = self.run(args, flags);
        assert!(
            output.status.success(),
            "weft {args:?} {flags:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `weft apply -f DIR/FILE` of `yaml`; the version it printed.
    pub fn apply(&self, file: &str, yaml: &str) -> u64 {
        let file = self.dir.join(file);
        std::fs::write(&file, yaml).expect("write the YAML");
        let out = self.ok(&["apply", "-f", path(&file)], &[]);
        out.lines()
            .next()
            .and_then(|line| line.strip_prefix("version "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("apply prints `version N` first: {out}"))
    }

    /// `weft status`, by node.
    pub fn status(&self) -> Result<BTreeMap<String, NodeStatus>, String> {
        let output = self.run(&["status"], &[]);
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        let mut nodes = BTreeMap::new();
        for line in text.lines().skip_while(|l| !l.starts_with("NODE")).skip(1) {
            let mut fields = line.split_whitespace();
            let (Some(node), Some(connected), Some(applied)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("a short status line: {text}"));
            };
            let applied = applied
                .parse()
                .map_err(|_| format!("APPLIED is not a number: {text}"))?;
            nodes.insert(
                node.to_owned(),
                NodeStatus {
                    connected: connected == "yes",
                    applied,
                    last_nack: fields.collect::<Vec<_>>().join(" "),
                },
            );
        }
        Ok(nodes)
    }

    /// Polls `weft status` until both [`NODES`] satisfy `want`; the last status.
    pub fn wait_for_status(
        &self,
        what: &str,
        want: impl Fn(&NodeStatus) -> bool,
    ) -> BTreeMap<String, NodeStatus> {
        wait_until(what, PATIENCE, || {
            let nodes = self.status()?;
            if NODES.iter().all(|n| nodes.get(*n).is_some_and(&want)) {
                Ok(nodes)
            } else {
                let lines: Vec<String> = nodes
                    .iter()
                    .map(|(n, s)| {
                        format!(
                            "{n} connected={} applied={} nack={}",
                            s.connected, s.applied, s.last_nack
                        )
                    })
                    .collect();
                Err(lines.join("; "))
            }
        })
    }
}
