//! Running a host program from a pod: `regcred node host-exec -- systemctl ...` joins PID
//! 1's namespaces (the pod has `hostPID`, so PID 1 is the host's init) and runs the
//! program there, as `nsenter --target 1 --mount --uts --ipc --net --pid` would. The
//! image has no nsenter (it holds regcred alone), and a `chroot` is not enough: systemctl
//! ignores start and restart requests made from a chroot.

use std::os::fd::AsFd as _;
use std::path::Path;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Moves this (single-threaded) process into the namespaces of `proc_dir/1`: IPC, UTS,
/// network, PID (for the children it starts) and, last, mount.
///
/// # Errors
/// A namespace cannot be opened or joined (the pod is not privileged, or has no
/// `hostPID`): named.
pub(crate) fn enter_host_namespaces(proc_dir: &Path) -> Result<(), String> {
    let kinds = [
        ("ipc", LinkNameSpaceType::InterProcessCommunication),
        ("uts", LinkNameSpaceType::HostNameAndNISDomainName),
        ("net", LinkNameSpaceType::Network),
        ("pid", LinkNameSpaceType::ProcessID),
        ("mnt", LinkNameSpaceType::Mount),
    ];
    // Every file is opened first: after the mount namespace changes, proc_dir may not
    // be the same file system any more.
    let mut opened = Vec::with_capacity(kinds.len());
    for (name, kind) in kinds {
        let path = proc_dir.join("1/ns").join(name);
        let file = std::fs::File::open(&path).map_err(|e| {
            format!(
                "opening {} ({e}): the installer needs hostPID and a privileged container",
                path.display()
            )
        })?;
        opened.push((path, file, kind));
    }
    for (path, file, kind) in &opened {
        move_into_link_name_space(file.as_fd(), Some(*kind)).map_err(|e| {
            format!(
                "joining {} ({e}): the installer needs a privileged container",
                path.display()
            )
        })?;
    }
    Ok(())
}
