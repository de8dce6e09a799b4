//! The compiled routes: [`RouteTable::compile`] checks the authored routes (errors name the
//! route index and field, e.g. `routes[3].weightedClusters: weights must sum to more than 0`)
//! and turns them into what a request is matched against — lowercase header names, upper-case
//! methods, anchored regexes, weights ready for the split — so nothing is parsed per request.

use std::cell::Cell;

use regex_lite::Regex;

use crate::config::{HeaderMatchSpec, MatchSpec, QueryMatchSpec, RouteSpec, WeightedClusterSpec};

/// Every route, in the order they are tried.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// The routes, first match wins.
    pub(crate) routes: Vec<Route>,
}

/// One compiled route.
#[derive(Debug)]
pub(crate) struct Route {
    /// Its name, if it has one.
    pub(crate) name: Option<Box<str>>,
    /// The condition on the path (without the query).
    pub(crate) path: PathMatch,
    /// Methods it accepts, upper case; empty: every method.
    pub(crate) methods: Box<[Box<str>]>,
    /// Conditions on headers, names in lower case.
    pub(crate) headers: Box<[NamedMatch]>,
    /// Conditions on query parameters.
    pub(crate) query: Box<[NamedMatch]>,
    /// Where a matching request goes.
    pub(crate) target: Target,
    /// What replaces the matched prefix, with a `PathMatch::Prefix` only.
    pub(crate) rewrite_prefix: Option<Box<str>>,
}

/// The condition on the path.
#[derive(Debug)]
pub(crate) enum PathMatch {
    /// Every path.
    Any,
    /// The path starts with this.
    Prefix(Box<str>),
    /// The path is this.
    Exact(Box<str>),
    /// The whole path matches (the regex is anchored).
    Regex(Regex),
}

/// A condition on a named value (a header or a query parameter).
#[derive(Debug)]
pub(crate) struct NamedMatch {
    /// The header (lower case) or parameter name.
    pub(crate) name: Box<str>,
    /// What its value must be.
    pub(crate) value: ValueMatch,
}

/// A condition on a value that may be absent.
#[derive(Debug)]
pub(crate) enum ValueMatch {
    /// Present and exactly this.
    Exact(Box<str>),
    /// Present and starting with this.
    Prefix(Box<str>),
    /// Present and matching this (anchored).
    Regex(Regex),
    /// Present (`true`) or absent (`false`).
    Present(bool),
}

impl ValueMatch {
    /// Whether `value` (`None`: absent) satisfies the condition.
    pub(crate) fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (ValueMatch::Present(wanted), value) => *wanted == value.is_some(),
            (_, None) => false,
            (ValueMatch::Exact(expected), Some(value)) => **expected == *value,
            (ValueMatch::Prefix(prefix), Some(value)) => value.starts_with(&**prefix),
            (ValueMatch::Regex(regex), Some(value)) => regex.is_match(value),
        }
    }
}

/// Where a matching request goes.
#[derive(Debug)]
pub(crate) enum Target {
    /// One cluster.
    Cluster(Box<str>),
    /// A deterministic weighted split.
    Weighted(Split),
}

/// A smooth weighted round-robin over clusters (nginx's algorithm): each pick adds every
/// cluster's weight to its running score, takes the highest score and takes the total weight
/// off it. Over any run of `total` picks each cluster is chosen exactly `weight` times, spread
/// evenly. The state is per configured filter instance (one per worker), so the split is exact
/// per worker.
#[derive(Debug)]
pub(crate) struct Split {
    /// The clusters with a positive weight, and their weights.
    clusters: Box<[(Box<str>, i64)]>,
    /// Each cluster's running score.
    scores: Box<[Cell<i64>]>,
    /// The sum of the weights.
    total: i64,
}

impl Split {
    /// The cluster for the next request.
    pub(crate) fn pick(&self) -> &str {
        let mut best: Option<(&str, &Cell<i64>)> = None;
        let mut best_score = i64::MIN;
        for ((cluster, weight), score) in self.clusters.iter().zip(self.scores.iter()) {
            let now = score.get() + weight;
            score.set(now);
            if now > best_score {
                best_score = now;
                best = Some((cluster, score));
            }
        }
        match best {
            Some((cluster, score)) => {
                score.set(score.get() - self.total);
                cluster
            }
            // Compile keeps at least one cluster.
            None => "",
        }
    }
}

impl RouteTable {
    /// Checks and compiles `specs`, in order.
    pub fn compile(specs: Vec<RouteSpec>) -> Result<RouteTable, String> {
        if specs.is_empty() {
            return Err("routes: at least one route is required".into());
        }
        let routes = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| compile_route(spec).map_err(|e| format!("routes[{i}]{e}")))
            .collect::<Result<_, _>>()?;
        Ok(RouteTable { routes })
    }
}

