//! End-to-end tests of the built-in `fault` plugin (`builtin://fault`) through the proxy.
