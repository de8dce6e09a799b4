//! The built-in plugins: the crates of `plugins/`, built for `wasm32-wasip1` by `build.rs`
//! and embedded in the binary. A `Plugin` whose url is `builtin://NAME` runs the module of
//! `plugins/NAME` (crate `weft-plugin-NAME`); its sha256 pin, if any, applies to those bytes,
//! and it is compiled once and cached by digest like any other module.
//!
//! ```
//! for name in weft_host::wasm::builtins() {
//!     let module = weft_host::wasm::builtin_module(name).expect("listed");
//!     assert!(module.starts_with(b"\0asm"), "builtin://{name} is a Wasm module");
//! }
//! ```

mod generated {
    include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
}

use generated::BUILTINS;

/// The names of the built-in plugins, sorted: what `builtin://NAME` accepts.
pub fn builtins() -> impl ExactSizeIterator<Item = &'static str> + Clone {
    BUILTINS.iter().map(|(name, _)| *name)
}

/// The module bytes of the built-in plugin `name`, if there is one.
pub fn builtin_module(name: &str) -> Option<&'static [u8]> {
    BUILTINS
        .iter()
        .find(|(builtin, _)| *builtin == name)
        .map(|(_, module)| *module)
}

/// The built-in plugins as a sentence, for errors: "`a`, `b`" or "none in this build".
pub fn describe_builtins() -> String {
    if BUILTINS.is_empty() {
        return "none in this build".to_owned();
    }
    builtins()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
