//! The weft proxy: listeners, TLS and mTLS, HTTP/1.1 and HTTP/2 with hyper, upstream clusters
//! with pooling, load balancing and outlier ejection, an admin server, and configuration that
//! reloads all-or-nothing while traffic flows.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use weft_host::app::{App, AppOptions};
//!
//! let mut options = AppOptions::new("examples/proxy/weft.yaml");
//! options.admin = Some("127.0.0.1:9901".parse()?);
//! let app = App::start(options).await?;
//! println!("listening on {:?}", app.listener_addr("public"));
//! app.drain().await;
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod app;
pub mod config;
pub mod demo;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod runtime;
pub mod scaffold;
pub mod tls;
pub mod upstream;
pub mod wasm;
