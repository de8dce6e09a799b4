//! HTTP on the downstream side: serving connections (`server`) and watching them (`activity`),
//! the per-request proxy path
//! (`proxy`), header rewriting (`headers`), bodies (`body`) and failures as responses (`error`).

pub mod activity;
pub mod body;
pub mod error;
pub mod headers;
pub mod proxy;
pub mod server;
