//! Reads of segment data the recent cache no longer holds, with O_DIRECT
//! into the broker's own block-aligned chunks, read ahead of each
//! partition's consumer, and sent from there without a copy.
//!
//! Buffered reads of files written with O_DIRECT fill the page cache with
//! pages that are new to the process every time: on this host the kernel's
//! page allocation and zeroing cost more CPU than the consumer itself
//! (a 6 GB read-back took 9.5 s of broker CPU), and the copy from the page
//! cache into a read buffer came on top. A chunk is read by the device
//! straight into a buffer that is reused once its last slice is sent, and a
//! fetch answer is a slice of it.
//!
//! Per partition: the chunks read, in file order, and the position after
//! the last batch served, so a consumer reading on needs no index lookup.
//! Ahead of that position, up to [`CHUNKS_AHEAD`] chunks are kept or being
//! read, at most [`LOADS_IN_FLIGHT`] at once, within the shard's
//! [`ReadAheadBudget`]. Chunks are read end to end, each byte once; a batch
//! that straddles two is joined from both.

use super::direct::{AlignedBuf, BLOCK};
use crate::log::batch::{self, HEADER_LEN};
use crate::log::segment::{FileIdentity, SegmentReader};
use crate::log::ReadPlan;
use bytes::Bytes;
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::Mutex;

/// Bytes per chunk read; a batch larger than this gets a chunk of its own
/// size.
const CHUNK_BYTES: usize = 4 << 20;
/// Chunks kept or being read ahead of a consumer (64 MiB).
const CHUNKS_AHEAD: usize = 16;
/// Chunk reads in flight per partition: the virtual disk measured here
/// reads faster with several requests queued than one at a time.
const LOADS_IN_FLIGHT: usize = 4;
/// Chunk buffers kept for reuse, process-wide.
const SPARE_BUFFERS: usize = 64;

/// Chunk buffers whose last slice was dropped, for the next chunk read:
/// reused memory costs no page faults.
static SPARE: Mutex<Vec<AlignedBuf>> = Mutex::new(Vec::new());

fn take_buffer(len: usize) -> AlignedBuf {
    if len == CHUNK_BYTES {
        if let Some(buffer) = SPARE.lock().ok().and_then(|mut spare| spare.pop()) {
            return buffer;
        }
    }
    AlignedBuf::new(len)
}

/// A chunk buffer holding `len` bytes read; given back to [`SPARE`] when
/// the last `Bytes` slice of it is dropped.
struct Filled {
    buffer: Option<AlignedBuf>,
    len: usize,
}

impl AsRef<[u8]> for Filled {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref().map_or(&[], |b| &b.as_slice()[..self.len])
    }
}

impl Drop for Filled {
    fn drop(&mut self) {
        let Some(buffer) = self.buffer.take() else {
            return;
        };
        if buffer.as_slice().len() != CHUNK_BYTES {
            return;
        }
        if let Ok(mut spare) = SPARE.lock() {
            if spare.len() < SPARE_BUFFERS {
                spare.push(buffer);
            }
        }
    }
}

/// Bytes of chunks a shard's partitions hold for read-ahead; past the
/// limit, chunks are read only when a consumer asks for them.
#[derive(Debug)]
pub(crate) struct ReadAheadBudget {
    limit: usize,
    held: Cell<usize>,
}

impl ReadAheadBudget {
    pub(crate) fn new(limit: usize) -> Rc<ReadAheadBudget> {
        Rc::new(ReadAheadBudget {
            limit,
            held: Cell::new(0),
        })
    }
}

/// Part of a segment file as read.
#[derive(Clone)]
struct Chunk {
    file: FileIdentity,
    /// File position of `bytes[0]` (block-aligned).
    start: u64,
    /// The file's bytes from `start`, up to what the reader might read.
    bytes: Bytes,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    fn holds(&self, file: &FileIdentity, from: u64, to: u64) -> bool {
        self.file == *file && self.start <= from && to <= self.end()
    }
}

