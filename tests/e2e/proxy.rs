//! proxy end-to-end tests (being written).
