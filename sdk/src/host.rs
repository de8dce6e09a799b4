//! What a filter reaches outside its request: properties, time, randomness, logs, metrics,
//! shared data and HTTP callouts. Everything here is a host call; every failure is a
//! [`Result`].

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weft_abi::{LogLevel, MetricType, join_property_path, write_property_path};

use crate::error::{Error, Result};
use crate::ffi::{HostCalls, host};

/// Reads the property at `path` (e.g. `["request", "path"]`, `["source", "address"]`);
/// `Ok(None)` when the host does not know it. Values are Envoy's encodings: strings raw,
/// integers 8-byte little-endian (see [`property_string`] and [`property_i64`]).
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>> {
    with_path(path, encoded_property)
}

/// The property at `path`, already in the ABI's encoding (`b"response\0code"`).
pub(crate) fn encoded_property(path: &[u8]) -> Result<Option<Vec<u8>>> {
    host(|h| h.get_property(path))
}

/// [`encoded_property`] as text.
pub(crate) fn encoded_string(path: &[u8]) -> Result<Option<String>> {
    Ok(encoded_property(path)?.map(text))
}

/// [`encoded_property`] as an integer.
pub(crate) fn encoded_i64(path: &[u8]) -> Result<Option<i64>> {
    host(|h| h.get_property_i64(path))
}

/// Runs `f` with `path` in the ABI's encoding (segments joined by NUL bytes), built on the
/// stack when it is short, as property paths are. The SDK's own reads skip this: their paths
/// are constants in that encoding already.
fn with_path<R>(path: &[&str], f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buffer = [0u8; 96];
    match write_property_path(path, &mut buffer) {
        Some(len) => f(&buffer[..len]),
        None => f(&join_property_path(path)),
    }
}

/// A property read as UTF-8 text (invalid bytes replaced).
pub fn property_string(path: &[&str]) -> Result<Option<String>> {
    Ok(property(path)?.map(text))
}

/// `bytes` as text, taken over without a copy when they are UTF-8 (invalid bytes replaced).
pub(crate) fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A property read as Envoy's 8-byte little-endian integer; `Ok(None)` when absent or not
/// eight bytes long.
pub fn property_i64(path: &[&str]) -> Result<Option<i64>> {
    with_path(path, encoded_i64)
}

/// Sets the property at `path`.
pub fn set_property(path: &[&str], value: &[u8]) -> Result<()> {
    with_path(path, |path| host(|h| h.set_property(path, value)))
}

