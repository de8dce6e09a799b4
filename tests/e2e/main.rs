//! End-to-end tests of weft through real sockets: one test binary, a module per feature. Every
//! test starts its own upstreams and proxy on `127.0.0.1:0` and stops them when it ends.

mod admin;
mod balance;
mod callouts;
mod containment;
mod default_callbacks;
mod drain;
mod errors;
mod filters;
mod grpc;
mod hotswap;
mod limits;
mod plugin_auth;
mod plugin_fault;
mod plugin_ratelimit;
mod plugin_router;
mod plugin_telemetry;
mod proxy;
mod quickstart;
mod rejections;
mod reload;
mod routing;
mod sdk;
mod state;
mod tls;
