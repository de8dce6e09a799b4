//! The resolved configuration: validated, defaults applied, paths absolute, durations as
//! `Duration`, names as `Arc<str>` and maps ordered, so two loads of the same file compare equal
//! and `/config_dump` is deterministic.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use serde::Serialize;

pub use super::model::{EndpointSpec, FailStrategy, LoadBalancerKind, UpstreamProtocol};

/// A whole validated configuration, swapped in as one unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Listeners by name.
    pub listeners: BTreeMap<Arc<str>, Arc<ListenerConfig>>,
    /// Clusters by name.
    pub clusters: BTreeMap<Arc<str>, Arc<ClusterConfig>>,
    /// Filter chains by name.
    pub filter_chains: BTreeMap<Arc<str>, Arc<FilterChainConfig>>,
    /// Plugins by name.
    pub plugins: BTreeMap<Arc<str>, Arc<PluginConfig>>,
}

/// A resolved `Listener`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerConfig {
    /// Resource name.
    pub name: Arc<str>,
    /// Address to bind.
    pub address: SocketAddr,
    /// Filter chain run on each request.
    pub filter_chain: Option<Arc<str>>,
    /// Cluster used when no filter chose one.
    pub default_cluster: Option<Arc<str>>,
    /// TLS termination.
    pub tls: Option<ServerTlsConfig>,
    /// Downstream limits.
    pub limits: Limits,
}

/// Downstream TLS files, absolute.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTlsConfig {
    /// Certificate chain PEM.
    pub certificate: PathBuf,
    /// Private key PEM.
    pub private_key: PathBuf,
    /// Client CA PEM; present means mTLS is required.
    pub client_ca: Option<PathBuf>,
}

/// Downstream limits of a listener.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Largest request header block, bytes.
    pub max_request_headers_bytes: usize,
    /// Most request headers.
    pub max_request_headers: usize,
    /// Deadline for a request's headers.
    #[serde(serialize_with = "as_duration_text")]
    pub header_read_timeout: Duration,
    /// Idle connection timeout.
    #[serde(serialize_with = "as_duration_text")]
    pub idle_timeout: Duration,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Most body bytes a paused filter may hold.
    pub max_buffered_body_bytes: usize,
}

/// A resolved `Cluster`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    /// Resource name.
    pub name: Arc<str>,
    /// Endpoints in configured order.
    pub endpoints: Vec<EndpointSpec>,
    /// Endpoint selection.
    pub load_balancer: LoadBalancerKind,
    /// Upstream protocol.
    pub protocol: UpstreamProtocol,
    /// TCP + TLS connect deadline.
    #[serde(serialize_with = "as_duration_text")]
    pub connect_timeout: Duration,
    /// Deadline for the response headers.
    #[serde(serialize_with = "as_duration_text")]
    pub request_timeout: Duration,
    /// Connect-failure retries on other endpoints.
    pub retries: u32,
    /// Outlier ejection.
    pub outlier: Outlier,
    /// Idle pooled connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    /// Upstream TLS.
    pub tls: Option<ClientTlsConfig>,
}

/// Outlier ejection parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outlier {
    /// Consecutive failures that eject.
    pub consecutive_failures: u32,
    /// How long an ejection lasts.
    #[serde(serialize_with = "as_duration_text")]
    pub ejection_time: Duration,
}

/// Upstream TLS files, absolute.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTlsConfig {
    /// CA bundle for verifying the upstream.
    pub ca: PathBuf,
    /// Client certificate chain (upstream mTLS).
    pub certificate: Option<PathBuf>,
    /// Client private key.
    pub private_key: Option<PathBuf>,
    /// SNI / verified name; `None` means the endpoint host.
    pub server_name: Option<String>,
}

/// A resolved `FilterChain`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterChainConfig {
    /// Resource name.
    pub name: Arc<str>,
    /// Filters in request order.
    pub filters: Vec<FilterConfig>,
}

/// One filter instance of a chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterConfig {
    /// The `Plugin` it runs.
    pub plugin: Arc<str>,
    /// Instance name, unique in the chain.
    pub name: Arc<str>,
    /// The `config` block as JSON, as `proxy_on_configure` receives it.
    pub config_json: Arc<str>,
    /// Failure handling.
    pub fail_strategy: FailStrategy,
}

/// A resolved `Plugin`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfig {
    /// Resource name.
    pub name: Arc<str>,
    /// Where the module comes from.
    pub source: PluginSource,
    /// Expected sha256 of the module, lowercase hex.
    pub sha256: Option<String>,
    /// Longest a single guest call may run.
    #[serde(serialize_with = "as_duration_text")]
    pub deadline: Duration,
    /// Largest linear memory of one instance, bytes.
    pub memory_limit: usize,
}

/// Where a plugin's module comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PluginSource {
    /// A module file on disk.
    File(PathBuf),
    /// A module shipped inside the binary.
    Builtin(String),
    /// A module in the control plane's registry.
    Registry {
        /// Plugin name in the registry.
        name: String,
        /// Version; `None` follows the newest.
        version: Option<String>,
    },
}

/// Durations in `/config_dump` read as they are written in YAML: `250ms`, `1.5s`.
fn as_duration_text<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let millis = duration.as_secs_f64() * 1000.0;
    if millis < 1000.0 {
        serializer.collect_str(&format_args!("{millis}ms"))
    } else {
        serializer.collect_str(&format_args!("{}s", duration.as_secs_f64()))
    }
}
