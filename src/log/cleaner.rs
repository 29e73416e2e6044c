//! Log compaction for one partition (Kafka's log cleaner): keeps the
//! latest record of every key, drops tombstones `delete.retention.ms`
//! after their timestamp, drops the records of aborted transactions and,
//! once a transaction has no batch left, its marker (also
//! `delete.retention.ms` after it was written), and merges small
//! segments, without moving any record's offset.
//!
//! [`clean`] is blocking (the blocking pool runs it): it maps each key of
//! the dirty part (from the cleaner's checkpoint) to its latest offset,
//! within a memory budget, then rewrites every segment up to where the map
//! reaches into `<base>.cleaned` files, each synced and renamed to
//! `<base>.<end>.swap` (the segments it replaces are those in `[base,
//! end)`), the directory synced once.
//!
//! The swap is made crash-safe by the order the log installs it in (see
//! `PartitionLog::install_cleaned`) and by [`finish_swaps`] at open: a
//! `.cleaned` file is discarded, a `.swap` file replaces the segments it
//! covers. A crash therefore leaves either the old segments or the new
//! one, never both and never neither.

use super::batch::{self, BatchHeader, Record, HEADER_LEN};
use super::compression::{self, Codec};
use super::producer_state::AbortedTxn;
use super::segment::{file_name, Segment, SegmentReader};
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes one key costs the map: a 16-byte digest, an offset, and the
/// table's own overhead.
pub const MAP_ENTRY_BYTES: usize = 48;

/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 4 << 20;

/// Bytes of a rewrite after which their writeback is started: the final
/// sync then finds little dirty, instead of flushing a whole segment in
/// one burst that stalls the acks=all syncs of produce on the same device.
const WRITEBACK_EVERY: u64 = 4 << 20;

/// Starts writing `len` bytes from `offset` of `file` back to the device,
/// without waiting (sync_file_range's WRITE). Advice: errors are ignored,
/// the final sync covers everything.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range reads no memory of ours; the fd belongs to
    // `file`, open for the duration of the call.
    let _ = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

/// A file the cleaner is writing; discarded at open.
const CLEANED: &str = "cleaned";
/// A finished rewrite waiting to replace the segments it covers.
const SWAP: &str = "swap";
/// A replaced segment's file, removed once the swap is durable.
pub const DELETED: &str = "deleted";

/// One segment the cleaner reads.
#[derive(Debug, Clone)]
pub struct CleanSegment {
    pub base: i64,
    /// Where the next segment starts: this one's offsets end before it
    /// (a cleaned segment may end early, its last offsets removed).
    pub end: i64,
    pub size: u64,
    pub reader: SegmentReader,
}

/// What to clean, as the partition's shard decided it.
#[derive(Debug, Clone)]
pub struct CleanJob {
    pub dir: PathBuf,
    /// The segments the cleaner may rewrite, oldest first: closed ones,
    /// below the stable offset and `min.compaction.lag.ms`.
    pub segments: Vec<CleanSegment>,
    /// Where the part not yet cleaned starts (a segment's base).
    pub dirty_from: i64,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
    pub aborted: Vec<AbortedTxn>,
    /// Segments are merged up to this many bytes.
    pub segment_bytes: u64,
    /// Memory for the key map.
    pub map_budget_bytes: usize,
    /// This cleaning's I/O pace.
    pub throttle: Arc<Throttle>,
}

/// A rewrite ready to replace the segments in `[base, end)`.
#[derive(Debug)]
pub struct Swap {
    pub base: i64,
    pub end: i64,
    pub segment: Segment,
    pub path: PathBuf,
}

/// What a clean did.
#[derive(Debug, Default)]
pub struct CleanResult {
    pub swaps: Vec<Swap>,
    /// The new checkpoint: everything below is clean.
    pub cleaned_to: i64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub keys: usize,
    /// When the oldest tombstone kept may go (a later clean removes it).
    pub tombstone_expiry: Option<i64>,
    /// (producer id, offset) of the abort markers this cleaning removed.
    pub removed_aborts: Vec<(i64, i64)>,
}

/// Paces one cleaning's I/O to a byte rate
/// (`LOG_CLEANER_IO_MAX_BYTES_PER_SECOND`), counted from its start, by
/// sleeping the cleaning thread, never a shard.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: u64,
    started: Instant,
    done: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// `0`: unthrottled.
    pub fn new(bytes_per_second: u64) -> Throttle {
        Throttle {
            bytes_per_second,
            started: Instant::now(),
            done: Default::default(),
        }
    }

    fn account(&self, bytes: u64) {
        if self.bytes_per_second == 0 {
            return;
        }
        let done = self.done.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed) + bytes;
        let due = Duration::from_secs_f64(done as f64 / self.bytes_per_second as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

type KeyMap = HashMap<[u8; 16], i64>;

fn digest(key: &[u8]) -> [u8; 16] {
    let full = ring::digest::digest(&ring::digest::SHA256, key);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full.as_ref()[..16]);
    out
}

