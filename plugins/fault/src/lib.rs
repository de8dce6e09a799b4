//! The built-in `fault` plugin (placeholder: passes every request through).

use std::rc::Rc;

use serde::Deserialize;
use weft_sdk::Filter;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// One request's filter.
pub struct Plugin;

impl Filter for Plugin {
    type Config = Config;

    fn new(_config: &Rc<Config>) -> Self {
        Plugin
    }
}

weft_sdk::export_filter!(Plugin);
