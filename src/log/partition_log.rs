//! The log of one partition: a directory of segments, the offsets that
//! bound it, its producers' sequence state, and how it recovers.
//!
//! Files in `<topic>-<partition>/`:
//! - `<base offset>.log` / `.index` / `.timeindex`: the segments;
//! - `recovery-point`: segments below this offset were fsynced when they
//!   rolled and are trusted at start; from it on, every batch is re-read
//!   and CRC-checked after a crash and a torn tail is truncated;
//! - `.clean-shutdown`: written by a graceful close with the end offset;
//!   its presence means nothing needs re-reading (removed, durably, at open);
//! - `log-start-offset`: raised by retention and DeleteRecords;
//! - `<n>.spare`: the file the next roll will name, made ahead
//!   so a roll creates nothing on the shard thread (removed at open);
//! - `producer-state.snapshot`: idempotent-producer state as of an offset,
//!   written at roll and close; batches after it are replayed at open
//!   (`producer-state.json`, its older form, is still read);
//! - `cleaner-offset-checkpoint` (compacted topics): below it the log is
//!   clean; `<base>.cleaned`, `<base>.<end>.swap` and `*.deleted`: a
//!   cleaning in progress (see `cleaner`).

use super::batch::{self, BatchHeader};
use super::compression::CompressionType;
use super::control;
use super::index::write_file;
use super::leader_epochs::LeaderEpochs;
use super::producer_state::{decode_snapshot, ProducerStates, SequenceCheck, PRODUCER_ID_EXPIRATION_MS};
use super::segment::{Segment, SegmentIndexes, SegmentReader};
use bytes::Bytes;
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tracing::warn;

const CLEAN_SHUTDOWN: &str = ".clean-shutdown";
/// Compacted topics: where the part the cleaner has not cleaned starts.
const CLEANER_CHECKPOINT: &str = "cleaner-offset-checkpoint";
const RECOVERY_POINT: &str = "recovery-point";
pub const LOG_START_OFFSET: &str = "log-start-offset";
/// The extension of the next segment's file, made ahead of time (see
/// [`SpareSegment`]).
const SPARE_SEGMENT: &str = "spare";
/// Binary producer snapshot (see `producer_state::decode_snapshot`).
pub const PRODUCER_STATE: &str = "producer-state.snapshot";
/// The JSON snapshot of earlier versions: read at open if no binary one
/// exists, removed once a binary one is written.
pub(super) const LEGACY_PRODUCER_STATE: &str = "producer-state.json";

/// Per-topic log settings (Kafka's topic configs of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    /// `None`: keep forever (retention.ms = -1).
    pub retention_ms: Option<u64>,
    /// `None`: no size bound (retention.bytes = -1).
    pub retention_bytes: Option<u64>,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    /// `compression.type`: the codec batches are stored in.
    pub compression: CompressionType,
    /// `message.timestamp.before.max.ms`: how far in the past a CreateTime
    /// record may be (Kafka's default: unbounded).
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future (Kafka 4.0
    /// made the default one hour, KIP-1030).
    pub timestamp_after_max_ms: i64,
    /// `remote.storage.enable`: closed segments go to object storage.
    pub remote_storage: bool,
    /// `local.retention.ms` resolved (-2 = `retention.ms`): how long
    /// uploaded segments stay on the local disk.
    pub local_retention_ms: Option<u64>,
    /// `local.retention.bytes` resolved (-2 = `retention.bytes`).
    pub local_retention_bytes: Option<u64>,
    /// `cleanup.policy` has `compact`: the cleaner keeps each key's
    /// latest record, and every record needs a key.
    pub compact: bool,
    /// `cleanup.policy` has `delete`: retention removes old segments.
    pub delete: bool,
    /// `delete.retention.ms`: how long tombstones outlive their timestamp.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`, in thousandths.
    pub min_cleanable_dirty_ratio_permille: u32,
    /// `min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`.
    pub max_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            compression: CompressionType::Producer,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            remote_storage: false,
            local_retention_ms: Some(7 * 24 * 3600 * 1000),
            local_retention_bytes: None,
            compact: false,
            delete: true,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio_permille: 500,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}

/// What happened at open, for the one log line recovery owes the operator.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub clean: bool,
    pub segments: usize,
    pub rescanned_segments: usize,
    /// (offset the log now ends at, bytes cut, why) if a tail was cut.
    pub truncated: Option<(i64, u64, String)>,
}

#[derive(Debug)]
pub struct AppendOutcome {
    pub base_offset: i64,
    /// The broker's timestamp for LogAppendTime topics, else -1.
    pub log_append_time: i64,
    pub duplicate: bool,
    /// A segment that rolled before this batch: to be sealed once every
    /// write before it is done (see [`Sealed::finish`]).
    pub rolled: Option<Sealed>,
    /// The bytes to write (none for a duplicate).
    pub write: Option<PendingWrite>,
}

/// How far the log is written: every batch below `offset` is in its file;
/// the log's written part ends in segment `segment_base` at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub offset: i64,
    pub segment_base: i64,
    pub position: u64,
}

/// One batch's bytes and where they go. Writes of one partition are done
/// in the order they were reserved.
#[derive(Debug)]
pub struct PendingWrite {
    pub file: Arc<File>,
    /// The file's path, for writers that open it their own way (O_DIRECT).
    pub path: Arc<Path>,
    pub position: u64,
    pub base_offset: i64,
    pub parts: [Bytes; 2],
    /// The log's written end once this write is done.
    pub end: Written,
}

impl PendingWrite {
    /// The batch's size in bytes.
    pub fn size(&self) -> usize {
        self.parts[0].len() + self.parts[1].len()
    }

    /// Blocking: the bytes to the file through the page cache.
    pub fn write(&self) -> io::Result<()> {
        super::segment::write_all_vectored_at(&self.file, &[&self.parts[0], &self.parts[1]], self.position)
    }
}

/// A value kept in a small file that only ever grows (recovery point, log
/// start offset). Shared with the blocking threads that write it, which
/// may finish out of order: an older value never overwrites a newer one.
#[derive(Debug)]
pub struct MonotonicFile {
    path: PathBuf,
    stored: Mutex<i64>,
}

impl MonotonicFile {
    fn new(path: PathBuf, stored: i64) -> Arc<MonotonicFile> {
        Arc::new(MonotonicFile {
            path,
            stored: Mutex::new(stored),
        })
    }