/// The aborted transactions by producer: (first offset, marker offset).
type Aborted = HashMap<i64, Vec<(i64, i64)>>;

fn is_aborted(aborted: &Aborted, header: &BatchHeader) -> bool {
    header.is_transactional()
        && aborted.get(&header.producer_id).is_some_and(|ranges| {
            ranges
                .iter()
                .any(|(first, last)| *first <= header.base_offset && header.base_offset <= *last)
        })
}

/// Calls `visit` with every whole batch of `segment`, in order.
fn for_each_batch(
    segment: &CleanSegment,
    throttle: &Throttle,
    read: &mut u64,
    mut visit: impl FnMut(&[u8], &BatchHeader) -> io::Result<()>,
) -> io::Result<()> {
    let mut position = 0u64;
    loop {
        let chunk = segment.reader.read_batches(position, READ_CHUNK, true)?;
        if chunk.is_empty() {
            return Ok(());
        }
        throttle.account(chunk.len() as u64);
        *read += chunk.len() as u64;
        let mut at = 0;
        while at < chunk.len() {
            let header =
                batch::parse_header(&chunk[at..]).map_err(|e| io::Error::other(e.message().to_string()))?;
            visit(&chunk[at..at + header.size], &header)?;
            at += header.size;
        }
        position += chunk.len() as u64;
    }
}

fn records_of<'a>(bytes: &'a [u8], header: &BatchHeader) -> io::Result<std::borrow::Cow<'a, [u8]>> {
    compression::records(bytes, header).map_err(|e| io::Error::other(e.message().to_string()))
}

/// Blocking: cleans as [`CleanJob`] says (see the module docs).
pub fn clean(job: &CleanJob) -> io::Result<CleanResult> {
    let mut result = CleanResult {
        cleaned_to: job.dirty_from,
        ..CleanResult::default()
    };
    let mut aborted: Aborted = HashMap::new();
    for a in &job.aborted {
        aborted
            .entry(a.producer_id)
            .or_default()
            .push((a.first_offset, a.last_offset));
    }
    // The dirty part's keys, each to its latest offset; segment by segment
    // while the map fits (at least one segment).
    let mut map: KeyMap = HashMap::new();
    for segment in job.segments.iter().filter(|s| s.base >= job.dirty_from) {
        if result.cleaned_to > job.dirty_from && map.len() * MAP_ENTRY_BYTES >= job.map_budget_bytes {
            break;
        }
        for_each_batch(segment, &job.throttle, &mut result.bytes_read, |bytes, header| {
            if header.is_control() || is_aborted(&aborted, header) {
                return Ok(());
            }
            for record in batch::parse_records(&records_of(bytes, header)?)
                .map_err(|e| io::Error::other(e.message().to_string()))?
            {
                if let Some(key) = record.key {
                    map.insert(digest(key), header.base_offset + record.offset_delta);
                }
            }
            Ok(())
        })?;
        result.cleaned_to = segment.end;
    }
    result.keys = map.len();
    if result.cleaned_to == job.dirty_from {
        return Ok(result);
    }
    let cleanable: Vec<&CleanSegment> = job
        .segments
        .iter()
        .filter(|s| s.end <= result.cleaned_to)
        .collect();
    let mut txns = Transactions::default();
    for group in groups(&cleanable, job.segment_bytes) {
        let swap = rewrite(job, &group, (&map, &aborted, &mut txns), &mut result)?;
        result.swaps.push(swap);
    }
    super::partition_log::sync_dir(&job.dir)?;
    Ok(result)
}

/// Consecutive segments whose sizes add up to at most `segment_bytes`
/// (one at least), each group's offsets within an index's reach.
fn groups<'a>(segments: &[&'a CleanSegment], segment_bytes: u64) -> Vec<Vec<&'a CleanSegment>> {
    let mut groups: Vec<Vec<&CleanSegment>> = Vec::new();
    for segment in segments {
        let fits = groups.last().is_some_and(|group| {
            let size: u64 = group.iter().map(|s| s.size).sum();
            size + segment.size <= segment_bytes && segment.end - group[0].base < i64::from(i32::MAX)
        });
        match groups.last_mut() {
            Some(group) if fits => group.push(segment),
            _ => groups.push(vec![segment]),
        }
    }
    groups
}

