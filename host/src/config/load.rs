//! Loading a configuration file: split it into `---` documents, parse each against its kind's
//! schema, then validate the set as a whole (duplicate names, dangling references, plugin URLs).
//! Every error names the file, the line and the field. Nothing here touches the running proxy:
//! a file either resolves into a complete [`Config`] or is rejected.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::de::DeserializeOwned;

use super::{model, resolved::*};

/// A configuration error: the file, the line when known, the field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// 1-based line, when it could be determined.
    pub line: Option<usize>,
    /// Dotted path of the field, e.g. `spec.endpoints[1]`; empty for document-level errors.
    pub field: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Where each document of a file starts, so later checks (TLS material, plugin modules) can
/// report errors at the line of the field they concern.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    file: PathBuf,
    docs: Vec<SourceDoc>,
}

#[derive(Debug, Clone)]
struct SourceDoc {
    kind: String,
    name: String,
    start_line: usize,
    text: String,
}

impl SourceMap {
    /// The file this map describes.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Builds an error located at `field` (dotted path such as `spec.tls.certificate`) of the
    /// resource `kind`/`name`.
    pub fn error(
        &self,
        kind: &str,
        name: &str,
        field: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let doc = self.docs.iter().find(|d| d.kind == kind && d.name == name);
        ConfigError {
            file: self.file.clone(),
            line: doc.map(|d| d.start_line + locate(&d.text, field)),
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Reads and resolves a configuration file.
pub fn load_file(path: &Path) -> Result<(Config, SourceMap), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        line: None,
        field: String::new(),
        message: format!("cannot read the file: {e}"),
    })?;
    load_str(path, &text)
}

/// Resolves configuration text; `path` names it in errors and anchors relative paths.
pub fn load_str(path: &Path, text: &str) -> Result<(Config, SourceMap), ConfigError> {
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    let mut map = SourceMap {
        file: path.to_owned(),
        docs: Vec::new(),
    };
    let mut authored = Authored::default();
    for (start_line, doc_text) in split_documents(text) {
        parse_document(&mut map, &mut authored, start_line, doc_text)?;
    }
    let config = resolve(&map, &base, authored)?;
    Ok((config, map))
}

#[derive(Default)]
struct Authored {
    listeners: Vec<(String, model::ListenerSpec)>,
    clusters: Vec<(String, model::ClusterSpec)>,
    chains: Vec<(String, model::FilterChainSpec)>,
    plugins: Vec<(String, model::PluginSpec)>,
}

/// Splits on `---` lines; yields each non-empty document with the 1-based line it starts on.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("---") && line[3..].trim().is_empty() {
            docs.push((start, std::mem::take(&mut current)));
            start = index + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs.retain(|(_, doc)| {
        doc.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

fn parse_document(
    map: &mut SourceMap,
    authored: &mut Authored,
    start_line: usize,
    text: String,
) -> Result<(), ConfigError> {
    let file = map.file.clone();
    let header: model::Header = parse_yaml(&file, start_line, &text)?;
    if header.api_version != "weft/v1" {
        return Err(ConfigError {
            file,
            line: Some(start_line + locate(&text, "apiVersion")),
            field: "apiVersion".into(),
            message: format!(
                "unsupported apiVersion `{}`, expected `weft/v1`",
                header.api_version
            ),
        });
    }
    let name = header.metadata.name.clone();
    if !valid_name(&name) {
        return Err(ConfigError {
            file,
            line: Some(start_line + locate(&text, "metadata.name")),
            field: "metadata.name".into(),
            message: format!("invalid name `{name}`: use letters, digits, `-`, `_` and `.`"),
        });
    }
    match header.kind.as_str() {
        "Listener" => authored
            .listeners
            .push((name.clone(), spec(&file, start_line, &text)?)),
        "Cluster" => authored
            .clusters
            .push((name.clone(), spec(&file, start_line, &text)?)),
        "FilterChain" => authored
            .chains
            .push((name.clone(), spec(&file, start_line, &text)?)),
        "Plugin" => authored
            .plugins
            .push((name.clone(), spec(&file, start_line, &text)?)),
        other => {
            return Err(ConfigError {
                file,
                line: Some(start_line + locate(&text, "kind")),
                field: "kind".into(),
                message: format!(
                    "unknown kind `{other}`, expected Listener, Cluster, FilterChain or Plugin"
                ),
            });
        }
    }
    map.docs.push(SourceDoc {
        kind: header.kind,
        name,
        start_line,
        text,
    });
    Ok(())
}

fn spec<S: DeserializeOwned>(file: &Path, start_line: usize, text: &str) -> Result<S, ConfigError> {
    parse_yaml::<model::Document<S>>(file, start_line, text).map(|doc| doc.spec)
}

fn parse_yaml<T: DeserializeOwned>(
    file: &Path,
    start_line: usize,
    text: &str,
) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let field = err.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let inner = err.into_inner();
        let message = strip_location(&inner.to_string());
        // serde_yaml marks custom errors at the start of the enclosing mapping, syntax errors
        // at the exact spot; the path is exact but knows no lines. Locate the path in the
        // text and keep whichever of the two lines is further down.
        let located = (!field.is_empty()).then(|| start_line + locate(text, &field));
        let marked = inner.location().map(|l| start_line + l.line() - 1);
        let line = located.max(marked);
        ConfigError {
            file: file.to_owned(),
            line,
            field,
            message,
        }
    })
}

