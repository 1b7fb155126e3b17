//! The installer on a host root in a temporary directory, systemd reached through a
//! recording script (these machines do not boot systemd; the script logs each call and
//! fails the ones a test names, so that every failure path is driven).

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test, with its message"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::state::{InstallState, Phase};
use super::*;

struct Host {
    dir: tempfile::TempDir,
    layout: Layout,
    systemctl: Systemctl,
    sources: Sources,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("host");
        std::fs::create_dir_all(root.join("etc/kubernetes/kubelet.conf.d")).unwrap();
        std::fs::create_dir_all(root.join("etc/containerd")).unwrap();
        std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
        std::fs::write(
            root.join("etc/containerd/config.toml"),
            // As `containerd config default` writes it: containerd 2.x reads conf.d only
            // because this line names it.
            "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n\
             root = \"/var/lib/containerd\"\n",
        )
        .unwrap();
        let script = dir.path().join("systemctl");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$*\" >> {log}\nif [ -f {fail} ] && grep -qxF \"$*\" {fail}; then \
                 rm {fail}; echo \"Job for $2 failed.\" >&2; exit 1; fi\n",
                log = dir.path().join("calls").display(),
                fail = dir.path().join("fail").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let regcred = dir.path().join("regcred-binary");
        std::fs::write(&regcred, b"\x7fELF regcred one").unwrap();
        let nri = dir.path().join("regcred-nri-binary");
        std::fs::write(&nri, b"\x7fELF regcred-nri").unwrap();
        let layout = Layout {
            host_root: root,
            ..Layout::default()
        };
        Self {
            systemctl: Systemctl::new(vec![script.display().to_string()], Duration::ZERO),
            layout,
            sources: Sources {
                regcred,
                nri_plugin: Some(nri),
            },
            dir,
        }
    }

    fn root(&self) -> &Path {
        &self.layout.host_root
    }

    fn fail_on(&self, call: &str) {
        std::fs::write(self.dir.path().join("fail"), format!("{call}\n")).unwrap();
    }

    /// The systemctl calls since the last look.
    fn calls(&self) -> Vec<String> {
        let path = self.dir.path().join("calls");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        text.lines().map(str::to_owned).collect()
    }

    fn install(&self, mode: Mode) -> Result<Outcome, String> {
        let files = plan(&self.layout, mode, &self.sources)?;
        install(&self.layout, mode, files, &self.systemctl)
    }

    /// Every file under the host root: bytes and permission bits.
    fn tree(&self) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, u32)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::metadata(&path).unwrap();
                let key = path.strip_prefix(root).unwrap().to_owned();
                if meta.is_dir() {
                    out.insert(key, (Vec::new(), meta.permissions().mode() & 0o7777));
                    walk(&path, root, out);
                } else {
                    out.insert(
                        key,
                        (
                            std::fs::read(&path).unwrap(),
                            meta.permissions().mode() & 0o7777,
                        ),
                    );
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.root(), self.root(), &mut out);
        out
    }
}

/// The calls after the first `call` (which must be there).
fn after<'a>(calls: &'a [String], call: &str) -> &'a [String] {
    let at = calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("no `{call}` in {calls:?}"));
    &calls[at + 1..]
}

fn read(host: &Host, path: &str) -> String {
    std::fs::read_to_string(host.root().join(path)).unwrap()
}

