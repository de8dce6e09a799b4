//! Validating a file's resources as one set: names unique per kind, references resolved
//! (listener → filter chain and cluster, filter → plugin), values in range, plugin URLs
//! understood; then the resolved model is built. Errors point at the field through the
//! [`SourceMap`].

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{
    load::{Authored, ConfigError, SourceMap, valid_name},
    resolved::*,
};

/// The largest memory limit a plugin may ask for (the engine's per-instance maximum).
pub const MAX_PLUGIN_MEMORY: usize = 256 << 20;

/// Validates the documents as one set and resolves them: defaults applied, paths absolute,
/// references checked.
pub(super) fn resolve(
    map: &SourceMap,
    base: &Path,
    authored: Authored,
) -> Result<Config, ConfigError> {
    let mut config = Config {
        listeners: BTreeMap::new(),
        clusters: BTreeMap::new(),
        filter_chains: BTreeMap::new(),
        plugins: BTreeMap::new(),
    };
    let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

    for (name, spec) in authored.plugins {
        let source = plugin_source(&spec.url, base)
            .map_err(|m| map.error("Plugin", &name, "spec.url", m))?;
        if let Some(sha) = &spec.sha256
            && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(map.error(
                "Plugin",
                &name,
                "spec.sha256",
                format!("`{sha}` is not a sha256 digest (64 hex digits)"),
            ));
        }
        if spec.deadline.0.is_zero() || spec.deadline.0 > Duration::from_secs(60) {
            return Err(map.error(
                "Plugin",
                &name,
                "spec.deadline",
                "a plugin deadline must be more than 0 and at most 60s",
            ));
        }
        if !(64 << 10..=MAX_PLUGIN_MEMORY).contains(&spec.memory_limit.0) {
            return Err(map.error(
                "Plugin",
                &name,
                "spec.memoryLimit",
                format!(
                    "a plugin memory limit must be between 64Ki and 256Mi, not {} bytes",
                    spec.memory_limit.0
                ),
            ));
        }
        let plugin = PluginConfig {
            name: name.as_str().into(),
            source,
            sha256: spec.sha256.map(|s| s.to_ascii_lowercase()),
            deadline: spec.deadline.0,
            memory_limit: spec.memory_limit.0,
        };
        insert_unique(map, "Plugin", &mut config.plugins, name, plugin)?;
    }

    for (name, spec) in authored.clusters {
        if spec.endpoints.is_empty() {
            return Err(map.error(
                "Cluster",
                &name,
                "spec.endpoints",
                "a cluster needs at least one endpoint",
            ));
        }
        for (i, endpoint) in spec.endpoints.iter().enumerate() {
            if spec.endpoints[..i].contains(endpoint) {
                return Err(map.error(
                    "Cluster",
                    &name,
                    &format!("spec.endpoints[{i}]"),
                    format!("endpoint `{endpoint}` is listed twice"),
                ));
            }
        }
        let positive = [
            ("spec.connectTimeout", spec.connect_timeout.0),
            ("spec.timeout", spec.timeout.0),
            (
                "spec.outlierDetection.ejectionTime",
                spec.outlier_detection.ejection_time.0,
            ),
        ];
        for (field, value) in positive {
            if value.is_zero() {
                return Err(map.error("Cluster", &name, field, "must be greater than zero"));
            }
        }
        if spec.outlier_detection.consecutive_failures == 0 {
            return Err(map.error(
                "Cluster",
                &name,
                "spec.outlierDetection.consecutiveFailures",
                "must be at least 1",
            ));
        }
        let tls = match spec.tls {
            None => None,
            Some(tls) => {
                if tls.certificate.is_some() != tls.private_key.is_some() {
                    return Err(map.error(
                        "Cluster",
                        &name,
                        "spec.tls",
                        "`certificate` and `privateKey` go together",
                    ));
                }
                Some(ClientTlsConfig {
                    ca: abs(tls.ca),
                    certificate: tls.certificate.map(abs),
                    private_key: tls.private_key.map(abs),
                    server_name: tls.server_name,
                })
            }
        };
        let cluster = ClusterConfig {
            name: name.as_str().into(),
            endpoints: spec.endpoints,
            load_balancer: spec.load_balancer,
            protocol: spec.protocol,
            connect_timeout: spec.connect_timeout.0,
            request_timeout: spec.timeout.0,
            retries: spec.retries,
            outlier: Outlier {
                consecutive_failures: spec.outlier_detection.consecutive_failures,
                ejection_time: spec.outlier_detection.ejection_time.0,
            },
            max_idle_per_endpoint: spec.max_idle_per_endpoint,
            tls,
        };
        insert_unique(map, "Cluster", &mut config.clusters, name, cluster)?;
    }

    for (name, spec) in authored.chains {
        let mut filters: Vec<FilterConfig> = Vec::new();
        for (i, filter) in spec.filters.into_iter().enumerate() {
            if !config.plugins.contains_key(filter.plugin.as_str()) {
                return Err(map.error(
                    "FilterChain",
                    &name,
                    &format!("spec.filters[{i}].plugin"),
                    format!("no Plugin named `{}`", filter.plugin),
                ));
            }
            let instance = filter.name.unwrap_or_else(|| filter.plugin.clone());
            if filters.iter().any(|f| *f.name == *instance) {
                return Err(map.error(
                    "FilterChain",
                    &name,
                    &format!("spec.filters[{i}]"),
                    format!("two filters are named `{instance}`; give one a distinct `name`"),
                ));
            }
            // No `config` is an empty configuration, as Envoy hands it over.
            let config_json = match &filter.config {
                None => String::new(),
                Some(value) => serde_json::to_string(value).map_err(|e| {
                    map.error(
                        "FilterChain",
                        &name,
                        &format!("spec.filters[{i}].config"),
                        format!("not representable as JSON: {e}"),
                    )
                })?,
            };
            filters.push(FilterConfig {
                plugin: filter.plugin.as_str().into(),
                name: instance.as_str().into(),
                config_json: config_json.into(),
                fail_strategy: filter.fail_strategy,
            });
        }
        let chain = FilterChainConfig {
            name: name.as_str().into(),
            filters,
        };
        insert_unique(map, "FilterChain", &mut config.filter_chains, name, chain)?;
    }

    for (name, spec) in authored.listeners {
        if let Some(chain) = &spec.filter_chain
            && !config.filter_chains.contains_key(chain.as_str())
        {
            return Err(map.error(
                "Listener",
                &name,
                "spec.filterChain",
                format!("no FilterChain named `{chain}`"),
            ));
        }
        if let Some(cluster) = &spec.default_cluster
            && !config.clusters.contains_key(cluster.as_str())
        {
            return Err(map.error(
                "Listener",
                &name,
                "spec.defaultCluster",
                format!("no Cluster named `{cluster}`"),
            ));
        }
        if let Some(other) = config
            .listeners
            .values()
            .find(|l| l.address == spec.address && spec.address.port() != 0)
        {
            return Err(map.error(
                "Listener",
                &name,
                "spec.address",
                format!(
                    "address {} is already used by listener `{}`",
                    spec.address, other.name
                ),
            ));
        }
        let limits = &spec.limits;
        if limits.max_request_headers_bytes < 1024 {
            return Err(map.error(
                "Listener",
                &name,
                "spec.limits.maxRequestHeadersBytes",
                "must be at least 1024",
            ));
        }
        if limits.max_request_headers == 0 || limits.max_connections == 0 {
            let field = if limits.max_connections == 0 {
                "spec.limits.maxConnections"
            } else {
                "spec.limits.maxRequestHeaders"
            };
            return Err(map.error("Listener", &name, field, "must be at least 1"));
        }
        for (field, value) in [
            (
                "spec.limits.headerReadTimeout",
                limits.header_read_timeout.0,
            ),
            ("spec.limits.idleTimeout", limits.idle_timeout.0),
        ] {
            if value.is_zero() {
                return Err(map.error("Listener", &name, field, "must be greater than zero"));
            }
        }
        let listener = ListenerConfig {
            name: name.as_str().into(),
            address: spec.address,
            filter_chain: spec.filter_chain.map(|s| s.as_str().into()),
            default_cluster: spec.default_cluster.map(|s| s.as_str().into()),
            tls: spec.tls.map(|tls| ServerTlsConfig {
                certificate: abs(tls.certificate),
                private_key: abs(tls.private_key),
                client_ca: tls.client_ca.map(abs),
            }),
            limits: Limits {
                max_request_headers_bytes: limits.max_request_headers_bytes,
                max_request_headers: limits.max_request_headers,
                header_read_timeout: limits.header_read_timeout.0,
                idle_timeout: limits.idle_timeout.0,
                max_connections: limits.max_connections,
                max_buffered_body_bytes: limits.max_buffered_body_bytes,
            },
        };
        insert_unique(map, "Listener", &mut config.listeners, name, listener)?;
    }
    Ok(config)
}

