//! Shared helpers for regcred's cross-crate tests.