#[test]
fn install_writes_every_file_and_restarts_in_dependency_order() {
    let host = Host::new();
    let outcome = host.install(Mode::Nri).unwrap();
    assert!(!outcome.unchanged);
    assert_eq!(outcome.files.len(), 7, "{outcome:?}");
    assert_eq!(
        std::fs::read(host.root().join("opt/regcred/bin/regcred")).unwrap(),
        b"\x7fELF regcred one"
    );
    let agent = read(&host, "etc/systemd/system/regcred-cri-proxy.service");
    assert!(
        agent.contains("ExecStart=/opt/regcred/bin/regcred cri-proxy"),
        "{agent}"
    );
    assert!(agent.contains("--nri-decisions"));
    let socket = read(&host, "etc/systemd/system/regcred-cri-proxy.socket");
    assert!(
        socket.contains("ListenStream=/run/regcred/cri-proxy.sock\n")
            && socket.contains("ListenStream=/run/regcred/nri-decisions.sock\n"),
        "{socket}"
    );
    let nri = read(&host, "etc/systemd/system/regcred-nri.service");
    assert!(
        nri.contains("ExecStart=/opt/regcred/bin/regcred-nri "),
        "{nri}"
    );
    assert!(read(&host, "etc/containerd/conf.d/50-regcred.toml").contains("required_plugins"));
    assert!(
        read(&host, "etc/kubernetes/kubelet.conf.d/50-regcred.conf")
            .contains("imageServiceEndpoint: unix:///run/regcred/cri-proxy.sock")
    );
    assert_eq!(
        host.calls(),
        [
            "daemon-reload",
            "enable regcred-cri-proxy.socket regcred-cri-proxy.service regcred-nri.service",
            // A new socket unit starts with its agent stopped (one job for both).
            "stop regcred-cri-proxy.socket regcred-cri-proxy.service",
            "start regcred-cri-proxy.socket",
            "is-active --quiet regcred-cri-proxy.socket",
            "restart regcred-cri-proxy.service",
            "restart regcred-nri.service",
            "is-active --quiet regcred-cri-proxy.service",
            "is-active --quiet regcred-nri.service",
            "restart containerd.service",
            "is-active --quiet containerd.service",
            "is-active --quiet regcred-cri-proxy.service",
            "is-active --quiet regcred-nri.service",
            "restart kubelet.service",
            "is-active --quiet kubelet.service",
        ]
    );
    let state = InstallState::load(&host.layout).unwrap().unwrap();
    assert_eq!(state.phase, Phase::Installed);
    // Nothing staged is left beside the targets.
    assert!(
        !host
            .tree()
            .keys()
            .any(|p| p.to_string_lossy().ends_with(".regcred-new"))
    );
}

#[test]
fn installing_again_changes_and_restarts_nothing() {
    let host = Host::new();
    host.install(Mode::Nri).unwrap();
    host.calls();
    let before = host.tree();
    let outcome = host.install(Mode::Nri).unwrap();
    assert!(outcome.unchanged);
    assert_eq!(
        host.calls(),
        ["enable --now regcred-cri-proxy.socket regcred-cri-proxy.service regcred-nri.service"]
    );
    assert_eq!(host.tree(), before);
}

#[test]
fn uninstall_puts_every_file_back_byte_for_byte_in_reverse_order() {
    let host = Host::new();
    // An operator's own drop-in of the same name, with its own permissions, is replaced
    // and comes back.
    let own = host
        .root()
        .join("etc/kubernetes/kubelet.conf.d/50-regcred.conf");
    std::fs::write(&own, "# mine\nmaxPods: 50\n").unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = host.tree();

    host.install(Mode::Nri).unwrap();
    assert_ne!(host.tree(), before);
    host.calls();
    let outcome = uninstall(&host.layout, &host.systemctl).unwrap();
    assert!(outcome.left.is_empty(), "{outcome:?}");
    assert_eq!(host.tree(), before, "the host is not as it was");
    assert_eq!(
        host.calls(),
        [
            "restart kubelet.service",
            "is-active --quiet kubelet.service",
            "restart containerd.service",
            "is-active --quiet containerd.service",
            "disable --now regcred-cri-proxy.socket regcred-cri-proxy.service regcred-nri.service",
            "daemon-reload",
        ]
    );
    // Nothing installed: uninstall again has nothing to do.
    assert!(uninstall(&host.layout, &host.systemctl).unwrap().unchanged);
}

#[test]
fn a_failed_restart_rolls_every_file_back() {
    let host = Host::new();
    let before = host.tree();
    host.fail_on("restart containerd.service");
    let error = host.install(Mode::Nri).unwrap_err();
    assert!(
        error.contains("`systemctl restart containerd.service` failed")
            && error.contains("Job for containerd.service failed.")
            && error.contains("rolled back"),
        "{error}"
    );
    assert_eq!(host.tree(), before, "the rollback left changes");
    let calls = host.calls();
    // After the failure: the new socket unit stopped and disabled while its file is
    // there, units reloaded, the new services stopped, containerd restarted on its old
    // configuration; kubelet was never touched.
    assert_eq!(
        after(&calls, "restart containerd.service"),
        [
            "stop regcred-cri-proxy.socket regcred-cri-proxy.service regcred-nri.service",
            "disable regcred-cri-proxy.socket",
            "daemon-reload",
            "disable regcred-cri-proxy.service regcred-nri.service",
            "restart containerd.service",
        ]
    );
    assert!(!calls.iter().any(|c| c.contains("kubelet")));
}

