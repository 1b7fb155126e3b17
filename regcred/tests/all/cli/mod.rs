//! The `regcred` binary as a user runs it: exit codes, outputs, redaction, and the same
//! binary as a kubectl plugin run by the real `kubectl`.

mod agent;
mod commands;
mod node;
mod secrets;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const CANARY: &str = "CANARY-pw-7d1e";

fn regcred() -> Command {
    Command::new(env!("CARGO_BIN_EXE_regcred"))
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn run(command: &mut Command) -> Output {
    command.output().expect("the regcred binary runs")
}

fn run_with_stdin(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn canary_secrets(dir: &Path) -> PathBuf {
    write(
        dir,
        "canary.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: first, namespace: apps}}\n\
             type: kubernetes.io/regcredentials\nstringData:\n  serverAddress: 127.0.0.1:5000\n  \
             username: robot\n  password: {CANARY}\n  identityToken: {CANARY}-id\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: broken, namespace: apps}}\n\
             type: kubernetes.io/regcredentials\nstringData:\n  serverAddress: 127.0.0.1:5000\n  \
             username: 'a:b'\n  password: {CANARY}\n"
        ),
    )
}
