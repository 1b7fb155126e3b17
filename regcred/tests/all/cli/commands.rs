//! The binary as a whole: the embedded module, help, the kubectl plugin, a cluster
//! that cannot be reached, and shell completion.

use super::*;

#[test]
fn policy_info_says_the_built_in_module_loads_precompiled_and_a_file_compiles() {
    let built_in = run(regcred().args(["policy", "info"]));
    assert!(built_in.status.success(), "{}", text(&built_in.stderr));
    let out = text(&built_in.stdout);
    assert!(out.contains("module:      built-in\n"), "{out}");
    assert!(
        out.contains("loaded:      precompiled at build time\n"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.wasm");
    let export = run(regcred().args(["policy", "export", "--out"]).arg(&file));
    assert!(export.status.success(), "{}", text(&export.stderr));
    let from_file = run(regcred().args(["policy", "info"]).arg(&file));
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    let out = text(&from_file.stdout);
    assert!(
        out.contains("loaded:      compiled at load (not the embedded module)\n"),
        "{out}"
    );
}

#[test]
fn every_command_has_help() {
    for command in ["resolve", "validate", "create", "convert", "schema"] {
        let output = run(regcred().args([command, "--help"]));
        assert_eq!(output.status.code(), Some(0));
        assert!(
            text(&output.stdout).contains("Usage: regcred "),
            "{command}"
        );
    }
}

/// `--policy-deadline` bounds one evaluation of the module: a generous one changes
/// nothing, zero is refused as a usage error naming the flag, and every command that runs
/// the rules shows it in its help.
#[test]
fn the_policy_deadline_is_the_operators_to_raise() {
    let good = examples().join("regcredentials-stringdata.yaml");
    let roomy = run(regcred()
        .args(["--policy-deadline", "10000", "validate"])
        .arg(&good));
    assert_eq!(roomy.status.code(), Some(0), "{}", text(&roomy.stderr));
    let zero = run(regcred()
        .args(["--policy-deadline", "0", "validate"])
        .arg(&good));
    assert_eq!(zero.status.code(), Some(2), "{}", text(&zero.stderr));
    assert!(
        text(&zero.stderr).contains("--policy-deadline"),
        "{}",
        text(&zero.stderr)
    );
    let help = run(regcred().args(["validate", "--help"]));
    assert!(text(&help.stdout).contains("--policy-deadline <MS>"));
}

/// The real `kubectl` finds the binary on PATH as `kubectl-regcred` and runs it.
#[test]
fn kubectl_runs_it_as_a_plugin() {
    let kubectl = which("kubectl").expect("kubectl is not installed: run scripts/setup");
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-regcred");
    std::fs::copy(env!("CARGO_BIN_EXE_regcred"), &plugin).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(&kubectl)
        .args(["regcred", "validate", "-f"])
        .arg(examples().join("bad/proposal-plain-text-under-data.yaml"))
        .env("PATH", &path)
        .env("KUBECONFIG", dir.path().join("none"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("data[serverAddress]"),
        "{}",
        text(&output.stdout)
    );

    let help = Command::new(&kubectl)
        .args(["regcred", "--help"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        text(&help.stdout).contains("Usage: kubectl regcred"),
        "{}",
        text(&help.stdout)
    );

    let list = Command::new(&kubectl)
        .args(["plugin", "list"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        text(&list.stdout).contains("kubectl-regcred"),
        "{}",
        text(&list.stdout)
    );
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// `create --apply` applies through the API with the kube client (server-side apply).
/// No API server runs in this binary's tests (the kit's `TestPluginCreateApply` applies
/// for real), so this proves the failure path: the error names the Secret and the
/// cluster, regcred exits 2, and the password appears nowhere; `--dry-run=client` prints
/// the manifest and contacts nothing; `--dry-run` needs `--apply`.
#[test]
fn create_apply_reports_an_unreachable_cluster_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write(
        dir.path(),
        "kubeconfig",
        "apiVersion: v1\nkind: Config\n\
         clusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\n\
         users: [{name: u, user: {token: not-a-token}}]\n\
         contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    );
    let create = [
        "create",
        "quay",
        "--server",
        "quay.io",
        "--username",
        "robot",
        "--password-stdin",
        "--apply",
    ];
    let output = run_with_stdin(
        regcred().args(create).arg("--kubeconfig").arg(&kubeconfig),
        CANARY,
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot apply Secret default/quay to https://127.0.0.1:1/"),
        "{stderr}"
    );
    assert!(!stderr.contains(CANARY) && !text(&output.stdout).contains(CANARY));

    let client = run_with_stdin(
        regcred()
            .args(create)
            .args(["--dry-run", "client"])
            .env("KUBECONFIG", &kubeconfig),
        CANARY,
    );
    assert_eq!(client.status.code(), Some(0), "{}", text(&client.stderr));
    assert!(text(&client.stdout).contains("type: kubernetes.io/regcredentials"));

    let without_apply = run_with_stdin(
        regcred().args(&create[..7]).args(["--dry-run", "server"]),
        CANARY,
    );
    assert_eq!(without_apply.status.code(), Some(2));
    assert!(
        text(&without_apply.stderr).contains("--apply"),
        "{}",
        text(&without_apply.stderr)
    );
}

/// Issue 25: `regcred completion bash` loads in bash and completes the commands;
/// zsh and fish get their scripts too.
#[test]
fn completion_scripts_load_and_complete() {
    let script = run(regcred().args(["completion", "bash"]));
    assert!(script.status.success(), "{}", text(&script.stderr));
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "regcred.bash", &text(&script.stdout));
    // What bash does on `regcred cri-<TAB>`.
    let probe = format!(
        "source {}; COMP_WORDS=(regcred cri-); COMP_CWORD=1; COMP_LINE='regcred cri-'; \
         COMP_POINT=${{#COMP_LINE}}; _regcred regcred cri- regcred; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let out = run(Command::new("bash").args(["--noprofile", "--norc", "-c", &probe]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let completions = text(&out.stdout);
    assert!(
        completions.lines().any(|l| l.trim() == "cri-proxy"),
        "{completions}"
    );
    for shell in ["zsh", "fish"] {
        let out = run(regcred().args(["completion", shell]));
        assert!(out.status.success(), "{shell}");
        assert!(text(&out.stdout).contains("credential-provider"), "{shell}");
    }
    let bad = run(regcred().args(["completion", "powershell"]));
    assert_eq!(bad.status.code(), Some(2));
}