#[test]
fn a_failed_upgrade_goes_back_to_the_installed_version() {
    let host = Host::new();
    host.install(Mode::Nri).unwrap();
    let installed = host.tree();
    let state = InstallState::load(&host.layout).unwrap();
    host.calls();

    std::fs::write(&host.sources.regcred, b"\x7fELF regcred two").unwrap();
    host.fail_on("is-active --quiet regcred-cri-proxy.service");
    let error = host.install(Mode::Nri).unwrap_err();
    assert!(
        error.contains("regcred-cri-proxy.service is not active"),
        "{error}"
    );
    assert_eq!(host.tree(), installed);
    assert_eq!(InstallState::load(&host.layout).unwrap(), state);
    let calls = host.calls();
    // Only the binary changed: containerd and kubelet are left running.
    assert!(
        !calls
            .iter()
            .any(|c| c.contains("containerd") || c.contains("kubelet")),
        "{calls:?}"
    );
    assert!(calls.ends_with(&[
        "daemon-reload".to_owned(),
        "restart regcred-cri-proxy.service regcred-nri.service".to_owned()
    ]));
    // regcred-nri's files did not change: it is not restarted (only the rollback's
    // restart of every service names it).
    assert!(
        calls.contains(&"restart regcred-cri-proxy.service".to_owned())
            && !calls.contains(&"restart regcred-nri.service".to_owned()),
        "{calls:?}"
    );
    // The socket unit did not change: it stays up through the agent's restarts.
    assert!(
        !calls
            .iter()
            .any(|c| c.contains(".socket") && !c.starts_with("enable")),
        "{calls:?}"
    );

    // The upgrade, when it works, keeps the record of what was there before regcred.
    assert!(
        !host.dir.path().join("fail").exists(),
        "the failure was not reached"
    );
    let outcome = host.install(Mode::Nri).unwrap();
    assert_eq!(outcome.files, [PathBuf::from("/opt/regcred/bin/regcred")]);
    let after = InstallState::load(&host.layout).unwrap().unwrap();
    let before = state.unwrap();
    for (old, new) in before.files.iter().zip(&after.files) {
        assert_eq!(old.previous, new.previous, "{}", old.path.display());
    }
    // The replaced binary was kept beside it only until the switch was done.
    let leftovers: Vec<_> = host
        .tree()
        .into_keys()
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".regcred-old") || name.ends_with(".regcred-new")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // What a run killed halfway leaves is cleared by the next run.
    let stale = host.root().join("opt/regcred/bin/regcred-nri.regcred-old");
    std::fs::write(&stale, b"old").unwrap();
    host.install(Mode::Nri).unwrap();
    assert!(!stale.exists());
}

#[test]
fn uninstall_leaves_a_file_someone_changed_and_says_so() {
    let host = Host::new();
    host.install(Mode::Nri).unwrap();
    let dropin = host.root().join("etc/containerd/conf.d/50-regcred.toml");
    std::fs::write(&dropin, "# edited by hand\n").unwrap();
    let outcome = uninstall(&host.layout, &host.systemctl).unwrap();
    assert_eq!(outcome.left.len(), 1, "{outcome:?}");
    assert!(
        outcome.left[0].contains("/etc/containerd/conf.d/50-regcred.toml was changed"),
        "{:?}",
        outcome.left
    );
    assert_eq!(
        std::fs::read_to_string(&dropin).unwrap(),
        "# edited by hand\n"
    );
    assert!(
        !host
            .root()
            .join("etc/kubernetes/kubelet.conf.d/50-regcred.conf")
            .exists()
    );
    assert!(!host.root().join("opt/regcred").exists());
    // containerd's file did not change back, so containerd is not restarted for it.
    assert!(!outcome.restarted.iter().any(|u| u == "containerd.service"));
}