/// Writes what `group` keeps into `<base>.cleaned`, synced, then renamed
/// to `<base>.<end>.swap`.
fn rewrite(
    job: &CleanJob,
    group: &[&CleanSegment],
    (map, aborted, txns): (&KeyMap, &Aborted, &mut Transactions),
    result: &mut CleanResult,
) -> io::Result<Swap> {
    let base = group[0].base;
    let end = group[group.len() - 1].end;
    let cleaned = job.dir.join(file_name(base, CLEANED));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&cleaned)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, &file);
    let mut written = 0u64;
    let mut handed_back = 0u64;
    for segment in group {
        for_each_batch(segment, &job.throttle, &mut result.bytes_read, |bytes, header| {
            let kept = if header.is_control() {
                let kept = txns.keep_marker(bytes, header, job, &mut result.tombstone_expiry);
                if kept.is_none()
                    && super::control::marker_of(bytes, header) == Some(super::control::Marker::Abort)
                {
                    result
                        .removed_aborts
                        .push((header.producer_id, header.base_offset));
                }
                kept
            } else {
                let aborted_batch = is_aborted(aborted, header);
                let kept = if aborted_batch {
                    None
                } else {
                    keep(bytes, header, job, map, &mut result.tombstone_expiry)?
                };
                txns.on_batch(header, aborted_batch, kept.is_some());
                kept
            };
            if let Some(kept) = kept {
                out.write_all(&kept)?;
                written += kept.len() as u64;
            }
            if written - handed_back >= WRITEBACK_EVERY {
                out.flush()?;
                start_writeback(out.get_ref(), handed_back, written - handed_back);
                handed_back = written;
            }
            Ok(())
        })?;
    }
    out.flush()?;
    drop(out);
    job.throttle.account(written);
    result.bytes_written += written;
    file.sync_all()?;
    let swap = job.dir.join(swap_name(base, end));
    fs::rename(&cleaned, &swap)?;
    let segment = Segment::from_file(&job.dir, base, file)?;
    Ok(Swap {
        base,
        end,
        segment,
        path: swap,
    })
}

fn swap_name(base: i64, end: i64) -> String {
    format!("{base:020}.{end:020}.{SWAP}")
}

/// Which transactions still have batches in the log, as one cleaning
/// reads it in offset order (Kafka's CleanedTransactionMetadata): a
/// marker stays while its transaction has a batch before it (a
/// read_committed consumer of that batch needs the marker). The first
/// cleaning that finds none left stamps the marker with a delete horizon,
/// `delete.retention.ms` from then, as Kafka does since KIP-534 (the
/// batch's base timestamp, flagged by an attribute bit); a consumer that
/// read those batches before they went still finds the marker until then.
/// A kept marker counts with the kept tombstones, so a later cleaning comes
/// back for it.
#[derive(Default)]
struct Transactions {
    /// (producer id, aborted) of the transactions whose batches this
    /// cleaning has read since their producer's last marker: whether it
    /// kept any record of them.
    seen: HashMap<(i64, bool), bool>,
}

impl Transactions {
    fn on_batch(&mut self, header: &BatchHeader, aborted: bool, kept: bool) {
        if header.is_transactional() {
            *self.seen.entry((header.producer_id, aborted)).or_default() |= kept;
        }
    }

    fn keep_marker(
        &mut self,
        bytes: &[u8],
        header: &BatchHeader,
        job: &CleanJob,
        tombstone_expiry: &mut Option<i64>,
    ) -> Option<Vec<u8>> {
        let aborted = match super::control::marker_of(bytes, header) {
            Some(super::control::Marker::Commit) => false,
            Some(super::control::Marker::Abort) => true,
            // A control record of a kind not known here stays.
            None => return Some(bytes.to_vec()),
        };
        if self.seen.remove(&(header.producer_id, aborted)) == Some(true) {
            return Some(bytes.to_vec());
        }
        let (kept, horizon) = if header.attributes & DELETE_HORIZON_BIT != 0 {
            if header.base_timestamp <= job.now_ms {
                return None;
            }
            (bytes.to_vec(), header.base_timestamp)
        } else {
            let horizon = job.now_ms.saturating_add(job.delete_retention_ms);
            (with_delete_horizon(bytes, horizon), horizon)
        };
        *tombstone_expiry = Some(tombstone_expiry.map_or(horizon, |e| e.min(horizon)));
        Some(kept)
    }
}

/// The batch attribute (KIP-534) saying the base timestamp is a delete
/// horizon.
const DELETE_HORIZON_BIT: i16 = 0x40;