    /// The value stored last.
    pub fn value(&self) -> i64 {
        self.stored.lock().map_or(i64::MIN, |v| *v)
    }

    /// Blocking: writes `value` durably if it is larger than what is stored.
    pub fn store(&self, value: i64) -> io::Result<()> {
        let mut stored = self.stored.lock().map_err(|_| io::Error::other("poisoned"))?;
        if value > *stored {
            write_file(&self.path, value.to_string().as_bytes())?;
            *stored = value;
        }
        Ok(())
    }
}

/// A rolled segment's remaining work: its indexes, an fsync of its data,
/// the producer state as of its end, and then the recovery point past it.
#[derive(Debug)]
pub struct Sealed {
    /// The new segment's file was the spare: it takes its name first.
    pub naming: Option<Naming>,
    file: Arc<File>,
    /// The segment's size: an O_DIRECT writer may have padded the file
    /// past it with zeros to a block boundary.
    len: u64,
    indexes: SegmentIndexes,
    snapshot: Snapshot,
    recovery_point: i64,
    recovery: Arc<MonotonicFile>,
}

/// The producer state as of an offset, to be written to the snapshot
/// file. Writes are ordered through `written` (the offset of the snapshot
/// on disk): a roll's snapshot, taken at the roll and written later off the
/// shard, never replaces one written since from newer state (a cleaning's,
/// which forgot aborted transactions whose markers it removed).
#[derive(Debug)]
pub(crate) struct Snapshot {
    path: PathBuf,
    bytes: Vec<u8>,
    offset: i64,
    written: Arc<std::sync::Mutex<i64>>,
}

impl Snapshot {
    /// Blocking. `newest`: written even at the offset on disk (its state
    /// is the newer).
    fn write(&self, newest: bool) -> io::Result<()> {
        let mut on_disk = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if !newest && self.offset <= *on_disk {
            return Ok(());
        }
        write_file(&self.path, &self.bytes)?;
        *on_disk = (*on_disk).max(self.offset);
        // The binary snapshot replaces the JSON one of earlier versions.
        if let Some(dir) = self.path.parent() {
            let _ = fs::remove_file(dir.join(LEGACY_PRODUCER_STATE));
        }
        Ok(())
    }
}

impl Sealed {
    /// Blocking, in this order, so that a crash at any point leaves a
    /// recovery point that only covers synced data.
    pub fn finish(self) -> io::Result<()> {
        self.indexes.write()?;
        self.file.set_len(self.len)?;
        self.file.sync_data()?;
        self.snapshot.write(false)?;
        self.recovery.store(self.recovery_point)
    }
}

/// A file made ahead of time for the next segment, so that rolling the
/// log creates no file on the shard thread: the roll takes it and names
/// it ([`Naming`]) before the first write to it.
#[derive(Debug)]
pub struct SpareSegment {
    path: PathBuf,
    file: File,
}

impl SpareSegment {
    /// Blocking: an empty spare file in `dir`.
    pub fn create(dir: &Path) -> io::Result<SpareSegment> {
        use std::sync::atomic::{AtomicU64, Ordering};
        // A name of its own: the spare before it may not be renamed yet.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}.{SPARE_SEGMENT}", std::process::id()));
        let file = fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)?;
        Ok(SpareSegment { path, file })
    }
}

/// A rolled-to spare file's rename to its segment name.
#[derive(Debug)]
pub struct Naming {
    from: PathBuf,
    to: PathBuf,
}

