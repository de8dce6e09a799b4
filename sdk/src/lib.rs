//! Write weft filters in Rust.
//!
//! A filter is a type implementing [`Filter`] — one method per phase, each passing through
//! unless overridden — with a typed configuration (`serde`), compiled to `wasm32-wasip1`. The
//! SDK speaks the proxy-wasm ABI v0.2.1 (through `weft-abi`), so a weft filter runs in Envoy
//! too. A complete filter, with its unit test:
//!
//! ```
//! use std::rc::Rc;
//! use serde::Deserialize;
//! use weft_sdk::{Action, Filter, Request, Response, Result};
//!
//! /// Answers 403 to requests without the configured header, and stamps every response.
//! pub struct RequireHeader {
//!     config: Rc<Config>,
//! }
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! pub struct Config {
//!     /// The header a request must carry.
//!     header: String,
//! }
//!
//! impl Filter for RequireHeader {
//!     type Config = Config;
//!
//!     fn new(config: &Rc<Config>) -> Self {
//!         RequireHeader { config: config.clone() }
//!     }
//!
//!     fn on_request_headers(&mut self, request: &mut Request) -> Result<Action> {
//!         if request.header(&self.config.header)?.is_none() {
//!             let body = format!("missing {}\n", self.config.header);
//!             return request.respond(403, &[("content-type", "text/plain")], body.as_bytes());
//!         }
//!         Ok(Action::Continue)
//!     }
//!
//!     fn on_response_headers(&mut self, response: &mut Response) -> Result<Action> {
//!         response.set_header("x-checked-by", "require-header")?;
//!         Ok(Action::Continue)
//!     }
//! }
//!
//! // The module's proxy-wasm exports (in the filter crate's lib.rs, a `cdylib`).
//! weft_sdk::export_filter!(RequireHeader);
//!
//! // A native unit test: no Wasm, no proxy.
//! # fn main() -> Result<(), String> {
//! use weft_sdk::testing::{Harness, TestRequest, TestResponse};
//!
//! let harness = Harness::<RequireHeader>::new(r#"{"header": "x-user"}"#)?;
//! let denied = harness.request(TestRequest::get("/"));
//! assert_eq!(denied.local_reply().map(|r| r.status), Some(403));
//!
//! let allowed = harness.request(TestRequest::get("/").header("x-user", "ann"));
//! assert_eq!(allowed.action(), Action::Continue);
//! allowed.respond(TestResponse::new(200));
//! assert_eq!(allowed.response_header("x-checked-by").as_deref(), Some("require-header"));
//! # Ok(())
//! # }
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip1` and name the `.wasm` in a
//! `Plugin` resource; `weft plugin new NAME` writes such a crate.
//!
//! # What a filter can do
//!
//! - [`Request`] and [`Response`]: read, set, add and remove headers; read and replace
//!   bodies; answer locally ([`Request::respond`]); choose the upstream cluster
//!   ([`Request::set_cluster`]); the peer's mTLS identity ([`Request::peer_principal`]); hold
//!   a request for a while without blocking anything ([`Request::delay`]).
//! - [`Log`] in [`Filter::on_log`]: status, duration, sizes, cluster of the finished exchange.
//! - Metrics ([`Counter`], [`Gauge`], [`Histogram`], labels through [`metric_name`]), data
//!   shared by all workers with compare-and-swap ([`shared`]), properties ([`property`]),
//!   time ([`now`]), randomness ([`random_u64`]), logs ([`log`]), HTTP callouts
//!   ([`HttpCall`], answered in [`Filter::on_http_call_response`]).
//!
//! Every host call returns a [`Result`]: the SDK never panics on a host status. A phase that
//! returns `Err` is logged and answered with a `500` local reply.
//!
//! [`export_filter!`] also exports `weft_host_buffer`, weft's optional extension of the ABI
//! ([`weft_abi::HostBuffer`]): a weft host writes the data a host call returns into a static
//! buffer of the module when it fits, instead of calling its allocator. Other hosts (Envoy)
//! never call the export, and the SDK then takes every buffer from its allocator as usual.
//!
//! # Testing
//!
//! [`testing`] runs a filter natively against an in-process host that records headers, local
//! replies, metrics, shared data, logs and callouts, with a clock the test moves.

#![deny(missing_docs)]

mod defaults;
mod dispatch;
mod error;
mod ffi;
mod host;
mod idmap;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod views;

use std::rc::Rc;

use serde::de::DeserializeOwned;
use weft_abi::StreamCallback;

pub use error::{Error, Result};
pub use host::{
    Counter, Gauge, Histogram, HttpCall, log, metric_name, now, property, property_i64,
    property_string, random_u64, set_property, shared,
};
pub use views::{CallResponse, Log, PEER_PRINCIPAL, Request, Response, UPSTREAM_CLUSTER};
pub use weft_abi::{Action, LogLevel};

/// A filter: one value per request, made from the configuration of its chain entry.
///
/// Request phases run top-down through the chain, response phases bottom-up. Each phase
/// returns [`Action::Continue`] to go on or [`Action::Pause`] to hold the stream (after a local
/// reply, a [`Request::delay`], or a callout it waits for).
///
/// A request or response phase left at its default costs nothing in weft: once the default
/// has run, the module tells the host (weft's `weft_default_callbacks_v1` export, which other
/// hosts ignore), and the host stops calling into the module for that phase.
pub trait Filter: Sized + 'static {
    /// The filter's configuration: the `config` of its chain entry, as JSON. An absent
    /// `config` is parsed as `{}`.
    type Config: DeserializeOwned + 'static;

    /// Checks (and may precompute into) a freshly parsed configuration. `Err` rejects the
    /// configuration update with its message.
    fn configure(config: &mut Self::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// The filter for one request.
    fn new(config: &Rc<Self::Config>) -> Self;

    /// The request headers arrived.
    fn on_request_headers(&mut self, request: &mut Request) -> Result<Action> {
        let _ = request;
        defaults::default_ran::<Self>(StreamCallback::RequestHeaders);
        Ok(Action::Continue)
    }

    /// A piece of the request body arrived ([`Request::body`], [`Request::end_of_stream`]).
    fn on_request_body(&mut self, request: &mut Request) -> Result<Action> {
        let _ = request;
        defaults::default_ran::<Self>(StreamCallback::RequestBody);
        Ok(Action::Continue)
    }

    /// The response headers arrived.
    fn on_response_headers(&mut self, response: &mut Response) -> Result<Action> {
        let _ = response;
        defaults::default_ran::<Self>(StreamCallback::ResponseHeaders);
        Ok(Action::Continue)
    }

    /// A piece of the response body arrived.
    fn on_response_body(&mut self, response: &mut Response) -> Result<Action> {
        let _ = response;
        defaults::default_ran::<Self>(StreamCallback::ResponseBody);
        Ok(Action::Continue)
    }

    /// The answer to callout `token` sent by this request. Returning `Continue` resumes the
    /// request if it was paused.
    fn on_http_call_response(
        &mut self,
        request: &mut Request,
        token: u32,
        response: CallResponse,
    ) -> Result<Action> {
        let _ = (request, token, response);
        Ok(Action::Continue)
    }

    /// A [`Request::delay`] this request was held for is over. `Continue` (the default) lets
    /// the request go on; [`Request::respond`] answers it instead, [`Request::delay`] holds it
    /// again.
    fn on_delay_elapsed(&mut self, request: &mut Request) -> Result<Action> {
        let _ = request;
        Ok(Action::Continue)
    }

    /// The exchange is over (also when it failed or the client went away).
    fn on_log(&mut self, log: &Log) {
        let _ = log;
        defaults::default_ran::<Self>(StreamCallback::Log);
    }
}

/// Parses `bytes` (JSON; empty means `{}`) as `F`'s configuration and runs
/// [`Filter::configure`]. Errors name the field path, e.g. `routes[0].match: unknown field`.
pub fn parse_config<F: Filter>(bytes: &[u8]) -> Result<F::Config, String> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let mut config: F::Config =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })?;
    F::configure(&mut config)?;
    Ok(config)
}

#[doc(hidden)]
pub mod __private {
    pub use crate::defaults::default_callbacks;
    pub use crate::dispatch::Filters;
    pub use crate::dispatch::exports::*;

    /// `_initialize`: runs the module's static constructors, once, when the host starts the
    /// instance (WASI's reactor model; Envoy and weft call it before anything else).
    ///
    /// Exporting it matters for speed: a module whose code never calls `__wasm_call_ctors` is
    /// linked as a WASI *command*, and `wasm-ld` then wraps every export in a call of the
    /// constructors before and the destructors after — on every callback of every request.
    #[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
    pub fn initialize() {
        unsafe extern "C" {
            fn __wasm_call_ctors();
        }
        // SAFETY: the linker's constructor function; the host calls `_initialize` once, before
        // any other export.
        unsafe { __wasm_call_ctors() }
    }
}
