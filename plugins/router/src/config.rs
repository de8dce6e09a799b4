//! The router's configuration as authored: the serde model of the chain entry's `config`,
//! checked and compiled into a [`RouteTable`](crate::table::RouteTable) by
//! [`Filter::configure`](weft_sdk::Filter::configure).
//!
//! ```yaml
//! routes:
//!   - name: api-v2                       # optional; set as the `xds.route_name` property
//!     match:
//!       prefix: /api/v2/                 # or `exact: /healthz`, or `regex: /users/[0-9]+`
//!       methods: [GET, POST]             # any of them (none: every method)
//!       headers:                         # every one must match
//!         - {name: x-tenant, exact: acme}        # or prefix / regex / present: true|false
//!       query:                           # every one must match (percent-decoded values)
//!         - {name: debug, present: true}         # or exact / regex
//!     rewritePrefix: /v2/                # replaces the matched prefix; the query is kept
//!     cluster: api-v2
//!   - match: {prefix: /web, headers: {x-canary: 1}}     # map form: NAME: exact value
//!     weightedClusters:                  # instead of `cluster`: a deterministic split
//!       - {cluster: web-v2, weight: 90}
//!       - {cluster: web-v1, weight: 10}
//!   - cluster: web                       # no `match`: catches every request
//! ```

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// One route: what it matches and where a matching request goes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteSpec {
    /// A name for logs and telemetry (the `xds.route_name` property of a routed request).
    #[serde(default)]
    pub name: Option<String>,
    /// What the request must look like; absent or empty matches every request.
    #[serde(default, rename = "match")]
    pub matcher: Option<MatchSpec>,
    /// The one cluster matching requests go to.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Clusters with weights: matching requests are split between them.
    #[serde(default)]
    pub weighted_clusters: Option<Vec<WeightedClusterSpec>>,
    /// Replaces the matched `prefix` in the path the upstream sees.
    #[serde(default)]
    pub rewrite_prefix: Option<String>,
}

/// The conditions of a route; every one present must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchSpec {
    /// The path (without the query) starts with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The path (without the query) is exactly this.
    #[serde(default)]
    pub exact: Option<String>,
    /// The whole path (without the query) matches this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// The method is one of these (compared in upper case).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Conditions on request headers: a list of matchers, or a map of exact values.
    #[serde(default)]
    pub headers: Matchers<HeaderMatchSpec>,
    /// Conditions on query parameters: a list of matchers, or a map of exact values.
    #[serde(default)]
    pub query: Matchers<QueryMatchSpec>,
}

/// A condition on one request header (its first value).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderMatchSpec {
    /// The header's name (case-insensitive; `:authority` and other pseudo-headers work too).
    pub name: String,
    /// The value is exactly this.
    #[serde(default)]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The whole value matches this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: the header is present (any value); `false`: it is absent.
    #[serde(default)]
    pub present: Option<bool>,
}

/// A condition on one query parameter (its first occurrence, percent-decoded).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QueryMatchSpec {
    /// The parameter's name (case-sensitive).
    pub name: String,
    /// The value is exactly this.
    #[serde(default)]
    pub exact: Option<String>,
    /// The whole value matches this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: the parameter is present (`?debug` counts); `false`: it is absent.
    #[serde(default)]
    pub present: Option<bool>,
}

/// One cluster of a weighted split.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WeightedClusterSpec {
    /// The cluster's name.
    pub cluster: String,
    /// Its share: this weight over the sum of the route's weights (0 turns it off).
    pub weight: u32,
}

/// A matcher that can be written as `{NAME: VALUE}` (the value must match exactly).
pub trait ExactByName {
    /// The matcher for `name` with exact value `value`.
    fn exact(name: String, value: String) -> Self;
}

impl ExactByName for HeaderMatchSpec {
    fn exact(name: String, exact: String) -> Self {
        HeaderMatchSpec {
            name,
            exact: Some(exact),
            ..HeaderMatchSpec::default()
        }
    }
}

impl ExactByName for QueryMatchSpec {
    fn exact(name: String, exact: String) -> Self {
        QueryMatchSpec {
            name,
            exact: Some(exact),
            ..QueryMatchSpec::default()
        }
    }
}

/// Matchers written as a list (`[{name: x, exact: y}]`) or a map of exact values (`{x: y}`).
#[derive(Debug)]
pub struct Matchers<T>(pub Vec<T>);

impl<T> Default for Matchers<T> {
    fn default() -> Self {
        Matchers(Vec::new())
    }
}

impl<'de, T: Deserialize<'de> + ExactByName> Deserialize<'de> for Matchers<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MatchersVisitor(PhantomData))
    }
}

struct MatchersVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de> + ExactByName> Visitor<'de> for MatchersVisitor<T> {
    type Value = Matchers<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of matchers or a map of names to exact values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut matchers = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(matcher) = seq.next_element()? {
            matchers.push(matcher);
        }
        Ok(Matchers(matchers))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut matchers = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((name, ScalarText(value))) = map.next_entry::<String, ScalarText>()? {
            matchers.push(T::exact(name, value));
        }
        Ok(Matchers(matchers))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Matchers::default())
    }
}

/// A map form's value: a string, or a number or boolean taken as written (`{x-canary: 1}`
/// means the value `1`).
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarTextVisitor)
    }
}

struct ScalarTextVisitor;

impl Visitor<'_> for ScalarTextVisitor {
    type Value = ScalarText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(ScalarText(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(ScalarText(value))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(ScalarText(value.to_string()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(ScalarText(value.to_string()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(ScalarText(value.to_string()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(ScalarText(value.to_string()))
    }
}