#[test]
fn a_failed_uninstall_step_keeps_the_state_for_another_run() {
    let host = Host::new();
    host.install(Mode::Nri).unwrap();
    host.fail_on("restart kubelet.service");
    let error = uninstall(&host.layout, &host.systemctl).unwrap_err();
    assert!(error.contains("run it again"), "{error}");
    assert!(InstallState::load(&host.layout).unwrap().is_some());
    assert!(
        !host.dir.path().join("fail").exists(),
        "the failure was not reached"
    );
    // The second run finds kubelet's drop-in already gone and finishes the rest.
    uninstall(&host.layout, &host.systemctl).unwrap();
    assert!(InstallState::load(&host.layout).unwrap().is_none());
}

#[test]
fn the_legacy_mode_points_kubelets_runtime_at_the_agent_and_leaves_containerd() {
    let host = Host::new();
    let files = plan(&host.layout, Mode::RuntimeProxy, &host.sources).unwrap();
    let paths: Vec<_> = files.iter().map(|f| f.path.display().to_string()).collect();
    assert_eq!(
        paths,
        [
            "/opt/regcred/bin/regcred",
            "/etc/systemd/system/regcred-cri-proxy.socket",
            "/etc/systemd/system/regcred-cri-proxy.service",
            "/etc/kubernetes/kubelet.conf.d/50-regcred.conf",
        ]
    );
    let text = |content: &Content| match content {
        Content::Bytes(bytes) => String::from_utf8(bytes.clone()).unwrap(),
        Content::File(path) => panic!("a unit planned as the file {}", path.display()),
    };
    let socket = text(&files[1].content);
    assert!(
        socket.contains("ListenStream=/run/regcred/cri-proxy.sock\n")
            && !socket.contains("nri-decisions.sock"),
        "{socket}"
    );
    let agent = text(&files[2].content);
    assert!(!agent.contains("--nri-decisions unix"), "{agent}");
    assert!(agent.contains("--pull-records-dir /var/lib/regcred/cri-proxy\n"));
    host.install(Mode::RuntimeProxy).unwrap();
    let error = host.install(Mode::Nri).unwrap_err();
    assert!(error.contains("uninstall` first"), "{error}");
}

#[test]
fn nri_mode_needs_the_plugin_binary() {
    let mut host = Host::new();
    host.sources.nri_plugin = None;
    let error = plan(&host.layout, Mode::Nri, &host.sources).unwrap_err();
    assert!(error.contains("--nri-plugin"), "{error}");
}

fn fake_process(proc_dir: &Path, pid: u32, args: &[&str]) {
    let dir = proc_dir.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmdline = Vec::new();
    for arg in args {
        cmdline.extend_from_slice(arg.as_bytes());
        cmdline.push(0);
    }
    std::fs::write(dir.join("cmdline"), cmdline).unwrap();
}

#[test]
fn preflight_refuses_a_kubelet_that_would_not_read_the_drop_in() {
    let host = Host::new();
    let proc_dir = host.dir.path().join("proc");
    fake_process(&proc_dir, 1, &["/sbin/init"]);
    assert_eq!(kubelet_flags(&proc_dir), KubeletFlags::NotRunning);
    preflight(&host.layout, Mode::Nri, Some(&proc_dir)).unwrap();

    fake_process(
        &proc_dir,
        812,
        &["/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"],
    );
    let error = preflight(&host.layout, Mode::Nri, Some(&proc_dir)).unwrap_err();
    assert!(
        error.contains("kubelet runs without --config-dir") && error.contains("KUBELET_EXTRA_ARGS"),
        "{error}"
    );

    fake_process(
        &proc_dir,
        812,
        &["/usr/bin/kubelet", "--config-dir", "/etc/kubelet.d"],
    );
    let error = preflight(&host.layout, Mode::Nri, Some(&proc_dir)).unwrap_err();
    assert!(
        error.contains("--kubelet-config-dir /etc/kubelet.d"),
        "{error}"
    );

    fake_process(
        &proc_dir,
        812,
        &[
            "/usr/bin/kubelet",
            "--config-dir=/etc/kubernetes/kubelet.conf.d",
        ],
    );
    preflight(&host.layout, Mode::Nri, Some(&proc_dir)).unwrap();

    std::fs::remove_dir(host.root().join("etc/kubernetes/kubelet.conf.d")).unwrap();
    let error = preflight(&host.layout, Mode::Nri, None).unwrap_err();
    assert!(error.contains("does not exist on the host"), "{error}");
}

