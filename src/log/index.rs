//! Sparse offset and time indexes of one segment, as Kafka keeps them:
//! `.index` maps relative offsets to file positions (8-byte entries),
//! `.timeindex` maps timestamps to relative offsets (12-byte entries).
//!
//! Both live in memory while the segment is open and are written out when
//! the segment rolls or the log closes; a missing or damaged file is
//! rebuilt from the segment itself at open.

use std::fs;
use std::io;
use std::path::Path;

/// Bytes of log between two index entries (Kafka's index.interval.bytes).
pub const INDEX_INTERVAL_BYTES: u64 = 4096;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    /// (offset relative to the segment base, byte position), ascending.
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        if self
            .entries
            .last()
            .is_none_or(|&(o, p)| relative_offset > o && position > p)
        {
            self.entries.push((relative_offset, position));
        }
    }

    /// Position of the last indexed batch starting at or before
    /// `relative_offset` (0 if none): where a scan for it should begin.
    pub fn floor_position(&self, relative_offset: u32) -> u32 {
        let i = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    pub fn truncate_to_position(&mut self, size: u32) {
        self.entries.retain(|&(_, p)| p < size);
    }

    /// The index file's contents (taken on the shard, written elsewhere).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * 8);
        for (o, p) in &self.entries {
            bytes.extend_from_slice(&o.to_be_bytes());
            bytes.extend_from_slice(&p.to_be_bytes());
        }
        bytes
    }

    /// Loads an index, refusing one that is damaged: a partial entry,
    /// entries out of order, or a position past the segment's end.
    pub fn load(path: &Path, segment_size: u64) -> io::Result<Option<OffsetIndex>> {
        let Some(bytes) = read_optional(path)? else {
            return Ok(None);
        };
        Ok(Self::from_bytes(&bytes, segment_size))
    }

    /// Parses an index file's contents (`None` if damaged).
    pub fn from_bytes(bytes: &[u8], segment_size: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(8) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(8) {
            let o = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let p = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if u64::from(p) >= segment_size.max(1) || index.last().is_some_and(|(lo, lp)| o <= lo || p <= lp)
            {
                return None;
            }
            index.entries.push((o, p));
        }
        Some(index)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    /// (max timestamp so far, relative offset of the batch), ascending in both.
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn push(&mut self, timestamp: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(&(t, _)) if timestamp <= t => {}
            _ => self.entries.push((timestamp, relative_offset)),
        }
    }

    /// Relative offset of the first indexed batch whose max timestamp is
    /// >= `timestamp`, i.e. where a scan for that time should start.
    pub fn lookup(&self, timestamp: i64) -> Option<u32> {
        let i = self.entries.partition_point(|&(t, _)| t < timestamp);
        if i == 0 {
            return self.entries.first().map(|_| 0);
        }
        // The batch holding the timestamp is at or after the previous entry.
        Some(self.entries[i - 1].1)
    }

    pub fn max_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|&(t, _)| t)
    }

    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        self.entries.retain(|&(_, o)| o < relative_offset);
    }

    /// The index file's contents (taken on the shard, written elsewhere).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * 12);
        for (t, o) in &self.entries {
            bytes.extend_from_slice(&t.to_be_bytes());
            bytes.extend_from_slice(&o.to_be_bytes());
        }
        bytes
    }

    pub fn load(path: &Path) -> io::Result<Option<TimeIndex>> {
        let Some(bytes) = read_optional(path)? else {
            return Ok(None);
        };
        Ok(Self::from_bytes(&bytes))
    }

    /// Parses a time index file's contents (`None` if damaged).
    pub fn from_bytes(bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(12) {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(12) {
            let mut t = [0u8; 8];
            t.copy_from_slice(&chunk[..8]);
            let t = i64::from_be_bytes(t);
            let o = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            if index.entries.last().is_some_and(|&(lt, lo)| t <= lt || o < lo) {
                return None;
            }
            index.entries.push((t, o));
        }
        Some(index)
    }
}

fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces a file atomically and durably (write, sync, rename, sync of
/// the directory): the metadata store's write.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::metadata::write_durable(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_floor_lookup() {
        let mut index = OffsetIndex::default();
        index.push(0, 0);
        index.push(10, 4100);
        index.push(20, 8300);
        index.push(15, 9000); // out of order: ignored
        assert_eq!(index.floor_position(0), 0);
        assert_eq!(index.floor_position(9), 0);
        assert_eq!(index.floor_position(10), 4100);
        assert_eq!(index.floor_position(19), 4100);
        assert_eq!(index.floor_position(500), 8300);
    }

    #[test]
    fn time_index_lookup() {
        let mut index = TimeIndex::default();
        assert_eq!(index.lookup(5), None);
        index.push(100, 0);
        index.push(200, 10);
        index.push(150, 12); // not newer: ignored
        index.push(300, 20);
        assert_eq!(index.lookup(50), Some(0));
        assert_eq!(index.lookup(100), Some(0));
        assert_eq!(index.lookup(150), Some(0));
        assert_eq!(index.lookup(250), Some(10));
        assert_eq!(index.lookup(301), Some(20));
        assert_eq!(index.max_timestamp(), Some(300));
    }

    #[test]
    fn damaged_index_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("chronik-index-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0.index");
        let mut index = OffsetIndex::default();
        index.push(0, 0);
        index.push(5, 5000);
        write_file(&path, &index.to_bytes()).unwrap();
        assert_eq!(OffsetIndex::load(&path, 6000).unwrap(), Some(index.clone()));
        // Position beyond the segment: damaged.
        assert_eq!(OffsetIndex::load(&path, 4000).unwrap(), None);
        fs::write(&path, [0u8; 7]).unwrap();
        assert_eq!(OffsetIndex::load(&path, 6000).unwrap(), None);
        assert_eq!(OffsetIndex::load(&dir.join("missing.index"), 6000).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
