//! `weft-loadgen`: an open-loop, fixed-rate HTTP/1.1 load generator for `bench/`.
//!
//! Requests are scheduled at a constant rate — request `i` at `start + i / rate` — and spread
//! round-robin over `--connections` keep-alive connections, each driven by a thread of its own
//! with blocking sockets. A request's latency is measured from its *scheduled* send time, not
//! from when it was actually written: when the server (or the generator) falls behind, the
//! requests that queue up carry the wait in their latency, instead of silently not being sent
//! (the "coordinated omission" of closed-loop tools such as wrk; wrk2 corrects it the same way).
//!
//! ```text
//! weft-loadgen --url http://127.0.0.1:8080/ --rate 5000 --duration 10 --connections 32
//! ```
//!
//! Output, one `key value` per line on stdout (machine-readable; `bench/helper.py` parses it):
//! counts (`scheduled`, `completed`, `ok`, `non_2xx`, `errors`, `errors_<kind>`, `unsent`), the
//! achieved rate, and distributions in microseconds: `latency_us_*` (from the scheduled time:
//! the figure to quote), `service_us_*` (from the actual write: what a closed-loop tool would
//! report) and `send_lag_us_*` (actual write − scheduled: the generator's own timing error,
//! mostly timer slack of a few tens of µs while it keeps up).
//!
//! It depends on nothing but `std`, so `bench/run.sh` builds it with a plain
//! `rustc -O tests/src/bin/loadgen.rs` without building the rest of the workspace; it is also
//! the `weft-loadgen` binary of `weft-e2e` (`cargo build --release -p weft-e2e --bin weft-loadgen`).

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    process::ExitCode,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

/// Command line settings.
struct Settings {
    addr: SocketAddr,
    host: String,
    path: String,
    rate: f64,
    duration: Duration,
    connections: usize,
    timeout: Duration,
    /// Extra request headers, `Name: value` each.
    headers: Vec<String>,
}

const USAGE: &str = "usage: weft-loadgen --url http://HOST:PORT/PATH --rate REQ_PER_S --duration SECONDS \
[--connections N (32)] [--timeout SECONDS (2)] [--header 'NAME: VALUE' ...]";