/// `bytes` with its delete horizon set: the attribute bit, the base
/// timestamp, and the CRC over them.
fn with_delete_horizon(bytes: &[u8], horizon: i64) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let at = batch::ATTRIBUTES;
    let attributes = i16::from_be_bytes([out[at], out[at + 1]]) | DELETE_HORIZON_BIT;
    out[at..at + 2].copy_from_slice(&attributes.to_be_bytes());
    out[batch::BASE_TIMESTAMP..batch::BASE_TIMESTAMP + 8].copy_from_slice(&horizon.to_be_bytes());
    let crc = batch::compute_crc(&out);
    out[batch::CRC..batch::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// What of one data batch the cleaned log keeps: the same bytes, a
/// rebuilt batch with fewer records (same base offset, producer fields and
/// codec), or nothing.
fn keep(
    bytes: &[u8],
    header: &BatchHeader,
    job: &CleanJob,
    map: &KeyMap,
    tombstone_expiry: &mut Option<i64>,
) -> io::Result<Option<Vec<u8>>> {
    let records = records_of(bytes, header)?;
    let parsed = batch::parse_records(&records).map_err(|e| io::Error::other(e.message().to_string()))?;
    let mut kept: Vec<&Record> = Vec::with_capacity(parsed.len());
    for record in &parsed {
        let Some(key) = record.key else {
            // A keyless record (from before the topic was compacted).
            continue;
        };
        let offset = header.base_offset + record.offset_delta;
        if map.get(&digest(key)).is_some_and(|latest| *latest > offset) {
            continue;
        }
        if record.value.is_none() {
            let timestamp = if header.is_log_append_time() {
                header.max_timestamp
            } else {
                header.base_timestamp.saturating_add(record.timestamp_delta)
            };
            let expires = timestamp.saturating_add(job.delete_retention_ms);
            if expires <= job.now_ms {
                continue;
            }
            *tombstone_expiry = Some(tombstone_expiry.map_or(expires, |e| e.min(expires)));
        }
        kept.push(record);
    }
    if kept.len() == parsed.len() {
        return Ok(Some(bytes.to_vec()));
    }
    if kept.is_empty() {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(records.len());
    for record in &kept {
        body.extend_from_slice(record.raw);
    }
    let count = kept.len() as i32;
    let mut head = bytes[..HEADER_LEN].to_vec();
    head[batch::RECORDS_COUNT..batch::RECORDS_COUNT + 4].copy_from_slice(&count.to_be_bytes());
    let fewer = BatchHeader {
        records_count: count,
        ..*header
    };
    let codec = Codec::from_id(header.compression()).unwrap_or(Codec::None);
    compression::rebuild(&head, &fewer, &body, codec)
        .map(|(rebuilt, _)| Some(rebuilt))
        .map_err(|e| io::Error::other(e.message().to_string()))
}

/// At open, before segments are listed: discards unfinished rewrites and
/// replaced files, and finishes swaps (each replaces the segments in its
/// range, then takes its base's name). Returns (swaps finished, unfinished
/// rewrites discarded).
pub fn finish_swaps(dir: &Path) -> io::Result<(usize, usize)> {
    let mut swaps = Vec::new();
    let mut leftovers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if name.ends_with(&format!(".{CLEANED}")) || name.ends_with(&format!(".{DELETED}")) {
            leftovers.push(name);
        } else if let Some(stem) = name.strip_suffix(&format!(".{SWAP}")) {
            if let Some((base, end)) = stem.split_once('.') {
                if let (Ok(base), Ok(end)) = (base.parse::<i64>(), end.parse::<i64>()) {
                    swaps.push((base, end, name));
                }
            }
        }
    }
    let discarded = leftovers
        .iter()
        .filter(|n| n.ends_with(&format!(".{CLEANED}")))
        .count();
    for name in leftovers {
        fs::remove_file(dir.join(name))?;
    }
    if swaps.is_empty() {
        return Ok((0, discarded));
    }
    swaps.sort_unstable();
    let count = swaps.len();
    for (base, end, name) in swaps {
        replace_segments(dir, base, end)?;
        sync_dir_of(dir)?;
        fs::rename(dir.join(name), dir.join(file_name(base, "log")))?;
    }
    sync_dir_of(dir)?;
    Ok((count, discarded))
}

fn sync_dir_of(dir: &Path) -> io::Result<()> {
    super::partition_log::sync_dir(dir)
}

/// Removes the files of every segment whose base is in `[base, end)`:
/// their data is in the swap that covers them.
pub fn replace_segments(dir: &Path, base: i64, end: i64) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        let Some((stem, extension)) = name.split_once('.') else {
            continue;
        };
        if !matches!(extension, "log" | "index" | "timeindex") {
            continue;
        }
        if let Ok(segment_base) = stem.parse::<i64>() {
            if segment_base >= base && segment_base < end {
                fs::remove_file(dir.join(&name))?;
            }
        }
    }
    Ok(())
}
