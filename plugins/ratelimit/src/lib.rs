//! The built-in `ratelimit` plugin (`builtin://ratelimit`): token buckets keyed by client IP,
//! mTLS identity, path or a header, shared by every worker of the proxy.
//!
//! ```yaml
//! config: {key: header:x-user, rate: 100/s, burst: 200}
//! ```
//!
//! - **Buckets.** One bucket of `burst` tokens (default: the rate's N) per key value, refilled
//!   at `rate` (`N/s`, `N/m`, `N/h`). Each request takes a token; an empty bucket answers `429`.
//! - **Keys.** `client_ip`: `source.address` without the port (`[v6]:port` too); `principal`:
//!   the verified mTLS identity, with every client that has none sharing the bucket
//!   `anonymous` (so leaving out a certificate never escapes the limit); `route`: the request
//!   path without its query (the router runs later in the chain, so there is no route name
//!   yet); `header:NAME`: the header's first value — a request without the header is not
//!   limited, as Envoy skips a descriptor that is missing.
//! - **Exact across workers.** A bucket lives in the proxy's shared data (one 8-byte value, see
//!   [`bucket`]) under `ratelimit:<instance name>:<key kind>:<value>`, updated by
//!   compare-and-swap: one read and one conditional write per allowed request, one read per
//!   refused one; a lost race is retried. After 64 lost races in a row the request is refused
//!   (fail closed: the limit is never exceeded); any other shared-data failure is a filter
//!   error (a `500`). Two chain entries with different `name`s
//!   keep separate buckets; entries with the same name share them. Buckets are never
//!   removed: shared data grows with the number of distinct key values seen.
//! - **Headers.** A refused request gets `429` with `retry-after` (seconds until a token is
//!   back, rounded up, at least 1), `x-ratelimit-limit` (the quota: `burst`),
//!   `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (seconds until the next token). An
//!   allowed request's response gets `x-ratelimit-limit`, `x-ratelimit-remaining` (tokens left
//!   after it) and `x-ratelimit-reset` (seconds until the bucket gains its next token).
//! - **Metrics.** `ratelimit_allowed_total` and `ratelimit_limited_total`, labeled with
//!   `filter="<instance name>"`.

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use weft_sdk::{Action, Filter, LogLevel, Request, Response, Result, property, shared};

pub mod bucket;
mod config;
#[cfg(test)]
mod tests;

use bucket::Decision;
pub use config::{Config, Key, Period, Rate, Resolved};

/// Compare-and-swap attempts before a request is refused.
const MAX_ATTEMPTS: u32 = 64;

/// The CAS a new bucket is written with. A missing key is created whatever the CAS (Envoy's
/// shared-data semantics), while a key another worker created in the meantime carries a
/// different CAS, so two workers racing to create a bucket cannot both succeed — as they
/// could with the unconditional CAS 0.
const CREATE_CAS: u32 = u32::MAX;

/// One request's filter.
pub struct RateLimit {
    config: Rc<Config>,
    /// Set when the request was allowed: what its response's headers say.
    quota: Option<Quota>,
}

/// What an allowed request's response reports.
#[derive(Debug, Clone, Copy)]
struct Quota {
    remaining: u64,
    reset: u64,
}

impl Filter for RateLimit {
    type Config = Config;

    fn configure(config: &mut Config) -> Result<(), String> {
        config.resolve()
    }

    fn new(config: &Rc<Config>) -> Self {
        RateLimit {
            config: config.clone(),
            quota: None,
        }
    }

