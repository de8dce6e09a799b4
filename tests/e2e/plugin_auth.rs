//! End-to-end tests of the built-in `auth` plugin (`builtin://auth`) through the proxy.