#[test]
fn preflight_refuses_a_containerd_that_would_not_read_the_drop_in() {
    let host = Host::new();
    let config = host.root().join("etc/containerd/config.toml");
    let refused = |text: &str| {
        std::fs::write(&config, text).unwrap();
        preflight(&host.layout, Mode::Nri, None).unwrap_err()
    };
    let accepted = |text: &str| {
        std::fs::write(&config, text).unwrap();
        preflight(&host.layout, Mode::Nri, None).unwrap();
    };

    let error = refused("version = 3\nimports = [\"/etc/containerd/site.d/*.toml\"]\n");
    assert!(
        error.contains("leaves out regcred's drop-in /etc/containerd/conf.d/50-regcred.toml")
            && error.contains("\"/etc/containerd/conf.d/*.toml\""),
        "{error}"
    );
    // No `imports`: containerd 2.x then reads no drop-in (its default `imports` is only
    // what `containerd config default` prints).
    let error = refused("version = 3\nroot = \"/var/lib/containerd\"\n");
    assert!(error.contains("has no `imports`"), "{error}");
    // `*` does not cross a directory, as in containerd's (Go's) glob.
    refused("version = 3\nimports = [\"/etc/*.toml\"]\n");
    // A `[table]`'s `imports` is not containerd's.
    refused("version = 3\n[plugins.x]\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n");
    // Relative to the configuration's directory, a glob or the very file, cleaned as
    // containerd cleans it.
    accepted("version = 3\nimports = [\"conf.d/*.toml\"]\n");
    accepted("version = 3\nimports = [\"./conf.d/*.toml\"]\n");
    accepted("version = 3\nimports = [\"../containerd//conf.d/50-*.toml\"]\n");
    // Go's glob: `**` is `*`, so it does not reach two levels down.
    refused("version = 3\nimports = [\"/etc/**/50-regcred.toml\"]\n");
    accepted("version = 3\nimports = [\"/etc/containerd/conf.d/**.toml\"]\n");
    // An import that would also read the installer's temporary copies is refused.
    let error = refused("version = 3\nimports = [\"/etc/containerd/conf.d/*\"]\n");
    assert!(error.contains("temporary copies"), "{error}");
    // containerd follows the imports of the files it imports.
    std::fs::write(
        host.root().join("etc/containerd/site.toml"),
        "version = 3\nimports = [\"conf.d/*.toml\"]\n",
    )
    .unwrap();
    accepted("version = 3\nimports = [\"/etc/containerd/site.toml\"]\n");
    // ... each once (a loop of imports ends).
    std::fs::write(
        host.root().join("etc/containerd/site.toml"),
        "version = 3\nimports = [\"config.toml\"]\n",
    )
    .unwrap();
    refused("version = 3\nimports = [\"/etc/containerd/site.toml\"]\n");
    accepted(
        "version = 3\nimports = [\"/etc/site.toml\", \"/etc/containerd/conf.d/50-regcred.toml\"]\n",
    );

    // Bad TOML: the line, never the file's text (it may hold registry credentials).
    let canary = "canary-password-5c1e";
    let error = refused(&format!(
        "version = 3\n[plugins.registry.auth]\npassword = \"{canary}\" oops\n"
    ));
    assert!(
        error.contains("is not valid TOML (line 3)") && !error.contains(canary),
        "{error}"
    );
    let error = refused("version = 3\n\n= 1\n");
    assert!(error.contains("(line 3)"), "{error}");
    let error = refused("version = 3\nimports = \"/etc/containerd/conf.d/*.toml\"\n");
    assert!(
        error.contains("`imports` is not a list of paths"),
        "{error}"
    );

    std::fs::remove_file(&config).unwrap();
    let error = preflight(&host.layout, Mode::Nri, None).unwrap_err();
    assert!(
        error.contains("does not exist, so containerd runs on its built-in defaults"),
        "{error}"
    );
    // The legacy mode writes nothing for containerd.
    preflight(&host.layout, Mode::RuntimeProxy, None).unwrap();

    // The running containerd's --config is the file that counts.
    let proc_dir = host.dir.path().join("proc");
    fake_process(
        &proc_dir,
        77,
        &[
            "/usr/local/bin/containerd",
            "--config",
            "/etc/containerd/node.toml",
        ],
    );
    assert_eq!(
        containerd_config_flag(&proc_dir),
        Some(PathBuf::from("/etc/containerd/node.toml"))
    );
    std::fs::write(
        host.root().join("etc/containerd/node.toml"),
        "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
    )
    .unwrap();
    preflight(&host.layout, Mode::Nri, Some(&proc_dir)).unwrap();
    fake_process(
        &proc_dir,
        77,
        &["/usr/local/bin/containerd", "-c=/etc/none.toml"],
    );
    let error = preflight(&host.layout, Mode::Nri, Some(&proc_dir)).unwrap_err();
    assert!(error.contains("/etc/none.toml does not exist"), "{error}");
}

