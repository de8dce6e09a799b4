//! Resources: the YAML documents a proxy's `--config` file holds (Listener, Cluster,
//! FilterChain, Plugin), stored one document per `(kind, name)` and versioned as a set.
//!
//! `apply` takes a YAML text of one or more documents and validates it together with what is
//! already stored, as one set, with the proxy's own loader (`weft_host::config::load_str`):
//! unknown fields, bad values and dangling references are refused with the line and field.
//! On top of that, a `builtin://NAME` plugin must be built in and a `registry://NAME[@VERSION]`
//! plugin must be published (and match its `sha256` pin). An accepted change is written with
//! one version bump in one transaction; a rejected one changes nothing. `delete` is refused
//! when it would leave another resource dangling.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use weft_control::{resources::Resources, store::MemoryStore};
//!
//! let resources = Resources::new(Arc::new(MemoryStore::new()));
//! let applied = resources.apply(
//!     "apiVersion: weft/v1\nkind: Cluster\nmetadata: {name: web}\nspec: {endpoints: [\"127.0.0.1:8080\"]}\n",
//! )?;
//! assert_eq!(applied.version, 1);
//! let refused = resources.apply(
//!     "apiVersion: weft/v1\nkind: Listener\nmetadata: {name: public}\nspec: {address: \"127.0.0.1:0\", defaultCluster: api}\n",
//! );
//! assert!(refused.is_err_and(|e| e.to_string().contains("no Cluster named `api`")));
//! assert_eq!(resources.version()?, 1, "a rejected change changes nothing");
//! # Ok(())
//! # }
//! ```

use std::{fmt, path::Path, sync::Arc};

use serde::Deserialize;
use weft_host::{
    config::{Config, ConfigError, PluginSource, SourceMap, load_str},
    wasm::builtin::{builtin_module, describe_builtins},
};

use crate::{
    registry,
    store::{self, RESOURCE_VERSION, ReadTxn, Store, StoreError, StoredResource},
};

/// The resource kinds, in the order `list` shows them.
pub const KINDS: [&str; 4] = ["Listener", "Cluster", "FilterChain", "Plugin"];

/// The name validation errors are attributed to; it never appears in messages.
const INPUT: &str = "/weft-apply.yaml";

/// A resource failure, worded for the operator who caused it.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The text has no documents.
    #[error("nothing to apply: the text holds no resource documents")]
    Empty,
    /// Not one of [`KINDS`].
    #[error("unknown kind `{0}`, expected Listener, Cluster, FilterChain or Plugin")]
    UnknownKind(String),
    /// The applied set is invalid.
    #[error("{0}")]
    Invalid(Rejection),
    /// No such resource.
    #[error("{kind} `{name}` not found")]
    NotFound {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
    },
    /// Deleting it would leave another resource dangling.
    #[error("cannot delete {kind} `{name}`: {detail}")]
    InUse {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Which resource refers to it, and where.
        detail: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an applied set was refused, located in the applied text or in a stored resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Where the problem is.
    pub location: Location,
    /// Dotted field path, e.g. `spec.filters[0].plugin`; empty for document-level errors.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Where a [`Rejection`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In the applied text, at this 1-based line when known.
    Input(Option<usize>),
    /// In the stored resource `kind`/`name`.
    Stored {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::Input(Some(line)) => write!(f, "line {line}")?,
            Location::Input(None) => write!(f, "the applied text")?,
            Location::Stored { kind, name } => write!(f, "stored {kind} `{name}`")?,
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What `apply` did to one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A new resource.
    Created,
    /// An existing resource with new text.
    Updated,
    /// Exactly the stored text.
    Unchanged,
}

/// One document of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// What happened to it.
    pub action: Action,
}

/// The outcome of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The resource version after the apply (unchanged when every document was).
    pub version: u64,
    /// Each document, in the order of the text.
    pub changes: Vec<Change>,
}

/// Every stored resource at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The resource version.
    pub version: u64,
    /// The resources, sorted by kind then name.
    pub resources: Vec<StoredResource>,
}

/// The resources over a [`Store`].
#[derive(Clone)]
pub struct Resources {
    store: Arc<dyn Store>,
}

