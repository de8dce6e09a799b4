//! errors end-to-end tests (being written).
