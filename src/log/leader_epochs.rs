//! Which leader epoch wrote which offsets: (epoch, first offset) pairs, as
//! Kafka's leader-epoch-checkpoint keeps them. OffsetForLeaderEpoch
//! answers from it, so a consumer that read past what a new leader has
//! (acks=1 records lost with the old one) learns its log was truncated
//! instead of silently skipping to offsets that now hold other records.
//!
//! An entry is added when a leader begins its epoch (written at once, off
//! the shard) and when a replayed batch carries a newer epoch than the last
//! (written when the log closes); on open, entries past the log end go.

use std::io;
use std::path::{Path, PathBuf};

/// The file beside the segments.
pub const LEADER_EPOCHS: &str = "leader-epoch-checkpoint";

#[derive(Debug)]
pub struct LeaderEpochs {
    path: PathBuf,
    /// (epoch, first offset), both increasing.
    entries: Vec<(i32, i64)>,
    dirty: bool,
}

impl LeaderEpochs {
    /// The entries stored in `dir`, without those starting past
    /// `log_end` (a torn tail cut them off). A log that has records but no
    /// entries (written before epochs were kept, or on one broker, which
    /// leads at epoch 0) was written at epoch 0 from `log_start`.
    pub fn load(dir: &Path, log_start: i64, log_end: i64) -> io::Result<LeaderEpochs> {
        let path = dir.join(LEADER_EPOCHS);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut entries: Vec<(i32, i64)> = Vec::new();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let (Some(epoch), Some(start)) = (fields.next(), fields.next()) else {
                continue;
            };
            let (Ok(epoch), Ok(start)) = (epoch.parse::<i32>(), start.parse::<i64>()) else {
                // Only OffsetForLeaderEpoch's precision depends on it: what
                // is readable is kept.
                tracing::warn!(file = %path.display(), line, "unreadable leader epoch entry; skipped");
                continue;
            };
            if start <= log_end && entries.last().is_none_or(|(e, s)| epoch > *e && start >= *s) {
                entries.push((epoch, start));
            }
        }
        let mut epochs = LeaderEpochs {
            dirty: false,
            path,
            entries,
        };
        if epochs.entries.is_empty() && log_end > log_start {
            epochs.observe(0, log_start);
        }
        Ok(epochs)
    }

    /// A batch at `base_offset` was written at `epoch`.
    pub fn observe(&mut self, epoch: i32, base_offset: i64) {
        if epoch >= 0 && self.entries.last().is_none_or(|(last, _)| epoch > *last) {
            self.entries.push((epoch, base_offset));
            self.dirty = true;
        }
    }

    /// Blocking: a leader begins `epoch` at `log_end`, stored at once.
    pub fn begin(&mut self, epoch: i32, log_end: i64) -> io::Result<()> {
        self.observe(epoch, log_end);
        self.write()
    }

    /// Blocking: stores the entries if they changed.
    pub fn write(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let text: String = self
            .entries
            .iter()
            .map(|(epoch, start)| format!("{epoch} {start}\n"))
            .collect();
        super::index::write_file(&self.path, text.as_bytes())?;
        self.dirty = false;
        Ok(())
    }

    /// Entries starting at or past `end` go: the log was cut there.
    pub fn truncate_to(&mut self, end: i64) {
        let before = self.entries.len();
        self.entries.retain(|(_, start)| *start <= end);
        self.dirty |= self.entries.len() != before;
    }

    /// OffsetForLeaderEpoch for `requested`, in a log ending at
    /// `log_end`: (the largest epoch not above it, the first offset of the
    /// next epoch, or the log end if it is the last). (-1, -1) when it is
    /// newer than any here; (requested, the first entry's start) when it is
    /// older than them all, as Kafka answers.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        let Some(&(latest, _)) = self.entries.last() else {
            return (-1, -1);
        };
        if requested < 0 {
            return (-1, -1);
        }
        if requested == latest {
            return (latest, log_end);
        }
        let next = self.entries.iter().position(|(epoch, _)| *epoch > requested);
        match next {
            None => (-1, -1),
            Some(0) => (requested, self.entries[0].1),
            Some(i) => (self.entries[i - 1].0, self.entries[i].1),
        }
    }

    pub fn latest(&self) -> Option<i32> {
        self.entries.last().map(|(epoch, _)| *epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs(entries: &[(i32, i64)]) -> LeaderEpochs {
        LeaderEpochs {
            path: PathBuf::new(),
            entries: entries.to_vec(),
            dirty: false,
        }
    }

    #[test]
    fn the_end_of_an_epoch_is_where_the_next_began() {
        let e = epochs(&[(0, 0), (2, 100), (5, 180)]);
        assert_eq!(e.end_offset_for(5, 250), (5, 250));
        assert_eq!(e.end_offset_for(0, 250), (0, 100));
        // Epochs 3 and 4 wrote nothing here: the end of 2's.
        assert_eq!(e.end_offset_for(3, 250), (2, 180));
        assert_eq!(e.end_offset_for(6, 250), (-1, -1));
        assert_eq!(e.end_offset_for(-1, 250), (-1, -1));
        let later = epochs(&[(3, 40), (4, 90)]);
        assert_eq!(later.end_offset_for(1, 120), (1, 40));
    }

    #[test]
    fn stored_entries_come_back_cut_at_the_log_end() {
        let dir = std::env::temp_dir().join(format!("chronik-epochs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut e = LeaderEpochs::load(&dir, 0, 50).unwrap();
        // Records but no entries: epoch 0 wrote them.
        assert_eq!(e.entries, vec![(0, 0)]);
        e.begin(3, 50).unwrap();
        e.observe(2, 60); // older than the last: ignored
        e.observe(4, 70);
        e.write().unwrap();
        assert_eq!(
            LeaderEpochs::load(&dir, 0, 80).unwrap().entries,
            vec![(0, 0), (3, 50), (4, 70)]
        );
        assert_eq!(
            LeaderEpochs::load(&dir, 0, 60).unwrap().entries,
            vec![(0, 0), (3, 50)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
