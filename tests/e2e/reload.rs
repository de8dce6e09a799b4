//! reload end-to-end tests (being written).