#[test]
fn an_install_interrupted_after_its_switch_restarts_everything_when_run_again() {
    let host = Host::new();
    host.install(Mode::Nri).unwrap();
    // As if the process died between the switch and the restarts.
    let mut state = InstallState::load(&host.layout).unwrap().unwrap();
    state.phase = Phase::Switching;
    state.store(&host.layout).unwrap();
    host.calls();
    let outcome = host.install(Mode::Nri).unwrap();
    assert!(outcome.files.is_empty(), "{outcome:?}");
    assert_eq!(
        outcome.restarted,
        [
            "regcred-cri-proxy.socket",
            "regcred-cri-proxy.service",
            "regcred-nri.service",
            "containerd.service",
            "kubelet.service"
        ]
    );
    assert_eq!(
        InstallState::load(&host.layout).unwrap().unwrap().phase,
        Phase::Installed
    );
}

#[test]
fn a_copy_that_cannot_be_kept_changes_nothing_and_keeps_the_installed_state() {
    let host = Host::new();
    host.install(Mode::Nri).unwrap();
    // A state from a regcred that wrote one file fewer: the next install must keep a copy
    // of that file, and here it cannot (the copies' directory is a file).
    let mut state = InstallState::load(&host.layout).unwrap().unwrap();
    state.files.retain(|f| f.part != Part::Kubelet);
    state.store(&host.layout).unwrap();
    let backups = host.root().join("var/lib/regcred/node-install/backup");
    let _ = std::fs::remove_dir_all(&backups);
    std::fs::write(&backups, "in the way").unwrap();
    let before = host.tree();
    host.calls();
    let error = host.install(Mode::Nri).unwrap_err();
    assert!(error.contains("nothing was changed"), "{error}");
    assert_eq!(host.tree(), before, "the failed install changed the host");
    assert_eq!(InstallState::load(&host.layout).unwrap(), Some(state));
    assert!(host.calls().is_empty());
}

/// An upgrade from a regcred whose install had no socket unit: the socket unit is new, so
/// it starts with the agent stopped; if the upgrade then fails, it is stopped and disabled
/// before its file goes, and the agent put back binds its own sockets again.
#[test]
fn an_upgrade_that_adds_the_socket_unit_and_fails_takes_it_away_first() {
    let host = Host::new();
    host.install(Mode::Nri).unwrap();
    // As installed by a regcred without the socket unit.
    let unit = host
        .root()
        .join("etc/systemd/system/regcred-cri-proxy.socket");
    std::fs::remove_file(&unit).unwrap();
    let mut state = InstallState::load(&host.layout).unwrap().unwrap();
    state
        .files
        .retain(|f| !f.path.ends_with("regcred-cri-proxy.socket"));
    state.store(&host.layout).unwrap();
    let older = host.tree();
    host.calls();

    std::fs::write(&host.sources.regcred, b"\x7fELF regcred two").unwrap();
    host.fail_on("is-active --quiet regcred-nri.service");
    let error = host.install(Mode::Nri).unwrap_err();
    assert!(error.contains("rolled back"), "{error}");
    assert_eq!(host.tree(), older, "the rollback left changes");
    let calls = host.calls();
    let switched = calls
        .iter()
        .position(|c| c == "start regcred-cri-proxy.socket")
        .expect("the new socket unit was not started");
    assert_eq!(
        calls[switched - 1],
        "stop regcred-cri-proxy.socket regcred-cri-proxy.service",
        "{calls:?}"
    );
    assert_eq!(
        after(&calls, "is-active --quiet regcred-nri.service"),
        [
            "stop regcred-cri-proxy.socket regcred-cri-proxy.service regcred-nri.service",
            "disable regcred-cri-proxy.socket",
            "daemon-reload",
            "restart regcred-cri-proxy.service regcred-nri.service",
        ]
    );

    // Uninstalling the older install does not name the socket unit it never had.
    uninstall(&host.layout, &host.systemctl).unwrap();
    assert!(
        host.calls()
            .contains(&"disable --now regcred-cri-proxy.service regcred-nri.service".to_owned())
    );
}

