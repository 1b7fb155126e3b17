//! `regcred`: validate, resolve, create and convert image pull secrets of type
//! `kubernetes.io/regcredentials`, and start the servers that act on them: the node agent
//! (`regcred-agent`), the admission webhook (`regcred-webhook`) and kubelet's credential
//! provider plugin. Installed as `kubectl-regcred` it is a kubectl plugin.
//!
//! A binary only: the servers are libraries of their own over `regcred-serve`; what lives
//! here is what only the command line needs (the chart's values schema, the node
//! installer, the credential provider's exchange with kubelet).

#![allow(
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_html_tags,
    reason = "clap shows the argument docs as --help text, written for people: `[:PORT]` \
              and `<redacted>` are what the help means, not links or tags"
)]

mod chart;
mod cli;
mod credential_provider;
mod node_install;

fn main() -> std::process::ExitCode {
    cli::main()
}
