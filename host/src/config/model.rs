//! The authored configuration model: serde structs mirroring the YAML resources of DESIGN.md,
//! exactly as a user writes them. Unknown fields are rejected; addresses and durations are
//! parsed here so a malformed one is reported with the line it sits on.
//!
//! ```yaml
//! apiVersion: weft/v1
//! kind: Cluster
//! metadata: {name: web}
//! spec:
//!   endpoints: ["127.0.0.1:8080"]
//!   loadBalancer: ROUND_ROBIN
//!   connectTimeout: 1s
//! ```

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, de};

/// The fields every document carries, read first to learn which `spec` shape follows.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// Must be `weft/v1`.
    pub api_version: String,
    /// `Listener`, `Cluster`, `FilterChain` or `Plugin`.
    pub kind: String,
    /// Name of the resource.
    pub metadata: Metadata,
}

/// A whole document of one kind: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document<S> {
    /// Must be `weft/v1`.
    pub api_version: String,
    /// The resource kind.
    pub kind: String,
    /// Name of the resource.
    pub metadata: Metadata,
    /// The kind-specific body.
    pub spec: S,
}

/// `metadata: {name: NAME}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Unique among resources of the same kind.
    pub name: String,
}

/// `kind: Listener` — where clients connect.
///
/// ```yaml
/// spec:
///   address: 0.0.0.0:8443
///   filterChain: edge
///   defaultCluster: web
///   tls: {certificate: server.pem, privateKey: server.key, clientCa: ca.pem}
///   limits: {maxRequestHeadersBytes: 61440, maxRequestHeaders: 100, headerReadTimeout: 10s}
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerSpec {
    /// `ip:port` to bind; port 0 picks a free port.
    pub address: SocketAddr,
    /// Name of the `FilterChain` requests on this listener run through.
    #[serde(default)]
    pub filter_chain: Option<String>,
    /// Cluster a request goes to when no filter chose one.
    #[serde(default)]
    pub default_cluster: Option<String>,
    /// TLS termination; `clientCa` makes it mTLS.
    #[serde(default)]
    pub tls: Option<ServerTlsSpec>,
    /// Downstream safety limits; every field has a safe default.
    #[serde(default)]
    pub limits: LimitsSpec,
}

/// Downstream TLS: PEM files, relative paths resolved against the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerTlsSpec {
    /// Certificate chain, leaf first.
    pub certificate: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// CA bundle client certificates must chain to; setting it requires client certificates.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Downstream limits; each breach answers with a clear status.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Largest request header block in bytes (431 past it). Default 60 KiB.
    #[serde(default = "defaults::max_request_headers_bytes")]
    pub max_request_headers_bytes: usize,
    /// Most request headers (431 past it). Default 100.
    #[serde(default = "defaults::max_request_headers")]
    pub max_request_headers: usize,
    /// Time allowed to receive a request's headers (slowloris guard). Default 10s.
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout: DurationSpec,
    /// A connection with no request in flight and no bytes moving is closed after this. Default 300s.
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: DurationSpec,
    /// Most concurrent downstream connections; more are closed at accept. Default 10000.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Most body bytes a filter may hold paused (`StopIterationAndBuffer`); 413 past it on
    /// requests, 500 on responses. Default 1 MiB.
    #[serde(default = "defaults::max_buffered_body_bytes")]
    pub max_buffered_body_bytes: usize,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            max_request_headers_bytes: defaults::max_request_headers_bytes(),
            max_request_headers: defaults::max_request_headers(),
            header_read_timeout: defaults::header_read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_connections: defaults::max_connections(),
            max_buffered_body_bytes: defaults::max_buffered_body_bytes(),
        }
    }
}