impl Resources {
    /// Resources kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Validates `text` (one or more `---`-separated documents) with the stored set and stores
    /// it: documents create or replace the resource of their kind and name.
    pub fn apply(&self, text: &str) -> Result<Applied, ResourceError> {
        let incoming = split_documents(text);
        if incoming.is_empty() {
            return Err(ResourceError::Empty);
        }
        let mut headers = Vec::new();
        for doc in &incoming {
            match serde_yaml::from_str::<Header>(doc) {
                Ok(header) if KINDS.contains(&header.kind.as_str()) => headers.push(header),
                // Let the loader say what is wrong, with the line.
                _ => return Err(ResourceError::Invalid(first_error(text))),
            }
        }
        store::write(&*self.store, |txn| {
            let stored = txn.resources(None)?;
            let kept = stored.iter().filter(|r| {
                !headers
                    .iter()
                    .any(|h| h.kind == r.kind && h.metadata.name == r.name)
            });
            let set = Combined::new(text, kept);
            let (config, map) = set.load()?;
            for header in &headers {
                if header.kind == "Plugin" {
                    check_plugin_module(txn, &config, &map, &header.metadata.name)
                        .map_err(|e| ResourceError::Invalid(set.rejection(e)))?;
                }
            }
            let mut changes = Vec::new();
            for (header, doc) in headers.iter().zip(&incoming) {
                let (kind, name) = (&header.kind, &header.metadata.name);
                let action = match stored.iter().find(|r| r.kind == *kind && r.name == *name) {
                    None => Action::Created,
                    Some(r) if r.yaml == *doc => Action::Unchanged,
                    Some(_) => Action::Updated,
                };
                if action != Action::Unchanged {
                    txn.put_resource(kind, name, doc)?;
                }
                changes.push(Change {
                    kind: kind.clone(),
                    name: name.clone(),
                    action,
                });
            }
            let version = if changes.iter().all(|c| c.action == Action::Unchanged) {
                txn.counter(RESOURCE_VERSION)?
            } else {
                txn.bump_counter(RESOURCE_VERSION)?
            };
            Ok(Applied { version, changes })
        })
    }

    /// One resource.
    pub fn get(&self, kind: &str, name: &str) -> Result<StoredResource, ResourceError> {
        let kind = canonical_kind(kind)?;
        store::read(&*self.store, |txn| {
            let yaml = txn
                .resource(kind, name)?
                .ok_or_else(|| not_found(kind, name))?;
            Ok(StoredResource {
                kind: kind.to_owned(),
                name: name.to_owned(),
                yaml,
            })
        })
    }

    /// The resources of `kind` (any kind when `None`), sorted by kind then name.
    pub fn list(&self, kind: Option<&str>) -> Result<Vec<StoredResource>, ResourceError> {
        let kind = kind.map(canonical_kind).transpose()?;
        store::read(&*self.store, |txn| Ok(txn.resources(kind)?))
    }

    /// Every resource and the version they are at, read together.
    pub fn snapshot(&self) -> Result<Snapshot, ResourceError> {
        store::read(&*self.store, |txn| {
            Ok(Snapshot {
                version: txn.counter(RESOURCE_VERSION)?,
                resources: txn.resources(None)?,
            })
        })
    }

    /// The current resource version (0 before the first change).
    pub fn version(&self) -> Result<u64, ResourceError> {
        store::read(&*self.store, |txn| Ok(txn.counter(RESOURCE_VERSION)?))
    }

    /// Deletes a resource unless another one refers to it; returns the new version.
    pub fn delete(&self, kind: &str, name: &str) -> Result<u64, ResourceError> {
        let kind = canonical_kind(kind)?;
        store::write(&*self.store, |txn| {
            if txn.resource(kind, name)?.is_none() {
                return Err(not_found(kind, name));
            }
            let stored = txn.resources(None)?;
            let kept = stored
                .iter()
                .filter(|r| !(r.kind == kind && r.name == name));
            let set = Combined::new("", kept);
            if let Err(ResourceError::Invalid(rejection)) = set.load() {
                let detail = match &rejection.location {
                    Location::Stored {
                        kind: user_kind,
                        name: user,
                    } => format!(
                        "{user_kind} `{user}` refers to it ({}: {})",
                        rejection.field, rejection.message
                    ),
                    Location::Input(_) => rejection.to_string(),
                };
                return Err(ResourceError::InUse {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    detail,
                });
            }
            txn.delete_resource(kind, name)?;
            Ok(txn.bump_counter(RESOURCE_VERSION)?)
        })
    }
}

/// `Listener`, `cluster`, `FILTERCHAIN`… → the kind as stored.
pub fn canonical_kind(kind: &str) -> Result<&'static str, ResourceError> {
    KINDS
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(kind))
        .ok_or_else(|| ResourceError::UnknownKind(kind.to_owned()))
}

