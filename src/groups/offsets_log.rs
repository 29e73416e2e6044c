//! Committed offsets, durable: each offsets partition is an ordinary
//! compacted partition (`STORAGE_PATH/__consumer_offsets/<n>/`, n = the
//! group's hash % 50, as Kafka spreads groups over `__consumer_offsets`),
//! its records in Kafka's own `__consumer_offsets` form: key
//! OffsetCommitKey v1 (group, topic, partition), value OffsetCommitValue
//! v3 (offset, leader epoch, metadata, commit time), a deleted offset a
//! tombstone. A commit is fsynced (group commit) before it is acknowledged;
//! the shard's log cleaner keeps each partition bounded as it does a
//! compacted topic's.
//!
//! Earlier versions kept a private file per partition
//! (`__consumer_offsets/<n>.log`, `[length][crc32c][JSON]` records); it is
//! moved into the partition at open and then removed.

use crate::log::keyed_log::KeyedLog;
use crate::log::{LogConfig, Sealed};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_time_ms: i64,
}

pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

pub struct OffsetsLog {
    log: KeyedLog,
    pub groups: HashMap<String, GroupOffsets>,
}

/// OffsetCommitKey's version (0 and 1 are offset keys; 2 is a group's
/// metadata, which this broker does not keep in the log).
const KEY_VERSION: i16 = 1;
/// OffsetCommitValue v3: offset, leader epoch, metadata, commit time.
const VALUE_VERSION: i16 = 3;

/// The longest string Kafka's schemas here hold (an int16 length).
pub const MAX_STRING_BYTES: usize = i16::MAX as usize;

fn put_string(out: &mut Vec<u8>, s: Option<&str>) -> io::Result<()> {
    match s {
        Some(s) => {
            let len = i16::try_from(s.len()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a string of {} bytes", s.len()),
                )
            })?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
    Ok(())
}

fn encode_key(group: &str, topic: &str, partition: i32) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(10 + group.len() + topic.len());
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_string(&mut out, Some(group))?;
    put_string(&mut out, Some(topic))?;
    out.extend_from_slice(&partition.to_be_bytes());
    Ok(out)
}

fn encode_value(value: &Committed) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(26 + value.metadata.as_ref().map_or(0, String::len));
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&value.offset.to_be_bytes());
    out.extend_from_slice(&value.leader_epoch.to_be_bytes());
    put_string(&mut out, value.metadata.as_deref())?;
    out.extend_from_slice(&value.commit_time_ms.to_be_bytes());
    Ok(out)
}

/// Reads Kafka's big-endian fields off the front of a record.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "offsets record: truncated",
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i16(&mut self) -> io::Result<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> io::Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> io::Result<i64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(b))
    }
    fn string(&mut self) -> io::Result<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "offsets record: a string is not UTF-8",
            )
        })
    }
}

/// (group, topic, partition), or `None` for a key this store does not
/// keep (group metadata).
fn decode_key(key: &[u8]) -> io::Result<Option<(String, String, i32)>> {
    let mut fields = Fields(key);
    if !matches!(fields.i16()?, 0 | 1) {
        return Ok(None);
    }
    let group = fields.string()?.unwrap_or_default();
    let topic = fields.string()?.unwrap_or_default();
    Ok(Some((group, topic, fields.i32()?)))
}

fn decode_value(value: &[u8]) -> io::Result<Committed> {
    let mut fields = Fields(value);
    let version = fields.i16()?;
    let offset = fields.i64()?;
    let leader_epoch = if version >= 3 { fields.i32()? } else { -1 };
    let metadata = fields.string()?;
    let commit_time_ms = fields.i64()?;
    Ok(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_time_ms,
    })
}

fn apply(
    groups: &mut HashMap<String, GroupOffsets>,
    group: &str,
    key: (String, i32),
    value: Option<Committed>,
) {
    match value {
        Some(value) => {
            groups.entry(group.to_string()).or_default().insert(key, value);
        }
        None => {
            if let Some(offsets) = groups.get_mut(group) {
                offsets.remove(&key);
                if offsets.is_empty() {
                    groups.remove(group);
                }
            }
        }
    }
}

/// How the offsets partitions are kept (Kafka's `__consumer_offsets`
/// configs: compacted, never deleted by time, tombstones kept a day).
pub fn offsets_log_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        compact: true,
        delete: false,
        retention_ms: None,
        ..LogConfig::default()
    }
}

