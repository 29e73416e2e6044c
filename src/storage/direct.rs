//! How a partition's batches reach its active segment file.
//!
//! With O_DIRECT (the default) the bytes go from our own block-aligned
//! buffer straight to the device: no dirty page cache, so no kernel
//! writeback heuristics throttling the writer at random, and an fdatasync
//! for acks=all only has to flush the device cache, not gigabytes of dirty
//! pages.
//!
//! A partition's writes go in trips of about a MiB, each copied into an
//! aligned buffer and written on the blocking pool. The appender, on the
//! shard, remembers the bytes of the file's last, partial block: each trip
//! starts with them at that block's start and ends padded with zeros to
//! the next block boundary, so the file may be longer than its batches by
//! up to a block of zeros; the segment knows its real size, cuts the
//! padding when it is sealed or closed, and recovery treats a zero tail as
//! the end of the batches. Four trips of a partition run at once: each
//! writes its blocks at once except the first, which it shares with the
//! trip before and writes only once that one is done, so the device sees
//! the block's new bytes last. Small trips, several at a time, keep the
//! device busy within a connection's 8 MiB of unanswered requests: two
//! 4 MiB trips left it idle 40% of a 6 GB acks=1 run (one filled the
//! window while the other wrote) and reached 0.78-0.92 M records/s; four
//! of ~2 MB reached 1.08-1.16 M, and the device writes 1 MiB O_DIRECT
//! blocks as fast as 4 MiB ones here. Smaller still (one request per
//! trip) cost more per trip than it gained.
//!
//! Buffered (`SEGMENT_WRITE=buffered`, or a file system without O_DIRECT)
//! is plain pwritev into the page cache, as before.

use crate::log::PendingWrite;
use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tracing::warn;

/// Alignment and granularity of O_DIRECT writes: the page size, which
/// covers every logical block size in use (512 B, 4 KiB).
pub(crate) const BLOCK: usize = 4096;

/// How segment files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    #[default]
    Direct,
    Buffered,
}

/// A block-aligned heap buffer of `len` initialised bytes (a multiple of
/// BLOCK): zeroed, or filled by [`Unfilled::fill`].
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

impl AlignedBuf {
    fn layout(len: usize) -> Layout {
        // BLOCK is a power of two and `len` a multiple of it no larger
        // than a frame (MAX_REQUEST_BYTES) plus a block, so this holds.
        Layout::from_size_align(len, BLOCK).unwrap_or_else(|_| unreachable!("block-aligned layout"))
    }

