//! What a partition has in object storage: its manifest, and the keys of
//! its objects.
//!
//! Every object of a segment is named by topic id, partition, base offset
//! and the leader epoch it was written under, so uploading the same
//! segment again (after a crash between the objects and the manifest)
//! overwrites the same objects instead of making a second copy. The
//! manifest is written after the objects it names: a segment is remote
//! once the manifest lists it, never before.

use crate::log::producer_state::AbortedTxn;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One segment in object storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemoteSegment {
    pub base_offset: i64,
    /// One past its last offset.
    pub next_offset: i64,
    pub size: u64,
    /// The largest record timestamp in it (-1 if none).
    pub max_timestamp: i64,
    pub leader_epoch: i32,
    /// The transactions aborted by markers in it, as Kafka uploads a
    /// segment's `.txnindex`: once only the bucket holds the segment, a
    /// read_committed fetch still learns what to drop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aborted: Vec<AbortedTxn>,
}

/// A partition's remote segments, in offset order, and where its log
/// starts (DeleteRecords and retention move it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub log_start_offset: i64,
    pub segments: Vec<RemoteSegment>,
}

impl Manifest {
    /// One past the last offset that has been remote: where the next
    /// upload starts. Retention emptying the manifest leaves the log start
    /// there, so nothing is uploaded twice.
    pub(crate) fn end(&self) -> i64 {
        self.segments.last().map_or(self.log_start_offset, |s| {
            s.next_offset.max(self.log_start_offset)
        })
    }

    /// The remote segment holding `offset`, if it is remote and not
    /// below the log start.
    pub(crate) fn segment_for(&self, offset: i64) -> Option<&RemoteSegment> {
        if offset < self.log_start_offset {
            return None;
        }
        let i = self.segments.partition_point(|s| s.next_offset <= offset);
        self.segments.get(i).filter(|s| s.base_offset <= offset)
    }

    /// The aborted transactions a read_committed fetch of `[from, to)`
    /// must be told about, from the remote segments' lists: (producer
    /// id, first offset).
    pub(crate) fn aborted_between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        // A transaction's marker comes after its batches, so its entry
        // sits in the segment holding `from` or a later one (however much
        // later: a long transaction's marker may be segments past `to`).
        let first = self.segments.partition_point(|s| s.next_offset <= from);
        self.segments[first..]
            .iter()
            .flat_map(|s| s.aborted.iter())
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .map(|a| (a.producer_id, a.first_offset))
            .collect()
    }

    /// Where the remote log starts, if anything is remote.
    pub(crate) fn start(&self) -> Option<i64> {
        self.segments
            .first()
            .map(|s| s.base_offset.max(self.log_start_offset))
    }

    pub(crate) fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub(crate) fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable manifest: {e}"))
    }
}

/// Keys of one partition's objects, relative to the store's prefix.
#[derive(Debug, Clone)]
pub(crate) struct PartitionKeys {
    dir: String,
    partition: i32,
    /// Cluster mode: each leader writes the manifest of its own epoch, so
    /// a deposed leader that has not learnt it yet cannot overwrite what
    /// its successor wrote (see [`latest_manifest`]).
    manifest_epoch: Option<i32>,
}

impl PartitionKeys {
    pub(crate) fn new(topic_id: Uuid, partition: i32) -> PartitionKeys {
        PartitionKeys {
            dir: format!("{}/{partition}", topic_dir(topic_id)),
            partition,
            manifest_epoch: None,
        }
    }

    /// The keys a leader at `epoch` writes in cluster mode.
    pub(crate) fn fenced(self, epoch: i32) -> PartitionKeys {
        PartitionKeys {
            manifest_epoch: Some(epoch),
            ..self
        }
    }

    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }

    pub(crate) fn manifest(&self) -> String {
        match self.manifest_epoch {
            Some(epoch) => format!("{}/{MANIFEST_PREFIX}{epoch:010}.json", self.dir),
            None => format!("{}/manifest.json", self.dir),
        }
    }

    /// Where the partition's objects are.
    pub(crate) fn dir(&self) -> &str {
        &self.dir
    }

    /// Whether the manifest is written per leader epoch (cluster mode).
    pub(crate) fn is_fenced(&self) -> bool {
        self.manifest_epoch.is_some()
    }

    /// `extension`: log, index, timeindex or snapshot.
    pub(crate) fn segment(&self, segment: &RemoteSegment, extension: &str) -> String {
        format!(
            "{}/{:020}-{}.{extension}",
            self.dir, segment.base_offset, segment.leader_epoch
        )
    }
}

const MANIFEST_PREFIX: &str = "manifest-e";

/// The leader epoch a manifest key was written at (-1: a single broker's);
/// `None` for any other object.
fn manifest_epoch(key: &str) -> Option<i64> {
    let name = key.rsplit('/').next()?;
    match name.strip_prefix(MANIFEST_PREFIX) {
        Some(rest) => rest.strip_suffix(".json")?.parse::<i64>().ok(),
        None if name == "manifest.json" => Some(-1),
        None => None,
    }
}

