//! Metrics that plugins define (`proxy_define_metric` and friends), kept in the proxy's
//! Prometheus registry so they appear on `/stats/prometheus` beside weft's own.
//!
//! Semantics follow Envoy: a metric id carries its type in the low two bits; a counter only
//! grows (`increment` by a positive offset, `record` adds), a gauge moves both ways (`record`
//! sets it), a histogram only records; unknown ids are `NotFound`, wrong operations for a type
//! `BadArgument`. Defining a name again returns a handle on the same metric.

use std::{
    collections::HashMap,
    sync::{Mutex, RwLock},
};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};
use weft_abi::{MetricType, Status};

#[derive(Clone)]
enum Metric {
    Counter(IntCounter),
    Gauge(IntGauge),
    Histogram(Histogram),
}

/// The metrics defined by plugins.
pub struct PluginMetrics {
    registry: Registry,
    by_name: Mutex<HashMap<String, Metric>>,
    defined: RwLock<Vec<Metric>>,
}

impl PluginMetrics {
    /// Plugin metrics registered in `registry`.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            by_name: Mutex::new(HashMap::new()),
            defined: RwLock::new(Vec::new()),
        }
    }

    /// Defines (or finds) the metric `name` of `kind`; returns its id.
    pub fn define(&self, kind: MetricType, name: &str) -> Result<u32, Status> {
        let name = prometheus_name(name).ok_or(Status::BadArgument)?;
        let mut by_name = self.by_name.lock().map_err(|_| Status::InternalFailure)?;
        let metric = match by_name.get(&name) {
            Some(existing) if same_kind(existing, kind) => existing.clone(),
            Some(_) => return Err(Status::BadArgument),
            None => {
                let help = "Defined by a weft plugin.";
                let metric = match kind {
                    MetricType::Counter => {
                        IntCounter::with_opts(Opts::new(&name, help)).map(Metric::Counter)
                    }
                    MetricType::Gauge => {
                        IntGauge::with_opts(Opts::new(&name, help)).map(Metric::Gauge)
                    }
                    MetricType::Histogram => {
                        let buckets = prometheus::exponential_buckets(1.0, 2.0, 24)
                            .map_err(|_| Status::InternalFailure)?;
                        Histogram::with_opts(HistogramOpts::new(&name, help).buckets(buckets))
                            .map(Metric::Histogram)
                    }
                }
                .map_err(|_| Status::BadArgument)?;
                let collector: Box<dyn prometheus::core::Collector> = match &metric {
                    Metric::Counter(m) => Box::new(m.clone()),
                    Metric::Gauge(m) => Box::new(m.clone()),
                    Metric::Histogram(m) => Box::new(m.clone()),
                };
                // A name weft itself uses cannot be taken by a plugin.
                self.registry
                    .register(collector)
                    .map_err(|_| Status::BadArgument)?;
                by_name.insert(name, metric.clone());
                metric
            }
        };
        let mut defined = self.defined.write().map_err(|_| Status::InternalFailure)?;
        let index = u32::try_from(defined.len()).map_err(|_| Status::InternalFailure)?;
        if index >= u32::MAX >> 2 {
            return Err(Status::InternalFailure);
        }
        defined.push(metric);
        Ok((index << 2) | kind as u32)
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

fn same_kind(metric: &Metric, kind: MetricType) -> bool {
    matches!(
        (metric, kind),
        (Metric::Counter(_), MetricType::Counter)
            | (Metric::Gauge(_), MetricType::Gauge)
            | (Metric::Histogram(_), MetricType::Histogram)
    )
}

/// A plugin's metric name as Prometheus allows it: `[a-zA-Z_:][a-zA-Z0-9_:]*`, other characters
/// (Envoy-style dots, dashes) becoming `_`.
fn prometheus_name(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 200 {
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
