//! regcred's cross-crate tests, one binary with a module per topic: the end-to-end suite
//! with real containerd, registries and a systemd node (`e2e`), the chart and the per-node
//! files (`deploy`), the examples and schemas (`examples`, `schemas_second_opinion`), the
//! policy module's digest (`module_digest`), the krew manifest (`krew`), and the proxy's
//! `kube` source against a real API server (`kube_source`). One binary links wasmtime,
//! kube and tonic once instead of seven times.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test, with its message"
)]

mod deploy;
mod e2e;
mod examples;
mod krew;
mod kube_source;
mod module_digest;
mod schemas_second_opinion;
