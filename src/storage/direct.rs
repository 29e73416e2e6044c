//! How a partition's batches reach its active segment file.
//!
//! With O_DIRECT (the default) the bytes go from our own block-aligned
//! buffer straight to the device: no dirty page cache, so no kernel
//! writeback heuristics throttling the writer at random, and an fdatasync
//! for acks=all only has to flush the device cache, not gigabytes of dirty
//! pages. The buffer keeps the file's last, partial block: every write
//! starts at that block's start and rewrites it with the new bytes after
//! it, and ends padded with zeros to the next block boundary. The file may
//! therefore be longer than its batches by up to a block of zeros; the
//! segment knows its real size, cuts the padding when it is sealed or
//! closed, and recovery treats a zero tail as the end of the batches.
//!
//! Buffered (`SEGMENT_WRITE=buffered`, or a file system without O_DIRECT)
//! is plain pwritev into the page cache, as before.
//!
//! An appender belongs to one partition and runs on the blocking pool,
//! one trip at a time, so a shard has at most as many segment writes in
//! flight as its pool has threads.

use crate::log::PendingWrite;
use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;
use tracing::warn;

/// Alignment and granularity of O_DIRECT writes: the page size, which
/// covers every logical block size in use (512 B, 4 KiB).
pub(crate) const BLOCK: usize = 4096;

/// Largest single write; a trip with more is written in several.
const CHUNK: usize = 4 << 20;

/// How segment files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    #[default]
    Direct,
    Buffered,
}

/// A zeroed, block-aligned heap buffer of `CHUNK` bytes.
struct AlignedBuf {
    ptr: NonNull<u8>,
}

impl AlignedBuf {
    fn layout() -> Layout {
        // CHUNK and BLOCK are constants: a power-of-two alignment and a
        // size that is a multiple of it, so this cannot fail.
        Layout::from_size_align(CHUNK, BLOCK).unwrap_or_else(|_| unreachable!("constant layout"))
    }

    fn new() -> AlignedBuf {
        let layout = Self::layout();
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to CHUNK initialised (zeroed at allocation,
        // then only written through `as_mut_slice`) bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), CHUNK) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), CHUNK) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this same layout, freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout()) }
    }
}

// SAFETY: the buffer is plain owned memory with no thread affinity; moving
// it to another thread moves its only owner.
unsafe impl Send for AlignedBuf {}

/// The segment an appender is writing.
struct Target {
    /// The segment file's path, as the writes name it.
    path: Arc<Path>,
    /// The same file opened with O_DIRECT.
    direct: File,
}

/// Writes one partition's batches to its segment files, in order.
pub(crate) struct SegmentAppender {
    mode: WriteMode,
    buf: Option<AlignedBuf>,
    target: Option<Target>,
    /// File position of `buf[0]`, block-aligned: `buf[..len]` is what the
    /// file holds from there, the last block partial.
    start: u64,
    len: usize,
}

fn write_buffered(w: &PendingWrite) -> io::Result<()> {
    let parts = [&w.parts[0][..], &w.parts[1][..]];
    crate::log::segment::write_all_vectored_at(&w.file, &parts, w.position)
}

fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

impl SegmentAppender {
    pub(crate) fn new(mode: WriteMode) -> SegmentAppender {
        SegmentAppender {
            mode,
            buf: None,
            target: None,
            start: 0,
            len: 0,
        }
    }

    /// Blocking: writes each batch after the one before, then the partial
    /// last block, so that when this returns every byte is in its file.
    pub(crate) fn write_all(&mut self, writes: &[PendingWrite]) -> io::Result<()> {
        let result = writes
            .iter()
            .try_for_each(|w| self.write(w))
            .and_then(|()| self.flush());
        if result.is_err() {
            // The file is cut back by the caller: start afresh from what
            // it holds then.
            self.target = None;
        }
        result
    }

