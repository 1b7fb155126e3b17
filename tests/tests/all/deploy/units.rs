//! The systemd units, as shipped and as `regcred node install` writes them, through systemd-analyze.

use super::*;

/// deploy/cri-proxy's systemd unit, checked by Debian's systemd-analyze without a running
/// systemd: `verify` has nothing to say about it (a misspelt or unknown key is only a
/// warning there, so any output fails the test; `ExecStart` is pointed at the binary this
/// suite built, which verify wants to exist), and `security --offline=true` rates its
/// exposure "OK" (at most 2.0 of 10; it was 8.9 before the hardening). What it does not
/// show: the unit running under systemd, which these machines do not boot.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let binary = regcred_tests::harness::regcred_binary();
    unit_verifies_and_is_hardened(
        "deploy/cri-proxy/regcred-cri-proxy.service",
        "/usr/local/bin/regcred cri-proxy",
        "/usr/local/bin/regcred",
        &binary,
    );
}

/// deploy/cri-proxy's socket unit (the agent's sockets, held across its restarts), beside
/// the service it starts: `verify` of the pair has nothing to say, and the socket unit
/// lists both of the agent's sockets at the paths the service serves.
#[test]
fn the_socket_unit_verifies_beside_its_service() {
    let socket =
        std::fs::read_to_string(root().join("deploy/cri-proxy/regcred-cri-proxy.socket")).unwrap();
    let service =
        std::fs::read_to_string(root().join("deploy/cri-proxy/regcred-cri-proxy.service")).unwrap();
    for path in [
        "/run/regcred/cri-proxy.sock",
        "/run/regcred/nri-decisions.sock",
    ] {
        assert!(
            socket.contains(&format!("ListenStream={path}\n")),
            "the socket unit has no {path}"
        );
        assert!(
            service.contains(&format!("unix://{path}")),
            "the service does not serve {path}"
        );
    }
    socket_pair_verifies(&socket, &service, "/usr/local/bin/regcred");
}

fn socket_pair_verifies(socket: &str, service: &str, program: &str) {
    let analyze =
        regcred_tests::harness::require_program("systemd-analyze", "systemd (systemd-analyze)");
    let binary = regcred_tests::harness::regcred_binary();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("regcred-cri-proxy.socket"), socket).unwrap();
    std::fs::write(
        dir.path().join("regcred-cri-proxy.service"),
        service.replace(program, &binary.display().to_string()),
    )
    .unwrap();
    verifies_quietly(
        &analyze,
        &[
            &dir.path().join("regcred-cri-proxy.socket"),
            &dir.path().join("regcred-cri-proxy.service"),
        ],
        "regcred-cri-proxy.socket",
    );
}

/// `systemd-analyze verify FILES` succeeds and says nothing (a misspelt or unknown key is
/// only a warning there, so any output fails).
fn verifies_quietly(analyze: &std::path::Path, files: &[&std::path::Path], what: &str) {
    let verify = Command::new(analyze)
        .arg("verify")
        .args(files)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "{what}: systemd-analyze verify: {}\n{said}",
        verify.status
    );
}

/// The same for regcred-nri's unit (deploy/nri). `verify` checks the unit and that its
/// program is an executable file; cargo does not build the Go plugin, so the regcred
/// binary stands in for that check (the kit runs the real plugin).
#[test]
fn the_nri_plugin_unit_verifies_and_is_hardened() {
    let binary = regcred_tests::harness::regcred_binary();
    unit_verifies_and_is_hardened(
        "deploy/nri/regcred-nri.service",
        "/usr/local/bin/regcred-nri --nri-socket /var/run/nri/nri.sock",
        "/usr/local/bin/regcred-nri",
        &binary,
    );
}

fn unit_verifies_and_is_hardened(
    path: &str,
    exec_start: &str,
    program: &str,
    binary: &std::path::Path,
) {
    let unit = std::fs::read_to_string(root().join(path)).unwrap();
    unit_text_verifies_and_is_hardened(path, &unit, exec_start, program, binary);
}

fn unit_text_verifies_and_is_hardened(
    path: &str,
    unit: &str,
    exec_start: &str,
    program: &str,
    binary: &std::path::Path,
) {
    let analyze =
        regcred_tests::harness::require_program("systemd-analyze", "systemd (systemd-analyze)");
    assert!(
        unit.replace("\\\n    ", "")
            .contains(&format!("ExecStart={exec_start}")),
        "{path}: the unit's ExecStart moved: update this test"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir
        .path()
        .join(std::path::Path::new(path).file_name().unwrap());
    std::fs::write(&copy, unit.replace(program, &binary.display().to_string())).unwrap();

    verifies_quietly(&analyze, &[&copy], path);

    let security = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|line| line.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    println!("{path}: systemd-analyze security: exposure {exposure}");
    assert!(
        exposure <= 2.0,
        "{path}: exposure {exposure} (want at most 2.0):\n{report}"
    );
}

/// The units as `regcred node install` writes them (their programs under
/// /opt/regcred/bin): what the installer puts on a node verifies and keeps its hardening.
#[test]
fn the_units_the_node_installer_writes_verify_and_are_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir_all(host.join("etc/kubernetes/kubelet.conf.d")).unwrap();
    // containerd's configuration as `containerd config default` starts it (its
    // `imports` names the drop-in directory; the installer refuses a containerd that
    // would not read its drop-in).
    std::fs::create_dir_all(host.join("etc/containerd")).unwrap();
    std::fs::write(
        host.join("etc/containerd/config.toml"),
        "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
    )
    .unwrap();
    let binary = regcred_tests::harness::regcred_binary();
    let output = Command::new(&binary)
        .args([
            "node",
            "install",
            "--systemctl",
            "true",
            "--settle-seconds",
            "0",
        ])
        .args(["--proc-dir", "none", "--host-root"])
        .arg(&host)
        .arg("--nri-plugin")
        .arg(&binary)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (unit, exec_start, program) in [
        (
            "regcred-cri-proxy.service",
            "/opt/regcred/bin/regcred cri-proxy",
            "/opt/regcred/bin/regcred",
        ),
        (
            "regcred-nri.service",
            "/opt/regcred/bin/regcred-nri --nri-socket /var/run/nri/nri.sock",
            "/opt/regcred/bin/regcred-nri",
        ),
    ] {
        let text = std::fs::read_to_string(host.join("etc/systemd/system").join(unit)).unwrap();
        unit_text_verifies_and_is_hardened(unit, &text, exec_start, program, &binary);
    }
    let unit =
        |name: &str| std::fs::read_to_string(host.join("etc/systemd/system").join(name)).unwrap();
    socket_pair_verifies(
        &unit("regcred-cri-proxy.socket"),
        &unit("regcred-cri-proxy.service"),
        "/opt/regcred/bin/regcred",
    );
}
