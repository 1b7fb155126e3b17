//! The regcred product: the CRI image-service proxy ([`cri_proxy`]) and the validating
//! admission webhook ([`webhook`]) that the `regcred` binary serves, next to its CLI.
//!
//! Both servers run the same policy through [`regcred_host::PolicyRunner`], so the node and
//! the API server give the same verdict on the same Secret. Embedders that only want to run
//! the policy use `regcred-host`, which has none of this crate's dependencies (no tokio,
//! hyper, kube or rustls).

#![warn(missing_docs)]

pub mod chart;
pub mod credential_provider;
pub mod cri_proxy;
pub mod node_install;
pub mod serve;
pub mod webhook;