/// Compiles one route; errors start with the field path below the route (`.cluster: …`).
fn compile_route(spec: RouteSpec) -> Result<Route, String> {
    let name = match spec.name {
        Some(name) if name.is_empty() => return Err(".name: must not be empty".into()),
        name => name.map(String::into_boxed_str),
    };
    let target = match (spec.cluster, spec.weighted_clusters) {
        (Some(cluster), None) if cluster.is_empty() => {
            return Err(".cluster: must not be empty".into());
        }
        (Some(cluster), None) => Target::Cluster(cluster.into_boxed_str()),
        (None, Some(weighted)) => {
            Target::Weighted(compile_split(weighted).map_err(|e| format!(".weightedClusters{e}"))?)
        }
        _ => return Err(": set exactly one of `cluster` and `weightedClusters`".into()),
    };
    let matcher = spec.matcher.unwrap_or_default();
    let is_prefix = matcher.prefix.is_some();
    let (path, methods, headers, query) =
        compile_match(matcher).map_err(|e| format!(".match{e}"))?;
    if spec.rewrite_prefix.is_some() && !is_prefix {
        return Err(".rewritePrefix: needs a `prefix` match".into());
    }
    Ok(Route {
        name,
        path,
        methods,
        headers,
        query,
        target,
        rewrite_prefix: spec.rewrite_prefix.map(String::into_boxed_str),
    })
}

fn compile_split(specs: Vec<WeightedClusterSpec>) -> Result<Split, String> {
    if specs.is_empty() {
        return Err(": at least one cluster is required".into());
    }
    let mut clusters = Vec::with_capacity(specs.len());
    let mut total: i64 = 0;
    for (j, spec) in specs.into_iter().enumerate() {
        if spec.cluster.is_empty() {
            return Err(format!("[{j}].cluster: must not be empty"));
        }
        if spec.weight > 0 {
            total += i64::from(spec.weight);
            clusters.push((spec.cluster.into_boxed_str(), i64::from(spec.weight)));
        }
    }
    if total == 0 {
        return Err(": weights must sum to more than 0".into());
    }
    let scores = clusters.iter().map(|_| Cell::new(0)).collect();
    Ok(Split {
        clusters: clusters.into_boxed_slice(),
        scores,
        total,
    })
}

type CompiledMatch = (
    PathMatch,
    Box<[Box<str>]>,
    Box<[NamedMatch]>,
    Box<[NamedMatch]>,
);

fn compile_match(spec: MatchSpec) -> Result<CompiledMatch, String> {
    let path = match (spec.prefix, spec.exact, spec.regex) {
        (None, None, None) => PathMatch::Any,
        (Some(prefix), None, None) => PathMatch::Prefix(path_literal(prefix, "prefix")?),
        (None, Some(exact), None) => PathMatch::Exact(path_literal(exact, "exact")?),
        (None, None, Some(regex)) => {
            PathMatch::Regex(anchored(&regex).map_err(|e| format!(".regex: {e}"))?)
        }
        _ => return Err(": set at most one of `prefix`, `exact` and `regex`".into()),
    };
    let methods = spec
        .methods
        .into_iter()
        .enumerate()
        .map(|(k, method)| {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_graphic()) {
                Err(format!(".methods[{k}]: `{method}` is not a method"))
            } else {
                Ok(method.to_ascii_uppercase().into_boxed_str())
            }
        })
        .collect::<Result<_, _>>()?;
    let headers = spec
        .headers
        .0
        .into_iter()
        .enumerate()
        .map(|(k, header)| compile_header(header).map_err(|e| format!(".headers[{k}]{e}")))
        .collect::<Result<_, _>>()?;
    let query = spec
        .query
        .0
        .into_iter()
        .enumerate()
        .map(|(k, param)| compile_query(param).map_err(|e| format!(".query[{k}]{e}")))
        .collect::<Result<_, _>>()?;
    Ok((path, methods, headers, query))
}

fn path_literal(value: String, field: &str) -> Result<Box<str>, String> {
    if !value.starts_with('/') {
        return Err(format!(".{field}: `{value}` must start with `/`"));
    }
    Ok(value.into_boxed_str())
}

/// `pattern` compiled to match whole values only.
fn anchored(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("invalid regex `{pattern}`: {e}"))
}

fn compile_header(spec: HeaderMatchSpec) -> Result<NamedMatch, String> {
    if spec.name.is_empty() {
        return Err(".name: must not be empty".into());
    }
    let value = value_match(spec.exact, spec.prefix, spec.regex, spec.present)
        .ok_or(": set exactly one of `exact`, `prefix`, `regex` and `present`")??;
    Ok(NamedMatch {
        name: spec.name.to_ascii_lowercase().into_boxed_str(),
        value,
    })
}

fn compile_query(spec: QueryMatchSpec) -> Result<NamedMatch, String> {
    if spec.name.is_empty() {
        return Err(".name: must not be empty".into());
    }
    let value = value_match(spec.exact, None, spec.regex, spec.present)
        .ok_or(": set exactly one of `exact`, `regex` and `present`")??;
    Ok(NamedMatch {
        name: spec.name.into_boxed_str(),
        value,
    })
}

/// The one condition set among the four; `None` when not exactly one is.
fn value_match(
    exact: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
    present: Option<bool>,
) -> Option<Result<ValueMatch, String>> {
    Some(match (exact, prefix, regex, present) {
        (Some(exact), None, None, None) => Ok(ValueMatch::Exact(exact.into_boxed_str())),
        (None, Some(prefix), None, None) => Ok(ValueMatch::Prefix(prefix.into_boxed_str())),
        (None, None, Some(regex), None) => anchored(&regex)
            .map(ValueMatch::Regex)
            .map_err(|e| format!(".regex: {e}")),
        (None, None, None, Some(present)) => Ok(ValueMatch::Present(present)),
        _ => return None,
    })
}
