//! Which stream callbacks do nothing in this module, so that weft need not call them (its
//! extension [`weft_abi::DEFAULT_CALLBACKS_EXPORT`]; other hosts never ask, and call every
//! callback as before).
//!
//! A trait cannot see whether a method was overridden, but a default body only ever runs for a
//! type that kept it. So each default stream method of [`Filter`](crate::Filter) (the phases
//! and `on_log`) records itself
//! ([`default_ran`]) — when its `Self` is the filter type of the module — in a word of guest
//! memory whose address `weft_default_callbacks_v1` hands the host, and from then on the host
//! does not enter the guest for it. A default records itself the first time it runs: that call
//! (no side effect, `Continue`) is the last. Trailers callbacks are recorded from the start:
//! the SDK always lets trailers pass.
//!
//! Only a module with one filter type records anything. `export_filter!` exports one type per
//! module; should filters of a second type ever be made on this thread (the native harness
//! reusing a thread for two types), the word falls back to the trailers alone, for good.
//!
//! The word and the type live in thread-locals: on `wasm32` without threads those are plain
//! statics at fixed addresses; natively, each thread (each harness) has its own.

use std::any::TypeId;
use std::cell::Cell;

use weft_abi::StreamCallback;

/// What is known whatever the filter: trailers always pass.
const ALWAYS: u32 = StreamCallback::RequestTrailers.bit() | StreamCallback::ResponseTrailers.bit();

/// The filter type this module's callbacks reach.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum FilterType {
    /// No filter made yet.
    Unknown,
    /// Every filter so far is of this type.
    One(TypeId),
    /// Filters of more than one type: nothing is recorded.
    Several,
}

thread_local! {
    static FILTER_TYPE: Cell<FilterType> = const { Cell::new(FilterType::Unknown) };
    /// The word the host reads: bit [`StreamCallback::bit`] set for each callback known to do
    /// nothing.
    static DEFAULTS: Cell<u32> = const { Cell::new(ALWAYS) };
}

/// Notes that the module's filters are of type `F` (called when a root context of that type
/// is configured).
pub(crate) fn register<F: 'static>() {
    let this = FilterType::One(TypeId::of::<F>());
    match FILTER_TYPE.get() {
        FilterType::Unknown => FILTER_TYPE.set(this),
        known if known == this => {}
        _ => {
            FILTER_TYPE.set(FilterType::Several);
            DEFAULTS.set(ALWAYS);
        }
    }
}

/// The default body of `callback`'s method ran with `Self = F`: `F` keeps that default. Only
/// recorded when `F` is the module's filter type.
pub(crate) fn default_ran<F: 'static>(callback: StreamCallback) {
    if FILTER_TYPE.get() == FilterType::One(TypeId::of::<F>()) {
        DEFAULTS.set(DEFAULTS.get() | callback.bit());
    }
}

/// `weft_default_callbacks_v1`: the address of the word of callbacks known to do nothing.
pub fn default_callbacks() -> *const u32 {
    DEFAULTS.with(Cell::as_ptr).cast_const()
}

/// The word, as the host would read it.
#[cfg(test)]
pub(crate) fn current() -> u32 {
    DEFAULTS.get()
}

#[cfg(test)]
mod tests;
