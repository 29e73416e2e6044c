//! What a partition has in object storage: its manifest, and the keys of
//! its objects.
//!
//! Every object of a segment is named by topic id, partition, base offset
//! and the leader epoch it was written under, so uploading the same
//! segment again (after a crash between the objects and the manifest)
//! overwrites the same objects instead of making a second copy. The
//! manifest is written after the objects it names: a segment is remote
//! once the manifest lists it, never before.

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
}

impl PartitionKeys {
    pub(crate) fn new(topic_id: Uuid, partition: i32) -> PartitionKeys {
        PartitionKeys {
            dir: format!("topics/{topic_id}/{partition}"),
            partition,
        }
    }

    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }

    pub(crate) fn manifest(&self) -> String {
        format!("{}/manifest.json", self.dir)
    }

    /// `extension`: log, index, timeindex or snapshot.
    pub(crate) fn segment(&self, segment: &RemoteSegment, extension: &str) -> String {
        format!(
            "{}/{:020}-{}.{extension}",
            self.dir, segment.base_offset, segment.leader_epoch
        )
    }
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
        }
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
