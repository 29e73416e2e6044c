//! The socket under rustls, read ahead in large pieces.
//!
//! rustls pulls ciphertext a few KiB at a time; reading the socket through a
//! 64 KiB buffer turns that into one read per 64 KiB (scripts/bench-tls:
//! broker CPU per million TLS records 2.2 s -> 1.7 s). A buffer per session
//! would cost every idle TLS connection its 64 KiB (20-25 KB of it resident,
//! measured), so a session holds one only while the socket has data for
//! it: when a read finds the socket empty the buffer goes back to a
//! per-shard pool, from which the next session with data takes it already
//! allocated and initialised.

use futures::{AsyncRead, AsyncWrite};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Bytes asked of each socket read.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

/// Buffers a shard keeps for reuse (4 MiB): enough for that many sessions
/// reading at the same moment; beyond it buffers are freed.
const POOL_MAX: usize = 64;

thread_local! {
    // Thread-local is per shard: every session is polled on its shard's
    // thread only.
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    POOL.with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; READ_AHEAD].into_boxed_slice())
}

fn give_back(buffer: Box<[u8]>) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(buffer);
        }
    });
}

pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Held only while `start..end` has bytes or a read is being made.
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: None,
            start: 0,
            end: 0,
        }
    }

    /// Whether a buffer is held (not while quiet).
    #[cfg(test)]
    fn holds_buffer(&self) -> bool {
        self.buf.is_some()
    }

    fn release(&mut self) {
        if let Some(buffer) = self.buf.take() {
            give_back(buffer);
        }
        (self.start, self.end) = (0, 0);
    }
}

impl<S> Drop for ReadAhead<S> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.start == this.end && out.len() >= READ_AHEAD {
            this.release();
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        if this.start == this.end {
            let buffer = this.buf.get_or_insert_with(take_buffer);
            match Pin::new(&mut this.inner).poll_read(cx, buffer) {
                // Nothing more for now (or ever): the buffer goes back.
                Poll::Pending => {
                    this.release();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    this.release();
                    return Poll::Ready(Ok(0));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(n)) => (this.start, this.end) = (0, n.min(READ_AHEAD)),
            }
        }
        let Some(buffer) = this.buf.as_ref() else {
            return Poll::Ready(Ok(0));
        };
        let n = out.len().min(this.end - this.start);
        out[..n].copy_from_slice(&buffer[this.start..this.start + n]);
        this.start += n;
        if this.start == this.end {
            // Handed out whole: keep the buffer only while the socket keeps
            // giving (the next read decides).
            (this.start, this.end) = (0, 0);
        }
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::AsyncReadExt;

    /// Gives its chunks one per read, with a Pending between chunks.
    struct Trickle {
        chunks: Vec<Vec<u8>>,
        pending_next: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.pending_next {
                this.pending_next = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let Some(chunk) = this.chunks.first_mut() else {
                return Poll::Ready(Ok(0));
            };
            let n = out.len().min(chunk.len());
            out[..n].copy_from_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                this.chunks.remove(0);
                this.pending_next = true;
            }
            Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn bytes_come_through_in_order_and_a_quiet_stream_holds_no_buffer() {
        let first: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let second: Vec<u8> = (0..10_000u32).map(|i| (i % 13) as u8).collect();
        let source = Trickle {
            chunks: vec![first.clone(), second.clone()],
            pending_next: false,
        };
        let mut reader = ReadAhead::new(source);
        assert!(!reader.holds_buffer());
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        let mut read_until = |reader: &mut ReadAhead<Trickle>, len: usize, got: &mut Vec<u8>| {
            futures::executor::block_on(async {
                while got.len() < len {
                    let n = reader.read(&mut small).await.unwrap();
                    assert!(n > 0, "stream ended early");
                    got.extend_from_slice(&small[..n]);
                }
            })
        };
        read_until(&mut reader, first.len(), &mut got);
        assert!(reader.holds_buffer(), "streaming: the read-ahead buffer is held");
        // The socket has nothing more for now: the buffer goes.
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut probe = [0u8; 16];
        assert!(Pin::new(&mut reader).poll_read(&mut cx, &mut probe).is_pending());
        assert!(!reader.holds_buffer(), "quiet: nothing held");
        read_until(&mut reader, first.len() + second.len(), &mut got);
        let mut want = first;
        want.extend_from_slice(&second);
        assert_eq!(got, want);
    }
}
