//! Request framing: a 4-byte big-endian size, then that many bytes.
//!
//! [`frame_size`] is the cheap "is a whole frame here?" check: it looks at
//! four bytes and rejects a bad size before anything is allocated for it;
//! [`FrameBuffer`] then hands each whole frame on as a `Bytes` slice of the
//! read buffer, with no copy.

use bytes::{Bytes, BytesMut};
use futures::AsyncRead;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// Size of the length prefix.
pub const SIZE_PREFIX: usize = 4;
/// api_key + api_version + correlation_id: the least a request can hold.
pub const MIN_REQUEST_BYTES: usize = 8;

/// A size prefix that cannot be honoured; the connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    Negative(i32),
    TooShort(usize),
    TooLarge { size: usize, max: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Negative(size) => write!(f, "negative frame size {size}"),
            FrameError::TooShort(size) => {
                write!(
                    f,
                    "frame size {size} is below the {MIN_REQUEST_BYTES}-byte request minimum"
                )
            }
            FrameError::TooLarge { size, max } => {
                write!(f, "frame size {size} exceeds MAX_REQUEST_BYTES ({max})")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Reads and checks the size prefix at the front of `buf`, if all four
/// bytes are there.
pub fn frame_size(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..SIZE_PREFIX) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if size < 0 {
        return Err(FrameError::Negative(size));
    }
    let size = size as usize;
    if size < MIN_REQUEST_BYTES {
        return Err(FrameError::TooShort(size));
    }
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    Ok(Some(size))
}

/// Bytes still missing for the frame at the front of `buf` (0 if whole or
/// if even the size is not known yet).
pub fn bytes_missing(buf: &[u8], max: usize) -> usize {
    match frame_size(buf, max) {
        Ok(Some(size)) => (SIZE_PREFIX + size).saturating_sub(buf.len()),
        _ => 0,
    }
}

/// Where a connection's bytes come from.
pub struct Incoming<R> {
    pub reader: R,
    /// The descriptor `reader` reads from, when `reader` is a plain
    /// socket that buffers nothing itself (not TLS): frame bodies are then
    /// received straight into the frame's unwritten allocation. Going
    /// through `AsyncRead` needs the memory initialised first, and zeroing
    /// every byte of a 1 MiB produce request before the kernel overwrote
    /// it was a fifth of the shard's time at full ingest.
    pub socket: Option<RawFd>,
}

/// A connection's read buffer. Bytes past `filled` are initialised (zeroed
/// once when the buffer grows) and reused by later reads, so a frame that
/// arrives in many pieces is not re-zeroed for every piece; whole frames are
/// split off the front as `Bytes` without copying. Between frames it holds
/// no memory: see [`FrameBuffer::read_from`].
pub struct FrameBuffer {
    buf: BytesMut,
    filled: usize,
    /// Bytes asked of the next read between frames: starts small so an
    /// idle connection costs little, doubles while reads come back full.
    read_size: usize,
    max_read_size: usize,
    max_frame: usize,
}

/// Frames up to this size are allocated whole once their size is known.
const WHOLE_FRAME_AT_ONCE: usize = 2 << 20;

/// First read size into the heap buffer once a frame is under way.
const INITIAL_READ: usize = 2048;

/// With nothing buffered, reads land in a stack array this large and the
/// heap buffer is allocated for what arrived: a quiet connection holds no
/// read buffer (10,000 idle connections: 2 KiB each saved), and a request
/// that fits is read with one recv and one exact allocation.
const QUIET_READ: usize = 4096;

impl FrameBuffer {
    /// `read_size`: bytes asked of each read; `max_frame`: MAX_REQUEST_BYTES.
    pub fn new(read_size: usize, max_frame: usize) -> Self {
        let max_read_size = read_size.max(MIN_REQUEST_BYTES + SIZE_PREFIX);
        FrameBuffer {
            buf: BytesMut::new(),
            filled: 0,
            read_size: INITIAL_READ.min(max_read_size),
            max_read_size,
            max_frame,
        }
    }

    /// Size of the frame at the front of the buffer (without its prefix),
    /// as soon as its size prefix has arrived, before its body has: what
    /// the shard's request byte budget reserves.
    pub fn next_size(&self) -> Result<Option<usize>, FrameError> {
        frame_size(&self.buf[..self.filled], self.max_frame)
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(size) = frame_size(&self.buf[..self.filled], self.max_frame)? else {
            return Ok(None);
        };
        if self.filled < SIZE_PREFIX + size {
            return Ok(None);
        }
        let mut frame = self.buf.split_to(SIZE_PREFIX + size);
        self.filled -= SIZE_PREFIX + size;
        if self.filled == 0 {
            // The frames handed out keep what they need of the allocation;
            // the buffer lets go of the rest until the next read.
            self.buf = BytesMut::new();
        }
        let _ = frame.split_to(SIZE_PREFIX);
        Ok(Some(frame.freeze()))
    }

    /// Space for the next read. A frame of up to [`WHOLE_FRAME_AT_ONCE`]
    /// gets its whole size at once: growing by doubling copied every byte
    /// of a 1 MiB produce request once more and zeroed it twice, a fifth of
    /// the shard's time at full ingest. Beyond that it grows with what has
    /// arrived (doubling), not with what the size prefix claims, so a
    /// client that announces a 100 MiB frame and sends nothing costs little.
    pub fn spare(&mut self) -> &mut [u8] {
        let want = self.wanted();
        if self.buf.len() - self.filled < want {
            self.buf.resize(self.filled + want, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// Bytes the next read asks for (see [`FrameBuffer::spare`]).
    fn wanted(&self) -> usize {
        let missing = bytes_missing(&self.buf[..self.filled], self.max_frame);
        if missing > 0 {
            missing.min(self.read_size.max(self.filled).max(WHOLE_FRAME_AT_ONCE))
        } else {
            self.read_size
        }
    }

    /// Marks `n` bytes of the slice from `spare` as received.
    pub fn commit(&mut self, n: usize) {
        if self.filled + n == self.buf.len() {
            self.read_size = (self.read_size * 2).min(self.max_read_size);
        }
        self.filled = (self.filled + n).min(self.buf.len());
    }

    /// Bytes received that do not make a whole frame yet.
    pub fn pending(&self) -> usize {
        self.filled
    }

    /// Heap bytes the buffer holds (not counting frames handed out).
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Reads once from `incoming` into the buffer; `Ok(0)` is end of
    /// stream. Mid-frame the read goes straight into the heap buffer
    /// (received into its unwritten memory when `incoming.socket` is
    /// known); with nothing buffered it lands on the stack first, so
    /// waiting for the next request holds no buffer. Cancel-safe: bytes
    /// are committed in the same poll that reads them.
    pub async fn read_from<R: AsyncRead + Unpin>(&mut self, incoming: &mut Incoming<R>) -> io::Result<usize> {
        futures::future::poll_fn(|cx| self.poll_read_from(cx, &mut incoming.reader, incoming.socket)).await
    }

    fn poll_read_from<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        socket: Option<RawFd>,
    ) -> Poll<io::Result<usize>> {
        if self.filled > 0 {
            let Some(fd) = socket else {
                let n = ready!(Pin::new(reader).poll_read(cx, self.spare()))?;
                self.commit(n);
                return Poll::Ready(Ok(n));
            };
            if let Some(received) = self.receive_uninit(fd) {
                return Poll::Ready(received);
            }
            // Nothing waiting in the socket: the reader registers for the
            // wake-up (and takes what arrived meanwhile) through a small
            // landing on the stack.
        }
        let mut landing = [0u8; QUIET_READ];
        let n = ready!(Pin::new(reader).poll_read(cx, &mut landing))?;
        let arrived = landing.get(..n).unwrap_or_default();
        if self.filled > 0 {
            self.buf.truncate(self.filled);
            self.buf.extend_from_slice(arrived);
        } else {
            self.buf = BytesMut::from(arrived);
        }
        self.filled += arrived.len();
        Poll::Ready(Ok(arrived.len()))
    }

    /// One non-blocking `recv` into the buffer's unwritten capacity; `None`
    /// when the socket has nothing yet (EAGAIN).
    fn receive_uninit(&mut self, fd: RawFd) -> Option<io::Result<usize>> {
        let want = self.wanted();
        self.buf.truncate(self.filled);
        self.buf.reserve(want);
        let spare = self.buf.spare_capacity_mut();
        let len = want.min(spare.len());
        // SAFETY: `spare` is allocated, writable memory of at least `len`
        // bytes owned by `self.buf` and borrowed mutably here, so nothing
        // else reads or writes it during the call; recv writes at most
        // `len` bytes into it and touches nothing else. A bad or closed
        // descriptor is an error return (EBADF), not memory unsafety.
        let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), len, libc::MSG_DONTWAIT) };
        if n < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
                _ => Some(Err(error)),
            };
        }
        let n = n as usize;
        // SAFETY: recv initialised the first `n` bytes past `filled`
        // (n <= len <= the spare capacity).
        unsafe { self.buf.set_len(self.filled + n) };
        if n == len {
            self.read_size = (self.read_size * 2).min(self.max_read_size);
        }
        self.filled += n;
        Some(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    fn feed(reader: &mut FrameBuffer, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = reader.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            reader.commit(n);
            bytes = &bytes[n..];
        }
    }

    /// Every frame until the reader's end of stream.
    fn read_to_end<R: AsyncRead + Unpin>(buffer: &mut FrameBuffer, reader: &mut Incoming<R>) -> Vec<Bytes> {
        let mut frames = Vec::new();
        futures::executor::block_on(async {
            loop {
                while let Some(frame) = buffer.next_frame().unwrap() {
                    frames.push(frame);
                }
                if buffer.read_from(reader).await.unwrap() == 0 {
                    break;
                }
            }
        });
        frames
    }

    #[test]
    fn a_drained_buffer_holds_nothing_and_reads_land_on_the_stack_first() {
        let mut wire = frame(b"small request");
        let big: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        wire.extend_from_slice(&frame(&big));
        let mut reader = Incoming {
            reader: futures::io::Cursor::new(wire),
            socket: None,
        };
        let mut buffer = FrameBuffer::new(64 * 1024, 1 << 20);
        assert_eq!(buffer.held(), 0, "nothing allocated before data arrives");
        let frames = read_to_end(&mut buffer, &mut reader);
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0][..], b"small request");
        assert_eq!(&frames[1][..], &big[..]);
        assert_eq!(
            (buffer.pending(), buffer.held()),
            (0, 0),
            "drained: the buffer let go"
        );
    }

    #[test]
    fn frames_received_into_unwritten_memory_arrive_whole() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (mut sender, receiver) = std::os::unix::net::UnixStream::pair().unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = frame(b"first frame");
        wire.extend_from_slice(&frame(&big));
        wire.extend_from_slice(&frame(b"last frame"));
        let writer = std::thread::spawn(move || {
            for piece in wire.chunks(300_000) {
                sender.write_all(piece).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let mut reader = Incoming {
            reader: futures::io::AllowStdIo::new(receiver.try_clone().unwrap()),
            socket: Some(receiver.as_raw_fd()),
        };
        let mut buffer = FrameBuffer::new(64 * 1024, 4 << 20);
        let frames = read_to_end(&mut buffer, &mut reader);
        writer.join().unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[0][..], b"first frame");
        assert!(frames[1][..] == big[..], "the 3 MB frame arrived intact");
        assert_eq!(&frames[2][..], b"last frame");
        assert_eq!(buffer.pending(), 0);
    }

    #[test]
    fn the_next_size_is_known_from_the_prefix_alone() {
        let mut reader = FrameBuffer::new(64, MAX);
        assert_eq!(reader.next_size(), Ok(None));
        feed(&mut reader, &frame(b"0123456789")[..5]);
        assert_eq!(reader.next_size(), Ok(Some(10)));
        assert_eq!(reader.next_frame().unwrap(), None);
    }

    #[test]
    fn partial_frames_wait_for_the_rest() {
        let whole = frame(b"0123456789abc");
        let mut reader = FrameBuffer::new(64, MAX);
        for (i, byte) in whole.iter().enumerate() {
            assert_eq!(reader.next_frame().unwrap(), None, "after {i} bytes");
            feed(&mut reader, &[*byte]);
        }
        assert_eq!(
            reader.next_frame().unwrap().as_deref(),
            Some(&b"0123456789abc"[..])
        );
        assert_eq!(reader.pending(), 0);
    }

    #[test]
    fn several_frames_in_one_read_come_out_in_order() {
        let mut wire = frame(b"first-frame");
        wire.extend_from_slice(&frame(b"second-frame"));
        wire.extend_from_slice(&frame(b"third-fr")[..6]);
        let mut reader = FrameBuffer::new(4096, MAX);
        let spare = reader.spare();
        spare[..wire.len()].copy_from_slice(&wire);
        reader.commit(wire.len());
        assert_eq!(reader.next_frame().unwrap().as_deref(), Some(&b"first-frame"[..]));
        assert_eq!(
            reader.next_frame().unwrap().as_deref(),
            Some(&b"second-frame"[..])
        );
        assert_eq!(reader.next_frame().unwrap(), None);
        assert_eq!(reader.pending(), 6);
        assert_eq!(bytes_missing(&wire[wire.len() - 6..], MAX), 6);
    }

    #[test]
    fn frames_split_across_many_reads_are_reassembled() {
        let mut reader = FrameBuffer::new(16, MAX);
        let mut wire = frame(&[7u8; 100]);
        wire.extend_from_slice(&frame(b"tail-frame"));
        for byte in &wire[..50] {
            assert_eq!(reader.next_frame().unwrap(), None);
            feed(&mut reader, &[*byte]);
        }
        feed(&mut reader, &wire[50..]);
        assert_eq!(reader.next_frame().unwrap().as_deref(), Some(&[7u8; 100][..]));
        assert_eq!(reader.next_frame().unwrap().as_deref(), Some(&b"tail-frame"[..]));
        assert_eq!(reader.next_frame().unwrap(), None);
        assert_eq!(reader.pending(), 0);
    }

    #[test]
    fn frames_are_slices_of_the_read_buffer_not_copies() {
        let mut reader = FrameBuffer::new(64, MAX);
        let wire = frame(b"zero-copy-body");
        let spare = reader.spare();
        let base = spare.as_ptr() as usize;
        spare[..wire.len()].copy_from_slice(&wire);
        reader.commit(wire.len());
        let body = reader.next_frame().unwrap().unwrap();
        assert_eq!(body.as_ptr() as usize, base + SIZE_PREFIX);
    }

    #[test]
    fn a_size_prefix_alone_does_not_allocate_more_than_a_moderate_frame() {
        // A claimed 100 MB: no more than WHOLE_FRAME_AT_ONCE until bytes come.
        let mut reader = FrameBuffer::new(64, usize::MAX >> 1);
        feed(&mut reader, &(100_000_000i32).to_be_bytes());
        assert_eq!(reader.next_frame().unwrap(), None);
        assert!(
            reader.spare().len() <= WHOLE_FRAME_AT_ONCE,
            "grew to {}",
            reader.spare().len()
        );
        // A 1 MB produce request is allocated whole, once.
        let mut reader = FrameBuffer::new(64, usize::MAX >> 1);
        feed(&mut reader, &(1_000_000i32).to_be_bytes());
        assert_eq!(reader.spare().len(), 1_000_000);
    }

    #[test]
    fn zero_negative_and_oversize_sizes_are_rejected_before_allocation() {
        let rejected = |size: i32| {
            let mut reader = FrameBuffer::new(64, MAX);
            feed(&mut reader, &size.to_be_bytes());
            reader.next_frame().unwrap_err()
        };
        assert_eq!(rejected(0), FrameError::TooShort(0));
        assert_eq!(rejected(-5), FrameError::Negative(-5));
        assert_eq!(
            rejected(i32::MAX),
            FrameError::TooLarge {
                size: i32::MAX as usize,
                max: MAX
            }
        );
        assert_eq!(bytes_missing(&i32::MAX.to_be_bytes(), MAX), 0);
        assert_eq!(frame_size(&(MAX as i32).to_be_bytes(), MAX), Ok(Some(MAX)));
        assert_eq!(bytes_missing(&(MAX as i32).to_be_bytes(), MAX), MAX);
    }
}
