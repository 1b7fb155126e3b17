//! The end-to-end harness: real programs on loopback, in temporary directories, started
//! and stopped by PID.
//!
//! Each fixture owns what it starts and removes it on drop: the program's process group
//! is killed (SIGKILL) and its temporary directory deleted. Programs run under
//! `setpriv --pdeathsig KILL`, so they die with the test thread even when the test binary
//! is killed before `Drop` runs. Each program writes its stdout and stderr to a log file in
//! its directory; when a test fails (the thread is panicking) the fixtures print the
//! last lines of their logs, which libtest shows with the failure.
//!
//! Nothing is skipped: a missing program fails the test with a message to run
//! `scripts/setup`, and containerd needs root (CI runs as root).
//!
//! - [`Registry`]: `docker-registry serve` (distribution 2.8) on a free port, with
//!   htpasswd auth ([`Registry::start_htpasswd`]) or token auth
//!   ([`Registry::start_with_token_auth`]).
//! - [`TokenServer`]: an OAuth2 / Docker token server in-process (RS256 JWTs with an
//!   `x5c` or `kid` header; password, refresh-token and Basic grants).
//! - [`Containerd`]: containerd (2.3 by default, [`RUNTIME_ENV`] chooses) with the CRI
//!   plugin, overlayfs, NRI off and `hosts.toml` for the loopback registries (the
//!   configuration from [`containerd_config`], the kit's nodes' too); pulls
//!   through the transfer service or the local pull ([`PullPath`]).
//! - [`TestImage`]: a one-layer OCI image built in memory and pushed through the
//!   registry's HTTP API.
//! - [`CriClient`]: a tonic client of a CRI ImageService over a unix socket, and
//!   [`pod_sandbox`] for the `sandbox_config` kubelet sends.
//! - [`Proxy`]: the regcred CRI proxy between them, in-process or the real `regcred
//!   cri-proxy` binary; [`RecordingRuntime`], a runtime stand-in that records request
//!   bytes.
//! - [`KubeApi`]: the real etcd and kube-apiserver (from `PATH`: `scripts/cluster build`)
//!   with static token users, RBAC and an audit log, for the proxy's `kube` source.
//!
//! ```no_run
//! # async fn run() {
//! use regcred_tests::harness::{Containerd, Registry, TestImage, basic_auth};
//!
//! let registry = Registry::start_htpasswd(&[("alice", "pw")]).await;
//! TestImage::new("hello").push(&registry.url(), "team/app", "v1", Some(("alice", "pw"))).await.unwrap();
//! let containerd = Containerd::start().await;
//! containerd.add_plain_http_registry(&registry.host());
//! let mut cri = containerd.client().await;
//! let auth = basic_auth(&registry.url(), "alice", "pw");
//! cri.pull(&registry.image("team/app", "v1"), Some(auth), None).await.unwrap();
//! # }
//! ```

mod containerd;
pub mod containerd_config;
mod cri;
mod image;
mod kube_api;
pub mod pki;
mod process;
mod proxy;
mod recording_runtime;
mod registry;
mod token_server;

pub use containerd::{Containerd, DEFAULT_RUNTIME, PullPath, RUNTIME_ENV, Runtime, test_runtime};
pub use cri::{ConnectError, CriClient, basic_auth, image_spec, pod_sandbox};
pub use image::{
    CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, PushError, TestImage,
    oci_architecture, parse_challenge, sha256_digest,
};
pub use kube_api::{ADMIN_USER, ApiRequest, KubeApi, PROXY_USER, config_from_file, regcred_secret};
pub use process::{
    CapturedLogs, ChildProcess, KEEP_DIRS_ENV, assert_logs_exclude, find_on_path, fixture_dir,
    free_loopback_addr, free_port, print_logs_if_panicking, read_lossy, require_program,
    require_program_from, require_root,
};
pub use proxy::{Proxy, ProxyBuilder, REGCRED_BIN_ENV, regcred_binary};
pub use recording_runtime::{
    RawAnswer, RecordedCall, RecordingRuntime, Reply, ReplyBody, raw_call,
};
pub use registry::Registry;
pub use token_server::{
    Grant, GrantRecord, KeyReference, TokenServer, TokenServerBuilder, libtrust_key_id,
};
