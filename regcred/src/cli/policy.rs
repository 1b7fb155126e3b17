//! Choosing the policy the CLI runs (the embedded module by default) and the
//! `regcred policy` commands.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use regcred_host::{EvalError, PolicyModule, PolicyPre, PolicyRunner};

/// Flags shared by every command that runs the rules.
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// Run this policy module instead of the one built into regcred.
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "native")]
    policy: Option<PathBuf>,
    /// Refuse the --policy module unless its sha256 is this (64 hex digits).
    #[arg(long, value_name = "HEX", global = true, requires = "policy")]
    policy_sha256: Option<String>,
    /// Run the rules compiled into this binary instead of the WebAssembly module (same
    /// results; for debugging a module against the source).
    #[arg(long, global = true)]
    native: bool,
    /// The longest one evaluation of the module may run, instantiating it included, in
    /// milliseconds. Raise it only where the node is very slow or emulated (qemu): a
    /// module that runs past it is stopped and the request fails. Not used with --native.
    #[arg(
        long,
        value_name = "MS",
        global = true,
        default_value_t = 50,
        value_parser = clap::value_parser!(u64).range(1..=60_000)
    )]
    policy_deadline: u64,
}

impl PolicyArgs {
    /// The runner these flags ask for, with instances allocated on demand (no pool to set
    /// up): for the one-shot commands and the CRI proxy, whose few concurrent pulls are
    /// bounded by its blocking executor.
    pub(crate) fn runner(&self) -> Result<PolicyRunner> {
        self.build(|builder| builder.on_demand())
    }

    /// The runner for a server that evaluates up to `concurrency` requests at once:
    /// a fresh instance per evaluation (nothing one request leaves in the module's memory
    /// reaches the next), taken from a pooling allocator with a slot for each.
    pub(crate) fn server_runner(&self, concurrency: u32) -> Result<PolicyRunner> {
        let slots = concurrency.max(regcred_host::PolicyBuilder::DEFAULT_POOL_SIZE);
        self.build(|builder| builder.pooling(slots))
    }

    fn build(
        &self,
        allocation: impl FnOnce(regcred_host::PolicyBuilder) -> regcred_host::PolicyBuilder,
    ) -> Result<PolicyRunner> {
        if self.native {
            return Ok(PolicyRunner::Native);
        }
        let module = match &self.policy {
            None => PolicyModule::embedded(),
            Some(path) => load_module(path, self.policy_sha256.as_deref())?,
        };
        let limits = regcred_host::Limits::builder()
            .epoch_deadline(std::time::Duration::from_millis(self.policy_deadline))
            .build();
        let policy = allocation(PolicyPre::builder().module(module).limits(limits))
            .build()
            .context("cannot load the policy module")?;
        Ok(PolicyRunner::Wasm(std::sync::Arc::new(policy)))
    }
}

fn load_module(path: &Path, pin: Option<&str>) -> Result<PolicyModule> {
    let module = PolicyModule::from_file(path)
        .with_context(|| format!("cannot read the policy module {}", path.display()))?;
    match pin {
        Some(pin) => module
            .pin_sha256(pin)
            .with_context(|| format!("policy module {}", path.display())),
        None => Ok(module),
    }
}

/// An error from the policy as the CLI reports it: a refused request reads as its own
/// message; a misbehaving module says so.
pub(crate) fn explain(error: EvalError) -> anyhow::Error {
    match error {
        EvalError::Rejected { message, .. } => anyhow::anyhow!(message),
        other => anyhow::Error::new(other),
    }
}

/// `regcred policy ...`
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Write the policy module built into regcred to a file (for wazero, Node, browsers).
    Export {
        /// Where to write the module.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print a module's ABI version, size and sha256 (the built-in one without FILE), and
    /// whether it loaded precompiled or was compiled.
    Info {
        /// A policy module file.
        file: Option<PathBuf>,
    },
}

pub(crate) fn run(command: &PolicyCommand) -> Result<u8> {
    match command {
        PolicyCommand::Export { out } => {
            let module = PolicyModule::embedded();
            std::fs::write(out, module.bytes())
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!(
                "wrote {} ({} bytes, sha256 {})",
                out.display(),
                module.len(),
                module.sha256_hex()
            );
        }
        PolicyCommand::Info { file } => {
            let module = match file {
                Some(path) => load_module(path, None)?,
                None => PolicyModule::embedded(),
            };
            let size = module.len();
            let sha256 = module.sha256_hex();
            let source = match file {
                Some(path) => path.display().to_string(),
                None => "built-in".to_string(),
            };
            let policy = PolicyPre::builder()
                .module(module)
                .on_demand()
                .build()
                .with_context(|| format!("{source} is not a usable policy module"))?;
            let version = policy.abi_version();
            println!("module:      {source}");
            println!("abi version: {version}");
            println!("size:        {size} bytes");
            println!("sha256:      {sha256}");
            println!("loaded:      {}", policy.load_path());
        }
    }
    Ok(0)
}
