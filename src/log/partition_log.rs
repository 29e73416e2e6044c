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
//! - `producer-state.snapshot`: idempotent-producer state as of an offset,
//!   written at roll and close; batches after it are replayed at open
//!   (`producer-state.json`, its older form, is still read).

use super::batch::{self, BatchHeader};
use super::compression::CompressionType;
use super::index::write_file;
use super::producer_state::{decode_snapshot, ProducerStates, SequenceCheck, PRODUCER_ID_EXPIRATION_MS};
use super::segment::Segment;
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::warn;

const CLEAN_SHUTDOWN: &str = ".clean-shutdown";
const RECOVERY_POINT: &str = "recovery-point";
const LOG_START_OFFSET: &str = "log-start-offset";
/// Binary producer snapshot (see `producer_state::decode_snapshot`).
pub(super) const PRODUCER_STATE: &str = "producer-state.snapshot";
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
    /// A segment that rolled during this append and must be fsynced; then
    /// call `set_recovery_point(recovery_point)`.
    pub rolled: Option<(Arc<File>, i64)>,
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

#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    segments: Vec<Segment>,
    log_start_offset: i64,
    recovery_point: i64,
    producers: ProducerStates,
}

fn read_i64(path: &Path) -> io::Result<Option<i64>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering as needed.
    pub fn open(dir: &Path) -> io::Result<(PartitionLog, RecoveryReport)> {
        fs::create_dir_all(dir)?;
        let mut bases: Vec<i64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();

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
        let stored_start = read_i64(&dir.join(LOG_START_OFFSET))?;
        if segments.is_empty() {
            segments.push(Segment::create(dir, stored_start.unwrap_or(0))?);
        }
        report.segments = segments.len();
        let first_base = segments[0].base_offset();
        let log_start_offset = stored_start.unwrap_or(first_base).max(first_base);
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            segments,
            log_start_offset,
            recovery_point,
            producers: ProducerStates::default(),
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
            segment.for_each_batch(|_, header| {
                if header.base_offset >= from {
                    producers.record(header);
                }
            })?;
        }
        self.producers.expire(now_ms(), PRODUCER_ID_EXPIRATION_MS);
        Ok(())
    }

    /// Writes the producer snapshot (binary, expired producers left out)
    /// and then drops a JSON one left by an older version. That removal is
    /// best effort: while the binary snapshot exists the JSON is never read.
    fn write_producer_snapshot(&self) -> io::Result<()> {
        let bytes = self.producers.snapshot_bytes_unexpired(
            self.log_end_offset(),
            now_ms(),
            PRODUCER_ID_EXPIRATION_MS,
        );
        write_file(&self.dir.join(PRODUCER_STATE), &bytes)?;
        let _ = fs::remove_file(self.dir.join(LEGACY_PRODUCER_STATE));
        Ok(())
    }

    fn active(&self) -> &Segment {
        // `open` guarantees at least one segment and nothing removes the last.
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// With a single replica, everything appended is replicated: the high
    /// watermark is the log end offset.
    pub fn high_watermark(&self) -> i64 {
        self.log_end_offset()
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

    /// The file that holds the newest data (to fsync for acks=all).
    pub fn active_file(&self) -> Arc<File> {
        self.active().file().clone()
    }

    /// Appends one validated batch: sequence check, offset assignment and
    /// write happen together, with nothing in between.
    pub fn append(
        &mut self,
        batch: &[u8],
        mut header: BatchHeader,
        config: &LogConfig,
    ) -> Result<AppendOutcome, AppendError> {
        match self.producers.check(&header).map_err(AppendError::Producer)? {
            SequenceCheck::Duplicate { base_offset } => {
                return Ok(AppendOutcome {
                    base_offset,
                    log_append_time: -1,
                    duplicate: true,
                    rolled: None,
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
        let base_offset = self.log_end_offset();
        header.base_offset = base_offset;
        let log_append_time = if config.log_append_time {
            let mut copy = batch.to_vec();
            batch::stamp_log_append_time(&mut copy, now);
            batch::assign_offset(&mut copy, base_offset, 0);
            header.max_timestamp = now;
            self.active_mut()
                .append(&copy, &[], &header)
                .map_err(AppendError::Io)?;
            now
        } else {
            let mut prefix = [0u8; 16];
            prefix.copy_from_slice(&batch[..16]);
            batch::assign_offset(&mut prefix, base_offset, 0);
            self.active_mut()
                .append(&prefix, &batch[16..], &header)
                .map_err(AppendError::Io)?;
            -1
        };
        self.producers.record(&header);
        Ok(AppendOutcome {
            base_offset,
            log_append_time,
            duplicate: false,
            rolled,
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

    /// Starts a new segment at the log end. Returns the old segment's file
    /// (to fsync off the hot path) and the recovery point that becomes
    /// valid once it is synced.
    fn roll(&mut self) -> io::Result<(Arc<File>, i64)> {
        self.active().write_indexes()?;
        let old = self.active_file();
        let base = self.log_end_offset();
        self.segments.push(Segment::create(&self.dir, base)?);
        self.write_producer_snapshot()?;
        Ok((old, base))
    }

    /// Records that everything below `offset` is on disk.
    pub fn set_recovery_point(&mut self, offset: i64) -> io::Result<()> {
        if offset > self.recovery_point {
            self.recovery_point = offset;
            write_file(&self.dir.join(RECOVERY_POINT), offset.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// Whole batches from `offset`, up to `max_bytes` (at least one batch if
    /// `at_least_one`). Empty at the log end; `Err` outside the log.
    pub fn read(&self, offset: i64, max_bytes: usize, at_least_one: bool) -> Result<Vec<u8>, ReadError> {
        let end = self.log_end_offset();
        if offset < self.log_start_offset || offset > end {
            return Err(ReadError::OutOfRange);
        }
        let start = self
            .segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        for segment in &self.segments[start..] {
            if let Some(position) = segment.find_position(offset).map_err(ReadError::Io)? {
                return segment
                    .read_batches(position, max_bytes, at_least_one)
                    .map_err(ReadError::Io);
            }
        }
        Ok(Vec::new())
    }

    /// The first record whose timestamp is >= `timestamp`: (its offset,
    /// its timestamp) (ListOffsets by time).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<(i64, i64)>> {
        for segment in &self.segments {
            if let Some((offset, ts)) = segment.find_timestamp(timestamp)? {
                return Ok(Some((offset.max(self.log_start_offset), ts)));
            }
        }
        Ok(None)
    }

    /// The earliest record with the largest timestamp: (its offset, the
    /// timestamp) (ListOffsets MAX_TIMESTAMP, as Kafka answers since 3.8).
    pub fn max_timestamp(&self) -> io::Result<Option<(i64, i64)>> {
        // The first segment holding the max, as Kafka's maxBy picks it.
        let mut best: Option<&Segment> = None;
        for segment in &self.segments {
            if segment.max_timestamp() >= 0
                && best.is_none_or(|b| segment.max_timestamp() > b.max_timestamp())
            {
                best = Some(segment);
            }
        }
        match best {
            Some(segment) => segment.find_max_timestamp(),
            None => Ok(None),
        }
    }

    /// Deletes whole segments past `retention.ms` or beyond
    /// `retention.bytes`, oldest first; returns how many went.
    pub fn apply_retention(&mut self, config: &LogConfig) -> io::Result<usize> {
        let now = now_ms();
        let expired = |s: &Segment| {
            config.retention_ms.is_some_and(|ms| {
                !s.is_empty() && s.max_timestamp() >= 0 && s.max_timestamp() < now - ms as i64
            })
        };
        // An expired active segment is rolled so it can go too.
        if expired(self.active()) {
            let (file, recovery_point) = self.roll()?;
            file.sync_data()?;
            self.set_recovery_point(recovery_point)?;
        }
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let total = self.size_bytes();
            let first = &self.segments[0];
            let over_size = config
                .retention_bytes
                .is_some_and(|max| total - first.size() >= max);
            if !(expired(first) || over_size) {
                break;
            }
            first.delete_files()?;
            self.segments.remove(0);
            deleted += 1;
        }
        if deleted > 0 {
            self.raise_log_start(self.segments[0].base_offset())?;
        }
        Ok(deleted)
    }

    /// DeleteRecords: the log starts at `offset` from now on (-1 = the high
    /// watermark). Returns the new log start offset.
    pub fn delete_records(&mut self, offset: i64) -> Result<i64, ReadError> {
        let target = if offset == -1 {
            self.high_watermark()
        } else {
            offset
        };
        if target < 0 || target > self.high_watermark() {
            return Err(ReadError::OutOfRange);
        }
        self.raise_log_start(target).map_err(ReadError::Io)?;
        while self.segments.len() > 1 && self.segments[0].next_offset() <= self.log_start_offset {
            self.segments[0].delete_files().map_err(ReadError::Io)?;
            self.segments.remove(0);
        }
        Ok(self.log_start_offset)
    }

    fn raise_log_start(&mut self, offset: i64) -> io::Result<()> {
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            write_file(&self.dir.join(LOG_START_OFFSET), offset.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// Graceful close: indexes, data and producer state to disk, then the
    /// clean-shutdown marker so the next open re-reads nothing.
    pub fn close(self) -> io::Result<()> {
        self.active().write_indexes()?;
        self.active().file().sync_data()?;
        self.write_producer_snapshot()?;
        write_file(
            &self.dir.join(CLEAN_SHUTDOWN),
            self.log_end_offset().to_string().as_bytes(),
        )?;
        sync_dir(&self.dir)
    }

    /// Removes the partition's directory and everything in it.
    pub fn delete(self) -> io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(dir)
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