impl Naming {
    /// Blocking; before any write to the segment. The directory is synced
    /// so the name is as durable as the data later synced into the file.
    pub fn finish(&self) -> io::Result<()> {
        fs::rename(&self.from, &self.to)?;
        match self.to.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

/// What forgetting unwritten batches leaves to do on disk: cut the file
/// they were reserved in back, remove segments rolled after it.
#[derive(Debug)]
pub struct Unwritten {
    file: Arc<File>,
    len: u64,
    removed: Vec<[PathBuf; 3]>,
}

impl Unwritten {
    /// Blocking; must run before any later write to the log.
    pub fn finish(&self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        remove_segment_files(&self.removed)
    }
}

/// Removes segments' files (blocking); one already gone is not an error.
fn remove_segment_files(segments: &[[PathBuf; 3]]) -> io::Result<()> {
    for path in segments.iter().flatten() {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// What retention or DeleteRecords took away: the files to remove and the
/// new log start to store, both off the shard thread.
#[derive(Debug, Default)]
pub struct Trimmed {
    pub deleted_segments: usize,
    removed: Vec<[PathBuf; 3]>,
    log_start: Option<(Arc<MonotonicFile>, i64)>,
    /// An expired active segment rolled so it could go too.
    pub rolled: Option<Sealed>,
}

impl Trimmed {
    /// Blocking: the new log start, durably, then the segment files.
    pub fn finish(self) -> io::Result<()> {
        if let Some((file, start)) = &self.log_start {
            file.store(*start)?;
        }
        remove_segment_files(&self.removed)
    }
}

/// A read planned on the shard (which segment, from where, how far is
/// written) and done off it: [`ReadPlan::execute`] is blocking.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    offset: i64,
    segments: Vec<(SegmentReader, u64)>,
}

/// Where a read ended: the segment and the position after the bytes
/// read, for reading ahead from there.
#[derive(Debug, Clone)]
pub struct ReadEnd {
    pub reader: SegmentReader,
    pub position: u64,
    /// The segment after it, if the plan holds one: read-ahead goes on
    /// there past the end of this one.
    pub next: Option<SegmentReader>,
}

impl ReadPlan {
    /// Whole batches from the one holding the planned offset (blocking),
    /// and where they end.
    pub fn execute(&self, max_bytes: usize, at_least_one: bool) -> io::Result<(Vec<u8>, Option<ReadEnd>)> {
        for (i, (reader, start)) in self.segments.iter().enumerate() {
            if let Some((position, bytes)) = reader.read_from(*start, self.offset, max_bytes, at_least_one)? {
                let end = ReadEnd {
                    reader: reader.clone(),
                    position: position + bytes.len() as u64,
                    next: self.segments.get(i + 1).map(|(next, _)| next.clone()),
                };
                return Ok((bytes, Some(end)));
            }
        }
        Ok((Vec::new(), None))
    }

    /// Blocking: the reader of the segment holding the planned offset and
    /// the position of the batch that holds it; `None` if what is written
    /// ends before it.
    pub fn locate(&self) -> io::Result<Option<(SegmentReader, u64)>> {
        for (reader, start) in &self.segments {
            if let Some((position, _)) =
                reader.first_batch_from(*start, |h| h.last_offset() >= self.offset)?
            {
                return Ok(Some((reader.clone(), position)));
            }
        }
        Ok(None)
    }

    /// The planned segments' readers, in order.
    pub fn readers(&self) -> impl Iterator<Item = &SegmentReader> {
        self.segments.iter().map(|(reader, _)| reader)
    }

    /// The same read if the page cache holds all of it, without waiting
    /// for the disk (never blocks: safe on the shard thread); `None` if
    /// some of it is not cached, or the file system cannot say
    /// (EOPNOTSUPP): the blocking read then answers, errors included.
    pub fn execute_cached(&self, max_bytes: usize, at_least_one: bool) -> Option<(Vec<u8>, Option<ReadEnd>)> {
        for (i, (reader, start)) in self.segments.iter().enumerate() {
            match reader
                .cached_only()
                .read_from(*start, self.offset, max_bytes, at_least_one)
            {
                Ok(Some((position, bytes))) => {
                    let end = ReadEnd {
                        reader: reader.clone(),
                        position: position + bytes.len() as u64,
                        next: self.segments.get(i + 1).map(|(next, _)| next.clone()),
                    };
                    return Some((bytes, Some(end)));
                }
                Ok(None) => {}
                Err(_) => return None,
            }
        }
        Some((Vec::new(), None))
    }
}

/// A timestamp lookup planned on the shard and done off it.
#[derive(Debug)]
pub enum TimestampPlan {
    /// The first record at or after a time: candidate segments in order.
    AtOrAfter {
        timestamp: i64,
        log_start: i64,
        segments: Vec<(SegmentReader, u64)>,
    },
    /// The earliest record with the largest timestamp.
    Max {
        reader: SegmentReader,
        from: u64,
        max: i64,
        fallback: i64,
    },
    Nothing,
}

impl TimestampPlan {
    /// Blocking: (offset, timestamp) of the answer, if there is one.
    pub fn execute(&self) -> io::Result<Option<(i64, i64)>> {
        match self {
            TimestampPlan::AtOrAfter {
                timestamp,
                log_start,
                segments,
            } => {
                for (reader, start) in segments {
                    if let Some((offset, ts)) = reader.find_timestamp(*start, *timestamp)? {
                        return Ok(Some((offset.max(*log_start), ts)));
                    }
                }
                Ok(None)
            }
            TimestampPlan::Max {
                reader,
                from,
                max,
                fallback,
            } => reader.find_max_timestamp(*from, *max, *fallback).map(Some),
            TimestampPlan::Nothing => Ok(None),
        }
    }
}

#[derive(Debug)]
pub enum AppendError {
    Producer(ResponseError),
    Io(io::Error),
}

#[derive(Debug, Serialize, Deserialize)]
struct ProducerSnapshot {
    offset: i64,
    state: ProducerStates,
}

/// A closed segment as tiering sees it.
#[derive(Debug, Clone)]
pub struct ClosedSegment {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    pub max_timestamp: i64,
    /// The log, offset index and time index files.
    pub files: [PathBuf; 3],
    /// The transactions aborted by markers in it (its `.txnindex`).
    pub aborted: Vec<crate::log::producer_state::AbortedTxn>,
}

#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    segments: Vec<Segment>,
    log_start_offset: i64,
    log_start_file: Arc<MonotonicFile>,
    recovery: Arc<MonotonicFile>,
    producers: ProducerStates,
    spare: Option<SpareSegment>,
    cleaner_checkpoint: Arc<MonotonicFile>,
    /// When a tombstone the last cleaning kept may go.
    tombstone_expiry: Option<i64>,
    /// The offset of the producer snapshot on disk (see [`Snapshot`]).
    snapshot_written: Arc<std::sync::Mutex<i64>>,
    /// Which epochs wrote which offsets (OffsetForLeaderEpoch).
    epochs: LeaderEpochs,
    /// The epoch this broker leads the partition at: stamped into every
    /// batch a client appends.
    leader_epoch: i32,
}

/// A compacted partition's cleaning, as the shard's cleaner decides it.
#[derive(Debug)]
pub struct CleanCandidate {
    pub job: super::cleaner::CleanJob,
    /// Share of the cleanable bytes not yet cleaned (0..=1).
    pub dirty_ratio: f64,
    pub cleanable_bytes: u64,
    /// Due whatever its ratio: max.compaction.lag.ms passed, or a kept
    /// tombstone expired.
    pub overdue: bool,
}

impl CleanCandidate {
    /// Due now: overdue, or dirty past `min.cleanable.dirty.ratio`.
    pub fn is_due(&self, config: &LogConfig) -> bool {
        self.overdue || self.dirty_ratio * 1000.0 >= f64::from(config.min_cleanable_dirty_ratio_permille)
    }
}

/// What installing a cleaning left to do off the shard: the replaced
/// files to remove and the new segments' indexes to write, then the
/// checkpoint to store.
#[derive(Debug)]
pub struct Installed {
    pub removed: Vec<PathBuf>,
    pub indexes: Vec<SegmentIndexes>,
    pub checkpoint: (Arc<MonotonicFile>, i64),
    pub dir: PathBuf,
    pub swaps: usize,
}

impl Installed {
    /// Blocking.
    pub fn finish(self) -> io::Result<()> {
        for indexes in &self.indexes {
            indexes.write()?;
        }
        sync_dir(&self.dir)?;
        for path in &self.removed {
            remove_if_present(path)?;
        }
        let (checkpoint, offset) = self.checkpoint;
        checkpoint.store(offset)
    }
}

fn read_i64(path: &Path) -> io::Result<Option<i64>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `path`; one already gone is fine.
fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Who an append comes from: a producer, whose batch is checked and
/// stamped, or a replay of a batch accepted before, taken as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Client,
    Replay,
}

impl PartitionLog {
    /// A new log in `dir` (which holds none) whose first offset is
    /// `start`: a partition rebuilt from a WAL whose beginning was deleted.
    pub fn create_at(dir: &Path, start: i64) -> io::Result<(PartitionLog, RecoveryReport)> {
        fs::create_dir_all(dir)?;
        MonotonicFile::new(dir.join(LOG_START_OFFSET), 0).store(start)?;
        PartitionLog::open(dir)
    }