impl OffsetsLog {
    /// Whether partition `partition` under `dir` holds anything (or an
    /// earlier version's file does).
    pub fn exists(dir: &Path, partition: u32) -> bool {
        dir.join(partition.to_string()).exists() || dir.join(format!("{partition}.log")).exists()
    }

    /// Blocking: opens partition `partition` under `dir`
    /// (`__consumer_offsets`), moving an earlier version's file into it.
    pub fn open(dir: &Path, partition: u32, config: LogConfig) -> io::Result<OffsetsLog> {
        let mut groups: HashMap<String, GroupOffsets> = HashMap::new();
        let log = KeyedLog::open(&dir.join(partition.to_string()), config, |key, value| {
            let Some((group, topic, partition)) = decode_key(key)? else {
                return Ok(());
            };
            let value = value.map(decode_value).transpose()?;
            apply(&mut groups, &group, (topic, partition), value);
            Ok(())
        })?;
        let mut log = OffsetsLog { log, groups };
        log.move_legacy_file(&dir.join(format!("{partition}.log")))?;
        Ok(log)
    }

    /// An earlier version's file: its live offsets appended (and synced)
    /// here, then the file removed. A crash before the removal moves the
    /// same offsets again at the next start, which changes nothing.
    fn move_legacy_file(&mut self, path: &Path) -> io::Result<()> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let legacy = read_legacy(&bytes);
        let mut moved = 0;
        for (group, offsets) in legacy {
            // The partition may already hold newer commits (a crash after
            // an earlier move): those stay.
            let changes: Vec<_> = offsets
                .into_iter()
                .filter(|(key, _)| !self.groups.get(&group).is_some_and(|g| g.contains_key(key)))
                .map(|(key, value)| (key, Some(value)))
                .collect();
            if changes.is_empty() {
                continue;
            }
            moved += changes.len();
            let (file, sealed) = self.append(&group, changes)?;
            file.sync_data()?;
            if let Some(sealed) = sealed {
                sealed.finish()?;
            }
        }
        fs::remove_file(path)?;
        if let Some(parent) = path.parent() {
            File::open(parent)?.sync_all()?;
        }
        info!(file = %path.display(), offsets = moved, "committed offsets moved into their compacted partition");
        Ok(())
    }

    /// Appends changes (`None` deletes) as one batch and applies them in
    /// memory; the caller fsyncs the returned file before acknowledging
    /// (and finishes a closed segment: see [`KeyedLog::append`]).
    pub fn append(
        &mut self,
        group: &str,
        changes: Vec<((String, i32), Option<Committed>)>,
    ) -> io::Result<(Arc<File>, Option<Sealed>)> {
        let encoded = changes
            .iter()
            .map(|((topic, partition), value)| {
                Ok((
                    encode_key(group, topic, *partition)?,
                    value.as_ref().map(encode_value).transpose()?,
                ))
            })
            .collect::<io::Result<Vec<(Vec<u8>, Option<Vec<u8>>)>>>()?;
        let records: Vec<(&[u8], Option<&[u8]>)> = encoded
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        let file = self.log.append(&records)?;
        for (key, value) in changes {
            apply(&mut self.groups, group, key, value);
        }
        Ok(file)
    }
}

impl OffsetsLog {
    /// See [`KeyedLog::take_last_batch`].
    pub fn take_last_batch(&mut self) -> Option<crate::log::keyed_log::StoredBatch> {
        self.log.take_last_batch()
    }

    /// See [`KeyedLog::stored_range`].
    pub fn stored_range(&self, from: i64, end: i64, limit: usize) -> io::Result<Option<(i64, Vec<u8>)>> {
        self.log.stored_range(from, end, limit)
    }

    /// The log's size on disk.
    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }
}

impl crate::partition::cleaning::InternalLog for OffsetsLog {
    fn keyed(&self) -> &KeyedLog {
        &self.log
    }
    fn keyed_mut(&mut self) -> &mut KeyedLog {
        &mut self.log
    }
}