type Load = Shared<LocalBoxFuture<'static, Result<Chunk, Rc<io::Error>>>>;

/// Where the last read ended: the next offset and its batch's position.
#[derive(Clone)]
struct Next {
    offset: i64,
    file: FileIdentity,
    position: u64,
}

#[derive(Default)]
struct State {
    chunks: VecDeque<Chunk>,
    /// Chunk reads under way: file, start, length.
    loads: Vec<(FileIdentity, u64, u64, Load)>,
    next: Option<Next>,
    /// Set when the file system refused O_DIRECT: reads go buffered.
    refused: bool,
}

/// One partition's O_DIRECT reads.
pub(crate) struct DirectReads {
    state: RefCell<State>,
    budget: Rc<ReadAheadBudget>,
}

impl DirectReads {
    pub(crate) fn new(budget: Rc<ReadAheadBudget>) -> Rc<DirectReads> {
        Rc::new(DirectReads {
            state: RefCell::default(),
            budget,
        })
    }

    /// Whole batches from the one holding the planned offset, up to
    /// `max_bytes` (at least one with `at_least_one`), as a slice of a
    /// chunk; `Ok(None)` when O_DIRECT is refused here (read buffered).
    pub(crate) async fn read(
        self: Rc<Self>,
        plan: ReadPlan,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> io::Result<Option<Bytes>> {
        if self.state.borrow().refused {
            return Ok(None);
        }
        let continued = self.state.borrow().next.as_ref().and_then(|next| {
            let reader = plan.readers().find(|r| r.identity() == next.file)?;
            (next.offset == offset && next.position + HEADER_LEN as u64 <= reader.limit())
                .then(|| (reader.clone(), next.position))
        });
        let (reader, position) = match continued {
            Some(found) => found,
            None => match glommio::executor().spawn_blocking(move || plan.locate()).await? {
                Some(found) => found,
                None => return Ok(Some(Bytes::new())),
            },
        };
        let chunk = match self
            .chunk_holding(&reader, position, position + HEADER_LEN as u64)
            .await
        {
            Ok(chunk) => chunk,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.state.borrow_mut().refused = true;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let at = (position - chunk.start) as usize;
        let first = batch::batch_size(&chunk.bytes[at..])
            .ok_or_else(|| io::Error::other(format!("no batch header at position {position}")))?;
        let first_end = position + first as u64;
        if first_end > reader.limit() {
            // Only whole, written batches lie below the limit: a length
            // past it is not one (and must not size a read).
            return Err(io::Error::other(format!(
                "the batch at position {position} runs past the written end {}",
                reader.limit()
            )));
        }
        if first > max_bytes && !at_least_one {
            return Ok(Some(Bytes::new()));
        }
        // What is sent, where its last batch starts in it, and where it
        // ends in the file.
        let (out, last, end) = if first_end > chunk.end() {
            // The batch goes on into the next chunk: served alone, joined
            // from the two (chunks are read end to end, each byte once).
            let after = self.chunk_holding(&reader, chunk.end(), first_end).await?;
            let joined = if after.start <= position {
                after
                    .bytes
                    .slice((position - after.start) as usize..(first_end - after.start) as usize)
            } else if after.start <= chunk.end() {
                let mut joined = bytes::BytesMut::with_capacity(first);
                joined.extend_from_slice(&chunk.bytes[at..]);
                joined.extend_from_slice(
                    &after.bytes[(chunk.end() - after.start) as usize..(first_end - after.start) as usize],
                );
                joined.freeze()
            } else {
                let whole = self.chunk_holding(&reader, position, first_end).await?;
                whole
                    .bytes
                    .slice((position - whole.start) as usize..(first_end - whole.start) as usize)
            };
            (joined, 0, first_end)
        } else {
            // Whole batches of the chunk from `position`, within `max_bytes`.
            let mut end = at;
            let mut last = at;
            while let Some(size) = chunk.bytes.get(end..).and_then(batch::batch_size) {
                let over = end - at + size > max_bytes && end > at;
                if end + size > chunk.bytes.len() || over {
                    break;
                }
                last = end;
                end += size;
            }
            (chunk.bytes.slice(at..end), last - at, chunk.start + end as u64)
        };
        let header =
            batch::parse_header(&out[last..]).map_err(|e| io::Error::other(e.message().to_string()))?;
        self.served(&reader, header.last_offset() + 1, end);
        Ok(Some(out))
    }

    /// Records where a read ended, drops the chunks the consumer has moved
    /// past, and reads on ahead of it.
    fn served(self: &Rc<Self>, reader: &SegmentReader, next_offset: i64, end: u64) {
        {
            let mut state = self.state.borrow_mut();
            state.next = Some(Next {
                offset: next_offset,
                file: reader.identity(),
                position: end,
            });
            self.drop_chunks(&mut state, |c| c.end() > end);
        }
        self.clone().read_ahead(reader.clone());
    }

    /// The chunk holding `from..to` of the reader's file: one already
    /// read, one being read, or one read now.
    async fn chunk_holding(self: &Rc<Self>, reader: &SegmentReader, from: u64, to: u64) -> io::Result<Chunk> {
        let file = reader.identity();
        let (found, loading) = {
            let state = self.state.borrow();
            let found = state.chunks.iter().find(|c| c.holds(&file, from, to)).cloned();
            let loading = state
                .loads
                .iter()
                .find(|(f, start, len, _)| *f == file && *start <= from && to <= start + len)
                .map(|(_, _, _, load)| load.clone());
            (found, loading)
        };
        if let Some(chunk) = found {
            return Ok(chunk);
        }
        if let Some(load) = loading {
            if let Ok(chunk) = load.await {
                if chunk.holds(&file, from, to) {
                    return Ok(chunk);
                }
            }
        }
        let start = from - from % BLOCK as u64;
        let len = (to - start).max(CHUNK_BYTES as u64) as usize;
        self.load(reader.clone(), start, len)
            .await
            .map_err(|e| io::Error::new(e.kind(), e.to_string()))
    }

    /// Reads `len` bytes of the reader's file from `start` into a chunk on
    /// the blocking pool.
    fn load(self: &Rc<Self>, reader: SegmentReader, start: u64, len: usize) -> Load {
        let file = reader.identity();
        let this = self.clone();
        let loading = file.clone();
        // A task of its own: a fetch that gives up waiting (its connection
        // closed) does not leave the read unrecorded.
        let task = glommio::spawn_local(async move {
            let read = glommio::executor()
                .spawn_blocking(move || read_chunk(&reader, start, len))
                .await;
            let mut state = this.state.borrow_mut();
            state.loads.retain(|(f, s, _, _)| !(*f == file && *s == start));
            let chunk = read.map_err(Rc::new)?;
            // One file's chunks at a time, in file order; a longer read of
            // the same start (the file grew) replaces the shorter.
            this.drop_chunks(&mut state, |c| {
                c.file == file && (c.start != start || c.end() > chunk.end())
            });
            if !state.chunks.iter().any(|c| c.start == start) {
                let at = state.chunks.partition_point(|c| c.start < start);
                state.chunks.insert(at, chunk.clone());
                this.budget.held.set(this.budget.held.get() + chunk.bytes.len());
            }
            Ok(chunk)
        })
        .detach();
        let load = async move {
            task.await
                .unwrap_or_else(|| Err(Rc::new(io::Error::other("chunk read cancelled"))))
        }
        .boxed_local()
        .shared();
        self.state
            .borrow_mut()
            .loads
            .push((loading, start, len as u64, load.clone()));
        load
    }

    /// Starts reads of the chunks after the furthest one of this file read
    /// or being read, while fewer than [`CHUNKS_AHEAD`] lie past the
    /// consumer and fewer than [`LOADS_IN_FLIGHT`] are under way; each,
    /// once in, starts the next where the one before ends.
    fn read_ahead(self: Rc<Self>, reader: SegmentReader) {
        let file = reader.identity();
        loop {
            let tail = {
                let state = self.state.borrow();
                let Some(next) = state.next.as_ref().filter(|n| n.file == file) else {
                    return;
                };
                let ends = state
                    .chunks
                    .iter()
                    .map(Chunk::end)
                    .chain(state.loads.iter().map(|(_, start, len, _)| start + len));
                let ahead = ends.clone().filter(|end| *end > next.position).count();
                if ahead >= CHUNKS_AHEAD
                    || state.loads.len() >= LOADS_IN_FLIGHT
                    || self.budget.held.get() + CHUNK_BYTES > self.budget.limit
                {
                    return;
                }
                match ends.max() {
                    Some(tail) => tail,
                    None => return,
                }
            };
            if tail + HEADER_LEN as u64 > reader.limit() {
                return;
            }
            let start = tail - tail % BLOCK as u64;
            let load = self.load(reader.clone(), start, CHUNK_BYTES);
            let this = self.clone();
            let next_reader = reader.clone();
            glommio::spawn_local(async move {
                if load.await.is_ok() {
                    this.read_ahead(next_reader);
                }
            })
            .detach();
        }
    }

    /// Drops every chunk held (for another file, or the partition's end).
    fn drop_chunks(&self, state: &mut State, keep: impl Fn(&Chunk) -> bool) {
        state.chunks.retain(|c| {
            let kept = keep(c);
            if !kept {
                self.budget.held.set(self.budget.held.get() - c.bytes.len());
            }
            kept
        });
    }
}

impl Drop for DirectReads {
    fn drop(&mut self) {
        let held: usize = self.state.borrow().chunks.iter().map(|c| c.bytes.len()).sum();
        self.budget.held.set(self.budget.held.get().saturating_sub(held));
    }
}

/// Blocking: `len` bytes of the reader's file from `start` (block-aligned)
/// with O_DIRECT, cut to what the reader may read. The O_DIRECT
/// descriptor is opened per chunk (microseconds per 4 MiB) rather than
/// kept, so none outlives the segment's deletion.
fn read_chunk(reader: &SegmentReader, start: u64, len: usize) -> io::Result<Chunk> {
    let fd = reader.open_direct()?;
    let bytes = read_direct(&fd, start, len, reader.limit())?;
    Ok(Chunk {
        file: reader.identity(),
        start,
        bytes,
    })
}

/// Blocking: the file's bytes from `start` (block-aligned) up to `end`,
/// with O_DIRECT, as chunk-sized slices whose buffers are reused once
/// dropped (a whole segment read into one fresh allocation would pay a
/// page fault per 4 KiB).
pub(crate) fn read_direct_chunks(fd: &std::fs::File, start: u64, end: u64) -> io::Result<Vec<Bytes>> {
    let mut chunks = Vec::new();
    let mut at = start;
    while at < end {
        let chunk = read_direct(fd, at, CHUNK_BYTES, end)?;
        if chunk.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ends at {at}, before {end}"),
            ));
        }
        at += chunk.len() as u64;
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// Blocking: up to `len` bytes from `start` (block-aligned) of a file
/// opened with O_DIRECT, read by the device straight into an aligned
/// buffer, and cut at `limit` (the file's end, or what may be read).
pub(crate) fn read_direct(fd: &std::fs::File, start: u64, len: usize, limit: u64) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let len = len.div_ceil(BLOCK) * BLOCK;
    let mut buffer = take_buffer(len);
    let want = (limit.saturating_sub(start) as usize).min(len);
    let aligned = want.div_ceil(BLOCK) * BLOCK;
    let mut done = 0;
    while done < aligned {
        let n = fd.read_at(&mut buffer.as_mut_slice()[done..aligned], start + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(Bytes::from_owner(Filled {
        buffer: Some(buffer),
        len: done.min(want),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{build_batch, validate};
    use crate::log::{LogConfig, PartitionLog};
    use std::path::{Path, PathBuf};

    fn scratch(name: &str) -> PathBuf {
        // Under target/, not /tmp: the file system must take O_DIRECT.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/tmp")
            .join(format!("direct-read-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A log of batches of awkward sizes, some larger than OVERLAP and one
    /// larger than a chunk; returns it and each batch's (base, last) offset.
    fn written(dir: &Path) -> (PartitionLog, Vec<(i64, i64)>) {
        let (mut log, _) = PartitionLog::open(dir).unwrap();
        let config = LogConfig::default();
        let mut batches = Vec::new();
        for i in 0..60usize {
            let size = match i {
                17 => CHUNK_BYTES + 300_000,
                _ if i % 7 == 3 => (1 << 20) + 50_000,
                _ => 1000 + i * 37_777 % 700_000,
            };
            let records: Vec<Vec<u8>> = (0..(i % 3 + 1))
                .map(|r| vec![(i + r) as u8; size / (i % 3 + 1)])
                .collect();
            let pairs: Vec<(&[u8], &[u8])> = records.iter().map(|v| (&b"k"[..], &v[..])).collect();
            let batch = build_batch(0, 1, &pairs);
            let header = validate(&batch).unwrap();
            let outcome = log.append(&batch, header, &config).unwrap();
            batches.push((
                outcome.base_offset,
                outcome.base_offset + i64::from(header.last_offset_delta),
            ));
        }
        (log, batches)
    }

    fn offsets(bytes: &[u8]) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(size) = bytes.get(at..).and_then(batch::batch_size) {
            assert!(at + size <= bytes.len(), "only whole batches");
            let header = batch::parse_header(&bytes[at..]).unwrap();
            assert!(
                batch::validate(&bytes[at..at + size]).is_ok(),
                "a batch read back intact"
            );
            out.push((header.base_offset, header.last_offset()));
            at += size;
        }
        assert_eq!(at, bytes.len());
        out
    }

    /// A consumer reading on from offset 0, one fetch after another, gets
    /// every batch once, in order and intact (straddling chunk ends, one
    /// larger than a chunk); reads at arbitrary offsets start at the batch
    /// holding them; a read past the end is empty.
    #[test]
    fn sequential_and_random_reads_return_whole_batches_in_order() {
        let dir = scratch("seq");
        let (log, batches) = written(&dir);
        glommio::LocalExecutor::default().run(async {
            let reads = DirectReads::new(ReadAheadBudget::new(256 << 20));
            let written = log.written_end();
            let mut seen = Vec::new();
            let mut offset = 0;
            while offset < log.log_end_offset() {
                let plan = log.plan_read(offset, written).unwrap();
                let bytes = reads
                    .clone()
                    .read(plan, offset, 1 << 20, true)
                    .await
                    .unwrap()
                    .expect("O_DIRECT here");
                let got = offsets(&bytes);
                assert!(!got.is_empty(), "at least one batch at offset {offset}");
                offset = got.last().unwrap().1 + 1;
                seen.extend(got);
            }
            assert_eq!(seen, batches);
            for (base, last) in batches.iter().rev().step_by(5) {
                let middle = (base + last) / 2;
                let plan = log.plan_read(middle, written).unwrap();
                let bytes = reads.clone().read(plan, middle, 1, true).await.unwrap().unwrap();
                assert_eq!(offsets(&bytes), vec![(*base, *last)]);
                let plan = log.plan_read(middle, written).unwrap();
                let bytes = reads.clone().read(plan, middle, 1, false).await.unwrap().unwrap();
                assert!(bytes.is_empty(), "a batch over max_bytes without at_least_one");
            }
            let end = log.log_end_offset();
            let plan = log.plan_read(end, written).unwrap();
            assert!(reads
                .clone()
                .read(plan, end, 1 << 20, true)
                .await
                .unwrap()
                .unwrap()
                .is_empty());
            assert!(reads.budget.held.get() <= 256 << 20);
            drop(reads);
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
