//! Metrics that plugins define (`proxy_define_metric` and friends), kept in the proxy's
//! Prometheus registry so they appear on `/stats/prometheus` beside weft's own.
//!
//! Semantics follow Envoy: a metric id carries its type in the low two bits; a counter only
//! grows (`increment` by a positive offset, `record` adds), a gauge moves both ways (`record`
//! sets it), a histogram only records (buckets 1, 2, 4, … 2²³); unknown ids are `NotFound`,
//! wrong operations for a type `BadArgument`. Defining a name again returns the same id.
//!
//! # Names
//!
//! A plain name (no `{`) is made valid for Prometheus: characters outside `[a-zA-Z0-9_:]`
//! (Envoy-style dots, dashes) become `_`, and a leading digit gets a `_` in front —
//! `envoy.wasm-custom/metric` is exported as `envoy_wasm_custom_metric`.
//!
//! A name with labels, in Prometheus' text syntax, defines one labeled series of a family:
//!
//! ```text
//! istio_requests_total{response_code="200",request_method="GET",destination_cluster="web"}
//! ```
//!
//! - The family (before `{`) is made valid as a plain name is.
//! - Label names are `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`, each at most once, at
//!   most [`MAX_LABELS`] of them; histograms cannot use `le`.
//! - A value is any UTF-8 between double quotes; `"` and `\` inside it are written `\"` and
//!   `\\`, and `\n` is a newline. A trailing `,` before `}` is allowed; whitespace outside
//!   values is not, nor anything after `}`.
//! - The first definition fixes the family's type and its set of label names; a later
//!   definition with another type or another set (in any order) is `BadArgument`.
//! - `family` and `family{}` are the same series of a family without labels.
//! - A family holds at most [`MAX_SERIES_PER_FAMILY`] series, and all plugins together at most
//!   [`MAX_SERIES`]: a definition past either is `BadArgument`, so a plugin cannot exhaust
//!   memory with label values. Names longer than [`MAX_NAME_BYTES`] are `BadArgument`.
//!
//! Malformed names are `BadArgument`, as is a family name weft itself uses.

use std::{
    collections::HashMap,
    sync::{Mutex, RwLock},
};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use weft_abi::{MetricType, Status};

/// The most series one family may have.
pub const MAX_SERIES_PER_FAMILY: usize = 10_000;

/// The most series (distinct names, after labels are put in order) all plugins may define.
pub const MAX_SERIES: usize = 100_000;

/// The longest metric name, labels included, in bytes.
pub const MAX_NAME_BYTES: usize = 4096;

/// The most labels one name may carry.
pub const MAX_LABELS: usize = 64;

/// The longest family name, in bytes.
const MAX_FAMILY_BYTES: usize = 200;

/// The help text of every plugin metric.
const HELP: &str = "Defined by a weft plugin.";

#[derive(Clone)]
enum Metric {
    Counter(IntCounter),
    Gauge(IntGauge),
    Histogram(Histogram),
}

/// A family as registered with Prometheus.
enum FamilyVec {
    Counter(IntCounterVec),
    Gauge(IntGaugeVec),
    Histogram(HistogramVec),
}

struct Family {
    vec: FamilyVec,
    /// Label names in registration order; every series gives its values in this order.
    labels: Vec<String>,
    series: usize,
}

/// A series: its family and its label values in the family's order.
type SeriesKey = (String, Vec<String>);

#[derive(Default)]
struct Definitions {
    families: HashMap<String, Family>,
    ids: HashMap<SeriesKey, u32>,
}

/// The metrics defined by plugins.
pub struct PluginMetrics {
    registry: Registry,
    definitions: Mutex<Definitions>,
    defined: RwLock<Vec<Metric>>,
}

