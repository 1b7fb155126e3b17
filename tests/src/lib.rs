//! Shared helpers for regcred's cross-crate tests.
//!
//! [`examples`] reads the example manifests and their headers. [`harness`] starts the real programs the end-to-end tests run against: the
//! distribution registry (htpasswd or token authentication), a token server, containerd
//! with its CRI plugin, and builds and pushes images. See `tests/README.md`.
#![warn(missing_docs)]

pub mod examples;
pub mod harness;
