//! The weft proxy: listeners, TLS and mTLS, HTTP/1.1 and HTTP/2 with hyper, upstream clusters
//! with pooling, load balancing and outlier ejection, an admin server, and configuration that
//! reloads all-or-nothing while traffic flows.

pub mod config;