fn not_found(kind: &str, name: &str) -> ResourceError {
    ResourceError::NotFound {
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

/// What `apply` needs of a document before validation: its kind and name.
#[derive(Deserialize)]
struct Header {
    kind: String,
    metadata: Metadata,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
}

/// The applied text followed by the stored documents it does not replace: one text the proxy's
/// loader validates as a set. The applied text comes first and verbatim, so the loader's line
/// numbers are the user's.
struct Combined {
    text: String,
    input_lines: usize,
}

impl Combined {
    fn new<'a>(input: &str, stored: impl Iterator<Item = &'a StoredResource>) -> Self {
        let mut text = input.to_owned();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let input_lines = text.lines().count();
        for resource in stored {
            text.push_str("---\n");
            text.push_str(&resource.yaml);
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        Self { text, input_lines }
    }

    fn load(&self) -> Result<(Config, SourceMap), ResourceError> {
        load_str(Path::new(INPUT), &self.text)
            .map_err(|e| ResourceError::Invalid(self.rejection(e)))
    }

    /// Locates a loader error in the input or, past its lines, in the stored resource the
    /// loader names.
    fn rejection(&self, error: ConfigError) -> Rejection {
        let location = match (error.line, error.resource.map(|r| *r)) {
            (Some(line), Some((kind, name))) if line > self.input_lines => {
                Location::Stored { kind, name }
            }
            (Some(line), None) if line > self.input_lines => Location::Input(None),
            (line, _) => Location::Input(line),
        };
        Rejection {
            location,
            field: error.field,
            message: error.message,
        }
    }
}

/// The loader's error for a text whose headers did not parse.
fn first_error(text: &str) -> Rejection {
    match load_str(Path::new(INPUT), text) {
        Err(e) => Combined::new(text, std::iter::empty()).rejection(e),
        Ok(_) => Rejection {
            location: Location::Input(None),
            field: "kind".into(),
            message: "every document needs a `kind` and a `metadata.name`".into(),
        },
    }
}

/// Checks that a plugin's module exists where the control plane can see it: built in, or
/// published (matching the `sha256` pin). `file://` modules live on the proxies' disks.
fn check_plugin_module(
    txn: &dyn ReadTxn,
    config: &Config,
    map: &SourceMap,
    name: &str,
) -> Result<(), ConfigError> {
    let Some(plugin) = config.plugins.get(name) else {
        return Ok(());
    };
    let error = |field: &str, message: String| map.error("Plugin", name, field, message);
    let sha256 = match &plugin.source {
        PluginSource::File(_) => return Ok(()),
        PluginSource::Builtin(builtin) => match builtin_module(builtin) {
            Some(bytes) => registry::sha256_hex(bytes),
            None => {
                return Err(error(
                    "spec.url",
                    format!(
                        "no built-in plugin named `{builtin}`; the built-in plugins are: {}",
                        describe_builtins()
                    ),
                ));
            }
        },
        PluginSource::Registry { name, version } => {
            let resolved = registry::resolve(txn, name, version.as_deref())
                .map_err(|e| error("spec.url", e.to_string()))?;
            match resolved {
                Some(found) => found.sha256,
                None => {
                    let what = match version {
                        Some(v) => format!("{name}@{v} is not published in the registry"),
                        None => format!("`{name}` has no published version in the registry"),
                    };
                    return Err(error(
                        "spec.url",
                        format!("{what}; publish it with `weft plugin publish`"),
                    ));
                }
            }
        }
    };
    match &plugin.sha256 {
        Some(pin) if *pin != sha256 => Err(error(
            "spec.sha256",
            format!("sha256 mismatch: the module is {sha256}, the pin is {pin}"),
        )),
        _ => Ok(()),
    }
}

/// Where a stored `Plugin` document's module comes from; `None` if it does not parse.
pub(crate) fn plugin_source(yaml: &str) -> Option<PluginSource> {
    let (config, _) = load_str(Path::new(INPUT), yaml).ok()?;
    let plugin = config.plugins.into_values().next()?;
    Some(plugin.source.clone())
}

/// The plugins a stored `FilterChain` document runs.
pub(crate) fn chain_plugins(yaml: &str) -> Vec<String> {
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(yaml) else {
        return Vec::new();
    };
    doc.get("spec")
        .and_then(|spec| spec.get("filters"))
        .and_then(|filters| filters.as_sequence())
        .map(|filters| {
            filters
                .iter()
                .filter_map(|f| f.get("plugin").and_then(|p| p.as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Splits on `---` lines as the proxy's loader does; yields each document that has content.
fn split_documents(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("---") && line[3..].trim().is_empty() {
            docs.push(std::mem::take(&mut current));
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push(current);
    docs.retain(|doc| {
        doc.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

#[cfg(test)]
mod tests;