impl PluginMetrics {
    /// Plugin metrics registered in `registry`.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            definitions: Mutex::new(Definitions::default()),
            defined: RwLock::new(Vec::new()),
        }
    }

    /// Defines (or finds) the metric `name` of `kind` — a plain name or a labeled series (see
    /// the module docs); returns its id.
    pub fn define(&self, kind: MetricType, name: &str) -> Result<u32, Status> {
        let parsed = parse_name(name).ok_or(Status::BadArgument)?;
        let family_name = prometheus_name(parsed.family).ok_or(Status::BadArgument)?;
        let mut definitions = self
            .definitions
            .lock()
            .map_err(|_| Status::InternalFailure)?;
        let Definitions { families, ids } = &mut *definitions;
        if !families.contains_key(&family_name) {
            let family = self.register(kind, &family_name, &parsed.labels)?;
            families.insert(family_name.clone(), family);
        }
        let family = families
            .get_mut(&family_name)
            .ok_or(Status::InternalFailure)?;
        if !family.vec.is(kind) {
            return Err(Status::BadArgument);
        }
        let values = ordered_values(&family.labels, parsed.labels).ok_or(Status::BadArgument)?;
        let key = (family_name, values);
        if let Some(&id) = ids.get(&key) {
            return Ok(id);
        }
        if family.series >= MAX_SERIES_PER_FAMILY || ids.len() >= MAX_SERIES {
            return Err(Status::BadArgument);
        }
        let metric = family.vec.series(&key.1)?;
        let mut defined = self.defined.write().map_err(|_| Status::InternalFailure)?;
        let index = u32::try_from(defined.len()).map_err(|_| Status::InternalFailure)?;
        if index >= u32::MAX >> 2 {
            return Err(Status::InternalFailure);
        }
        defined.push(metric);
        let id = (index << 2) | kind as u32;
        family.series += 1;
        ids.insert(key, id);
        Ok(id)
    }

    /// Creates the family `name` of `kind` with the label names of `labels` and registers it.
    fn register(
        &self,
        kind: MetricType,
        name: &str,
        labels: &[(&str, String)],
    ) -> Result<Family, Status> {
        let label_names: Vec<&str> = labels.iter().map(|(label, _)| *label).collect();
        let vec = match kind {
            MetricType::Counter => {
                IntCounterVec::new(Opts::new(name, HELP), &label_names).map(FamilyVec::Counter)
            }
            MetricType::Gauge => {
                IntGaugeVec::new(Opts::new(name, HELP), &label_names).map(FamilyVec::Gauge)
            }
            MetricType::Histogram => {
                let buckets = prometheus::exponential_buckets(1.0, 2.0, 24)
                    .map_err(|_| Status::InternalFailure)?;
                HistogramVec::new(
                    HistogramOpts::new(name, HELP).buckets(buckets),
                    &label_names,
                )
                .map(FamilyVec::Histogram)
            }
        }
        // Invalid, duplicate or reserved (`le`) label names.
        .map_err(|_| Status::BadArgument)?;
        let collector: Box<dyn prometheus::core::Collector> = match &vec {
            FamilyVec::Counter(v) => Box::new(v.clone()),
            FamilyVec::Gauge(v) => Box::new(v.clone()),
            FamilyVec::Histogram(v) => Box::new(v.clone()),
        };
        // A name weft itself uses cannot be taken by a plugin.
        self.registry
            .register(collector)
            .map_err(|_| Status::BadArgument)?;
        Ok(Family {
            vec,
            labels: label_names.into_iter().map(str::to_owned).collect(),
            series: 0,
        })
    }

    fn lookup(&self, id: u32) -> Result<Metric, Status> {
        let defined = self.defined.read().map_err(|_| Status::InternalFailure)?;
        let metric = defined.get((id >> 2) as usize).ok_or(Status::NotFound)?;
        let kind = MetricType::try_from(id & 0b11).map_err(|_| Status::NotFound)?;
        if !same_kind(metric, kind) {
            return Err(Status::NotFound);
        }
        Ok(metric.clone())
    }

    /// `proxy_increment_metric`.
    pub fn increment(&self, id: u32, offset: i64) -> Result<(), Status> {
        match self.lookup(id)? {
            Metric::Counter(c) if offset > 0 => c.inc_by(offset.unsigned_abs()),
            Metric::Counter(_) | Metric::Histogram(_) => return Err(Status::BadArgument),
            Metric::Gauge(g) => g.add(offset),
        }
        Ok(())
    }

    /// `proxy_record_metric`.
    pub fn record(&self, id: u32, value: u64) -> Result<(), Status> {
        match self.lookup(id)? {
            Metric::Counter(c) => c.inc_by(value),
            Metric::Gauge(g) => g.set(i64::try_from(value).unwrap_or(i64::MAX)),
            Metric::Histogram(h) => h.observe(value as f64),
        }
        Ok(())
    }

    /// `proxy_get_metric`.
    pub fn get(&self, id: u32) -> Result<u64, Status> {
        match self.lookup(id)? {
            Metric::Counter(c) => Ok(c.get()),
            Metric::Gauge(g) => Ok(u64::try_from(g.get()).unwrap_or(0)),
            Metric::Histogram(_) => Err(Status::BadArgument),
        }
    }
}