/// The earlier private format's live offsets; a torn or corrupt tail ends
/// it, as it did then.
fn read_legacy(bytes: &[u8]) -> HashMap<String, GroupOffsets> {
    #[derive(Deserialize)]
    struct LegacyCommitted {
        offset: i64,
        leader_epoch: i32,
        metadata: Option<String>,
        commit_time_ms: i64,
    }
    #[derive(Deserialize)]
    struct LegacyRecord {
        group: String,
        topic: String,
        partition: i32,
        value: Option<LegacyCommitted>,
    }
    const HEADER: usize = 8;
    let mut groups = HashMap::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Ok(record) = serde_json::from_slice::<LegacyRecord>(payload) else {
            break;
        };
        let value = record.value.map(|v| Committed {
            offset: v.offset,
            leader_epoch: v.leader_epoch,
            metadata: v.metadata,
            commit_time_ms: v.commit_time_ms,
        });
        apply(
            &mut groups,
            &record.group,
            (record.topic, record.partition),
            value,
        );
        at += HEADER + len;
    }
    if at < bytes.len() {
        warn!(
            kept = at,
            cut = bytes.len() - at,
            "earlier offsets file: a torn or corrupt tail was left behind"
        );
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(offset: i64) -> Option<Committed> {
        Some(Committed {
            offset,
            leader_epoch: 4,
            metadata: Some(format!("m{offset}")),
            commit_time_ms: 1,
        })
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("chronik-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn last_value_wins_and_deletes_stick_across_a_reopen() {
        let dir = scratch("offsets");
        {
            let mut log = OffsetsLog::open(&dir, 7, offsets_log_config(1 << 20)).unwrap();
            log.append(
                "g",
                vec![(("t".into(), 0), committed(5)), (("t".into(), 1), committed(9))],
            )
            .unwrap();
            log.append("g", vec![(("t".into(), 0), committed(6))]).unwrap();
            log.append("g", vec![(("t".into(), 1), None)]).unwrap();
            log.append("h", vec![(("u".into(), 0), committed(1))]).unwrap();
            log.append("h", vec![(("u".into(), 0), None)]).unwrap();
        }
        let log = OffsetsLog::open(&dir, 7, offsets_log_config(1 << 20)).unwrap();
        let g = &log.groups["g"];
        assert_eq!(g.len(), 1);
        assert_eq!(g[&("t".to_string(), 0)], committed(6).unwrap());
        assert!(
            !log.groups.contains_key("h"),
            "a group with every offset deleted is gone"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_earlier_versions_file_is_moved_into_the_partition() {
        let dir = scratch("offsets-legacy");
        fs::create_dir_all(&dir).unwrap();
        let mut old = Vec::new();
        for (offset, value) in [(3, true), (4, true), (0, false)] {
            let payload = serde_json::json!({
                "group": "g", "topic": "t", "partition": if value { 0 } else { 1 },
                "value": value.then(|| serde_json::json!({
                    "offset": offset, "leader_epoch": -1, "metadata": null, "commit_time_ms": 7
                })),
            })
            .to_string();
            old.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            old.extend_from_slice(&crc32c::crc32c(payload.as_bytes()).to_be_bytes());
            old.extend_from_slice(payload.as_bytes());
        }
        old.extend_from_slice(b"torn");
        fs::write(dir.join("3.log"), &old).unwrap();
        for _ in 0..2 {
            let log = OffsetsLog::open(&dir, 3, offsets_log_config(1 << 20)).unwrap();
            assert_eq!(log.groups["g"].len(), 1);
            assert_eq!(log.groups["g"][&("t".to_string(), 0)].offset, 4);
            assert_eq!(log.groups["g"][&("t".to_string(), 0)].metadata, None);
            assert!(!dir.join("3.log").exists());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_are_kafkas_offset_commit_key_and_value() {
        let key = encode_key("g", "t", 2).unwrap();
        assert_eq!(key, [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 2]);
        assert_eq!(decode_key(&key).unwrap(), Some(("g".into(), "t".into(), 2)));
        let value = committed(42).unwrap();
        assert_eq!(decode_value(&encode_value(&value).unwrap()).unwrap(), value);
        let long = "g".repeat(MAX_STRING_BYTES + 1);
        assert_eq!(
            encode_key(&long, "t", 0).unwrap_err().kind(),
            io::ErrorKind::InvalidInput,
            "a length that does not fit is refused, not wrapped"
        );
        assert_eq!(
            decode_key(&[0, 2, 0, 1, b'g']).unwrap(),
            None,
            "group metadata is skipped"
        );
    }
}
