//! `regcred node install`, `uninstall` and `host-exec` as the binary runs them.

use super::*;

/// `regcred node install` and `uninstall` as the binary runs them on a host root in a
/// temporary directory, systemd reached through a recording script (these machines do
/// not boot systemd): installed, reported by `status --expect installed`, a failing
/// restart rolled back with exit 1, and `uninstall` leaving the host byte for byte as it
/// was. The transaction's every path is in regcred's unit tests (node_install::tests).
#[test]
fn node_install_and_uninstall_leave_the_host_as_it_was() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir_all(host.join("etc/kubernetes/kubelet.conf.d")).unwrap();
    std::fs::create_dir_all(host.join("etc/containerd")).unwrap();
    // No `imports` first: containerd 2.x would not read the drop-in.
    std::fs::write(host.join("etc/containerd/config.toml"), "version = 3\n").unwrap();
    let script = dir.path().join("systemctl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> {log}\n[ \"$*\" != \"$FAIL_ON\" ] || [ -e {once} ] || \
             {{ touch {once}; exit 1; }}\n",
            log = dir.path().join("calls").display(),
            once = dir.path().join("failed-once").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plugin = write(dir.path(), "regcred-nri", "a static plugin");
    let tree = || {
        let mut files = Vec::new();
        let mut stack = vec![host.clone()];
        while let Some(path) = stack.pop() {
            for entry in std::fs::read_dir(&path).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path.clone());
                    files.push((path, Vec::new()));
                } else {
                    files.push((path.clone(), std::fs::read(&path).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    let node = |verb: &str, fail_on: &str| {
        let mut command = regcred();
        command
            .args(["node", verb, "--host-root"])
            .arg(&host)
            .arg("--systemctl")
            .arg(&script)
            .args(["--settle-seconds", "0"])
            .env("FAIL_ON", fail_on)
            .env("REGCRED_INSTALLER_ID", "pod-a");
        if verb == "install" {
            command
                .args(["--proc-dir", "none", "--nri-plugin"])
                .arg(&plugin);
        }
        run(&mut command)
    };
    let unread = tree();
    let refused = node("install", "");
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("/etc/containerd/config.toml has no `imports`"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(tree(), unread, "the refused install changed the host");
    // As `containerd config default` writes it.
    std::fs::write(
        host.join("etc/containerd/config.toml"),
        "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
    )
    .unwrap();
    let before = tree();

    let failed = node("install", "restart kubelet.service");
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    assert!(
        text(&failed.stderr).contains("`systemctl restart kubelet.service` failed")
            && text(&failed.stderr).contains("rolled back"),
        "{}",
        text(&failed.stderr)
    );
    assert_eq!(tree(), before, "the failed install left changes");

    let done = node("install", "");
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(text(&done.stdout).contains("restarted kubelet.service"));
    let agent =
        std::fs::read_to_string(host.join("etc/systemd/system/regcred-cri-proxy.service")).unwrap();
    assert!(agent.contains("ExecStart=/opt/regcred/bin/regcred cri-proxy"));
    let status = run(regcred()
        .args([
            "node",
            "status",
            "--expect",
            "installed",
            "-o",
            "json",
            "--host-root",
        ])
        .arg(&host));
    assert!(status.status.success(), "{}", text(&status.stdout));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["installed"], true);
    // The two binaries, three units (the agent's socket and service, regcred-nri's), two
    // drop-ins.
    assert_eq!(report["files"].as_array().unwrap().len(), 7);
    // The installer pod's readiness: installed, and by this pod.
    let by = |id: &str| {
        run(regcred()
            .args([
                "node",
                "status",
                "--expect",
                "installed",
                "--installer-id",
                id,
                "--host-root",
            ])
            .arg(&host))
    };
    assert!(by("pod-a").status.success());
    let other = by("pod-b");
    assert_eq!(other.status.code(), Some(1));
    assert!(
        text(&other.stderr).contains("installed by another installer (pod-a), not pod-b"),
        "{}",
        text(&other.stderr)
    );

    let undone = node("uninstall", "");
    assert!(undone.status.success(), "{}", text(&undone.stderr));
    assert_eq!(tree(), before, "uninstall did not restore the host");
    let absent = run(regcred()
        .args(["node", "status", "--expect", "installed", "--host-root"])
        .arg(&host));
    assert_eq!(absent.status.code(), Some(1));
}

/// `regcred node host-exec` joins the namespaces of `PROC/1` before running its
/// command (how the installer's pod, with hostPID, reaches the host's systemctl): run
/// from a UTS and mount namespace of its own whose hostname was changed, the command
/// sees the outer hostname again.
#[test]
fn host_exec_runs_in_the_namespaces_of_process_one() {
    let unshare = Command::new("unshare").arg("--version").output();
    assert!(
        unshare.is_ok_and(|o| o.status.success()),
        "unshare (util-linux) is needed"
    );
    let outer = text(&run(&mut Command::new("hostname")).stdout)
        .trim()
        .to_owned();
    let proc_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        format!("/proc/{}", std::process::id()),
        proc_dir.path().join("1"),
    )
    .unwrap();
    let output = run(Command::new("unshare")
        .args(["--uts", "--mount", "--fork", "sh", "-c"])
        .arg(format!(
            "hostname regcred-inner && hostname && {} node host-exec --proc-dir {} -- hostname",
            env!("CARGO_BIN_EXE_regcred"),
            proc_dir.path().display()
        )));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<String> = text(&output.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines, ["regcred-inner".to_owned(), outer]);

    // Without the namespaces (a pod without hostPID or privileges) it says so.
    let empty = tempfile::tempdir().unwrap();
    let refused = run(regcred()
        .args(["node", "host-exec", "--proc-dir"])
        .arg(empty.path())
        .args(["--", "true"]));
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("needs hostPID"),
        "{}",
        text(&refused.stderr)
    );
}
