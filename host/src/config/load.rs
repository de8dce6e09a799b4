//! Loading a configuration file: split it into `---` documents, parse each against its kind's
//! schema, then have `validate` check the set as a whole. Every error names the file, the line
//! and the field. Nothing here touches the running proxy:
//! a file either resolves into a complete [`Config`] or is rejected.

use std::{
    fmt,
    path::{Path, PathBuf},
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
    /// The resource the error is in, as `(kind, metadata.name)`, once its header was read
    /// (boxed: errors travel in `Result`s and most are never inspected this far).
    pub resource: Option<Box<(String, String)>>,
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

    /// The error for a second resource of `kind` named `name`, located at that second one.
    pub(super) fn duplicate(&self, kind: &str, name: &str) -> ConfigError {
        let second = self
            .docs
            .iter()
            .filter(|d| d.kind == kind && d.name == name)
            .nth(1);
        ConfigError {
            file: self.file.clone(),
            line: second.map(|d| d.start_line + locate(&d.text, "metadata.name")),
            field: "metadata.name".into(),
            message: format!("duplicate {kind} name `{name}`"),
            resource: Some(Box::new((kind.to_owned(), name.to_owned()))),
        }
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
            resource: Some(Box::new((kind.to_owned(), name.to_owned()))),
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
        resource: None,
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
    let config = super::validate::resolve(&map, &base, authored)?;
    Ok((config, map))
}

/// The documents of a file, parsed but not yet validated as a set.
#[derive(Default)]
pub(super) struct Authored {
    pub(super) listeners: Vec<(String, model::ListenerSpec)>,
    pub(super) clusters: Vec<(String, model::ClusterSpec)>,
    pub(super) chains: Vec<(String, model::FilterChainSpec)>,
    pub(super) plugins: Vec<(String, model::PluginSpec)>,
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
    let resource = Box::new((header.kind.clone(), header.metadata.name.clone()));
    parse_resource(map, authored, start_line, text, header).map_err(|mut e| {
        e.resource = Some(resource);
        e
    })
}

/// The rest of [`parse_document`], once the header was read.
fn parse_resource(
    map: &mut SourceMap,
    authored: &mut Authored,
    start_line: usize,
    text: String,
    header: model::Header,
) -> Result<(), ConfigError> {
    let file = map.file.clone();
    if header.api_version != "weft/v1" {
        return Err(ConfigError {
            file,
            line: Some(start_line + locate(&text, "apiVersion")),
            field: "apiVersion".into(),
            message: format!(
                "unsupported apiVersion `{}`, expected `weft/v1`",
                header.api_version
            ),
            resource: None,
        });
    }
    let name = header.metadata.name.clone();
    if !valid_name(&name) {
        return Err(ConfigError {
            file,
            line: Some(start_line + locate(&text, "metadata.name")),
            field: "metadata.name".into(),
            message: format!("invalid name `{name}`: use letters, digits, `-`, `_` and `.`"),
            resource: None,
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
                resource: None,
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
            resource: None,
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

pub(super) fn valid_name(name: &str) -> bool {
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

#[cfg(test)]
mod tests;
