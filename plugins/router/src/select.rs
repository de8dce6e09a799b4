//! Per request: finding the first route a request matches, and the path a prefix rewrite
//! gives. [`RequestFacts`] reads `:path` once and everything else (`:method`, other headers,
//! the parsed query) only when a route asks, at most once each.

use weft_sdk::{Request, Result};

use crate::table::{NamedMatch, PathMatch, Route, RouteTable};

/// What the routes have looked at of one request, read from it on first use.
///
/// `'q` borrows the request, `'n` the route table (for header names).
pub(crate) struct RequestFacts<'q, 'n> {
    request: &'q Request,
    /// `:path`, query included.
    full_path: String,
    /// Where the query's `?` is in `full_path`, if there is one.
    query_at: Option<usize>,
    method: Option<String>,
    /// Headers read so far: (lowercase name, first value).
    headers: Vec<(&'n str, Option<String>)>,
    /// The query's parameters, percent-decoded, once a route needed them.
    params: Option<Vec<(String, String)>>,
}

impl<'q, 'n> RequestFacts<'q, 'n> {
    /// Reads `:path` of `request`.
    pub(crate) fn new(request: &'q Request) -> Result<Self> {
        let full_path = request.header(":path")?.unwrap_or_default();
        let query_at = full_path.find('?');
        Ok(RequestFacts {
            request,
            full_path,
            query_at,
            method: None,
            headers: Vec::new(),
            params: None,
        })
    }

    /// The path without the query.
    pub(crate) fn path(&self) -> &str {
        match self.query_at {
            Some(at) => self.full_path.get(..at).unwrap_or_default(),
            None => &self.full_path,
        }
    }

    /// The query (after `?`), if the path has one.
    pub(crate) fn query(&self) -> Option<&str> {
        self.full_path.get(self.query_at? + 1..)
    }

    fn method(&mut self) -> Result<&str> {
        if self.method.is_none() {
            self.method = Some(self.request.method()?);
        }
        Ok(self.method.as_deref().unwrap_or_default())
    }

    fn header(&mut self, name: &'n str) -> Result<Option<&str>> {
        let at = match self.headers.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                let value = self.request.header(name)?;
                self.headers.push((name, value));
                self.headers.len() - 1
            }
        };
        Ok(self.headers.get(at).and_then(|(_, v)| v.as_deref()))
    }

    fn param(&mut self, name: &str) -> Option<&str> {
        if self.params.is_none() {
            self.params = Some(self.query().map(parse_query).unwrap_or_default());
        }
        self.params
            .as_ref()?
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl RouteTable {
    /// The first route `facts` matches.
    pub(crate) fn select<'t>(
        &'t self,
        facts: &mut RequestFacts<'_, 't>,
    ) -> Result<Option<&'t Route>> {
        for route in &self.routes {
            if route.matches(facts)? {
                return Ok(Some(route));
            }
        }
        Ok(None)
    }
}

impl Route {
    /// Whether the request matches every condition, cheapest first.
    fn matches<'t>(&'t self, facts: &mut RequestFacts<'_, 't>) -> Result<bool> {
        let path = facts.path();
        let path_matches = match &self.path {
            PathMatch::Any => true,
            PathMatch::Prefix(prefix) => path.starts_with(&**prefix),
            PathMatch::Exact(exact) => path == &**exact,
            PathMatch::Regex(regex) => regex.is_match(path),
        };
        if !path_matches {
            return Ok(false);
        }
        if !self.methods.is_empty() {
            let method = facts.method()?;
            if !self.methods.iter().any(|m| **m == *method) {
                return Ok(false);
            }
        }
        for NamedMatch { name, value } in self.headers.iter() {
            if !value.matches(facts.header(name)?) {
                return Ok(false);
            }
        }
        for NamedMatch { name, value } in self.query.iter() {
            if !value.matches(facts.param(name)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The path the upstream sees after this route's `rewritePrefix`, if it has one: the
    /// matched prefix replaced, the query kept. When the replacement ends with `/` and the rest
    /// of the path starts with one, one of them goes (`/api` → `/` turns `/api/users` into
    /// `/users`, not `//users`); a result not starting with `/` gets one.
    pub(crate) fn rewritten_path(&self, facts: &RequestFacts<'_, '_>) -> Option<String> {
        let (PathMatch::Prefix(prefix), Some(replacement)) = (&self.path, &self.rewrite_prefix)
        else {
            return None;
        };
        let rest = facts.path().strip_prefix(&**prefix)?;
        let query = facts.query();
        let mut path = String::with_capacity(
            replacement.len() + rest.len() + query.map_or(0, |q| q.len() + 2),
        );
        if !replacement.starts_with('/') {
            path.push('/');
        }
        path.push_str(replacement);
        match rest.strip_prefix('/') {
            Some(tail) if path.ends_with('/') => path.push_str(tail),
            _ => path.push_str(rest),
        }
        if let Some(query) = query {
            path.push('?');
            path.push_str(query);
        }
        Some(path)
    }
}

/// The query's `name=value` pairs (`name` alone has the value ``), percent-decoded; `+` stays.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// `text` with `%XX` escapes decoded (invalid UTF-8 replaced; a malformed escape kept as is).
fn decode(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = match (byte, tail) {
            (b'%', [high, low, ..]) => hex(*high).zip(hex(*low)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(decoded) => {
                bytes.push(decoded);
                rest = tail.get(2..).unwrap_or_default();
            }
            None => {
                bytes.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}
