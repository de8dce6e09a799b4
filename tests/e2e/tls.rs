//! tls end-to-end tests (being written).
