//! Configuration: the authored YAML model (`model`), the loader that parses a file with line
//! numbers (`load`), validation of the set (`validate`), and the resolved model the data path
//! reads (`resolved`).

pub mod load;
pub mod model;
pub mod resolved;
mod validate;

pub use load::{ConfigError, SourceMap, load_file, load_str};
pub use resolved::{
    ClientTlsConfig, ClusterConfig, Config, FilterChainConfig, FilterConfig, Limits,
    ListenerConfig, Outlier, PluginConfig, PluginSource, ServerTlsConfig,
};