/// A socket unit that differs from the shipped one (edited by hand, or an older regcred's)
/// is replaced with the agent and the socket stopped in one job; if the install then
/// fails, the one that was there comes back and is started before its agent.
#[test]
fn a_changed_socket_unit_is_switched_with_the_agent_down_and_put_back_on_failure() {
    let host = Host::new();
    host.install(Mode::Nri).unwrap();
    let unit = host
        .root()
        .join("etc/systemd/system/regcred-cri-proxy.socket");
    let edited = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("SocketMode=0660", "SocketMode=0600");
    std::fs::write(&unit, &edited).unwrap();
    let mut state = InstallState::load(&host.layout).unwrap().unwrap();
    for file in &mut state.files {
        if file.path.ends_with("regcred-cri-proxy.socket") {
            file.sha256 = super::state::sha256(edited.as_bytes());
        }
    }
    state.store(&host.layout).unwrap();
    let before = host.tree();
    host.calls();

    // regcred-nri's files did not change: it is started (a no-op when it runs), not
    // restarted. Its start fails here.
    host.fail_on("start regcred-nri.service");
    let error = host.install(Mode::Nri).unwrap_err();
    assert!(error.contains("rolled back"), "{error}");
    assert_eq!(host.tree(), before, "the rollback left changes");
    let calls = host.calls();
    assert_eq!(
        calls,
        [
            "daemon-reload",
            "enable regcred-cri-proxy.socket regcred-cri-proxy.service regcred-nri.service",
            "stop regcred-cri-proxy.socket regcred-cri-proxy.service",
            "start regcred-cri-proxy.socket",
            "is-active --quiet regcred-cri-proxy.socket",
            "restart regcred-cri-proxy.service",
            "is-active --quiet regcred-cri-proxy.service",
            "start regcred-nri.service",
            // The rollback: everything stopped, the edited socket unit put back and
            // started before its agent.
            "stop regcred-cri-proxy.socket regcred-cri-proxy.service regcred-nri.service",
            "daemon-reload",
            "start regcred-cri-proxy.socket",
            "restart regcred-cri-proxy.service regcred-nri.service",
        ]
    );
}

#[test]
fn status_trusts_an_unchanged_files_identity_and_hashes_a_changed_one() {
    let host = Host::new();
    host.install(Mode::Nri).unwrap();
    let states = || -> BTreeMap<PathBuf, &'static str> {
        let (_, files) = status(&host.layout).unwrap().unwrap();
        files.into_iter().map(|f| (f.path, f.state)).collect()
    };
    assert!(
        states().values().all(|s| *s == "installed"),
        "{:?}",
        states()
    );

    // The recorded digest of the binary made wrong: its file was not touched since the
    // install, so its identity says installed without reading it (the readiness probe's
    // case: every few seconds, tens of MiB of binaries not read again).
    let binary = PathBuf::from("/opt/regcred/bin/regcred");
    let mut state = InstallState::load(&host.layout).unwrap().unwrap();
    for file in &mut state.files {
        if file.path == binary {
            file.sha256 = "0".repeat(64);
        }
    }
    state.store(&host.layout).unwrap();
    assert_eq!(states()[&binary], "installed");

    // Rewritten in place with other bytes of the same size: another ctime, so it is
    // hashed, and found changed.
    let on_host = host.layout.on_host(&binary);
    // (A later clock tick than the install's, on file systems with coarse timestamps.)
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut bytes = std::fs::read(&on_host).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&on_host, &bytes).unwrap();
    assert_eq!(states()[&binary], "changed");

    // Uninstall forgets the identities with the state.
    let identities = host
        .root()
        .join("var/lib/regcred/node-install/identities.json");
    assert!(identities.exists());
    let _ = uninstall(&host.layout, &host.systemctl);
    assert!(!identities.exists());
}
