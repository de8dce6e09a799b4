//! The weft control plane's core: the plugin registry ([`registry`]), the versioned resource
//! set ([`resources`]), the storage both sit on ([`store`]) and the API token ([`token`]).
//! On them, [`server`] serves the gRPC API of `proto/weft/control/v1/control.proto`
//! (generated as [`proto`]) with discovery, and [`client`] connects to it.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{path::Path, sync::Arc};
//! use weft_control::{registry::Registry, resources::Resources, store::RedbStore, token};
//!
//! let data = Path::new("/var/lib/weft");
//! let (token, created) = token::ensure_token(data)?;
//! let store = Arc::new(RedbStore::open(data)?);
//! let registry = Registry::new(store.clone());
//! let resources = Resources::new(store);
//!
//! registry.publish("hello", "1.0.0", &std::fs::read("hello.wasm")?)?;
//! let applied = resources.apply(&std::fs::read_to_string("chain.yaml")?)?;
//! println!("resource version {}", applied.version);
//! # let _ = (token, created);
//! # Ok(())
//! # }
//! ```

pub mod agent;
pub mod client;
pub mod registry;
pub mod resources;
pub mod server;
pub mod store;
pub mod token;

/// The API generated from `proto/weft/control/v1/control.proto` (package `weft.control.v1`):
/// messages, `*_server` modules with the service traits, `*_client` modules with the clients.
#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod proto {
    tonic::include_proto!("weft.control.v1");
}