/// `kind: Cluster` — a set of upstream endpoints and how to reach them.
///
/// ```yaml
/// spec:
///   endpoints: ["10.0.0.7:8080", "10.0.0.8:8080"]
///   loadBalancer: LEAST_REQUEST
///   protocol: HTTP2
///   connectTimeout: 1s
///   timeout: 15s
///   retries: 2
///   outlierDetection: {consecutiveFailures: 5, ejectionTime: 30s}
///   tls: {ca: ca.pem, certificate: me.pem, privateKey: me.key, serverName: api.internal}
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// `host:port` endpoints; at least one.
    pub endpoints: Vec<EndpointSpec>,
    /// How a request picks an endpoint.
    #[serde(default)]
    pub load_balancer: LoadBalancerKind,
    /// Upstream protocol; over TLS, `HTTP2` is offered with ALPN.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Time allowed to establish a connection (TCP and TLS). Default 1s.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: DurationSpec,
    /// Time allowed from sending the request to receiving the response headers. Default 15s.
    #[serde(default = "defaults::request_timeout")]
    pub timeout: DurationSpec,
    /// Connection failures retried on another endpoint, at most this many times. Default 2.
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// Ejection of endpoints that keep failing.
    #[serde(default)]
    pub outlier_detection: OutlierSpec,
    /// Idle pooled connections kept per endpoint. Default 64.
    #[serde(default = "defaults::max_idle_per_endpoint")]
    pub max_idle_per_endpoint: usize,
    /// Upstream TLS; `certificate` + `privateKey` make it mTLS.
    #[serde(default)]
    pub tls: Option<ClientTlsSpec>,
}

/// Consecutive-failure outlier ejection, as Envoy's `consecutive_gateway_failure`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierSpec {
    /// Consecutive connect failures, resets or timeouts that eject an endpoint. Default 5.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// How long an ejected endpoint stays out. Default 30s.
    #[serde(default = "defaults::ejection_time")]
    pub ejection_time: DurationSpec,
}

impl Default for OutlierSpec {
    fn default() -> Self {
        Self {
            consecutive_failures: defaults::consecutive_failures(),
            ejection_time: defaults::ejection_time(),
        }
    }
}

/// Upstream TLS settings of a cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientTlsSpec {
    /// CA bundle the upstream's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate chain for upstream mTLS.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// Private key of `certificate`.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// SNI and the name verified in the upstream's certificate; defaults to the endpoint host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Endpoint selection policy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoadBalancerKind {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight (power of two choices).
    LeastRequest,
    /// A uniformly random endpoint.
    Random,
}

/// Protocol spoken to a cluster's endpoints.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2: prior knowledge on plaintext, ALPN `h2` over TLS.
    Http2,
}

/// `kind: FilterChain` — the ordered filters of a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterChainSpec {
    /// Request phases run top-down, response phases bottom-up.
    pub filters: Vec<FilterSpec>,
}

/// One filter instance in a chain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterSpec {
    /// Name of the `Plugin` resource.
    pub plugin: String,
    /// Instance name, unique in the chain; defaults to the plugin name.
    #[serde(default)]
    pub name: Option<String>,
    /// Any YAML; handed to `proxy_on_configure` as JSON.
    #[serde(default)]
    pub config: Option<serde_yaml::Value>,
    /// What a failure of this filter does to its request.
    #[serde(default)]
    pub fail_strategy: FailStrategy,
}

/// What a failing filter does to its request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailStrategy {
    /// Answer 503 naming the plugin.
    #[default]
    FailClose,
    /// Skip the filter.
    FailOpen,
}

/// `kind: Plugin` — a Wasm module and how to run it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PluginSpec {
    /// `file:///abs/path.wasm`, `builtin://NAME`, a path relative to the config file, or `NAME@VERSION`.
    pub url: String,
    /// Optional sha256 pin (64 hex digits); a mismatch rejects the update.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Longest a single call into the plugin may run before it fails its request. Default 100ms.
    #[serde(default = "defaults::plugin_deadline")]
    pub deadline: DurationSpec,
    /// Largest linear memory of one instance: bytes, or with a unit (`Ki`, `Mi`, `Gi`).
    /// Default `64Mi`; at most `256Mi`.
    #[serde(default = "defaults::plugin_memory")]
    pub memory_limit: ByteSize,
}