    pub(crate) fn new(len: usize) -> AlignedBuf {
        let (ptr, len) = allocate(len, true);
        AlignedBuf { ptr, len }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised bytes we own: zeroed
        // at allocation (`new`) or all written by `Unfilled::fill`, then
        // only written through `as_mut_slice`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// A block-aligned allocation of at least `len` bytes (a whole number of
/// blocks, at least one), zeroed or not: the pointer and its length.
fn allocate(len: usize, zeroed: bool) -> (NonNull<u8>, usize) {
    let len = len.div_ceil(BLOCK).max(1) * BLOCK;
    let layout = AlignedBuf::layout(len);
    // SAFETY: the layout has a non-zero size.
    let raw = unsafe {
        if zeroed {
            alloc::alloc_zeroed(layout)
        } else {
            alloc::alloc(layout)
        }
    };
    let Some(ptr) = NonNull::new(raw) else {
        alloc::handle_alloc_error(layout)
    };
    (ptr, len)
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` or `Unfilled::new` with this same
        // layout, freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// A block-aligned allocation whose bytes are not written yet (zeroing a
/// trip's buffer that is about to be overwritten cost a memset per byte
/// stored): [`Unfilled::fill`] writes every byte and makes it an
/// [`AlignedBuf`]. Allocated on the shard, so that the memory goes back to
/// the shard's own allocator arena when the recent cache lets it go.
pub(crate) struct Unfilled {
    ptr: NonNull<u8>,
    len: usize,
}

impl Unfilled {
    pub(crate) fn new(len: usize) -> Unfilled {
        let (ptr, len) = allocate(len, false);
        Unfilled { ptr, len }
    }

    /// The pieces one after another from the start, zeros after them.
    pub(crate) fn fill<'a>(self, pieces: impl IntoIterator<Item = &'a [u8]>) -> AlignedBuf {
        let mut at = 0;
        for piece in pieces {
            let n = piece.len().min(self.len - at);
            // SAFETY: `at + n <= len`: the destination lies inside our
            // allocation, which no slice borrows; the source is a live
            // slice elsewhere (a distinct allocation), so they cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(piece.as_ptr(), self.ptr.as_ptr().add(at), n) };
            at += n;
        }
        // SAFETY: `at <= len`, inside our allocation; after this every
        // byte of it has been written, as `AlignedBuf` requires.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(at), 0, self.len - at) };
        let buf = AlignedBuf {
            ptr: self.ptr,
            len: self.len,
        };
        std::mem::forget(self);
        buf
    }
}

impl Drop for Unfilled {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this same layout, freed once
        // (`fill` forgets `self` after handing the memory on).
        unsafe { alloc::dealloc(self.ptr.as_ptr(), AlignedBuf::layout(self.len)) }
    }
}

// SAFETY: plain owned memory with no thread affinity, as `AlignedBuf`.
unsafe impl Send for Unfilled {}

// SAFETY: the buffer is plain owned memory with no thread affinity; moving
// it to another thread moves its only owner.
unsafe impl Send for AlignedBuf {}

/// A segment's last partial block: the file, the block's position, the
/// bytes of it written so far.
pub(crate) type Tail = (Arc<Path>, u64, Vec<u8>);

/// A trip's writes back, and what it left: the tail it read from the
/// file, if it had to, and its batches as written.
pub(crate) type TripOutcome = (Vec<PendingWrite>, io::Result<Landed>);

/// What a trip that wrote leaves behind.
#[derive(Default)]
pub(crate) struct Landed {
    pub tail: Option<Tail>,
    /// The trip's batches as they are in the file, one after another from
    /// `first` in `bytes` (O_DIRECT trips only): the recent cache keeps
    /// slices of it rather than of the requests, so a fetch of several
    /// batches is one slice and the request buffers are freed at once.
    pub image: Option<Image>,
}

pub(crate) struct Image {
    pub bytes: bytes::Bytes,
    pub first: usize,
}

/// Set once a trip's writes are done, for the trip after it, whose first
/// block rewrites this trip's last one and so must reach the device after
/// it. Set (as failed) on drop too, so a waiter never hangs.
#[derive(Default)]
pub(crate) struct Done {
    state: Mutex<Option<bool>>,
    changed: Condvar,
}

impl Done {
    fn is_set(&self) -> bool {
        self.state.lock().map_or(true, |s| s.is_some())
    }

    fn set(&self, ok: bool) {
        if let Ok(mut state) = self.state.lock() {
            state.get_or_insert(ok);
        }
        self.changed.notify_all();
    }

    /// Blocking: whether the trip's writes succeeded.
    fn wait(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        loop {
            if let Some(ok) = *state {
                return ok;
            }
            match self.changed.wait_timeout(state, WAIT_FOR_PREVIOUS) {
                Ok((next, timeout)) if !timeout.timed_out() || next.is_some() => state = next,
                _ => return false,
            }
        }
    }
}

/// A trip that waits longer than this for the one before it gives up
/// (and fails its writes) rather than hold a pool thread for ever.
const WAIT_FOR_PREVIOUS: Duration = Duration::from_secs(60);

/// Marks the trip done when dropped, failed unless told otherwise.
struct DoneGuard(Arc<Done>, bool);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.set(self.1);
    }
}

/// One partition's writer state on the shard: where its bytes end in
/// which file, and the bytes of that file's last partial block, so the
/// next trip can start before the one before it has finished.
pub(crate) struct SegmentAppender {
    mode: WriteMode,
    /// The segment and the block-aligned position of its last, partial
    /// block with that block's bytes so far; `None` = unknown (after open
    /// or a failed write): the next trip reads it back from the file.
    tail: Option<Tail>,
    /// The last trip started, for the next to follow.
    last: Option<Arc<Done>>,
    /// Set by a trip whose file system refused O_DIRECT.
    refused: Arc<AtomicBool>,
}

/// A batch of consecutive writes to one segment, done on the blocking
/// pool: [`Trip::run`].
pub(crate) struct Trip {
    writes: Vec<PendingWrite>,
    direct: Option<DirectTrip>,
    done: DoneGuard,
}

struct DirectTrip {
    /// Block-aligned start: `head` holds the bytes from here to the first
    /// write (`None`: read them from the file).
    start: u64,
    head: Option<Vec<u8>>,
    /// The trip before, if this one rewrites its last block.
    after: Option<Arc<Done>>,
    /// Room for the head, the writes and the padding to a block boundary.
    buffer: Unfilled,
    refused: Arc<AtomicBool>,
}

impl SegmentAppender {
    pub(crate) fn new(mode: WriteMode) -> SegmentAppender {
        SegmentAppender {
            mode,
            tail: None,
            last: None,
            refused: Arc::default(),
        }
    }

    /// Forgets what it knew of the files: after a failed write, the file
    /// is cut back and the next trip reads its tail from there.
    pub(crate) fn reset(&mut self) {
        self.tail = None;
        self.last = None;
    }

    /// Whether the next trip can start now: it can, unless the last
    /// block's bytes are unknown and a trip that knows them is running.
    pub(crate) fn ready(&self) -> bool {
        self.tail.is_some() || self.last.as_ref().is_none_or(|d| d.is_set())
    }

    /// Plans the next trip: `writes` are consecutive, all in one segment.
    pub(crate) fn trip(&mut self, writes: Vec<PendingWrite>) -> Trip {
        let done = Arc::new(Done::default());
        let after = self.last.replace(done.clone());
        if self.refused.load(Ordering::Relaxed) {
            self.mode = WriteMode::Buffered;
        }
        let direct = (self.mode == WriteMode::Direct).then(|| {
            let first = &writes[0];
            let start = first.position - first.position % BLOCK as u64;
            let head = match self.tail.take() {
                Some((path, at, bytes))
                    if path == first.path && at + bytes.len() as u64 == first.position =>
                {
                    Some(bytes)
                }
                _ if first.position == start => Some(Vec::new()),
                _ => None,
            };
            self.tail = head
                .as_ref()
                .map(|head| tail_of(&first.path, start, head, &writes));
            // Only a trip that shares its first block with the one before
            // waits for it.
            let after = after.filter(|_| first.position != start);
            let len =
                (first.position - start) as usize + writes.iter().map(PendingWrite::size).sum::<usize>();
            DirectTrip {
                start,
                head,
                after,
                buffer: Unfilled::new(len),
                refused: self.refused.clone(),
            }
        });
        Trip {
            writes,
            direct,
            done: DoneGuard(done, false),
        }
    }

    /// Takes back the tail a trip read from its file, if the appender did
    /// not know it.
    pub(crate) fn learn(&mut self, landed: &mut Landed) {
        if self.tail.is_none() {
            self.tail = landed.tail.take();
        }
    }
}

/// The last partial block after `writes`, which start after `head` at
/// `start`: (its block-aligned position, its bytes).
fn tail_of(path: &Arc<Path>, start: u64, head: &[u8], writes: &[PendingWrite]) -> Tail {
    let end = writes
        .last()
        .map_or(start + head.len() as u64, |w| w.position + w.size() as u64);
    let from = end - end % BLOCK as u64;
    let mut tail = Vec::with_capacity((end - from) as usize);
    let pieces = std::iter::once((start, head)).chain(writes.iter().flat_map(|w| {
        let second = w.position + w.parts[0].len() as u64;
        [(w.position, &w.parts[0][..]), (second, &w.parts[1][..])]
    }));
    for (at, bytes) in pieces {
        let stop = at + bytes.len() as u64;
        if stop > from {
            tail.extend_from_slice(&bytes[(from.saturating_sub(at)) as usize..]);
        }
    }
    (path.clone(), from, tail)
}

impl Trip {
    /// Blocking: every write of the trip in its file. Returns the writes
    /// and, for a trip that had to read its head from the file, the tail
    /// it leaves (for the appender).
    pub(crate) fn run(mut self) -> TripOutcome {
        let result = match self.direct.take() {
            None => self
                .writes
                .iter()
                .try_for_each(PendingWrite::write)
                .map(|()| Landed::default()),
            Some(direct) => direct.run(&self.writes),
        };
        self.done.1 = result.is_ok();
        (self.writes, result)
    }
}

impl DirectTrip {
    fn run(self, writes: &[PendingWrite]) -> io::Result<Landed> {
        let DirectTrip {
            start,
            head,
            after,
            buffer,
            refused,
        } = self;
        let first = &writes[0];
        let file = match open_direct(&first.path) {
            Ok(file) => file,
            // tmpfs and some others refuse O_DIRECT: this trip and the
            // partition's later ones write buffered (said once).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                if !refused.swap(true, Ordering::Relaxed) {
                    warn!(path = %first.path.display(), "the file system refuses O_DIRECT; writing through the page cache");
                }
                return writes
                    .iter()
                    .try_for_each(PendingWrite::write)
                    .map(|()| Landed::default());
            }
            Err(e) => return Err(e),
        };
        let (head, learned) = match head {
            Some(head) => (head, false),
            None => {
                let mut head = vec![0u8; (first.position - start) as usize];
                first.file.read_exact_at(&mut head, start)?;
                (head, true)
            }
        };
        let len = head.len() + writes.iter().map(PendingWrite::size).sum::<usize>();
        // Sized in `trip` for exactly this, padded to a block boundary.
        let buf = buffer.fill(
            std::iter::once(&head[..]).chain(writes.iter().flat_map(|w| [&w.parts[0][..], &w.parts[1][..]])),
        );
        write_in_order(&file, buf.as_slice(), start, after.as_deref())?;
        Ok(Landed {
            tail: learned.then(|| tail_of(&first.path, start, &head, writes)),
            image: Some(Image {
                bytes: bytes::Bytes::from_owner(buf).slice(..len),
                first: head.len(),
            }),
        })
    }
}

/// Writes `bytes` at `start`: the blocks after the first at once; the
/// first, if the trip before (`after`) also wrote it, only once that trip
/// is done.
fn write_in_order(file: &File, bytes: &[u8], start: u64, after: Option<&Done>) -> io::Result<()> {
    let Some(after) = after else {
        return file.write_all_at(bytes, start);
    };
    let first = bytes.len().min(BLOCK);
    if bytes.len() > first {
        file.write_all_at(&bytes[first..], start + first as u64)?;
    }
    if !after.wait() {
        return Err(io::Error::other("the write before this one failed"));
    }
    file.write_all_at(&bytes[..first], start)
}

/// Trips of one partition in flight at once (the shard's pool has as
/// many threads).
pub(crate) const TRIPS_IN_FLIGHT: usize = 4;

fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{build_batch, validate};
    use crate::log::{LogConfig, PartitionLog};
    use bytes::Bytes;
    use std::fs;

    fn scratch(name: &str) -> std::path::PathBuf {
        // Under target/, not /tmp: the file system must take O_DIRECT.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/tmp")
            .join(format!("direct-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// Runs trips as the writer does, several at a time on their own threads.
    struct Trips {
        appender: SegmentAppender,
        running: std::collections::VecDeque<std::thread::JoinHandle<TripOutcome>>,
    }

    impl Trips {
        fn start(&mut self, writes: Vec<crate::log::PendingWrite>) {
            if writes.is_empty() {
                return;
            }
            while self.running.len() >= TRIPS_IN_FLIGHT || !self.appender.ready() {
                self.land();
            }
            let trip = self.appender.trip(writes);
            self.running.push_back(std::thread::spawn(move || trip.run()));
        }

        fn land(&mut self) {
            let (_, result) = self.running.pop_front().unwrap().join().unwrap();
            self.appender.learn(&mut result.unwrap());
        }

        fn finish(&mut self) {
            while !self.running.is_empty() {
                self.land();
            }
        }
    }

    /// Batches of awkward sizes written in trips of a few, several trips at
    /// once, through segment rolls: the files hold exactly the batches
    /// (after the padding is cut at seal and close), and a log left
    /// unclosed, as after kill -9, reopens with every batch and no
    /// truncation reported. Then the same log is reopened and appended to
    /// by a new appender, which reads the partial last block back.
    #[test]
    fn direct_writes_read_back_and_recover_without_a_torn_tail() {
        let dir = scratch("roundtrip");
        let config = LogConfig {
            segment_bytes: 300_000,
            ..LogConfig::default()
        };
        let mut expected = Vec::new();
        for round in 0..2 {
            let (mut log, _) = PartitionLog::open(&dir).unwrap();
            let mut trips = Trips {
                appender: SegmentAppender::new(WriteMode::Direct),
                running: Default::default(),
            };
            for trip in 0..40 {
                let mut writes = Vec::new();
                for i in 0..(trip % 5 + 1) {
                    let value = vec![b'a' + (i as u8); 100 + trip * 977 + i * 13 + round * 7];
                    let batch = Bytes::from(build_batch(0, 1, &[(b"k", &value)]));
                    let header = validate(&batch).unwrap();
                    let mut outcome = log.reserve(&batch, header, &config).unwrap();
                    // A seal comes after every write before it.
                    if let Some(sealed) = outcome.rolled.take() {
                        trips.start(std::mem::take(&mut writes));
                        trips.finish();
                        sealed.finish().unwrap();
                    }
                    writes.push(outcome.write.take().unwrap());
                    expected.push((outcome.base_offset, value));
                }
                trips.start(writes);
            }
            trips.finish();
            assert!(log.segment_count() > 3);
            let last = fs::metadata(log.written_end_path()).unwrap().len();
            assert_eq!(last % BLOCK as u64, 0, "the active file ends padded to a block");
            // No close.
        }
        let (log, report) = PartitionLog::open(&dir).unwrap();
        assert!(report.truncated.is_none(), "{:?}", report.truncated);
        assert_eq!(log.log_end_offset(), expected.len() as i64);
        for (offset, value) in &expected {
            let bytes = log.read(*offset, 1, true).unwrap();
            let header = validate(&bytes).unwrap();
            assert_eq!(header.base_offset, *offset);
            assert!(bytes.windows(value.len()).any(|w| w == &value[..]));
        }
        log.close().unwrap();
        let (log, report) = PartitionLog::open(&dir).unwrap();
        assert!(report.clean);
        assert_eq!(log.log_end_offset(), expected.len() as i64);
        let sizes: u64 = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert_eq!(sizes, log.size_bytes(), "no padding left after close");
        let _ = fs::remove_dir_all(&dir);
    }
}
