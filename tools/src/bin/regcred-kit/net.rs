//! What a kit changes on the host besides its directory: each node's bridge, the rule
//! that sends the `kubernetes` Service's address to the API server, forwarding between
//! the bridges, the containers' processes and mounts; and taking each of them back.

use std::path::Path;
use std::process::Command;

use crate::kit::{Kit, Node, SERVICE_NET, run};

/// The bridge of `node` with the node's address (its pods' gateway), up.
pub(crate) fn make_bridge(node: &Node) -> Result<(), String> {
    let bridge = node.bridge.as_str();
    if run(Command::new("ip").args(["link", "show", bridge]), None).is_err() {
        run(
            Command::new("ip").args(["link", "add", bridge, "type", "bridge"]),
            None,
        )?;
    }
    let addresses = run(
        Command::new("ip").args(["addr", "show", "dev", bridge]),
        None,
    )?;
    let prefix = node.subnet.rsplit_once('/').map_or("24", |(_, p)| p);
    if !addresses.contains(&format!("inet {}/", node.ip)) {
        run(
            Command::new("ip").args([
                "addr",
                "add",
                &format!("{}/{prefix}", node.ip),
                "dev",
                bridge,
            ]),
            None,
        )?;
    }
    run(Command::new("ip").args(["link", "set", bridge, "up"]), None).map(drop)
}

/// In-cluster clients (a pod's ServiceAccount, such as the webhook managing its own
/// certificate) reach the API server at the `kubernetes` Service's ClusterIP. The kit has
/// no kube-proxy and its API server listens on loopback only: a DNAT rule per bridge sends
/// that address to 127.0.0.1:APISERVER (route_localnet lets the bridge route to loopback).
/// The serving certificate names the ClusterIP. A kit that ended without `down` left its
/// rule, with its own API server's port, ahead of this one: the bridge's rules go first.
pub(crate) fn route_api_service(kit: &Kit, node: &Node) -> Result<(), String> {
    let localnet = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", node.bridge);
    std::fs::write(&localnet, "1").map_err(|e| format!("writing {localnet}: {e}"))?;
    unroute_api_service(node);
    run(
        Command::new("iptables").args([
            "-w",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-i",
            &node.bridge,
            "-d",
            &format!("{SERVICE_NET}.1/32"),
            "-p",
            "tcp",
            "--dport",
            "443",
            "-m",
            "comment",
            "--comment",
            "regcred-kit",
            "-j",
            "DNAT",
            "--to-destination",
            &format!("127.0.0.1:{}", kit.state.port("APISERVER")),
        ]),
        None,
    )
    .map(drop)
    .map_err(|e| format!("iptables: cannot route {SERVICE_NET}.1:443 to the API server: {e}"))
}

/// Removes every kit rule of this node's bridge, whatever port it names.
pub(crate) fn unroute_api_service(node: &Node) {
    let Ok(rules) = run(
        Command::new("iptables").args(["-w", "-t", "nat", "-S", "PREROUTING"]),
        None,
    ) else {
        return;
    };
    let bridge = format!("-i {} ", node.bridge);
    for rule in rules.lines() {
        if !rule.contains(&bridge) || !rule.contains("--comment regcred-kit") {
            continue;
        }
        let Some(rest) = rule.strip_prefix("-A ") else {
            continue;
        };
        let mut args = vec!["-w", "-t", "nat", "-D"];
        args.extend(rest.split_whitespace());
        let _ = run(Command::new("iptables").args(args), None);
    }
}

/// Removes the node's bridge.
pub(crate) fn remove_bridge(node: &Node) {
    let _ = run(Command::new("ip").args(["link", "del", &node.bridge]), None);
}

