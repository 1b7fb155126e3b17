//! The listeners the servers accept on: TCP (the webhook, `/metrics`) and unix sockets
//! (the CRI proxy).

use std::future::Future;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

/// Something [`HttpServer::serve`](super::HttpServer::serve) accepts connections on.
pub trait Listener: Send + 'static {
    /// A connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection and the peer's address as text (empty for unix sockets).
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Stream, String)>> + Send;
}

impl Listener for TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> std::io::Result<(Self::Stream, String)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer.to_string()))
    }
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept(&self) -> std::io::Result<(Self::Stream, String)> {
        let (stream, _) = UnixListener::accept(self).await?;
        Ok((stream, String::new()))
    }
}

/// Binds a unix socket at `path` (mode 0660), creating its directory; a socket file left
/// by an earlier run is removed first, unless a process still answers on it.
///
/// # Errors
///
/// `AddrInUse` when another process serves on `path`; other I/O errors as they come.
pub async fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;

    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another process serves on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// The unix sockets the service manager handed this process (systemd's socket
/// activation: `LISTEN_FDS`, read with the `listenfd` crate), by the path each is bound
/// to. A socket held by the service manager outlives the process: while the service
/// restarts, clients connect and wait in the socket's backlog instead of finding no
/// socket, and the next process accepts them.
#[derive(Debug, Default)]
pub struct InheritedSockets {
    sockets: Vec<(PathBuf, std::os::unix::net::UnixListener)>,
    refused: Vec<String>,
}

impl InheritedSockets {
    /// The sockets passed to this process, if any; an inherited descriptor that is not
    /// a unix stream socket bound to a path is kept out (see [`Self::refused`]). Call it
    /// before any other thread starts: it clears `LISTEN_FDS` and `LISTEN_PID` from the
    /// environment, so that no child inherits them.
    #[must_use]
    pub fn from_env() -> Self {
        let mut fds = listenfd::ListenFd::from_env();
        let mut sockets = Vec::new();
        let mut refused = Vec::new();
        for index in 0..fds.len() {
            // File descriptors 3, 4, ... in the order the socket unit lists them.
            let fd = index + 3;
            match fds.take_unix_listener(index) {
                Ok(Some(listener)) => sockets.push(listener),
                Ok(None) => {}
                Err(err) => refused.push(format!("file descriptor {fd}: {err}")),
            }
        }
        let mut inherited = Self::from_listeners(sockets);
        inherited.refused.extend(refused);
        inherited
    }

    fn from_listeners(listeners: Vec<std::os::unix::net::UnixListener>) -> Self {
        let mut inherited = Self::default();
        for listener in listeners {
            match listener
                .local_addr()
                .map(|a| a.as_pathname().map(Path::to_path_buf))
            {
                Ok(Some(path)) => inherited.sockets.push((path, listener)),
                Ok(None) => inherited
                    .refused
                    .push("a unix socket with no path (abstract or unnamed)".to_owned()),
                Err(err) => inherited.refused.push(format!("a unix socket: {err}")),
            }
        }
        inherited
    }

    /// The inherited socket bound to `path`, ready for the async runtime; `None` when
    /// none was passed for it (bind it with [`bind_unix`]).
    ///
    /// # Errors
    ///
    /// The socket cannot be made non-blocking or registered with the runtime.
    pub fn take(&mut self, path: &Path) -> Option<std::io::Result<UnixListener>> {
        let at = self.sockets.iter().position(|(p, _)| p == path)?;
        let (_, listener) = self.sockets.swap_remove(at);
        Some(
            listener
                .set_nonblocking(true)
                .and_then(|()| UnixListener::from_std(listener)),
        )
    }

    /// The paths of the inherited sockets nobody took (a socket unit listing a socket
    /// the command line does not serve).
    pub fn untaken(&self) -> impl Iterator<Item = &Path> {
        self.sockets.iter().map(|(p, _)| p.as_path())
    }

    /// What was passed but is not a unix stream socket with a path, described.
    #[must_use]
    pub fn refused(&self) -> &[String] {
        &self.refused
    }
}

/// What tells one socket file from another at the same path: device, inode, and the
/// inode's change time (an inode number can be reused once its socket is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

/// The identity of the file at `path`, to tell later whether the socket file there is
/// still the one this process bound ([`remove_if_same`]).
#[must_use]
pub fn file_identity(path: &Path) -> Option<FileIdentity> {
    std::fs::symlink_metadata(path).ok().map(|m| FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// Removes the socket file at `path` only if it is still `identity` (the one this
/// process bound): a socket bound there since by someone else (a service manager's
/// socket unit, the next process) is left alone. Returns whether it removed it.
///
/// # Errors
///
/// The file is this process's and cannot be removed.
pub fn remove_if_same(path: &Path, identity: FileIdentity) -> std::io::Result<bool> {
    if file_identity(path) != Some(identity) {
        return Ok(false);
    }
    std::fs::remove_file(path).map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_replaces_a_stale_socket_but_not_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/proxy.sock");
        let live = bind_unix(&path).await.unwrap();
        let err = bind_unix(&path).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(live);
        // The file is still there, nobody answers: it is replaced.
        assert!(path.exists());
        bind_unix(&path).await.unwrap();
    }

    #[tokio::test]
    async fn an_inherited_socket_is_found_by_its_path_and_serves() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.sock");
        let b = dir.path().join("b.sock");
        let listeners = vec![
            std::os::unix::net::UnixListener::bind(&a).unwrap(),
            std::os::unix::net::UnixListener::bind(&b).unwrap(),
        ];
        let mut inherited = InheritedSockets::from_listeners(listeners);
        assert!(inherited.take(&dir.path().join("c.sock")).is_none());
        let listener = inherited.take(&b).unwrap().unwrap();
        assert!(inherited.take(&b).is_none(), "taken twice");
        assert_eq!(inherited.untaken().collect::<Vec<_>>(), vec![a.as_path()]);
        let client = tokio::spawn(async move { tokio::net::UnixStream::connect(&b).await });
        let (_stream, _) = Listener::accept(&listener).await.unwrap();
        client.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn only_the_socket_this_process_bound_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.sock");
        let mine = bind_unix(&path).await.unwrap();
        let identity = file_identity(&path).unwrap();
        // Someone else binds the path while this process still serves (a socket unit
        // started before the old agent stops; the next agent).
        std::fs::remove_file(&path).unwrap();
        let _theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(mine);
        assert!(!remove_if_same(&path, identity).unwrap());
        assert!(path.exists(), "another's socket was removed");
        let again = file_identity(&path).unwrap();
        assert!(remove_if_same(&path, again).unwrap());
        assert!(!path.exists());
    }
}
