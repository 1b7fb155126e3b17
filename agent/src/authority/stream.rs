//! The normalizer on a connection: [`Normalized`] reads the client through it, and
//! [`Normalizing`] accepts connections so.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Normalizer;

/// A client connection whose bytes reach hyper through a [`Normalizer`]; writes pass
/// unchanged.
pub struct Normalized<S> {
    inner: S,
    normalizer: Normalizer,
    /// Read from the client, not yet given to hyper.
    pending: Vec<u8>,
    /// How far `pending` was given.
    given: usize,
    scratch: Box<[u8]>,
    eof: bool,
}

impl<S> std::fmt::Debug for Normalized<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The buffered bytes may hold header values: not shown.
        f.debug_struct("Normalized")
            .field("normalizer", &self.normalizer)
            .field("buffered", &(self.pending.len() - self.given))
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

/// How much is read from the client at once.
const READ_CHUNK: usize = 16 * 1024;

impl<S> Normalized<S> {
    /// `inner` seen through a normalizer for hyper's default settings.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            normalizer: Normalizer::default(),
            pending: Vec::new(),
            given: 0,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            eof: false,
        }
    }

    /// The normalizer (for its counters).
    pub fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Normalized<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.given < this.pending.len() {
                let take = (this.pending.len() - this.given).min(buf.remaining());
                buf.put_slice(&this.pending[this.given..this.given + take]);
                this.given += take;
                if this.given == this.pending.len() {
                    this.pending.clear();
                    this.given = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut scratch = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut scratch))?;
            let read = scratch.filled();
            if read.is_empty() {
                this.eof = true;
                continue;
            }
            this.normalizer.feed(read, &mut this.pending)?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Normalized<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A listener whose connections are [`Normalized`]: what the CRI proxy serves on, so that
/// every client's `:authority` reaches it. hyper's HTTP/2 server keeps the protocol's
/// default max frame size and HPACK table size, which are [`MAX_FRAME_SIZE`](super::MAX_FRAME_SIZE) and
/// [`HEADER_TABLE_SIZE`](super::HEADER_TABLE_SIZE).
#[derive(Debug)]
pub struct Normalizing<L>(pub L);

impl<L: regcred_serve::Listener + Sync> regcred_serve::Listener for Normalizing<L> {
    type Stream = Normalized<L::Stream>;

    async fn accept(&self) -> io::Result<(Self::Stream, String)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((Normalized::new(stream), peer))
    }
}
