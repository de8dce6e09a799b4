//! The weft control plane's core: the plugin registry ([`registry`]), the versioned resource
//! set ([`resources`]), the storage both sit on ([`store`]) and the API token ([`token`]).
//! The gRPC API, discovery and the CLI build on these.
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

pub mod registry;
pub mod resources;
pub mod store;
pub mod token;
