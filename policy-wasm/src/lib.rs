//! The rules for `kubernetes.io/regcredentials` Secrets: validation, matching an image to
//! credentials, and mapping them onto the CRI `AuthConfig`.
//!
//! Pure functions, no I/O, no clock, no randomness: the same input gives the same output
//! natively and in the WebAssembly module built from this crate (see `ABI.md`), so the
//! CLI, the CRI proxy and the webhook give the same verdicts.
//!
//! # Quick start
//!
//! ```
//! use regcred_policy::{resolve, validate};
//! use regcred_types::{PolicyConfig, RuntimeProfile, SecretManifest};
//!
//! let secret: SecretManifest = serde_json::from_str(r#"{
//!     "apiVersion": "v1", "kind": "Secret",
//!     "metadata": {"name": "quay", "namespace": "apps"},
//!     "type": "kubernetes.io/regcredentials",
//!     "stringData": {"serverAddress": "quay.io/my-org", "username": "robot", "password": "s3cret"}
//! }"#).unwrap();
//!
//! let report = validate(&secret, &PolicyConfig::default());
//! assert!(report.valid);
//!
//! let resolution = resolve("quay.io/my-org/app:1.0", &[secret], RuntimeProfile::Containerd,
//!                          &PolicyConfig::default()).unwrap();
//! let candidate = &resolution.candidates[0];
//! assert_eq!(candidate.matched, "quay.io/my-org");
//! assert_eq!(candidate.auth_config.server_address, "https://quay.io");
//! ```
//!
//! # The rules
//!
//! - [`validate`]: keys, encodings, `serverAddress` syntax, credential combinations,
//!   limits, the policy configuration; each violation has a Kubernetes field path and
//!   field error type.
//! - [`resolve`]: image reference parsing (Docker grammar), matching (ports equal, host
//!   label globs, path prefix by whole segments), ordering, deduplication.
//! - [`map`]: the `AuthConfig` for a runtime profile.
//! - [`convert`]: Docker config Secrets to regcredentials Secrets.
//! - [`evaluate`]: all of the above behind one JSON request/response, as the module exports it.

#![warn(missing_docs)]

mod convert;
mod glob;
mod host;
mod ip;
mod reference;
mod request;
mod resolve;
mod server;
mod validate;

pub use convert::{CONVERTED_FROM_ANNOTATION, ConvertError, convert};
pub use host::{DOCKER_HUB, DOCKER_HUB_REGISTRY, Host, ServerAddressError};
pub use reference::{ImageRef, ImageRefError};
pub use request::{check_config, evaluate};
pub use resolve::{map, resolve};
pub use server::{Scheme, ServerAddress};
pub use validate::{ValidCredentials, validate};

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

#[cfg(target_arch = "wasm32")]
mod abi;
#[cfg(all(feature = "js", target_arch = "wasm32"))]
mod js;