    fn on_request_headers(&mut self, request: &mut Request) -> Result<Action> {
        let Some(key) = self.bucket_key(request)? else {
            return Ok(Action::Continue);
        };
        let resolved = &self.config.resolved;
        match take_token(&key, resolved)? {
            Decision::Allowed {
                remaining,
                next_token,
                ..
            } => {
                count(resolved.allowed);
                self.quota = Some(Quota {
                    remaining,
                    reset: bucket::ceil_seconds(next_token),
                });
                Ok(Action::Continue)
            }
            Decision::Limited { wait } => {
                count(resolved.limited);
                let mut buffer = itoa::Buffer::new();
                let seconds = buffer.format(bucket::ceil_seconds(wait));
                request.respond(
                    429,
                    &[
                        ("content-type", "text/plain"),
                        ("retry-after", seconds),
                        ("x-ratelimit-limit", &resolved.limit_header),
                        ("x-ratelimit-remaining", "0"),
                        ("x-ratelimit-reset", seconds),
                    ],
                    b"rate limited\n",
                )
            }
        }
    }

    fn on_response_headers(&mut self, response: &mut Response) -> Result<Action> {
        if let Some(quota) = self.quota {
            let mut buffer = itoa::Buffer::new();
            response.set_header("x-ratelimit-limit", &self.config.resolved.limit_header)?;
            response.set_header("x-ratelimit-remaining", buffer.format(quota.remaining))?;
            response.set_header("x-ratelimit-reset", buffer.format(quota.reset))?;
        }
        Ok(Action::Continue)
    }
}

impl RateLimit {
    /// The shared-data key of this request's bucket; `None` when the request is not limited
    /// (a `header:` key whose header is absent).
    fn bucket_key(&self, request: &Request) -> Result<Option<String>> {
        let prefix = &self.config.resolved.prefix;
        let with_prefix = |value: &str| {
            let mut key = String::with_capacity(prefix.len() + value.len());
            key.push_str(prefix);
            key.push_str(value);
            key
        };
        Ok(Some(match &self.config.key {
            Key::ClientIp => match request.client_address()? {
                Some(address) => with_prefix(client_ip(&address)),
                None => with_prefix("unknown"),
            },
            Key::Principal => match request.peer_principal()? {
                Some(principal) => with_prefix(&principal),
                None => with_prefix("anonymous"),
            },
            Key::Route => match property(&["request", "url_path"])? {
                Some(path) => with_prefix(&String::from_utf8_lossy(&path)),
                None => {
                    let path = request.path()?;
                    with_prefix(path.split('?').next().unwrap_or_default())
                }
            },
            Key::Header(name) => match request.header(name)? {
                Some(value) => with_prefix(&value),
                None => return Ok(None),
            },
        }))
    }
}

/// Takes a token from the bucket at `key`, retrying lost compare-and-swap races.
fn take_token(key: &str, resolved: &Resolved) -> Result<Decision> {
    let now = weft_sdk::now()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    for _ in 0..MAX_ATTEMPTS {
        let (state, cas) = match shared::get(key)? {
            Some((value, cas)) => (bucket::decode(&value), cas),
            None => (None, CREATE_CAS),
        };
        let decision = bucket::take(resolved.limits, state, now);
        let Decision::Allowed { full_at, .. } = decision else {
            return Ok(decision);
        };
        match shared::set_if(key, &bucket::encode(full_at), cas) {
            Ok(()) => return Ok(decision),
            Err(e) if e.is_cas_mismatch() => continue,
            Err(e) => return Err(e),
        }
    }
    weft_sdk::log(
        LogLevel::Warn,
        &format!(
            "ratelimit: bucket `{key}` still contended after {MAX_ATTEMPTS} attempts; refusing"
        ),
    );
    Ok(Decision::Limited {
        wait: resolved.limits.interval,
    })
}

/// The IP part of an `ip:port` address (`[v6]:port` gives the bare v6 address); anything else
/// as it is.
fn client_ip(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map_or(address, |(ip, _)| ip);
    }
    match address.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => address,
    }
}

/// Adds one to `counter` if it exists; a metric that cannot be written is not worth failing
/// a request for.
fn count(counter: Option<weft_sdk::Counter>) {
    if let Some(counter) = counter {
        let _ = counter.increment(1);
    }
}

weft_sdk::export_filter!(RateLimit);