/// The host's wall clock.
pub fn now() -> Result<SystemTime> {
    let nanos = host(|h| h.current_time_nanos())?;
    Ok(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// Writes a log line at `level` (weft: into its `tracing` log, tagged with the plugin).
pub fn log(level: LogLevel, message: &str) {
    // A log line that cannot be written has nowhere else to go.
    let _ = host(|h| h.log(level, message));
}

/// A random `u64`: the host's randomness (WASI `random_get`) where there is one.
pub fn random_u64() -> u64 {
    let mut bytes = [0; 8];
    host(|h| h.random_bytes(&mut bytes));
    u64::from_le_bytes(bytes)
}

/// Random bytes where the host has no source: splitmix64 seeded from the clock.
pub(crate) fn fallback_random(h: &mut dyn HostCalls, out: &mut [u8]) {
    thread_local!(static STATE: Cell<u64> = const { Cell::new(0) });
    for chunk in out.chunks_mut(8) {
        let value = STATE.with(|state| {
            if state.get() == 0 {
                state.set(h.current_time_nanos().unwrap_or(0x9e37_79b9_7f4a_7c15) | 1);
            }
            let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        });
        chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
    }
}

/// Data shared by every instance of every plugin in the proxy (all worker threads), with
/// compare-and-swap.
pub mod shared {
    use super::*;

    /// The value at `key` and its CAS token; `Ok(None)` when there is none.
    pub fn get(key: &str) -> Result<Option<(Vec<u8>, u32)>> {
        let (value, cas) = host(|h| h.get_shared_data(key))?;
        Ok(value.map(|v| (v, cas)))
    }

    /// Sets `key` unconditionally.
    pub fn set(key: &str, value: &[u8]) -> Result<()> {
        host(|h| h.set_shared_data(key, value, 0))
    }

    /// Sets `key` only if its CAS token is still `cas` (from [`get`]); a concurrent write
    /// makes this fail with [`Error::is_cas_mismatch`]. `cas` 0 writes unconditionally. A
    /// missing key is created whatever `cas` is (Envoy's semantics), so after a [`get`] found
    /// nothing, a non-zero `cas` creates the key only if no one else created it meanwhile.
    pub fn set_if(key: &str, value: &[u8], cas: u32) -> Result<()> {
        host(|h| h.set_shared_data(key, value, cas))
    }
}

/// A metric name with labels, in weft's convention `family{label="value",…}`: the host shows it
/// on `/stats/prometheus` as series of `family` with those labels. `"` and `\` in values are
/// escaped.
pub fn metric_name(family: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return family.to_owned();
    }
    let mut name = String::with_capacity(family.len() + 16 * labels.len());
    name.push_str(family);
    name.push('{');
    for (i, (label, value)) in labels.iter().enumerate() {
        if i > 0 {
            name.push(',');
        }
        name.push_str(label);
        name.push_str("=\"");
        for c in value.chars() {
            if c == '"' || c == '\\' {
                name.push('\\');
            }
            name.push(c);
        }
        name.push('"');
    }
    name.push('}');
    name
}

fn define(kind: MetricType, name: &str) -> Result<u32> {
    crate::dispatch::metric_id(kind as u32, name, || host(|h| h.define_metric(kind, name)))
}

/// A counter: only grows.
#[derive(Debug, Clone, Copy)]
pub struct Counter(u32);

impl Counter {
    /// Defines (or finds) the counter `name` (see [`metric_name`] for labels).
    pub fn define(name: &str) -> Result<Counter> {
        define(MetricType::Counter, name).map(Counter)
    }

    /// Adds `by`.
    pub fn increment(self, by: u64) -> Result<()> {
        let by = i64::try_from(by).map_err(|_| Error::msg("counter increment too large"))?;
        host(|h| h.increment_metric(self.0, by))
    }

    /// The current value.
    pub fn get(self) -> Result<u64> {
        host(|h| h.get_metric(self.0))
    }
}

/// A gauge: moves both ways.
#[derive(Debug, Clone, Copy)]
pub struct Gauge(u32);

impl Gauge {
    /// Defines (or finds) the gauge `name`.
    pub fn define(name: &str) -> Result<Gauge> {
        define(MetricType::Gauge, name).map(Gauge)
    }

    /// Adds `by` (negative to subtract).
    pub fn change(self, by: i64) -> Result<()> {
        host(|h| h.increment_metric(self.0, by))
    }

    /// Sets the value.
    pub fn set(self, value: u64) -> Result<()> {
        host(|h| h.record_metric(self.0, value))
    }

    /// The current value.
    pub fn get(self) -> Result<u64> {
        host(|h| h.get_metric(self.0))
    }
}

/// A histogram: records samples.
#[derive(Debug, Clone, Copy)]
pub struct Histogram(u32);

impl Histogram {
    /// Defines (or finds) the histogram `name`.
    pub fn define(name: &str) -> Result<Histogram> {
        define(MetricType::Histogram, name).map(Histogram)
    }

    /// Records one sample.
    pub fn record(self, value: u64) -> Result<()> {
        host(|h| h.record_metric(self.0, value))
    }
}

/// An HTTP request to a cluster of the proxy, answered later through
/// [`Filter::on_http_call_response`](crate::Filter::on_http_call_response).
#[derive(Debug, Clone)]
pub struct HttpCall<'a> {
    cluster: &'a str,
    headers: Vec<(&'a str, &'a [u8])>,
    body: &'a [u8],
    timeout: Duration,
}

impl<'a> HttpCall<'a> {
    /// A request to `cluster` (by name) with `method` and `path`; timeout one second.
    pub fn new(cluster: &'a str, method: &'a str, path: &'a str) -> Self {
        HttpCall {
            cluster,
            headers: vec![
                (":method", method.as_bytes()),
                (":path", path.as_bytes()),
                (":authority", cluster.as_bytes()),
            ],
            body: &[],
            timeout: Duration::from_secs(1),
        }
    }

    /// Adds a header (`:authority` replaces the default, the cluster name).
    pub fn header(mut self, name: &'a str, value: &'a str) -> Self {
        if name.starts_with(':') {
            self.headers.retain(|(n, _)| *n != name);
        }
        self.headers.push((name, value.as_bytes()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends it; the token identifies the answer. Only from a request's phases (the answer
    /// goes to that request's filter).
    pub fn send(self) -> Result<u32> {
        let millis = u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX);
        let token = host(|h| h.http_call(self.cluster, &self.headers, self.body, millis.max(1)))?;
        crate::dispatch::callout_sent(token);
        Ok(token)
    }
}
