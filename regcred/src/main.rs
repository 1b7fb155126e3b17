//! `regcred`: validate, resolve, create and convert image pull secrets of type
//! `kubernetes.io/regcredentials`. Installed as `kubectl-regcred` it is a kubectl plugin.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