    fn write(&mut self, w: &PendingWrite) -> io::Result<()> {
        if self.mode == WriteMode::Buffered {
            return write_buffered(w);
        }
        let same_place = self
            .target
            .as_ref()
            .is_some_and(|t| t.path == w.path && self.start + self.len as u64 == w.position);
        if !same_place {
            self.flush()?;
            self.retarget(w)?;
        }
        if self.mode == WriteMode::Buffered {
            return write_buffered(w);
        }
        for part in &w.parts {
            let mut rest = &part[..];
            while !rest.is_empty() {
                let buf = self.buf.get_or_insert_with(AlignedBuf::new);
                let n = rest.len().min(CHUNK - self.len);
                buf.as_mut_slice()[self.len..self.len + n].copy_from_slice(&rest[..n]);
                self.len += n;
                rest = &rest[n..];
                if self.len == CHUNK {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Points the appender at `w`'s file and position: a new segment, the
    /// first write since open, or after a failed write was cut back. The
    /// partial block before the position is read back from the file.
    fn retarget(&mut self, w: &PendingWrite) -> io::Result<()> {
        let direct = match open_direct(&w.path) {
            Ok(file) => file,
            // tmpfs and some others refuse O_DIRECT: write buffered.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                warn!(path = %w.path.display(), "the file system refuses O_DIRECT; writing through the page cache");
                self.mode = WriteMode::Buffered;
                self.target = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.target = Some(Target {
            path: w.path.clone(),
            direct,
        });
        self.start = w.position - w.position % BLOCK as u64;
        self.len = (w.position - self.start) as usize;
        if self.len > 0 {
            let len = self.len;
            let buf = self.buf.get_or_insert_with(AlignedBuf::new);
            w.file.read_exact_at(&mut buf.as_mut_slice()[..len], self.start)?;
        }
        Ok(())
    }

    /// Writes the buffer out, the last block padded with zeros, and keeps
    /// that partial block for the next write to complete.
    fn flush(&mut self) -> io::Result<()> {
        let (Some(Target { direct: file, .. }), Some(buf)) = (&self.target, &mut self.buf) else {
            return Ok(());
        };
        if self.len == 0 {
            return Ok(());
        }
        let padded = self.len.div_ceil(BLOCK) * BLOCK;
        buf.as_mut_slice()[self.len..padded].fill(0);
        file.write_all_at(&buf.as_slice()[..padded], self.start)?;
        let whole = self.len / BLOCK * BLOCK;
        if whole > 0 {
            buf.as_mut_slice().copy_within(whole..self.len, 0);
            self.start += whole as u64;
            self.len -= whole;
        }
        Ok(())
    }
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

    /// Batches of awkward sizes written in trips of a few, through
    /// segment rolls: the files hold exactly the batches (after the
    /// padding is cut at seal and close), and a log left unclosed, as
    /// after kill -9, reopens with every batch and no truncation reported.
    #[test]
    fn direct_writes_read_back_and_recover_without_a_torn_tail() {
        let dir = scratch("roundtrip");
        let config = LogConfig {
            segment_bytes: 300_000,
            ..LogConfig::default()
        };
        let mut expected = Vec::new();
        {
            let (mut log, _) = PartitionLog::open(&dir).unwrap();
            let mut appender = SegmentAppender::new(WriteMode::Direct);
            for trip in 0..40 {
                let mut writes = Vec::new();
                for i in 0..(trip % 5 + 1) {
                    let value = vec![b'a' + (i as u8); 1000 + trip * 977 + i * 13];
                    let batch = Bytes::from(build_batch(0, 1, &[(b"k", &value)]));
                    let header = validate(&batch).unwrap();
                    let mut outcome = log.reserve(&batch, header, &config).unwrap();
                    // A seal comes after the writes before it.
                    if let Some(sealed) = outcome.rolled.take() {
                        appender.write_all(&writes).unwrap();
                        writes.clear();
                        sealed.finish().unwrap();
                    }
                    writes.push(outcome.write.take().unwrap());
                    expected.push((outcome.base_offset, value));
                }
                appender.write_all(&writes).unwrap();
            }
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
