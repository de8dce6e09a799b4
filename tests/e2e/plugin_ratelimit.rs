//! End-to-end tests of the built-in `ratelimit` plugin (`builtin://ratelimit`) through the proxy.