    /// Opens (or creates) the log in `dir`, recovering as needed.
    pub fn open(dir: &Path) -> io::Result<(PartitionLog, RecoveryReport)> {
        fs::create_dir_all(dir)?;
        let (swaps, discarded) = super::cleaner::finish_swaps(dir)?;
        if swaps + discarded > 0 {
            warn!(dir = %dir.display(), swaps_finished = swaps, rewrites_discarded = discarded, "a cleaning was interrupted by a stop");
        }
        let mut bases: Vec<i64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();

        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == SPARE_SEGMENT) {
                fs::remove_file(path)?;
            }
        }
        let clean_end = read_i64(&dir.join(CLEAN_SHUTDOWN))?;
        if clean_end.is_some() {
            // Gone before anything new is written, or a crash later would
            // make us trust a stale end offset.
            fs::remove_file(dir.join(CLEAN_SHUTDOWN))?;
            sync_dir(dir)?;
        }
        let recovery_point = read_i64(&dir.join(RECOVERY_POINT))?.unwrap_or(0);
        let mut report = RecoveryReport {
            clean: clean_end.is_some(),
            ..Default::default()
        };
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let known_end = next_base.or(clean_end);
            let trusted = clean_end.is_some() || next_base.is_some_and(|n| n <= recovery_point);
            let size_before = fs::metadata(dir.join(super::segment::file_name(base, "log")))?.len();
            let (segment, end) = Segment::open(dir, base, trusted, known_end)?;
            if !trusted {
                report.rescanned_segments += 1;
            }
            segments.push(segment);
            if let Some(problem) = end.problem {
                let cut_later: u64 = bases[i + 1..]
                    .iter()
                    .map(|b| {
                        fs::metadata(dir.join(super::segment::file_name(*b, "log"))).map_or(0, |m| m.len())
                    })
                    .sum();
                for later in &bases[i + 1..] {
                    for ext in ["log", "index", "timeindex"] {
                        let _ = fs::remove_file(dir.join(super::segment::file_name(*later, ext)));
                    }
                }
                let end_offset = segments.last().map_or(base, Segment::next_offset);
                let cut = size_before.saturating_sub(end.valid_until) + cut_later;
                report.truncated = Some((end_offset, cut, problem));
                break;
            }
        }
        // A segment rolled but not yet sealed when the broker died has its
        // indexes only as rebuilt above: written now, as its seal would
        // have, since it takes no more batches (tiering uploads them).
        if let Some((_, closed)) = segments.split_last() {
            for segment in closed {
                let [_, index, time_index] = segment.file_paths();
                if !index.exists() || !time_index.exists() {
                    segment.write_indexes()?;
                }
            }
        }
        let stored_start = read_i64(&dir.join(LOG_START_OFFSET))?;
        if segments.is_empty() {
            segments.push(Segment::create(dir, stored_start.unwrap_or(0))?);
        }
        report.segments = segments.len();
        let first_base = segments[0].base_offset();
        let log_start_offset = stored_start.unwrap_or(first_base).max(first_base);
        let log_end = segments.last().map_or(first_base, Segment::next_offset);
        let epochs = LeaderEpochs::load(dir, log_start_offset, log_end)?;
        let leader_epoch = epochs.latest().unwrap_or(0);
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            segments,
            log_start_offset,
            log_start_file: MonotonicFile::new(dir.join(LOG_START_OFFSET), stored_start.unwrap_or(0)),
            recovery: MonotonicFile::new(dir.join(RECOVERY_POINT), recovery_point),
            producers: ProducerStates::default(),
            spare: None,
            cleaner_checkpoint: MonotonicFile::new(
                dir.join(CLEANER_CHECKPOINT),
                read_i64(&dir.join(CLEANER_CHECKPOINT))?.unwrap_or(0),
            ),
            tombstone_expiry: None,
            snapshot_written: Arc::new(std::sync::Mutex::new(i64::MIN)),
            epochs,
            leader_epoch,
        };
        log.load_producer_state()?;
        Ok((log, report))
    }

    /// Loads the producer snapshot and replays batches written after it;
    /// without a usable snapshot, replays the whole log. A data directory
    /// from before the binary snapshot still has `producer-state.json`: it
    /// is read when no binary snapshot exists. Producers idle for longer
    /// than the expiration are dropped, as Kafka drops them at load.
    fn load_producer_state(&mut self) -> io::Result<()> {
        let end = self.log_end_offset();
        let snapshot = match fs::read(self.dir.join(PRODUCER_STATE)) {
            Ok(bytes) => match decode_snapshot(&bytes) {
                Ok(snapshot) => Some(snapshot),
                Err(e) => {
                    warn!(dir = %self.dir.display(), "{e}; rebuilding producer state from the whole log");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::read(self.dir.join(LEGACY_PRODUCER_STATE))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<ProducerSnapshot>(&bytes).ok())
                .map(|s| (s.offset, s.state)),
            Err(e) => {
                warn!(dir = %self.dir.display(), "producer snapshot unreadable ({e}); rebuilding producer state from the whole log");
                None
            }
        };
        let from = match snapshot.filter(|(offset, _)| *offset <= end) {
            Some((offset, state)) => {
                self.producers = state;
                offset
            }
            None => i64::MIN,
        };
        let producers = &mut self.producers;
        for segment in &self.segments {
            if segment.next_offset() <= from {
                continue;
            }
            let file = segment.file().clone();
            let mut unreadable = None;
            segment.for_each_batch(|position, header| {
                if header.base_offset < from {
                    return;
                }
                if !header.is_control() {
                    producers.record(header);
                    return;
                }
                // A marker's type is in its one record: read that batch.
                let mut bytes = vec![0u8; header.size];
                match std::os::unix::fs::FileExt::read_exact_at(&*file, &mut bytes, position) {
                    Ok(()) => {
                        if let Some(marker) = control::marker_of(&bytes, header) {
                            producers.record_marker(header, marker, now_ms());
                        }
                    }
                    Err(e) => unreadable = Some(e),
                }
            })?;
            if let Some(e) = unreadable {
                return Err(e);
            }
        }
        self.producers.expire(now_ms(), PRODUCER_ID_EXPIRATION_MS);
        Ok(())
    }

    /// Writes the producer snapshot (binary, expired producers left out)
    /// and then drops a JSON one left by an older version. That removal is
    /// best effort: while the binary snapshot exists the JSON is never read.
    fn write_producer_snapshot(&self) -> io::Result<()> {
        self.producer_snapshot().write(true)
    }

    fn active(&self) -> &Segment {
        // `open` guarantees at least one segment and nothing removes the last.
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Segments rolled and sealed (indexes written, data synced: the
    /// recovery point is past them), oldest first: what tiering uploads.
    pub fn closed_segments(&self) -> Vec<ClosedSegment> {
        let sealed_to = self.recovery.value();
        self.segments[..self.segments.len() - 1]
            .iter()
            .filter(|s| s.next_offset() <= sealed_to && !s.is_empty())
            .map(|s| ClosedSegment {
                base_offset: s.base_offset(),
                next_offset: s.next_offset(),
                size: s.size(),
                max_timestamp: s.max_timestamp(),
                files: s.file_paths(),
                aborted: self
                    .producers
                    .aborted_with_marker_in(s.base_offset(), s.next_offset()),
            })
            .collect()
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// Everything reserved so far, as if written: what a log whose writes
    /// are done inline (at open, in tests) has on disk.
    pub fn written_end(&self) -> Written {
        let active = self.active();
        Written {
            offset: active.next_offset(),
            segment_base: active.base_offset(),
            position: active.size(),
        }
    }

    #[cfg(test)]
    pub fn written_end_path(&self) -> &Path {
        self.active().log_path()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends one validated batch, writing it here and now (tests and
    /// tools; the broker uses [`PartitionLog::reserve`]).
    pub fn append(
        &mut self,
        batch: &[u8],
        header: BatchHeader,
        config: &LogConfig,
    ) -> Result<AppendOutcome, AppendError> {
        let outcome = self.reserve(&Bytes::copy_from_slice(batch), header, config)?;
        Self::write_now(outcome)
    }

    /// Appends, here and now, a batch this partition accepted once
    /// before: a new leader replaying its WAL. As Kafka's followers
    /// append: at the batch's own offsets (a compacted log has gaps), no
    /// sequence check (the producer's earlier batches may lie below where
    /// the replay starts) and the batch's timestamps as they were stored;
    /// its producer state is recorded all the same.
    pub fn append_replayed(
        &mut self,
        batch: &[u8],
        header: BatchHeader,
        config: &LogConfig,
    ) -> Result<AppendOutcome, AppendError> {
        let outcome = self.reserve_from(&Bytes::copy_from_slice(batch), header, config, Origin::Replay)?;
        Self::write_now(outcome)
    }

    fn write_now(mut outcome: AppendOutcome) -> Result<AppendOutcome, AppendError> {
        if let Some(naming) = outcome.rolled.as_mut().and_then(|s| s.naming.take()) {
            naming.finish().map_err(AppendError::Io)?;
        }
        if let Some(write) = outcome.write.take() {
            write.write().map_err(AppendError::Io)?;
        }
        if let Some(sealed) = outcome.rolled.take() {
            sealed.finish().map_err(AppendError::Io)?;
        }
        Ok(outcome)
    }

    /// Appends one validated batch without writing it: sequence check,
    /// offset assignment and the file position are decided together, with
    /// nothing in between; the caller writes [`AppendOutcome::write`] (in
    /// reservation order) and finishes any rolled segment after it.
    pub fn reserve(
        &mut self,
        batch: &Bytes,
        header: BatchHeader,
        config: &LogConfig,
    ) -> Result<AppendOutcome, AppendError> {
        self.reserve_from(batch, header, config, Origin::Client)
    }

    fn reserve_from(
        &mut self,
        batch: &Bytes,
        mut header: BatchHeader,
        config: &LogConfig,
        origin: Origin,
    ) -> Result<AppendOutcome, AppendError> {
        let check = match origin {
            Origin::Client => self.producers.check(&header).map_err(AppendError::Producer)?,
            Origin::Replay => SequenceCheck::Append,
        };
        match check {
            SequenceCheck::Duplicate { base_offset } => {
                return Ok(AppendOutcome {
                    base_offset,
                    log_append_time: -1,
                    duplicate: true,
                    rolled: None,
                    write: None,
                })
            }
            SequenceCheck::Append => {}
        }
        let now = now_ms();
        let rolled = if self.should_roll(batch.len() as u64, config) {
            Some(self.roll().map_err(AppendError::Io)?)
        } else {
            None
        };
        let base_offset = match origin {
            Origin::Client => self.log_end_offset(),
            Origin::Replay if header.base_offset >= self.log_end_offset() => header.base_offset,
            Origin::Replay => {
                return Err(AppendError::Io(io::Error::other(format!(
                    "a replayed batch at {} is below the log end {}",
                    header.base_offset,
                    self.log_end_offset()
                ))))
            }
        };
        header.base_offset = base_offset;
        let epoch = match origin {
            Origin::Client => self.leader_epoch,
            Origin::Replay => batch::leader_epoch_of(batch),
        };
        self.epochs.observe(epoch, base_offset);
        let (parts, log_append_time) = if config.log_append_time && origin == Origin::Client {
            let mut copy = batch.to_vec();
            batch::stamp_log_append_time(&mut copy, now);
            batch::assign_offset(&mut copy, base_offset, epoch);
            header.max_timestamp = now;
            ([Bytes::from(copy), Bytes::new()], now)
        } else {
            let mut prefix = [0u8; 16];
            prefix.copy_from_slice(&batch[..16]);
            batch::assign_offset(&mut prefix, base_offset, epoch);
            ([Bytes::copy_from_slice(&prefix), batch.slice(16..)], -1)
        };
        let (file, position) = self.active_mut().reserve(&header);
        match control::marker_of(batch, &header) {
            Some(marker) => self.producers.record_marker(&header, marker, now),
            None => self.producers.record(&header),
        }
        Ok(AppendOutcome {
            base_offset,
            log_append_time,
            duplicate: false,
            rolled,
            write: Some(PendingWrite {
                file,
                path: self.active().log_path().clone(),
                position,
                base_offset,
                parts,
                end: self.written_end(),
            }),
        })
    }

    fn should_roll(&self, incoming: u64, config: &LogConfig) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let too_big = active.size() + incoming > config.segment_bytes;
        let too_old = active
            .created()
            .elapsed()
            .is_ok_and(|age| age >= Duration::from_millis(config.segment_ms));
        too_big || too_old
    }

    /// Blocking: the log ends at `offset` from now on, the offsets up to
    /// it holding nothing: a replayed fold of a compacted log whose last
    /// records the cleaner removed.
    pub fn skip_to(&mut self, offset: i64) -> io::Result<()> {
        if offset <= self.log_end_offset() {
            return Ok(());
        }
        if self.segments.len() == 1 && self.active().is_empty() {
            let empty = self.active().file_paths();
            self.segments[0] = Segment::create(&self.dir, offset)?;
            for path in empty {
                remove_if_present(&path)?;
            }
            self.raise_log_start(offset);
            return self.log_start_file.store(offset);
        }
        let mut sealed = self.roll_at(offset)?;
        if let Some(naming) = sealed.naming.take() {
            naming.finish()?;
        }
        sealed.finish()
    }

    /// Starts a new segment at the log end. The old segment's indexes,
    /// fsync and the recovery point past it are left to the caller, as
    /// [`Sealed`], to do off the shard thread once its writes are done.
    fn roll(&mut self) -> io::Result<Sealed> {
        self.roll_at(self.log_end_offset())
    }

    fn roll_at(&mut self, base: i64) -> io::Result<Sealed> {
        let old = self.active();
        let sealed = Sealed {
            naming: None,
            file: old.file().clone(),
            len: old.size(),
            indexes: old.indexes(),
            snapshot: self.producer_snapshot(),
            recovery_point: self.log_end_offset(),
            recovery: self.recovery.clone(),
        };
        let mut sealed = sealed;
        match self.spare.take() {
            Some(spare) => {
                let segment = Segment::from_spare(&self.dir, base, spare.file);
                sealed.naming = Some(Naming {
                    from: spare.path,
                    to: segment.log_path().to_path_buf(),
                });
                self.segments.push(segment);
            }
            None => self.segments.push(Segment::create(&self.dir, base)?),
        }
        Ok(sealed)
    }

    /// Where a spare file for the next roll should be made, if the log has
    /// none.
    pub fn wants_spare(&self) -> Option<PathBuf> {
        self.spare.is_none().then(|| self.dir.clone())
    }

    pub fn give_spare(&mut self, spare: SpareSegment) {
        self.spare = Some(spare);
    }

    /// The producer state as of the log end, to write.
    fn producer_snapshot(&self) -> Snapshot {
        Snapshot {
            path: self.dir.join(PRODUCER_STATE),
            bytes: self.producers.snapshot_bytes_unexpired(
                self.log_end_offset(),
                now_ms(),
                PRODUCER_ID_EXPIRATION_MS,
            ),
            offset: self.log_end_offset(),
            written: self.snapshot_written.clone(),
        }
    }

    /// Forgets producers idle past `producer.id.expiration.ms` (run from
    /// the retention tick, so the map stays bounded while running).
    pub fn expire_producers(&mut self) {
        self.producers.expire(now_ms(), PRODUCER_ID_EXPIRATION_MS);
    }

    /// Forgets every batch reserved past `written` (their writes failed):
    /// offsets, indexes and producer state go back to what is on disk, so
    /// the next append takes the first unwritten offset again.
    pub fn forget_unwritten(&mut self, written: Written) -> Unwritten {
        let mut removed = Vec::new();
        while self.segments.len() > 1 && self.active().base_offset() > written.segment_base {
            removed.push(self.active().file_paths());
            self.segments.pop();
        }
        let active = self.active_mut();
        active.cut_to(written.position, written.offset);
        let file = active.file().clone();
        self.producers.truncate_from(written.offset);
        self.epochs.truncate_to(written.offset);
        Unwritten {
            file,
            len: written.position,
            removed,
        }
    }

    /// Plans a read of whole batches from `offset`, seeing only what
    /// `written` covers. `Err` outside the log (below its start or past
    /// its end); empty between the written end and the log end.
    pub fn plan_read(&self, offset: i64, written: Written) -> Result<ReadPlan, ReadError> {
        if offset < self.log_start_offset || offset > self.log_end_offset() {
            return Err(ReadError::OutOfRange);
        }
        let first = self
            .segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        // A plan never needs more than the segment holding the offset and,
        // should that one end early, the next.
        // Compaction can leave a segment ending early or empty: the next
        // one with batches is the one after.
        let next = self.segments[first + 1..].iter().find(|s| !s.is_empty());
        let segments = std::iter::once(&self.segments[first])
            .chain(next)
            .filter_map(|s| Some((self.readable(s, written)?, s.index_floor(offset))))
            .collect();
        Ok(ReadPlan { offset, segments })
    }

    /// A reader of what `written` covers of `segment`, if any.
    fn readable(&self, segment: &Segment, written: Written) -> Option<SegmentReader> {
        use std::cmp::Ordering;
        match segment.base_offset().cmp(&written.segment_base) {
            Ordering::Less => Some(segment.reader(segment.size())),
            Ordering::Equal => Some(segment.reader(written.position)),
            Ordering::Greater => None,
        }
    }

    /// Plans ListOffsets by time: the first record whose timestamp is >=
    /// `timestamp`.
    pub fn plan_offset_for_timestamp(&self, timestamp: i64, written: Written) -> TimestampPlan {
        let segments = self
            .segments
            .iter()
            .filter_map(|s| Some((self.readable(s, written)?, s.timestamp_start(timestamp)?)))
            .collect();
        TimestampPlan::AtOrAfter {
            timestamp,
            log_start: self.log_start_offset,
            segments,
        }
    }

    /// Plans ListOffsets MAX_TIMESTAMP: the earliest record with the
    /// largest timestamp (as Kafka answers since 3.8).
    pub fn plan_max_timestamp(&self, written: Written) -> TimestampPlan {
        // The first segment holding the max, as Kafka's maxBy picks it.
        let mut best: Option<&Segment> = None;
        for segment in &self.segments {
            if segment.max_timestamp() >= 0
                && best.is_none_or(|b| segment.max_timestamp() > b.max_timestamp())
            {
                best = Some(segment);
            }
        }
        let planned = best.and_then(|s| Some((self.readable(s, written)?, s.max_timestamp_start()?)));
        match planned {
            Some((reader, (from, max, fallback))) => TimestampPlan::Max {
                reader,
                from,
                max,
                fallback,
            },
            None => TimestampPlan::Nothing,
        }
    }

    /// Whole batches from `offset`, up to `max_bytes` (at least one batch if
    /// `at_least_one`). Empty at the log end; `Err` outside the log.
    /// Blocking (tests, tools).
    pub fn read(&self, offset: i64, max_bytes: usize, at_least_one: bool) -> Result<Vec<u8>, ReadError> {
        self.plan_read(offset, self.written_end())?
            .execute(max_bytes, at_least_one)
            .map(|(bytes, _)| bytes)
            .map_err(ReadError::Io)
    }

    /// The first record whose timestamp is >= `timestamp` (blocking).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<(i64, i64)>> {
        self.plan_offset_for_timestamp(timestamp, self.written_end())
            .execute()
    }

    /// The earliest record with the largest timestamp (blocking).
    pub fn max_timestamp(&self) -> io::Result<Option<(i64, i64)>> {
        self.plan_max_timestamp(self.written_end()).execute()
    }

    /// Takes whole segments past `retention.ms` or beyond `retention.bytes`
    /// out of the log, oldest first, but none that reaches `keep_from`
    /// (data not yet safe to delete: unwritten, or later not yet in object
    /// storage). The files go when the caller finishes the result.
    pub fn trim_for_retention(&mut self, config: &LogConfig, keep_from: i64) -> io::Result<Trimmed> {
        if !config.delete {
            // A compacted-only topic keeps every segment; the cleaner
            // bounds it.
            return Ok(Trimmed::default());
        }
        let now = now_ms();
        let expired = |s: &Segment| {
            config.retention_ms.is_some_and(|ms| {
                !s.is_empty() && s.max_timestamp() >= 0 && s.max_timestamp() < now - ms as i64
            })
        };
        let mut trimmed = Trimmed::default();
        // An expired active segment is rolled so it can go too, once
        // written and sealed.
        if expired(self.active()) {
            trimmed.rolled = Some(self.roll()?);
        }
        while self.segments.len() > 1 {
            let total = self.size_bytes();
            let first = &self.segments[0];
            let over_size = config
                .retention_bytes
                .is_some_and(|max| total - first.size() >= max);
            if !(expired(first) || over_size) || first.next_offset() > keep_from {
                break;
            }
            trimmed.removed.push(first.file_paths());
            self.segments.remove(0);
            trimmed.deleted_segments += 1;
        }
        if trimmed.deleted_segments > 0 {
            trimmed.log_start = self.raise_log_start(self.segments[0].base_offset());
        }
        Ok(trimmed)
    }

    /// Retention, done here and now (tests, tools): returns how many
    /// segments went.
    pub fn apply_retention(&mut self, config: &LogConfig) -> io::Result<usize> {
        let mut trimmed = self.trim_for_retention(config, i64::MAX)?;
        if let Some(mut sealed) = trimmed.rolled.take() {
            if let Some(naming) = sealed.naming.take() {
                naming.finish()?;
            }
            sealed.finish()?;
        }
        let deleted = trimmed.deleted_segments;
        trimmed.finish()?;
        Ok(deleted)
    }

    /// DeleteRecords: the log starts at `offset` from now on (-1 = the
    /// high watermark `hw`). Whole segments below it are taken out; the
    /// caller finishes the result (the new start stored, files removed).
    pub fn trim_to(&mut self, offset: i64, hw: i64) -> Result<Trimmed, ReadError> {
        let target = if offset == -1 { hw } else { offset };
        if target < 0 || target > hw {
            return Err(ReadError::OutOfRange);
        }
        let mut trimmed = Trimmed {
            log_start: self.raise_log_start(target),
            ..Trimmed::default()
        };
        while self.segments.len() > 1 && self.segments[0].next_offset() <= self.log_start_offset {
            trimmed.removed.push(self.segments[0].file_paths());
            self.segments.remove(0);
            trimmed.deleted_segments += 1;
        }
        Ok(trimmed)
    }

    /// DeleteRecords done here and now (tests, tools).
    pub fn delete_records(&mut self, offset: i64) -> Result<i64, ReadError> {
        let hw = self.log_end_offset();
        self.trim_to(offset, hw)?.finish().map_err(ReadError::Io)?;
        Ok(self.log_start_offset)
    }

    /// Blocking: this broker leads the partition at `epoch` from now on;
    /// the batches clients append are stamped with it, and its start is
    /// stored at once (the log end now).
    pub fn begin_leader_epoch(&mut self, epoch: i32) -> io::Result<()> {
        let end = self.log_end_offset();
        self.epochs.begin(epoch, end)?;
        self.leader_epoch = epoch.max(self.leader_epoch);
        Ok(())
    }

    /// OffsetForLeaderEpoch: (epoch, its end offset); see
    /// [`LeaderEpochs::end_offset_for`].
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    fn raise_log_start(&mut self, offset: i64) -> Option<(Arc<MonotonicFile>, i64)> {
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            // Aborted transactions wholly before the start are gone with
            // their batches (retention, DeleteRecords).
            self.producers.forget_aborted_before(offset);
            return Some((self.log_start_file.clone(), offset));
        }
        None
    }

    /// Graceful close (blocking; every write done): indexes, data and
    /// producer state to disk, then the clean-shutdown marker so the next
    /// open re-reads nothing.
    pub fn close(mut self) -> io::Result<()> {
        self.epochs.write()?;
        self.active().write_indexes()?;
        // Cuts the zero padding of an O_DIRECT writer's last block.
        self.active().file().set_len(self.active().size())?;
        self.active().file().sync_data()?;
        self.write_producer_snapshot()?;
        if let Some(spare) = &self.spare {
            let _ = fs::remove_file(&spare.path);
        }
        write_file(
            &self.dir.join(CLEAN_SHUTDOWN),
            self.log_end_offset().to_string().as_bytes(),
        )?;
        sync_dir(&self.dir)
    }

    /// Removes the partition's directory and everything in it (blocking).
    pub fn delete(self) -> io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(dir)
    }

    /// See `ProducerStates::summaries`.
    pub fn producers(&self) -> Vec<super::producer_state::ProducerSummary> {
        self.producers.summaries()
    }

    /// See `ProducerStates::first_unstable_offset`.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers.first_unstable_offset()
    }

    /// The cleaning this compacted log is due, if any: the closed, sealed
    /// segments wholly below the stable offset and older than
    /// `min.compaction.lag.ms`, from the first (cleaned segments are
    /// cleaned again with the new keys) to the last.
    pub fn clean_candidate(
        &self,
        config: &LogConfig,
        now: i64,
        map_budget_bytes: usize,
        throttle: Arc<super::cleaner::Throttle>,
    ) -> Option<CleanCandidate> {
        let segments: Vec<super::cleaner::CleanSegment> = self
            .cleanable(config, now)
            .map(|(segment, end)| super::cleaner::CleanSegment {
                base: segment.base_offset(),
                end,
                size: segment.size(),
                reader: segment.reader(segment.size()),
            })
            .collect();
        let first = segments.first()?.base;
        let dirty_from = self.cleaner_checkpoint.value().max(first);
        let (total, dirty) = self.dirty_bytes(config, now);
        let oldest_dirty = self
            .segments
            .iter()
            .find(|s| s.base_offset() >= dirty_from && !s.is_empty())
            .map(|s| {
                s.created()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64)
            });
        let lagging =
            oldest_dirty.is_some_and(|created| now.saturating_sub(created) >= config.max_compaction_lag_ms);
        let tombstones_due = self.tombstone_expiry.is_some_and(|expiry| expiry <= now);
        if dirty == 0 && !tombstones_due {
            return None;
        }
        let dirty_ratio = if total == 0 {
            0.0
        } else {
            dirty as f64 / total as f64
        };
        Some(CleanCandidate {
            job: super::cleaner::CleanJob {
                dir: self.dir.clone(),
                segments,
                // With tombstones due and nothing dirty, everything is
                // cleaned again to drop them.
                dirty_from: if dirty == 0 { first } else { dirty_from },
                now_ms: now,
                delete_retention_ms: config.delete_retention_ms,
                aborted: self.producers.aborted_with_marker_in(i64::MIN, i64::MAX),
                segment_bytes: config.segment_bytes,
                map_budget_bytes,
                throttle,
            },
            dirty_ratio,
            cleanable_bytes: total,
            overdue: lagging || tombstones_due,
        })
    }

    /// The segments the cleaner may rewrite now, with where each ends (the
    /// next one's base): closed and sealed, wholly below the stable
    /// offset, none newer than `min.compaction.lag.ms`.
    fn cleanable(&self, config: &LogConfig, now: i64) -> impl Iterator<Item = (&Segment, i64)> {
        let sealed_to = self.recovery.value();
        let stable = self.first_unstable_offset().unwrap_or(i64::MAX);
        let lag_bound = now.saturating_sub(config.min_compaction_lag_ms);
        self.segments
            .windows(2)
            .map(|pair| (&pair[0], pair[1].base_offset()))
            .take_while(move |(segment, end)| {
                *end <= sealed_to && *end <= stable && segment.max_timestamp() <= lag_bound
            })
    }

    /// Compacted logs: (cleanable bytes, of which not yet cleaned).
    pub fn dirty_bytes(&self, config: &LogConfig, now: i64) -> (u64, u64) {
        let checkpoint = self.cleaner_checkpoint.value();
        self.cleanable(config, now)
            .fold((0, 0), |(total, dirty), (segment, _)| {
                let size = segment.size();
                let dirty_size = if segment.base_offset() >= checkpoint {
                    size
                } else {
                    0
                };
                (total + size, dirty + dirty_size)
            })
    }

    /// Puts cleaned segments in place of the ones they cover. On the
    /// shard, a bounded amount of file work per swap: the replaced files
    /// renamed aside, one directory sync (so the swap never lands before
    /// they are out of the way), and the swap's rename. A swap whose
    /// segments changed meanwhile (retention, DeleteRecords) is dropped.
    pub fn install_cleaned(&mut self, result: super::cleaner::CleanResult) -> io::Result<Installed> {
        let mut installed = Installed {
            removed: Vec::new(),
            indexes: Vec::new(),
            checkpoint: (self.cleaner_checkpoint.clone(), result.cleaned_to),
            dir: self.dir.clone(),
            swaps: 0,
        };
        if !result.removed_aborts.is_empty() {
            // Durable before any swap lands: a restart must not bring back
            // an aborted transaction whose marker is gone. (Its batches
            // went in an earlier cleaning, so forgetting it early, should
            // a swap below be dropped, changes no fetch.)
            self.producers.forget_aborted(&result.removed_aborts);
            self.write_producer_snapshot()?;
        }
        for swap in result.swaps {
            let covered: Vec<usize> = (0..self.segments.len() - 1)
                .filter(|&i| {
                    let base = self.segments[i].base_offset();
                    base >= swap.base && base < swap.end
                })
                .collect();
            let (Some(&first), Some(&last)) = (covered.first(), covered.last()) else {
                installed.removed.push(swap.path);
                continue;
            };
            let next_base = self.segments[last + 1].base_offset();
            if self.segments[first].base_offset() != swap.base || next_base != swap.end {
                installed.removed.push(swap.path);
                continue;
            }
            for i in &covered {
                let [log, index, time_index] = self.segments[*i].file_paths();
                let aside = log.with_extension(format!("log.{}", super::cleaner::DELETED));
                fs::rename(&log, &aside)?;
                // Gone before the swap takes the name: an old index beside
                // the new file would point into the wrong bytes.
                for path in [index, time_index] {
                    remove_if_present(&path)?;
                }
                installed.removed.push(aside);
            }
            sync_dir(&self.dir)?;
            fs::rename(
                &swap.path,
                self.dir.join(super::segment::file_name(swap.base, "log")),
            )?;
            installed.indexes.push(swap.segment.indexes());
            self.segments.splice(first..=last, [swap.segment]);
            installed.swaps += 1;
        }
        self.tombstone_expiry = result.tombstone_expiry;
        Ok(installed)
    }

    /// See `ProducerStates::aborted_between`.
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        self.producers.aborted_between(from, to)
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }
}

#[derive(Debug)]
pub enum ReadError {
    OutOfRange,
    Io(io::Error),
}
