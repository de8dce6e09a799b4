//! Istio's standard request metrics, in weft's labeled-metric convention (`family{label="…"}`,
//! see `weft_sdk::metric_name`):
//!
//! | family | type | sample |
//! |---|---|---|
//! | `istio_requests_total` | counter | 1 per request |
//! | `istio_request_duration_milliseconds` | histogram | the request's duration, whole ms |
//! | `istio_request_bytes` | histogram | request size: headers + body (`request.total_size`), else the body |
//! | `istio_response_bytes` | histogram | response size: headers + body (`response.total_size`), else the body |
//!
//! Every series has the same four labels: `response_code` (`0` when there was no response),
//! `request_method` (the standard methods; anything else is `OTHER`, so clients cannot make
//! series without end), `destination_cluster` and `source_principal` (`unknown` when absent).
//! Metric ids are defined once per label set and kept per instance.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use weft_sdk::{Counter, Histogram, metric_name};

/// The most label sets an instance keeps ids for; past it, ids are looked up per request
/// (the host caps the series a family may have anyway).
const MAX_CACHED: usize = 10_000;

/// The four metrics of one label set.
#[derive(Debug, Clone, Copy)]
struct Series {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl Series {
    fn define(labels: &str) -> Option<Series> {
        let name = |family: &str| {
            let mut name = String::with_capacity(family.len() + labels.len());
            name.push_str(family);
            name.push_str(labels);
            name
        };
        Some(Series {
            requests: Counter::define(&name("istio_requests_total")).ok()?,
            duration: Histogram::define(&name("istio_request_duration_milliseconds")).ok()?,
            request_bytes: Histogram::define(&name("istio_request_bytes")).ok()?,
            response_bytes: Histogram::define(&name("istio_response_bytes")).ok()?,
        })
    }
}

/// Metric ids by label set (the `{…}` part of their names), for one instance.
#[derive(Debug, Default)]
pub struct SeriesCache {
    series: RefCell<HashMap<String, Option<Series>>>,
    /// The label values of the last sample and their series: most requests in a row share
    /// them, and comparing them is cheaper than writing and hashing the label set.
    last: RefCell<Option<Last>>,
}

/// The label values a sample was recorded with, and their series.
#[derive(Debug)]
struct Last {
    status: Option<u16>,
    method: &'static str,
    cluster: Option<String>,
    principal: Option<String>,
    series: Option<Series>,
}

impl Last {
    fn labels_of(&self, sample: &Sample<'_>) -> bool {
        self.status == sample.status
            // `method_label`'s names: the same pointer when equal, almost always.
            && (std::ptr::eq(self.method, sample.method) || self.method == sample.method)
            && self.cluster.as_deref() == sample.cluster
            && self.principal.as_deref() == sample.principal
    }
}

/// What one finished request contributes.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The response status; `None` when there was no response.
    pub status: Option<u16>,
    /// The normalized method (see [`method_label`]).
    pub method: &'static str,
    /// The cluster the request went to, if known.
    pub cluster: Option<&'a str>,
    /// The client's verified mTLS identity, if any.
    pub principal: Option<&'a str>,
    /// How long it took, if known.
    pub duration: Option<Duration>,
    /// Request bytes, if known.
    pub request_bytes: Option<u64>,
    /// Response bytes, if known.
    pub response_bytes: Option<u64>,
}

impl SeriesCache {
    /// Records `sample`. Metrics the host refuses (e.g. past its series cap) are skipped.
    pub fn record(&self, sample: &Sample<'_>) {
        let last = self
            .last
            .borrow()
            .as_ref()
            .filter(|last| last.labels_of(sample))
            .map(|last| last.series);
        let series = match last {
            Some(series) => series,
            None => {
                let series = self.find(sample);
                // A label set the host refused is asked for again next time, as before.
                if series.is_some() {
                    *self.last.borrow_mut() = Some(Last {
                        status: sample.status,
                        method: sample.method,
                        cluster: sample.cluster.map(str::to_owned),
                        principal: sample.principal.map(str::to_owned),
                        series,
                    });
                }
                series
            }
        };
        let Some(series) = series else {
            return;
        };
        // A metric that cannot be written is not worth failing anything for.
        let _ = series.requests.increment(1);
        if let Some(duration) = sample.duration {
            let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
            let _ = series.duration.record(millis);
        }
        if let Some(bytes) = sample.request_bytes {
            let _ = series.request_bytes.record(bytes);
        }
        if let Some(bytes) = sample.response_bytes {
            let _ = series.response_bytes.record(bytes);
        }
    }

    /// The series of `sample`'s label set, defined the first time.
    fn find(&self, sample: &Sample<'_>) -> Option<Series> {
        let mut buffer = itoa::Buffer::new();
        let code = match sample.status {
            Some(status) => buffer.format(status),
            None => "0",
        };
        let labels = metric_name(
            "",
            &[
                ("response_code", code),
                ("request_method", sample.method),
                ("destination_cluster", sample.cluster.unwrap_or("unknown")),
                ("source_principal", sample.principal.unwrap_or("unknown")),
            ],
        );
        let cached = self.series.borrow().get(&labels).copied();
        match cached {
            Some(series) => series,
            None => {
                let series = Series::define(&labels);
                let mut cache = self.series.borrow_mut();
                if cache.len() < MAX_CACHED {
                    cache.insert(labels, series);
                }
                series
            }
        }
    }
}

/// The `request_method` label: a standard method as it is, anything else `OTHER`.
pub fn method_label(method: Option<&str>) -> &'static str {
    match method {
        Some("GET") => "GET",
        Some("HEAD") => "HEAD",
        Some("POST") => "POST",
        Some("PUT") => "PUT",
        Some("DELETE") => "DELETE",
        Some("PATCH") => "PATCH",
        Some("OPTIONS") => "OPTIONS",
        Some("CONNECT") => "CONNECT",
        Some("TRACE") => "TRACE",
        Some(_) => "OTHER",
        None => "unknown",
    }
}
