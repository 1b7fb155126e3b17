//! `regcred node install` on a node that boots systemd (scripts/nspawn-node: Debian 12
//! under systemd-nspawn, with the kit's containerd 2.3 and kubelet as systemd services,
//! kubelet started with --config-dir): the installer reaches the node's systemd as the
//! chart's pod does (`regcred node host-exec` into the node's PID 1), the hardened units
//! run under the real systemd, containerd requires and connects regcred-nri, kubelet
//! reads the drop-in; a failing service is rolled back; uninstall leaves the node's
//! files byte for byte as they were.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test, with its message"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use regcred_tests::harness::{regcred_binary, require_program};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A booted node; powered off and removed on drop, on every path.
struct Node {
    dir: PathBuf,
    init: u32,
    /// `proc/1` -> the node's PID 1, for `host-exec --proc-dir`.
    proc_dir: tempfile::TempDir,
}

impl Node {
    fn boot() -> Self {
        require_program("systemd-nspawn", "systemd-container");
        require_program("debootstrap", "debootstrap");
        let scratch = repo().join("target/nspawn-test");
        std::fs::create_dir_all(&scratch).unwrap();
        let dir = scratch.join(format!("node-{}", std::process::id()));
        let output = Command::new(repo().join("scripts/nspawn-node"))
            .arg("up")
            .arg(&dir)
            .output()
            .unwrap();
        let node = |init: u32| {
            let proc_dir = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(format!("/proc/{init}"), proc_dir.path().join("1")).unwrap();
            Self {
                dir: dir.clone(),
                init,
                proc_dir,
            }
        };
        if !output.status.success() {
            drop(node(0));
            panic!(
                "scripts/nspawn-node up: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let init: u32 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap();
        node(init)
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// `systemctl ARGS` in the node.
    fn systemctl(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a", "systemctl"])
            .args(args)
            .output()
            .unwrap()
    }

    fn active(&self, unit: &str) -> bool {
        self.systemctl(&["is-active", "--quiet", unit])
            .status
            .success()
    }

    fn show(&self, unit: &str, property: &str) -> String {
        let output = self.systemctl(&["show", "-p", property, "--value", unit]);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The agent's sockets present in the node's /run/regcred.
    fn sockets(&self) -> Vec<String> {
        let dir = PathBuf::from(format!("/proc/{}/root/run/regcred", self.init));
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".sock"))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// No socket unit of the agent's is loaded, and no socket is left in /run/regcred.
    fn assert_no_agent_sockets(&self, after: &str) {
        assert_eq!(
            self.show("regcred-cri-proxy.socket", "LoadState"),
            "not-found",
            "{after} left the socket unit"
        );
        assert_eq!(self.sockets(), Vec::<String>::new(), "{after} left sockets");
    }

    /// The journal of the unit's current run only (its invocation ID).
    fn journal_now(&self, unit: &str) -> String {
        let id = self.show(unit, "InvocationID");
        self.journalctl(&[&format!("_SYSTEMD_INVOCATION_ID={id}")])
    }

    fn journal(&self, unit: &str) -> String {
        self.journalctl(&["-u", unit])
    }

    /// The node's journal, messages only, with `args` (`-u UNIT`, `FIELD=VALUE`).
    fn journalctl(&self, args: &[&str]) -> String {
        let output = Command::new("nsenter")
            .args([
                "-t",
                &self.init.to_string(),
                "-a",
                "journalctl",
                "--no-pager",
            ])
            .args(["-o", "cat"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `regcred node VERB` against the node, as the chart's pod runs it (`install` reads
    /// the node's own processes, as the pod in the host's PID namespace does, not this
    /// host's, where a kit's kubelet may run).
    fn regcred(&self, verb: &str, extra: &[&str]) -> Output {
        let binary = regcred_binary();
        let mut command = Command::new(&binary);
        command.args(["node", verb]);
        if verb == "install" {
            command.arg(format!("--proc-dir=/proc/{}/root/proc", self.init));
        }
        command
            .arg("--host-root")
            .arg(self.root())
            .arg("--systemctl")
            .arg(format!(
                "{} node host-exec --proc-dir {} -- systemctl",
                binary.display(),
                self.proc_dir.path().display()
            ))
            .args(extra)
            // The image's environment: its PATH names only /usr/local/bin, where the
            // host has no systemctl (host-exec must look where the host keeps it).
            .env("PATH", "/usr/local/bin")
            .output()
            .unwrap()
    }

    /// Every file (and symlink) under the node's /etc, /opt and /usr/local, and kubelet's
    /// configuration: bytes or link target.
    fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(path: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                return;
            };
            let key = path.strip_prefix(root).unwrap().to_owned();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(path).unwrap();
                out.insert(key, target.as_os_str().as_encoded_bytes().to_vec());
            } else if meta.is_dir() {
                out.insert(key, b"(dir)".to_vec());
                for entry in std::fs::read_dir(path).unwrap() {
                    walk(&entry.unwrap().path(), root, out);
                }
            } else {
                out.insert(key, std::fs::read(path).unwrap_or_default());
            }
        }
        let root = self.root();
        let mut out = BTreeMap::new();
        for top in ["etc", "opt", "usr/local", "var/lib/kubelet/config.yaml"] {
            walk(&root.join(top), &root, &mut out);
        }
        // systemd's own runtime bookkeeping in /etc, not the installer's.
        out.retain(|path, _| {
            !path.starts_with("etc/machine-id") && !path.starts_with("etc/.updated")
        });
        out
    }

    /// kubelet's effective imageServiceEndpoint, from its /configz (127.0.0.1:10250,
    /// anonymous, AlwaysAllow in the node's kubelet configuration), within a deadline;
    /// a kubelet that does not answer fails the test with its unit's state and journal
    /// (CI once failed here with no word of why: kubelet could not write the kernel flags
    /// it sets, which scripts/nspawn-node now sets from outside).
    fn kubelet_image_endpoint(&self) -> Option<String> {
        let curl = require_program("curl", "curl");
        let deadline = std::time::Instant::now() + KUBELET_DEADLINE;
        while std::time::Instant::now() < deadline {
            let output = Command::new(&curl)
                .args(["-sk", "--max-time", "2", "https://127.0.0.1:10250/configz"])
                .output()
                .unwrap();
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&output.stdout) {
                return value["kubeletconfig"]["imageServiceEndpoint"]
                    .as_str()
                    .map(str::to_owned);
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let journal = self.journal("kubelet.service");
        let tail: Vec<&str> = journal.lines().rev().take(40).collect();
        panic!(
            "the node's kubelet does not answer /configz after {KUBELET_DEADLINE:?} \
             (kubelet.service {}, {} restarts; containerd.service {}); kubelet's last \
             journal lines:\n{}",
            self.show("kubelet.service", "ActiveState"),
            self.show("kubelet.service", "NRestarts"),
            self.show("containerd.service", "ActiveState"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

/// How long kubelet may take to serve /configz after a boot or a restart.
const KUBELET_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/nspawn-node"))
            .arg("down")
            .arg(&self.dir)
            .status();
    }
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn node_install_under_systemd_rolls_back_installs_and_uninstalls_byte_for_byte() {
    let node = Node::boot();
    assert!(node.active("containerd.service") && node.active("kubelet.service"));
    assert_eq!(node.kubelet_image_endpoint(), None);
    let before = node.files();
    let scratch = tempfile::tempdir().unwrap();

    // A regcred-nri that dies at start: systemd restarts it (Restart=always), so it is
    // not active when the installer checks, and the install is rolled back before
    // containerd or kubelet are touched.
    let broken = scratch.path().join("regcred-nri");
    std::fs::write(&broken, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(
        &broken,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let containerd_since = node.show("containerd.service", "ActiveEnterTimestampMonotonic");
    let failed = node.regcred("install", &["--nri-plugin", broken.to_str().unwrap()]);
    assert_eq!(failed.status.code(), Some(1), "{}", said(&failed));
    assert!(
        said(&failed).contains("regcred-nri.service is not active")
            && said(&failed).contains("rolled back"),
        "{}",
        said(&failed)
    );
    assert_eq!(
        node.files(),
        before,
        "the failed install left changes on the node"
    );
    assert_eq!(node.show("regcred-nri.service", "LoadState"), "not-found");
    assert_eq!(
        node.show("regcred-cri-proxy.service", "LoadState"),
        "not-found"
    );
    node.assert_no_agent_sockets("the rollback");
    assert_eq!(
        node.show("containerd.service", "ActiveEnterTimestampMonotonic"),
        containerd_since,
        "containerd was restarted by a failed install"
    );

    // The real plugin: everything installed and running under systemd.
    let plugin = scratch.path().join("regcred-nri-real");
    let go = require_program("go", "Go (scripts/setup)");
    let built = Command::new(go)
        .args(["build", "-trimpath", "-o"])
        .arg(&plugin)
        .arg(".")
        .current_dir(repo().join("nri"))
        .env("CGO_ENABLED", "0")
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", said(&built));
    let installed = node.regcred("install", &["--nri-plugin", plugin.to_str().unwrap()]);
    assert!(installed.status.success(), "{}", said(&installed));
    for unit in [
        "regcred-cri-proxy.service",
        "regcred-nri.service",
        "containerd.service",
        "kubelet.service",
    ] {
        assert!(
            node.active(unit),
            "{unit} is not active:\n{}",
            node.journal(unit)
        );
    }
    assert_eq!(
        node.kubelet_image_endpoint().as_deref(),
        Some("unix:///run/regcred/cri-proxy.sock")
    );
    // containerd (restarted with the drop-in) has regcred-nri connected; the agent
    // serves under its hardening (no EPERM from the system-call filter).
    let mut connected = false;
    for _ in 0..50 {
        if node
            .journal("containerd.service")
            .contains(r#"plugin \"50-regcred\" connected and synchronized"#)
        {
            connected = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(connected, "{}", node.journal("containerd.service"));
    // ... and requires it: containerd's own merge of its configuration (config.toml and
    // the `imports` it names) has the drop-in's validator settings.
    let dump = Command::new("nsenter")
        .args(["-t", &node.init.to_string(), "-a"])
        .args(["/usr/local/bin/containerd", "config", "dump"])
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("required_plugins = ['regcred']"),
        "containerd's merged configuration does not require regcred:\n{dump}"
    );
    let agent = node.journal("regcred-cri-proxy.service");
    assert!(agent.contains("regcred cri-proxy serving"), "{agent}");
    assert!(!agent.contains("Operation not permitted"), "{agent}");
    let status = Command::new(regcred_binary())
        .args(["node", "status", "--expect", "installed", "--host-root"])
        .arg(node.root())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", said(&status));

    // Again: nothing changes, nothing restarts.
    let containerd_since = node.show("containerd.service", "ActiveEnterTimestampMonotonic");
    let again = node.regcred("install", &["--nri-plugin", plugin.to_str().unwrap()]);
    assert!(again.status.success(), "{}", said(&again));
    assert!(
        said(&again).contains("nothing to change"),
        "{}",
        said(&again)
    );
    assert_eq!(
        node.show("containerd.service", "ActiveEnterTimestampMonotonic"),
        containerd_since
    );

    // The agent's sockets are systemd's (regcred-cri-proxy.socket): the agent took them
    // rather than binding, and a restart of the agent refuses no connection.
    assert!(
        node.active("regcred-cri-proxy.socket"),
        "{}",
        node.journal("regcred-cri-proxy.socket")
    );
    assert_eq!(node.sockets(), ["cri-proxy.sock", "nri-decisions.sock"]);
    let agent_now = node.journal_now("regcred-cri-proxy.service");
    assert!(
        agent_now.contains("sockets_from_service_manager=2"),
        "{agent_now}"
    );
    agent_restart_refuses_no_connection(&node);

    // Uninstall: the node's files as they were, the services gone, kubelet's image
    // calls back on containerd.
    let removed = node.regcred("uninstall", &[]);
    assert!(removed.status.success(), "{}", said(&removed));
    assert_eq!(
        node.files(),
        before,
        "uninstall did not restore the node's files"
    );
    assert_eq!(
        node.show("regcred-cri-proxy.service", "LoadState"),
        "not-found"
    );
    assert!(!node.active("regcred-nri.service"));
    node.assert_no_agent_sockets("uninstall");
    assert!(node.active("containerd.service") && node.active("kubelet.service"));
    assert_eq!(node.kubelet_image_endpoint(), None);
}

/// Questions sent to the agent's decisions socket without pause, from this host through
/// the node's root (`/proc/PID/root`), while `systemctl restart regcred-cri-proxy.service`
/// replaces the agent: every connection is accepted and every question answered, some by
/// the old agent and some by the new one; none finds the socket gone or refusing.
fn agent_restart_refuses_no_connection(node: &Node) {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::{AtomicBool, Ordering};

    let socket = PathBuf::from(format!(
        "/proc/{}/root/run/regcred/nri-decisions.sock",
        node.init
    ));
    let old_pid = node.show("regcred-cri-proxy.service", "MainPID");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let asker = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let body =
                r#"{"namespace":"team","pod":"web","uid":"u-1","image":"registry.example/app:v1"}"#;
            let request = format!(
                "POST /v1/decide HTTP/1.1\r\nHost: regcred-agent\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let (mut answered, mut failures, mut slowest) =
                (Vec::new(), Vec::new(), std::time::Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let result = (|| -> std::io::Result<String> {
                    let mut stream = std::os::unix::net::UnixStream::connect(&socket)?;
                    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
                    stream.write_all(request.as_bytes())?;
                    let mut answer = String::new();
                    stream.read_to_string(&mut answer)?;
                    Ok(answer)
                })();
                match result {
                    Ok(answer) if answer.starts_with("HTTP/1.1 200 ") => {
                        answered.push(std::time::Instant::now());
                    }
                    Ok(answer) => failures.push(format!("not a decision: {answer:?}")),
                    Err(e) => failures.push(e.to_string()),
                }
                slowest = slowest.max(started.elapsed());
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            (answered, failures, slowest)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let restarted = node.systemctl(&["restart", "regcred-cri-proxy.service"]);
    assert!(restarted.status.success(), "{}", said(&restarted));
    // `systemctl restart` returns once the new agent is started: what is answered after
    // this, the new agent answered.
    let replaced = std::time::Instant::now();
    // Past the new agent's start, so that it answers some of the questions too.
    std::thread::sleep(std::time::Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (answered, failures, slowest) = asker.join().unwrap();
    let new_pid = node.show("regcred-cri-proxy.service", "MainPID");
    let by_new = answered.iter().filter(|at| **at > replaced).count();
    println!(
        "agent restart (PID {old_pid} -> {new_pid}): {} questions answered ({by_new} by the \
         new agent), {} failed, the slowest in {slowest:?}",
        answered.len(),
        failures.len()
    );
    assert_ne!(old_pid, new_pid, "the agent was not replaced");
    assert!(
        failures.is_empty(),
        "{} of {} questions failed across the agent's restart, first: {}",
        failures.len(),
        failures.len() + answered.len(),
        failures[0]
    );
    assert!(
        answered.len() >= 20 && by_new >= 5,
        "{} questions answered, {by_new} by the new agent: the asker did not run through the \
         restart",
        answered.len()
    );
}