/// A size in bytes, written as a number or with a binary unit: `65536`, `64Ki`, `16Mi`, `1Gi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            format!("invalid size `{s}`: expected bytes or a number with Ki, Mi or Gi, e.g. `16Mi`")
        };
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let value: usize = number.parse().map_err(|_| err())?;
        let scale: usize = match unit {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            _ => return Err(err()),
        };
        value.checked_mul(scale).map(ByteSize).ok_or_else(err)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(usize),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

/// A `host:port` endpoint; the host may be an IP address or a DNS name resolved at connect time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointSpec {
    /// IP address or DNS name.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for EndpointSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for EndpointSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("endpoint `{s}` is not host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("endpoint `{s}` has an invalid port `{port}`"))?;
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid_host {
            return Err(format!("endpoint `{s}` has an invalid host `{host}`"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for EndpointSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A duration written as `250ms`, `1s`, `1.5s`, `2m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSpec(pub Duration);

impl FromStr for DurationSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            format!(
                "invalid duration `{s}`: expected a number and a unit (ms, s, m, h), e.g. `1s` or `250ms`"
            )
        };
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (number, unit) = s.split_at(split);
        let value: f64 = number.parse().map_err(|_| err())?;
        let seconds = match unit {
            "us" | "µs" => value / 1_000_000.0,
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(err()),
        };
        Duration::try_from_secs_f64(seconds)
            .map(DurationSpec)
            .map_err(|_| err())
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

mod defaults {
    use super::DurationSpec;
    use std::time::Duration;

    pub fn max_request_headers_bytes() -> usize {
        60 * 1024
    }
    pub fn max_buffered_body_bytes() -> usize {
        1 << 20
    }
    pub fn plugin_deadline() -> DurationSpec {
        DurationSpec(Duration::from_millis(100))
    }
    pub fn plugin_memory() -> super::ByteSize {
        super::ByteSize(64 << 20)
    }
    pub fn max_request_headers() -> usize {
        100
    }
    pub fn header_read_timeout() -> DurationSpec {
        DurationSpec(Duration::from_secs(10))
    }
    pub fn idle_timeout() -> DurationSpec {
        DurationSpec(Duration::from_secs(300))
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn connect_timeout() -> DurationSpec {
        DurationSpec(Duration::from_secs(1))
    }
    pub fn request_timeout() -> DurationSpec {
        DurationSpec(Duration::from_secs(15))
    }
    pub fn retries() -> u32 {
        2
    }
    pub fn consecutive_failures() -> u32 {
        5
    }
    pub fn ejection_time() -> DurationSpec {
        DurationSpec(Duration::from_secs(30))
    }
    pub fn max_idle_per_endpoint() -> usize {
        64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            "250ms".parse::<DurationSpec>().map(|d| d.0),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            "1.5s".parse::<DurationSpec>().map(|d| d.0),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(
            "2m".parse::<DurationSpec>().map(|d| d.0),
            Ok(Duration::from_secs(120))
        );
        assert!("10".parse::<DurationSpec>().is_err());
        assert!("fast".parse::<DurationSpec>().is_err());
        assert!("-1s".parse::<DurationSpec>().is_err());
    }

    #[test]
    fn endpoints_accept_ips_and_names() {
        let e: EndpointSpec = "10.0.0.7:8080".parse().expect("ip endpoint");
        assert_eq!((e.host.as_str(), e.port), ("10.0.0.7", 8080));
        let e: EndpointSpec = "api.internal:443".parse().expect("dns endpoint");
        assert_eq!(e.to_string(), "api.internal:443");
        let e: EndpointSpec = "[::1]:80".parse().expect("v6 endpoint");
        assert_eq!(e.to_string(), "[::1]:80");
        assert!("api.internal".parse::<EndpointSpec>().is_err());
        assert!("api internal:80".parse::<EndpointSpec>().is_err());
        assert!("10.0.0.7:99999".parse::<EndpointSpec>().is_err());
    }
}
