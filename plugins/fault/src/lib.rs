//! The built-in `fault` plugin (`builtin://fault`): injects failures for resilience testing —
//! aborts some requests with a status, delays some by a duration, optionally only requests
//! carrying a trigger header.
//!
//! ```yaml
//! - plugin: fault
//!   config:
//!     abort: {status: 503, percent: 10}      # percent default 100
//!     delay: {duration: 300ms, percent: 50}  # ms, s or m; percent default 100
//!     headerTrigger: x-fault                 # optional
//! ```
//!
//! Per eligible request (every request, or with `headerTrigger` only those with that header),
//! Envoy's order: the abort and the delay are each drawn at the start, independently, with
//! their percentages. A delayed request is held (with the SDK's timer: nothing else waits)
//! and, if its abort was drawn too, answered with the abort when the delay is over; an abort
//! without a delay is answered at once. An abort is a local reply with the status and the body
//! `fault filter abort`; the upstream never sees the request.
//!
//! Counters: `fault_aborts_total{filter="NAME"}` and `fault_delays_total{filter="NAME"}`,
//! `NAME` being the chain entry's name (the `plugin_name` property).

use std::rc::Rc;

use weft_sdk::{Action, Counter, Filter, Request, Result, metric_name, property_string};

pub mod config;
#[cfg(test)]
mod tests;

pub use config::Config;

/// The body of an abort's reply.
pub const ABORT_BODY: &str = "fault filter abort";

/// One request's filter.
pub struct Fault {
    config: Rc<Config>,
    /// The status to answer with once the delay is over.
    abort_after_delay: Option<u16>,
}

impl Fault {
    /// The counters (aborts, delays), defined the first time a fault happens.
    fn counters(&self) -> Result<(Counter, Counter)> {
        let cached = &self.config.faults.counters;
        if let Some(counters) = cached.get() {
            return Ok(counters);
        }
        let name = property_string(&["plugin_name"])?.unwrap_or_else(|| "fault".into());
        let labels = [("filter", name.as_str())];
        let counters = (
            Counter::define(&metric_name("fault_aborts_total", &labels))?,
            Counter::define(&metric_name("fault_delays_total", &labels))?,
        );
        cached.set(Some(counters));
        Ok(counters)
    }

    fn abort(&self, request: &mut Request, status: u16) -> Result<Action> {
        self.counters()?.0.increment(1)?;
        request.respond(
            status,
            &[("content-type", "text/plain")],
            ABORT_BODY.as_bytes(),
        )
    }
}

impl Filter for Fault {
    type Config = Config;

    fn configure(config: &mut Config) -> Result<(), String> {
        config.compile()
    }

    fn new(config: &Rc<Config>) -> Self {
        Fault {
            config: config.clone(),
            abort_after_delay: None,
        }
    }

    fn on_request_headers(&mut self, request: &mut Request) -> Result<Action> {
        let faults = &self.config.faults;
        if let Some(trigger) = &faults.trigger
            && request.header(trigger)?.is_none()
        {
            return Ok(Action::Continue);
        }
        let abort = faults
            .abort
            .and_then(|(status, chance)| chance.draw().then_some(status));
        let delay = faults
            .delay
            .and_then(|(duration, chance)| chance.draw().then_some(duration));
        match (delay, abort) {
            (Some(duration), abort) => {
                self.counters()?.1.increment(1)?;
                self.abort_after_delay = abort;
                Ok(request.delay(duration))
            }
            (None, Some(status)) => self.abort(request, status),
            (None, None) => Ok(Action::Continue),
        }
    }

    fn on_delay_elapsed(&mut self, request: &mut Request) -> Result<Action> {
        match self.abort_after_delay.take() {
            Some(status) => self.abort(request, status),
            None => Ok(Action::Continue),
        }
    }
}

weft_sdk::export_filter!(Fault);
