//! The built-in `router` plugin (`builtin://router`): chooses the upstream cluster of each
//! request from an ordered list of routes.
//!
//! ```yaml
//! - plugin: router
//!   config:
//!     routes:
//!       - match: {prefix: /api/, methods: [GET]}
//!         rewritePrefix: /              # /api/users?id=7 reaches the upstream as /users?id=7
//!         cluster: api
//!       - match: {prefix: /, headers: {x-canary: "1"}}
//!         weightedClusters: [{cluster: web-v2, weight: 90}, {cluster: web-v1, weight: 10}]
//!       - cluster: web                  # no match: every other request
//! ```
//!
//! - Routes are tried in order; the first whose every condition holds wins. A route without
//!   `match` (or with an empty one) matches every request. No match: a `404` local reply,
//!   `no route matched`.
//! - Path conditions (`prefix`, `exact`, `regex`; at most one) look at the path without the
//!   query; a regex must match the whole path. `methods`: any of them. `headers` and `query`:
//!   every listed condition — `exact`, `prefix` (headers only), `regex` (whole value) or
//!   `present: true|false` — on the header's first value or the parameter's first occurrence
//!   (percent-decoded, `+` kept). Both also take a map, `{NAME: VALUE}`, meaning `exact`.
//! - A matched route sets the cluster (the `weft.upstream_cluster` property) to its `cluster`,
//!   or to one of its `weightedClusters` by a smooth weighted round-robin (nginx's): exact, not
//!   random — a 90/10 split sends exactly 90 of every 100 requests of a worker to the first.
//!   A named route also sets `xds.route_name`.
//! - `rewritePrefix` (with a `prefix` match only) replaces the matched prefix in `:path`,
//!   keeping the query (see [`table`] and the rules in `Route::rewritten_path`).
//!
//! Configuration errors name the route and field, e.g.
//! `routes[3].weightedClusters: weights must sum to more than 0`.

use std::rc::Rc;

use serde::Deserialize;
use weft_sdk::{Action, Filter, Request, Result, set_property};

pub mod config;
mod select;
pub mod table;
#[cfg(test)]
mod tests;

use config::RouteSpec;
use select::RequestFacts;
use table::{RouteTable, Target};

/// The property a named route's name is set as (Envoy's attribute for the route name).
pub const ROUTE_NAME: &[&str] = &["xds", "route_name"];

/// The body of the `404` answered when no route matches.
pub const NO_ROUTE_BODY: &str = "no route matched\n";

/// The plugin's configuration: `routes`, tried in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The routes as written (emptied once compiled).
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// The compiled routes.
    #[serde(skip)]
    pub table: RouteTable,
}

/// One request's filter.
pub struct Router {
    config: Rc<Config>,
}

impl Filter for Router {
    type Config = Config;

    fn configure(config: &mut Config) -> Result<(), String> {
        config.table = RouteTable::compile(std::mem::take(&mut config.routes))?;
        Ok(())
    }

    fn new(config: &Rc<Config>) -> Self {
        Router {
            config: config.clone(),
        }
    }

    fn on_request_headers(&mut self, request: &mut Request) -> Result<Action> {
        let table = &self.config.table;
        let (route, rewritten) = {
            let mut facts = RequestFacts::new(request)?;
            let Some(route) = table.select(&mut facts)? else {
                return request.respond(
                    404,
                    &[("content-type", "text/plain")],
                    NO_ROUTE_BODY.as_bytes(),
                );
            };
            (route, route.rewritten_path(&facts))
        };
        let cluster = match &route.target {
            Target::Cluster(cluster) => cluster,
            Target::Weighted(split) => split.pick(),
        };
        request.set_cluster(cluster)?;
        if let Some(path) = rewritten {
            request.set_path(&path)?;
        }
        if let Some(name) = &route.name {
            set_property(ROUTE_NAME, name.as_bytes())?;
        }
        Ok(Action::Continue)
    }
}

weft_sdk::export_filter!(Router);