/// Kills the containers of a node's containerd and their shims by PID (runc's own
/// `delete --force` kills the container's processes and removes its cgroups).
pub(crate) fn stop_containers(kit: &Kit, node: &Node) {
    let task_dir = node
        .dir
        .join("containerd/state/io.containerd.runtime.v2.task");
    let runc = kit.runtime_dir.join("runc");
    let tasks = || -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for namespace in read_dir(&task_dir) {
            found.extend(read_dir(&namespace));
        }
        found
    };
    // The containers' IDs, before runc deletes them: their cgroups go at the end.
    let ids: Vec<std::ffi::OsString> = tasks()
        .iter()
        .filter_map(|task| task.file_name().map(ToOwned::to_owned))
        .collect();
    for task in tasks() {
        let (Some(id), Some(namespace)) =
            (task.file_name(), task.parent().and_then(Path::file_name))
        else {
            continue;
        };
        let _ = Command::new(&runc)
            .arg("--root")
            .arg(node.runc_root.join(namespace))
            .args(["delete", "--force"])
            .arg(id)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        // (a file may go between the look and the read: the container just ended)
        kill_pid_file(&task.join("init.pid"));
    }
    for task in tasks() {
        kill_pid_file(&task.join("shim.pid"));
    }
    // The containers' cgroups (runc names them k8s.io/ID in every hierarchy of cgroup v1,
    // and in the one of v2), once their killed processes are gone: a cgroup is removed
    // only when empty.
    let mut hierarchies = read_dir(Path::new("/sys/fs/cgroup"));
    hierarchies.push(std::path::PathBuf::from("/sys/fs/cgroup"));
    for attempt in 0..20 {
        let mut left = 0;
        for hierarchy in &hierarchies {
            for id in &ids {
                let cgroup = hierarchy.join("k8s.io").join(id);
                if cgroup.is_dir() && std::fs::remove_dir(&cgroup).is_err() {
                    left += 1;
                }
            }
        }
        if left == 0 || attempt == 19 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // containerd 1.6 writes no shim.pid for a pod's shim (one per sandbox), and a shim
    // outlives containerd, reparented to init: it is found by the socket it was started to
    // report to, which is this node's alone.
    let sock = node.containerd_sock.as_os_str().as_encoded_bytes();
    for process in read_dir(Path::new("/proc")) {
        let Ok(cmdline) = std::fs::read(process.join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let is_shim = args
            .next()
            .is_some_and(|arg0| arg0.windows(15).any(|w| w == b"containerd-shim"));
        if is_shim && args.any(|arg| arg == sock) {
            kill_pid_named(process.file_name().and_then(|n| n.to_str()));
        }
    }
}

fn read_dir(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn kill_pid_file(path: &Path) {
    kill_pid_named(std::fs::read_to_string(path).ok().as_deref().map(str::trim));
}

fn kill_pid_named(pid: Option<&str>) {
    if let Some(pid) = pid
        .and_then(|p| p.parse().ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Unmounts every mount under the kit's directory, deepest first (pod volumes, container
/// root file systems, sandbox shm, network namespaces); returns the ones that stay.
pub(crate) fn unmount_all(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut left = Vec::new();
    for point in points.into_iter().rev() {
        let unmounted = |lazy: bool| {
            let mut command = Command::new("umount");
            if lazy {
                command.arg("-l");
            }
            command
                .arg(point)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !unmounted(false) && !unmounted(true) {
            left.push(point.to_owned());
        }
    }
    left
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Records the host's `net.ipv4.ip_forward` once (the CNI bridge plugin turns forwarding on
/// by itself when it sets up a pod's gateway, on a one-node kit too), and turns it on for
/// a kit of several nodes (pods across bridges).
pub(crate) fn enable_forwarding(kit: &mut Kit) -> Result<(), String> {
    if kit.state.ip_forward_before.is_none() {
        let before = std::fs::read_to_string(IP_FORWARD)
            .map_err(|e| format!("reading {IP_FORWARD}: {e}"))?;
        kit.state.ip_forward_before = Some(before.trim().to_owned());
        kit.save()?;
    }
    if kit.state.nodes > 1 {
        std::fs::write(IP_FORWARD, "1").map_err(|e| format!("writing {IP_FORWARD}: {e}"))?;
    }
    Ok(())
}

/// Puts `net.ipv4.ip_forward` back as it was before the kit.
pub(crate) fn restore_forwarding(kit: &mut Kit) {
    if let Some(before) = kit.state.ip_forward_before.take() {
        let _ = std::fs::write(IP_FORWARD, before);
    }
}

const CGROUP_PARENT: &str = "/sys/fs/cgroup/memory/k8s.io";

/// runc makes the cgroup parent `k8s.io` (the containerd namespace) in every hierarchy:
/// recorded whether the kit made it, so that `down` removes it only then.
pub(crate) fn note_cgroup_parent(kit: &mut Kit) -> Result<(), String> {
    if kit.state.made_cgroup_parent.is_none() {
        kit.state.made_cgroup_parent = Some(!Path::new(CGROUP_PARENT).is_dir());
        kit.save()?;
    }
    Ok(())
}

/// Removes the empty cgroup parents the kit made (rmdir removes only an empty cgroup: one
/// still in use, another containerd's, stays).
pub(crate) fn remove_cgroup_parent(kit: &mut Kit) {
    if kit.state.made_cgroup_parent.take() == Some(true) {
        for hierarchy in read_dir(Path::new("/sys/fs/cgroup")) {
            let _ = std::fs::remove_dir(hierarchy.join("k8s.io"));
        }
    }
}

/// Removes kubelet's links to the kit's container logs (/var/log/containers is not
/// configurable).
pub(crate) fn remove_container_log_links(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/var/log/containers") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if std::fs::read_link(entry.path()).is_ok_and(|target| target.starts_with(dir)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
