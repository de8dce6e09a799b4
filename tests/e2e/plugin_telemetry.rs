//! End-to-end tests of the built-in `telemetry` plugin (`builtin://telemetry`) through the proxy.
