//! containerd's configuration, written in one place for the whole test tree: the e2e
//! harness's [`Containerd`](super::Containerd) and every node of the kit (`regcred-kit`)
//! run containerd with it.
//!
//! Version 3 is containerd 2.x's (2.2 to 2.4 all read it; 2.3 migrates it to its version 4
//! at start with a warning in its log): the CRI plugin split in an image service (where the
//! pull path is chosen: the transfer service, containerd 2.x's default, or the CRI plugin's
//! own local pull) and a runtime service. Version 2 is containerd 1.6's (Debian 12, the
//! legacy runtime): one CRI plugin section. Both read `hosts.toml` per registry from
//! `DIR/certs.d` ([`plain_http_hosts_toml`]) and use overlayfs, a real node's snapshotter
//! (the transfer service unpacks only for the snapshotters of its unpack configuration,
//! overlayfs by default: a CRI pull into `native` fails with "no unpack platforms defined").

use std::path::{Path, PathBuf};

/// One containerd's configuration.
#[derive(Debug, Clone, Copy)]
pub struct ContainerdConfig<'a> {
    /// containerd's own directory: `root/`, `state/`, `opt/`, `certs.d/` and its debug
    /// socket go in it.
    pub dir: &'a Path,
    /// The gRPC socket (CRI); its TTRPC socket is beside it, `.ttrpc` added.
    pub socket: &'a Path,
    /// The runc binary (the runtime's own, not whatever is on PATH).
    pub runc: &'a Path,
    /// runc's state directory (per containerd: two on one host must not share it).
    pub runc_root: &'a Path,
    /// The CNI configuration directory (plugins from Debian's `/usr/lib/cni`).
    pub cni_conf_dir: &'a Path,
    /// The sandbox (pause) image.
    pub sandbox_image: &'a str,
    /// containerd 2.x: pull with the CRI plugin's local pull instead of the transfer service.
    pub local_pull: bool,
    /// containerd 2.x: NRI on, at this socket (its own per containerd); `None`: NRI off.
    pub nri_socket: Option<&'a Path>,
    /// containerd 2.x: the drop-ins `imports` names (none from the host: 2.x reads only
    /// what `imports` lists).
    pub imports: &'a [PathBuf],
}

impl ContainerdConfig<'_> {
    /// Version 3 (containerd 2.x).
    pub fn version3(&self) -> String {
        let imports: Vec<String> = self
            .imports
            .iter()
            .map(|file| format!("\"{}\"", file.display()))
            .collect();
        let nri = match self.nri_socket {
            Some(socket) => format!(
                "  disable = false\n  socket_path = \"{}\"",
                socket.display()
            ),
            None => "  disable = true".to_owned(),
        };
        format!(
            r#"version = 3
root = "{d}/root"
state = "{d}/state"
imports = [{imports}]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins.'io.containerd.internal.v1.opt']
  path = "{d}/opt"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  use_local_image_pull = {local_pull}
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{sandbox}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{d}/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # This VM refuses negative oom_score_adj (kubelet logs it too); containerd gives the
  # pause container -998, which fails runc inside nsexec ("can't get final child's PID
  # from pipe"). Clamp to containerd's own value instead.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{runc}"
        Root = "{runc_root}"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni}"
[plugins.'io.containerd.nri.v1.nri']
{nri}
"#,
            d = self.dir.display(),
            imports = imports.join(", "),
            sock = self.socket.display(),
            local_pull = self.local_pull,
            sandbox = self.sandbox_image,
            runc = self.runc.display(),
            runc_root = self.runc_root.display(),
            cni = self.cni_conf_dir.display(),
        )
    }

    /// Version 2 (containerd 1.6: no NRI validators, no pull path to choose, no imports).
    pub fn version2(&self) -> String {
        format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  # See version 3.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{runc}"
        Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"#,
            d = self.dir.display(),
            sock = self.socket.display(),
            sandbox = self.sandbox_image,
            runc = self.runc.display(),
            runc_root = self.runc_root.display(),
            cni = self.cni_conf_dir.display(),
        )
    }
}

/// `certs.d/HOST/hosts.toml` for a registry at `host` (`127.0.0.1:PORT`) over plain
/// HTTP, for pulls and resolves.
pub fn plain_http_hosts_toml(host: &str) -> String {
    format!(
        "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config<'a>(nri: Option<&'a Path>, imports: &'a [PathBuf]) -> ContainerdConfig<'a> {
        ContainerdConfig {
            dir: Path::new("/k/containerd"),
            socket: Path::new("/k/containerd/containerd.sock"),
            runc: Path::new("/rt/runc"),
            runc_root: Path::new("/k/containerd/runc"),
            cni_conf_dir: Path::new("/k/cni/net.d"),
            sandbox_image: "pause:v1",
            local_pull: true,
            nri_socket: nri,
            imports,
        }
    }

    #[test]
    fn version3_says_nri_imports_and_the_pull_path() {
        let imports = [PathBuf::from("/deploy/nri.toml")];
        let on = config(Some(Path::new("/k/nri.sock")), &imports).version3();
        assert!(on.contains("imports = [\"/deploy/nri.toml\"]"), "{on}");
        assert!(
            on.contains("disable = false\n  socket_path = \"/k/nri.sock\""),
            "{on}"
        );
        assert!(on.contains("use_local_image_pull = true"), "{on}");
        assert!(
            on.contains("address = \"/k/containerd/containerd.sock.ttrpc\""),
            "{on}"
        );
        let off = config(None, &[]).version3();
        assert!(off.contains("imports = []"), "{off}");
        assert!(
            off.contains("[plugins.'io.containerd.nri.v1.nri']\n  disable = true"),
            "{off}"
        );
        let v2 = config(None, &[]).version2();
        assert!(v2.starts_with("version = 2\n"), "{v2}");
        assert!(v2.contains("sandbox_image = \"pause:v1\""), "{v2}");
    }
}