fn insert_unique<T>(
    map: &SourceMap,
    kind: &str,
    into: &mut BTreeMap<Arc<str>, Arc<T>>,
    name: String,
    value: T,
) -> Result<(), ConfigError> {
    if into.contains_key(name.as_str()) {
        // Point at the second definition: the first document of that name was accepted.
        return Err(map.duplicate(kind, &name));
    }
    into.insert(name.into(), Arc::new(value));
    Ok(())
}

fn plugin_source(url: &str, base: &Path) -> Result<PluginSource, String> {
    if let Some(path) = url.strip_prefix("file://") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(format!("`{url}`: a file:// URL needs an absolute path"));
        }
        return Ok(PluginSource::File(path));
    }
    if let Some(name) = url.strip_prefix("builtin://") {
        return if valid_name(name) {
            Ok(PluginSource::Builtin(name.to_owned()))
        } else {
            Err(format!("`{url}`: invalid builtin name"))
        };
    }
    if let Some(reference) = url.strip_prefix("registry://") {
        let (name, version) = match reference.split_once('@') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (reference, None),
        };
        if !valid_name(name) || version.as_deref().is_some_and(|v| !valid_name(v)) {
            return Err(format!(
                "`{url}`: expected registry://NAME or registry://NAME@VERSION"
            ));
        }
        return Ok(PluginSource::Registry {
            name: name.to_owned(),
            version,
        });
    }
    if url.contains("://") {
        return Err(format!(
            "`{url}`: unsupported scheme; use file://, builtin://, registry:// or a relative path"
        ));
    }
    if let Some((name, version)) = url.split_once('@')
        && valid_name(name)
        && valid_name(version)
        && !url.ends_with(".wasm")
    {
        return Ok(PluginSource::Registry {
            name: name.to_owned(),
            version: Some(version.to_owned()),
        });
    }
    if url.is_empty() {
        return Err("the plugin url is empty".into());
    }
    Ok(PluginSource::File(base.join(url)))
}
