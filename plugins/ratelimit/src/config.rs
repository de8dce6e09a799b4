//! The plugin's configuration: the YAML a chain entry carries, parsed and checked once in
//! `configure` into what a request needs (the key's kind, the bucket's shape, the shared-data
//! key prefix, the counters).
//!
//! ```yaml
//! - plugin: ratelimit
//!   name: per-user              # instance name: buckets are namespaced by it
//!   config:
//!     key: header:x-user        # client_ip | principal | route | header:NAME
//!     rate: 100/s               # N/s | N/m | N/h
//!     burst: 200                # default: N of rate
//! ```

use std::fmt;

use serde::Deserialize;
use weft_sdk::{Counter, metric_name, property_string};

use crate::bucket::Limits;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// What a bucket is kept per.
    pub key: Key,
    /// How fast a bucket refills.
    pub rate: Rate,
    /// The bucket's size: requests allowed at once after a quiet time. Default: the rate's N.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Resolved in `configure`.
    #[serde(skip)]
    pub resolved: Resolved,
}

/// What `configure` derives from the configuration.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The bucket's shape.
    pub limits: Limits,
    /// `burst` in decimal: the `x-ratelimit-limit` header.
    pub limit_header: String,
    /// Shared-data keys start with this: `ratelimit:<instance name>:<key kind>:`.
    pub prefix: String,
    /// `ratelimit_allowed_total{filter="<instance name>"}`.
    pub allowed: Option<Counter>,
    /// `ratelimit_limited_total{filter="<instance name>"}`.
    pub limited: Option<Counter>,
}

/// What a bucket is kept per.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Key {
    /// The client's IP address (`source.address` without the port).
    ClientIp,
    /// The client's verified mTLS identity; clients without one share the bucket `anonymous`.
    Principal,
    /// The request path without its query.
    Route,
    /// A request header's value (lowercase name); requests without it are not limited.
    Header(String),
}

impl Key {
    /// The kind's tag in shared-data keys.
    fn tag(&self) -> String {
        match self {
            Key::ClientIp => "client_ip".into(),
            Key::Principal => "principal".into(),
            Key::Route => "route".into(),
            Key::Header(name) => format!("header:{name}"),
        }
    }
}

impl TryFrom<String> for Key {
    type Error = String;

    fn try_from(spec: String) -> Result<Self, String> {
        match spec.as_str() {
            "client_ip" => Ok(Key::ClientIp),
            "principal" => Ok(Key::Principal),
            "route" => Ok(Key::Route),
            other => match other.strip_prefix("header:") {
                Some(name) if is_header_name(name) => Ok(Key::Header(name.to_ascii_lowercase())),
                Some(name) => Err(format!("`{name}` is not a valid header name")),
                None => Err(format!(
                    "unknown key `{other}`; expected client_ip, principal, route or header:NAME"
                )),
            },
        }
    }
}

/// An HTTP field name: a non-empty token (RFC 9110), not a pseudo-header.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A refill rate: `count` tokens per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Rate {
    /// Tokens per period.
    pub count: u64,
    /// The period.
    pub period: Period,
}

/// A rate's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// `/s`.
    Second,
    /// `/m`.
    Minute,
    /// `/h`.
    Hour,
}

impl Period {
    /// The period in nanoseconds.
    pub fn nanos(self) -> u64 {
        const SECOND: u64 = 1_000_000_000;
        match self {
            Period::Second => SECOND,
            Period::Minute => 60 * SECOND,
            Period::Hour => 3_600 * SECOND,
        }
    }
}

impl TryFrom<String> for Rate {
    type Error = String;

    fn try_from(spec: String) -> Result<Self, String> {
        let bad = || format!("`{spec}` is not a rate; expected N/s, N/m or N/h with N > 0");
        let (count, unit) = spec.split_once('/').ok_or_else(bad)?;
        let period = match unit {
            "s" => Period::Second,
            "m" => Period::Minute,
            "h" => Period::Hour,
            _ => return Err(bad()),
        };
        let count: u64 = count.parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(bad());
        }
        Ok(Rate { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period {
            Period::Second => "s",
            Period::Minute => "m",
            Period::Hour => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl Config {
    /// Checks the numbers and resolves everything a request needs.
    pub fn resolve(&mut self) -> Result<(), String> {
        let burst = self.burst.unwrap_or(self.rate.count);
        if burst == 0 {
            return Err("burst: must be at least 1".into());
        }
        let limits =
            Limits::new(self.rate.count, self.rate.period.nanos(), burst).ok_or_else(|| {
                format!(
                    "rate: `{}` with burst {burst} is out of range (at most one token per \
                     nanosecond, and a full refill within 100 years)",
                    self.rate
                )
            })?;
        // The instance name (the chain entry's `name`) keeps two ratelimit entries' buckets
        // apart; outside a proxy there is none.
        let name = property_string(&["plugin_name"])
            .ok()
            .flatten()
            .unwrap_or_else(|| "ratelimit".into());
        let labels = [("filter", name.as_str())];
        self.resolved = Resolved {
            limits,
            limit_header: burst.to_string(),
            prefix: format!("ratelimit:{name}:{}:", self.key.tag()),
            allowed: Counter::define(&metric_name("ratelimit_allowed_total", &labels)).ok(),
            limited: Counter::define(&metric_name("ratelimit_limited_total", &labels)).ok(),
        };
        Ok(())
    }
}