impl FamilyVec {
    fn is(&self, kind: MetricType) -> bool {
        matches!(
            (self, kind),
            (Self::Counter(_), MetricType::Counter)
                | (Self::Gauge(_), MetricType::Gauge)
                | (Self::Histogram(_), MetricType::Histogram)
        )
    }

    /// The series with label `values` (in the family's order), created if new.
    fn series(&self, values: &[String]) -> Result<Metric, Status> {
        match self {
            Self::Counter(v) => v.get_metric_with_label_values(values).map(Metric::Counter),
            Self::Gauge(v) => v.get_metric_with_label_values(values).map(Metric::Gauge),
            Self::Histogram(v) => v
                .get_metric_with_label_values(values)
                .map(Metric::Histogram),
        }
        .map_err(|_| Status::BadArgument)
    }
}

fn same_kind(metric: &Metric, kind: MetricType) -> bool {
    matches!(
        (metric, kind),
        (Metric::Counter(_), MetricType::Counter)
            | (Metric::Gauge(_), MetricType::Gauge)
            | (Metric::Histogram(_), MetricType::Histogram)
    )
}

/// The label values of `labels` in the order of `names`; `None` unless `labels` has exactly
/// the names of `names`, each once.
fn ordered_values(names: &[String], mut labels: Vec<(&str, String)>) -> Option<Vec<String>> {
    if labels.len() != names.len() {
        return None;
    }
    names
        .iter()
        .map(|name| {
            let at = labels.iter().position(|(label, _)| label == name)?;
            Some(labels.swap_remove(at).1)
        })
        .collect()
}

/// A metric name split into its family and its labels (name, unescaped value), in the order
/// written.
#[derive(Debug, PartialEq, Eq)]
struct ParsedName<'a> {
    family: &'a str,
    labels: Vec<(&'a str, String)>,
}

/// Splits `name` as the module docs describe; `None` if it is malformed.
fn parse_name(name: &str) -> Option<ParsedName<'_>> {
    let Some((family, rest)) = name.split_once('{') else {
        return Some(ParsedName {
            family: name,
            labels: Vec::new(),
        });
    };
    if name.len() > MAX_NAME_BYTES {
        return None;
    }
    let mut labels: Vec<(&str, String)> = Vec::new();
    let mut rest = rest;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return after.is_empty().then_some(ParsedName { family, labels });
        }
        let (label, after) = rest.split_once("=\"")?;
        if labels.len() >= MAX_LABELS
            || !valid_label_name(label)
            || labels.iter().any(|(seen, _)| *seen == label)
        {
            return None;
        }
        let (value, after) = quoted_value(after)?;
        labels.push((label, value));
        rest = match after.strip_prefix(',') {
            Some(after) => after,
            None if after.starts_with('}') => after,
            None => return None,
        };
    }
}

/// The value up to the closing `"` of `text` (which follows the opening one), unescaped, and
/// what follows the closing quote.
fn quoted_value(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[at + 1..])),
            '\\' => match chars.next()?.1 {
                '\\' => value.push('\\'),
                '"' => value.push('"'),
                'n' => value.push('\n'),
                _ => return None,
            },
            c => value.push(c),
        }
    }
    None
}

/// A Prometheus label name a plugin may use: `[a-zA-Z_][a-zA-Z0-9_]*`, without the reserved
/// `__` prefix.
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// A plugin's metric name as Prometheus allows it: `[a-zA-Z_:][a-zA-Z0-9_:]*`, other characters
/// (Envoy-style dots, dashes) becoming `_`.
fn prometheus_name(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_FAMILY_BYTES {
        return None;
    }
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    Some(out)
}

#[cfg(test)]
mod tests;
