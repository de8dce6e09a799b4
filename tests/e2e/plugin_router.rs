//! End-to-end tests of the built-in `router` plugin (`builtin://router`) through the proxy.