/// Of the manifest keys among `keys` (a partition's objects), the one the
/// latest leader wrote: the highest epoch's, else the single broker's.
pub(crate) fn latest_manifest<'a>(keys: impl IntoIterator<Item = &'a String>) -> Option<&'a String> {
    keys.into_iter()
        .filter_map(|key| Some((manifest_epoch(key)?, key)))
        .max_by_key(|(epoch, _)| *epoch)
        .map(|(_, key)| key)
}

/// Whether `key` is a manifest of an earlier epoch than `own`'s.
pub(crate) fn is_older_manifest(key: &str, own: &str) -> bool {
    matches!((manifest_epoch(key), manifest_epoch(own)), (Some(theirs), Some(mine)) if theirs < mine)
}

/// Where every object of a topic's partitions is.
pub(crate) fn topic_dir(topic_id: Uuid) -> String {
    format!("topics/{topic_id}")
}

/// Where a topic's catalog entry is kept, for a broker rebuilt from the
/// bucket.
pub(crate) fn catalog_key(topic_id: Uuid) -> String {
    format!("catalog/{topic_id}.json")
}

pub(crate) const CATALOG_DIR: &str = "catalog";

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(base: i64, next: i64) -> RemoteSegment {
        RemoteSegment {
            base_offset: base,
            next_offset: next,
            size: 10,
            max_timestamp: base,
            leader_epoch: 0,
            aborted: Vec::new(),
        }
    }

    #[test]
    fn the_latest_leaders_manifest_is_found_among_the_objects() {
        let keys = PartitionKeys::new(Uuid::nil(), 3);
        let names: Vec<String> = vec![
            keys.manifest(),
            keys.clone().fenced(2).manifest(),
            keys.clone().fenced(11).manifest(),
            format!("{}/00000000000000000000-11.log", keys.dir()),
        ];
        assert_eq!(latest_manifest(&names), Some(&keys.clone().fenced(11).manifest()));
        assert_eq!(latest_manifest(&names[..1]), Some(&keys.manifest()));
        assert_eq!(latest_manifest(&names[3..]), None);
        assert!(is_older_manifest(&names[1], &names[2]));
        assert!(is_older_manifest(&names[0], &names[2]));
        assert!(!is_older_manifest(&names[2], &names[2]));
        assert!(!is_older_manifest(&names[3], &names[2]));
    }

    #[test]
    fn aborted_transactions_are_found_from_the_segment_holding_the_start() {
        let aborted = |producer_id, first_offset, last_offset| AbortedTxn {
            producer_id,
            first_offset,
            last_offset,
        };
        let mut second = segment(100, 250);
        second.aborted = vec![aborted(7, 90, 120), aborted(8, 200, 210)];
        let mut third = segment(250, 400);
        // A long transaction: begun in the first segment, aborted here.
        third.aborted = vec![aborted(9, 50, 300)];
        let manifest = Manifest {
            log_start_offset: 0,
            segments: vec![segment(0, 100), second, third],
        };
        assert_eq!(manifest.aborted_between(0, 60), vec![(9, 50)]);
        assert_eq!(manifest.aborted_between(95, 150), vec![(7, 90), (9, 50)]);
        assert_eq!(manifest.aborted_between(121, 205), vec![(8, 200), (9, 50)]);
        assert_eq!(manifest.aborted_between(301, 400), Vec::<(i64, i64)>::new());
        // Old manifests, written before the lists, read as having none.
        let old = r#"{"log_start_offset":0,"segments":[{"base_offset":0,"next_offset":5,"size":1,"max_timestamp":1,"leader_epoch":0}]}"#;
        assert!(Manifest::from_json(old.as_bytes()).is_ok_and(|m| m.segments[0].aborted.is_empty()));
    }

    #[test]
    fn offsets_find_their_segment_and_the_start_bounds_them() {
        let mut manifest = Manifest {
            log_start_offset: 0,
            segments: vec![segment(0, 100), segment(100, 250)],
        };
        assert_eq!(manifest.segment_for(0).map(|s| s.base_offset), Some(0));
        assert_eq!(manifest.segment_for(99).map(|s| s.base_offset), Some(0));
        assert_eq!(manifest.segment_for(100).map(|s| s.base_offset), Some(100));
        assert_eq!(manifest.segment_for(250), None);
        assert_eq!(manifest.end(), 250);
        manifest.log_start_offset = 120;
        assert_eq!(manifest.segment_for(110), None);
        assert_eq!(manifest.start(), Some(120));
        manifest.log_start_offset = 250;
        manifest.segments.clear();
        assert_eq!(
            manifest.end(),
            250,
            "emptied by retention, it still knows where uploads stopped"
        );
        manifest.log_start_offset = 120;
        manifest.segments = vec![segment(0, 100), segment(100, 250)];
        let back = Manifest::from_json(&manifest.to_json()).unwrap();
        assert_eq!(back, manifest);
    }
}