/// serde_yaml appends " at line L column C" relative to the document; the error carries the
/// file-relative line separately, so drop it from the message.
fn strip_location(message: &str) -> String {
    let message = match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    // serde_yaml also prefixes its own (coarser) path: `spec: invalid duration ...`.
    match message.split_once(": ") {
        Some((path, rest))
            if !path.is_empty()
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c)) =>
        {
            rest.to_owned()
        }
        _ => message.to_owned(),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Finds the 0-based line offset of a dotted field path (`spec.filters[1].plugin`) in a document
/// by walking forward key by key. Good enough for block and flow YAML alike; falls back to the
/// nearest ancestor that was found.
fn locate(text: &str, path: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut cursor = 0usize;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (key, indices) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !key.is_empty() {
            match (cursor..lines.len()).find(|&i| has_key(lines[i], key)) {
                Some(i) => cursor = i,
                None => return cursor,
            }
        }
        for index in indices
            .split(['[', ']'])
            .filter_map(|s| s.parse::<usize>().ok())
        {
            let anchor = cursor;
            let items: Vec<usize> = (anchor + 1..lines.len())
                .take_while(|&i| {
                    indent(lines[i]) > indent(lines[anchor])
                        || lines[i].trim_start().starts_with('-')
                })
                .filter(|&i| lines[i].trim_start().starts_with("- "))
                .collect();
            if let Some(&line) = items.get(index) {
                cursor = line;
            }
        }
    }
    cursor
}

fn has_key(line: &str, key: &str) -> bool {
    let mut rest = line;
    while let Some(i) = rest.find(key) {
        let before = rest[..i].chars().last();
        let after = rest[i + key.len()..].trim_start();
        if before.is_none_or(|c| matches!(c, ' ' | '{' | ',' | '-' | '"' | '\''))
            && after.starts_with(':')
        {
            return true;
        }
        rest = &rest[i + key.len()..];
    }
    false
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn resolve(map: &SourceMap, base: &Path, authored: Authored) -> Result<Config, ConfigError> {
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
        let plugin = PluginConfig {
            name: name.as_str().into(),
            source,
            sha256: spec.sha256.map(|s| s.to_ascii_lowercase()),
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
            let config_json = match &filter.config {
                None => "{}".to_owned(),
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
        let second = map
            .docs
            .iter()
            .filter(|d| d.kind == kind && d.name == name)
            .nth(1);
        return Err(ConfigError {
            file: map.file.clone(),
            line: second.map(|d| d.start_line + locate(&d.text, "metadata.name")),
            field: "metadata.name".into(),
            message: format!("duplicate {kind} name `{name}`"),
        });
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

#[cfg(test)]
mod tests;
