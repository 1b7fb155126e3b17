//! The listeners the servers accept on: TCP (the webhook, `/metrics`) and unix sockets
//! (the CRI proxy).

use std::future::Future;
use std::path::Path;

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
}
