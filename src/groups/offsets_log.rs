//! Committed offsets, durable: one append-only file per offsets partition
//! (`STORAGE_PATH/__consumer_offsets/<n>.log`, n = the group's hash % 50, as
//! Kafka spreads groups over `__consumer_offsets`). Each record is
//! `[length u32][crc32c u32][JSON]`; a commit is fsynced (group commit)
//! before it is acknowledged. At load the last value per key wins, a torn
//! or corrupt tail is cut. A file mostly made of superseded records is
//! rewritten with the live offsets only (written aside, synced, renamed
//! over), at load and whenever appends make it so, which keeps it within
//! a few times its live size however often groups commit.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::warn;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_time_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    group: String,
    topic: String,
    partition: i32,
    /// `None`: the offset was deleted.
    value: Option<Committed>,
}

pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

pub struct OffsetsLog {
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    records: u64,
    pub groups: HashMap<String, GroupOffsets>,
}

const HEADER: usize = 8;
/// A file is rewritten once it holds this many times its live records
/// (the rewrite's cost, O(live), is then spread over that many appends)...
const REWRITE_RATIO: u64 = 4;
/// ...and at least this many.
const REWRITE_AT_LEAST: u64 = 1000;

fn encode(record: &Record) -> io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(record).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

impl OffsetsLog {
    pub fn open(dir: &Path, partition: u32) -> io::Result<OffsetsLog> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{partition}.log"));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut groups: HashMap<String, GroupOffsets> = HashMap::new();
        let mut at = 0;
        let mut records = 0;
        while let Some(header) = bytes.get(at..at + HEADER) {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
                break;
            };
            if crc32c::crc32c(payload) != crc {
                break;
            }
            let Ok(record) = serde_json::from_slice::<Record>(payload) else {
                break;
            };
            let offsets = groups.entry(record.group).or_default();
            match record.value {
                Some(value) => {
                    offsets.insert((record.topic, record.partition), value);
                }
                None => {
                    offsets.remove(&(record.topic, record.partition));
                }
            }
            records += 1;
            at += HEADER + len;
        }
        groups.retain(|_, offsets| !offsets.is_empty());
        if at < bytes.len() {
            warn!(file = %path.display(), kept = at, cut = bytes.len() - at, "offsets log: cut a torn or corrupt tail");
        }
        let mut log = OffsetsLog {
            file: Arc::new(
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(&path)?,
            ),
            path,
            size: at as u64,
            records,
            groups,
        };
        if at < bytes.len() {
            log.file.set_len(at as u64)?;
            log.file.sync_data()?;
        }
        if log.bloated() {
            log.rewrite()?;
        }
        Ok(log)
    }

    /// Superseded records outnumber live ones more than `REWRITE_RATIO`
    /// to one (and there are enough to be worth a rewrite).
    fn bloated(&self) -> bool {
        let live: u64 = self.groups.values().map(|o| o.len() as u64).sum();
        self.records > REWRITE_AT_LEAST && self.records > REWRITE_RATIO * live.max(1)
    }

    /// Rewrites the file with only the live offsets.
    fn rewrite(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("compacting");
        let mut out = File::create(&tmp)?;
        let mut size = 0u64;
        let mut records = 0;
        for (group, offsets) in &self.groups {
            for ((topic, partition), value) in offsets {
                let record = Record {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    value: Some(value.clone()),
                };
                let bytes = encode(&record)?;
                out.write_all(&bytes)?;
                size += bytes.len() as u64;
                records += 1;
            }
        }
        out.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = Arc::new(OpenOptions::new().read(true).write(true).open(&self.path)?);
        self.size = size;
        self.records = records;
        Ok(())
    }

    /// Appends changes (`None` deletes) and applies them in memory; the
    /// caller fsyncs `file()` before acknowledging.
    pub fn append(
        &mut self,
        group: &str,
        changes: Vec<((String, i32), Option<Committed>)>,
    ) -> io::Result<()> {
        let mut bytes = Vec::new();
        for ((topic, partition), value) in &changes {
            let record = Record {
                group: group.into(),
                topic: topic.clone(),
                partition: *partition,
                value: value.clone(),
            };
            bytes.extend(encode(&record)?);
        }
        self.file.write_all_at(&bytes, self.size)?;
        self.size += bytes.len() as u64;
        self.records += changes.len() as u64;
        let offsets = self.groups.entry(group.to_string()).or_default();
        for (key, value) in changes {
            match value {
                Some(value) => {
                    offsets.insert(key, value);
                }
                None => {
                    offsets.remove(&key);
                }
            }
        }
        if offsets.is_empty() {
            self.groups.remove(group);
        }
        // The appended bytes are in the rewrite too (it writes what is in
        // memory, synced, before the rename), so a commit waiting on the
        // old file's sync is durable either way.
        if self.bloated() {
            self.rewrite()?;
        }
        Ok(())
    }

    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(offset: i64) -> Option<Committed> {
        Some(Committed {
            offset,
            leader_epoch: -1,
            metadata: Some(format!("m{offset}")),
            commit_time_ms: 1,
        })
    }

    #[test]
    fn last_value_wins_deletes_stick_and_a_torn_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("chronik-offsets-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        {
            let mut log = OffsetsLog::open(&dir, 7).unwrap();
            log.append(
                "g",
                vec![(("t".into(), 0), committed(5)), (("t".into(), 1), committed(9))],
            )
            .unwrap();
            log.append("g", vec![(("t".into(), 0), committed(6))]).unwrap();
            log.append("g", vec![(("t".into(), 1), None)]).unwrap();
            log.append("h", vec![(("u".into(), 0), committed(1))]).unwrap();
        }
        // A torn last record.
        let path = dir.join("7.log");
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        let log = OffsetsLog::open(&dir, 7).unwrap();
        let g = &log.groups["g"];
        assert_eq!(g.len(), 1);
        assert_eq!(g[&("t".to_string(), 0)].offset, 6);
        assert_eq!(g[&("t".to_string(), 0)].metadata.as_deref(), Some("m6"));
        assert!(!log.groups.contains_key("h"), "the torn record is gone");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn frequent_commits_keep_the_file_within_a_few_times_its_live_size() {
        let dir = std::env::temp_dir().join(format!("chronik-offsets-compact-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let one = encode(&Record {
            group: "g0".into(),
            topic: "t".into(),
            partition: 0,
            value: committed(1_000_000),
        })
        .unwrap()
        .len() as u64;
        let mut largest = 0;
        {
            let mut log = OffsetsLog::open(&dir, 0).unwrap();
            for i in 0..30_000 {
                log.append(&format!("g{}", i % 50), vec![(("t".into(), 0), committed(i))])
                    .unwrap();
                largest = largest.max(fs::metadata(dir.join("0.log")).unwrap().len());
            }
        }
        assert!(
            largest <= (REWRITE_AT_LEAST + 1) * one,
            "{largest} bytes for 50 live offsets"
        );
        let log = OffsetsLog::open(&dir, 0).unwrap();
        assert_eq!(log.groups.len(), 50);
        assert_eq!(log.groups["g49"][&("t".to_string(), 0)].offset, 29_999);
        fs::remove_dir_all(&dir).unwrap();
    }
}
