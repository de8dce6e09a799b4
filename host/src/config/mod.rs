//! Configuration: the authored YAML model (`model`), the loader that parses and validates a
//! file all-or-nothing (`load`), and the resolved model the data path reads (`resolved`).

pub mod load;
pub mod model;
pub mod resolved;

pub use load::{ConfigError, SourceMap, load_file, load_str};
pub use resolved::{
    ClientTlsConfig, ClusterConfig, Config, FilterChainConfig, FilterConfig, Limits,
    ListenerConfig, Outlier, PluginConfig, PluginSource, ServerTlsConfig,
};