fn main() -> ExitCode {
    let settings = match parse_args(std::env::args().skip(1)) {
        Ok(settings) => Arc::new(settings),
        Err(message) => {
            eprintln!("weft-loadgen: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let total = (settings.rate * settings.duration.as_secs_f64()).round() as u64;
    // Give the threads a moment to start before the first scheduled send.
    let start = Instant::now() + Duration::from_millis(20);
    let workers: Vec<_> = (0..settings.connections)
        .map(|index| {
            let settings = settings.clone();
            thread::Builder::new()
                .name(format!("conn-{index}"))
                .spawn(move || drive(&settings, index as u64, total, start))
        })
        .collect();
    let mut stats = Stats::default();
    for worker in workers {
        match worker.map_err(|e| e.to_string()).and_then(|h| {
            h.join()
                .map_err(|_| "a connection thread panicked".to_owned())
        }) {
            Ok(part) => stats.merge(part),
            Err(message) => {
                eprintln!("weft-loadgen: {message}");
                return ExitCode::FAILURE;
            }
        }
    }
    let elapsed = stats
        .last_done
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(start));
    print_report(&settings, total, elapsed, &mut stats);
    ExitCode::SUCCESS
}

/// What one connection thread saw.
#[derive(Default)]
struct Stats {
    /// Nanoseconds from the scheduled send to the end of the response, per completed request.
    latency: Vec<u64>,
    /// Nanoseconds from the actual write to the end of the response.
    service: Vec<u64>,
    /// Nanoseconds from the scheduled send to the actual write.
    lag: Vec<u64>,
    ok: u64,
    non_2xx: u64,
    errors: BTreeMap<&'static str, u64>,
    unsent: u64,
    last_done: Option<Instant>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.latency.extend(other.latency);
        self.service.extend(other.service);
        self.lag.extend(other.lag);
        self.ok += other.ok;
        self.non_2xx += other.non_2xx;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.unsent += other.unsent;
        self.last_done = self.last_done.max(other.last_done);
    }
}

/// Sends requests `index`, `index + connections`, … of the schedule on one connection.
fn drive(settings: &Settings, index: u64, total: u64, start: Instant) -> Stats {
    let extra: String = settings
        .headers
        .iter()
        .map(|h| format!("{h}\r\n"))
        .collect();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: weft-loadgen\r\nAccept: */*\r\n{extra}\r\n",
        settings.path, settings.host
    );
    let period_ns = 1e9 / settings.rate;
    // Past this point, requests still waiting to be sent are dropped and counted as `unsent`.
    let give_up = start + settings.duration + settings.timeout;
    let mut stats = Stats::default();
    let mut conn: Option<Connection> = None;
    let step = settings.connections as u64;
    let mut i = index;
    while i < total {
        let scheduled = start + Duration::from_nanos((i as f64 * period_ns) as u64);
        let now = Instant::now();
        if scheduled > now {
            thread::sleep(scheduled - now);
        }
        let sent = Instant::now();
        if sent > give_up {
            stats.unsent += (total - i).div_ceil(step);
            break;
        }
        let result = match conn.as_mut() {
            Some(c) => c.exchange(request.as_bytes()),
            None => Connection::open(settings).and_then(|mut c| {
                let result = c.exchange(request.as_bytes());
                conn = Some(c);
                result
            }),
        };
        let done = Instant::now();
        match result {
            Ok(response) => {
                stats.latency.push(nanos(done - scheduled));
                stats.service.push(nanos(done - sent));
                stats
                    .lag
                    .push(nanos(sent.saturating_duration_since(scheduled)));
                if (200..300).contains(&response.status) {
                    stats.ok += 1;
                } else {
                    stats.non_2xx += 1;
                }
                if response.close {
                    conn = None;
                }
                stats.last_done = Some(done);
            }
            Err(kind) => {
                *stats.errors.entry(kind).or_default() += 1;
                conn = None;
            }
        }
        i += step;
    }
    stats
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The parts of a response the generator looks at.
struct Response {
    status: u16,
    /// The server will close the connection after it.
    close: bool,
}

/// One keep-alive connection with its read buffer.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    fn open(settings: &Settings) -> Result<Connection, &'static str> {
        let stream =
            TcpStream::connect_timeout(&settings.addr, settings.timeout).map_err(|_| "connect")?;
        stream.set_nodelay(true).map_err(|_| "connect")?;
        stream
            .set_read_timeout(Some(settings.timeout))
            .map_err(|_| "connect")?;
        stream
            .set_write_timeout(Some(settings.timeout))
            .map_err(|_| "connect")?;
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Writes one request and reads its whole response.
    fn exchange(&mut self, request: &[u8]) -> Result<Response, &'static str> {
        self.stream.write_all(request).map_err(|_| "write")?;
        let head_len = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[..head_len]).map_err(|_| "parse")?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or("parse")?;
        let mut close = version == "HTTP/1.0";
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(|_| "parse")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                let value = value.to_ascii_lowercase();
                close = value.contains("close") || (close && !value.contains("keep-alive"));
            }
        }
        self.buf.drain(..head_len);
        let bodiless = status / 100 == 1 || status == 204 || status == 304;
        if bodiless {
            // No body, whatever the headers say.
        } else if chunked {
            self.skip_chunked()?;
        } else if let Some(length) = length {
            while self.buf.len() < length {
                self.fill()?;
            }
            self.buf.drain(..length);
        } else {
            // Delimited by the end of the connection.
            loop {
                match self.fill() {
                    Ok(()) => self.buf.clear(),
                    Err("closed") => break,
                    Err(kind) => return Err(kind),
                }
            }
            close = true;
        }
        Ok(Response { status, close })
    }

    /// Consumes a chunked body and its trailers.
    fn skip_chunked(&mut self) -> Result<(), &'static str> {
        loop {
            let line_end = loop {
                if let Some(at) = find(&self.buf, b"\r\n") {
                    break at;
                }
                self.fill()?;
            };
            let line = std::str::from_utf8(&self.buf[..line_end]).map_err(|_| "parse")?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| "parse")?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    let end = loop {
                        if let Some(at) = find(&self.buf, b"\r\n") {
                            break at;
                        }
                        self.fill()?;
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        return Ok(());
                    }
                }
            }
            while self.buf.len() < size + 2 {
                self.fill()?;
            }
            self.buf.drain(..size + 2);
        }
    }

    /// Reads more bytes into the buffer.
    fn fill(&mut self) -> Result<(), &'static str> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("closed"),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err("timeout");
                }
                Err(_) => return Err("read"),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn print_report(settings: &Settings, total: u64, elapsed: Duration, stats: &mut Stats) {
    let completed = stats.latency.len() as u64;
    let errors: u64 = stats.errors.values().sum();
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        out.push_str(key);
        out.push(' ');
        out.push_str(&value);
        out.push('\n');
    };
    line("tool", "weft-loadgen".into());
    line(
        "target",
        format!("http://{}{}", settings.host, settings.path),
    );
    line("rate", format!("{}", settings.rate));
    line("duration_s", format!("{}", settings.duration.as_secs_f64()));
    line("connections", settings.connections.to_string());
    line("scheduled", total.to_string());
    line("completed", completed.to_string());
    line("ok", stats.ok.to_string());
    line("non_2xx", stats.non_2xx.to_string());
    line("errors", errors.to_string());
    for (kind, count) in &stats.errors {
        line(&format!("errors_{kind}"), count.to_string());
    }
    line("unsent", stats.unsent.to_string());
    line("elapsed_s", format!("{:.3}", elapsed.as_secs_f64()));
    let rps = if elapsed.is_zero() {
        0.0
    } else {
        completed as f64 / elapsed.as_secs_f64()
    };
    line("achieved_rps", format!("{rps:.1}"));
    for (name, values) in [
        ("latency_us", &mut stats.latency),
        ("service_us", &mut stats.service),
        ("send_lag_us", &mut stats.lag),
    ] {
        values.sort_unstable();
        if values.is_empty() {
            continue;
        }
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
        line(&format!("{name}_mean"), format!("{:.1}", mean / 1e3));
        for (label, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)] {
            line(
                &format!("{name}_{label}"),
                format!("{:.1}", quantile(values, q) / 1e3),
            );
        }
        let max = values.last().copied().unwrap_or_default();
        line(&format!("{name}_max"), format!("{:.1}", max as f64 / 1e3));
    }
    print!("{out}");
}

/// The `q` quantile of sorted `values` (nearest rank).
fn quantile(values: &[u64], q: f64) -> f64 {
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1] as f64
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Settings, String> {
    let mut url = None;
    let mut rate = None;
    let mut duration = None;
    let mut connections = 32usize;
    let mut timeout = 2.0f64;
    let mut headers = Vec::new();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(value()?),
            "--rate" => rate = Some(number(&flag, &value()?)?),
            "--duration" => duration = Some(number(&flag, &value()?)?),
            "--connections" => connections = number(&flag, &value()?)? as usize,
            "--timeout" => timeout = number(&flag, &value()?)?,
            "--header" => {
                let header = value()?;
                match header.split_once(':') {
                    Some((name, _))
                        if !name.trim().is_empty() && !header.contains(['\r', '\n']) =>
                    {
                        headers.push(header)
                    }
                    _ => return Err(format!("--header `{header}`: expected `NAME: VALUE`")),
                }
            }
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let rate = rate.ok_or("--rate is required")?;
    let duration = duration.ok_or("--duration is required")?;
    if rate <= 0.0 || duration <= 0.0 || connections == 0 || timeout <= 0.0 {
        return Err("--rate, --duration, --connections and --timeout must be positive".into());
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or(format!("`{url}`: only http:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("`{host}`: {e} (expected HOST:PORT)"))?
        .next()
        .ok_or(format!("`{host}` resolves to no address"))?;
    Ok(Settings {
        addr,
        host: host.to_owned(),
        path: path.to_owned(),
        rate,
        duration: Duration::from_secs_f64(duration),
        connections,
        timeout: Duration::from_secs_f64(timeout),
        headers,
    })
}

fn number(flag: &str, text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or(format!("{flag}: `{text}` is not a number"))
}
