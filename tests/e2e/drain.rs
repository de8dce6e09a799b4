//! drain end-to-end tests (being written).
