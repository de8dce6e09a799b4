//! limits end-to-end tests (being written).
