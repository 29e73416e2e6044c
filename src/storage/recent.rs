//! The broker's own cache of recently stored batches, per partition: with
//! O_DIRECT writes the page cache no longer holds what was just written,
//! and consumers that keep up with producers read exactly that. A fetch
//! whose offset falls in the cached window is answered from memory.
//!
//! Bounded twice: per partition (so one busy partition cannot take it
//! all) and per shard (so a thousand partitions cannot add up to more
//! than the operator allowed); past either, a partition drops its own
//! oldest batches.

use crate::log::batch::{self, HEADER_LEN};
use bytes::{Bytes, BytesMut};
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

/// Batches smaller than this are copied into the cache rather than kept
/// as slices of the request they came in, which would pin the whole
/// request buffer for a few bytes of batch.
const COPY_BELOW: usize = 64 << 10;

/// A shard's cache budget, shared by its partitions.
#[derive(Debug)]
pub(crate) struct RecentBudget {
    shard_limit: usize,
    partition_limit: usize,
    used: Cell<usize>,
}

impl RecentBudget {
    /// `shard_limit` bytes for the shard; a partition keeps at most a
    /// quarter of it. 0 turns the cache off.
    pub(crate) fn new(shard_limit: usize) -> Rc<RecentBudget> {
        Rc::new(RecentBudget {
            shard_limit,
            partition_limit: shard_limit / 4,
            used: Cell::new(0),
        })
    }

    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.get()
    }
}

struct Entry {
    base_offset: i64,
    /// The offset after the batch.
    end_offset: i64,
    parts: [Bytes; 2],
}

impl Entry {
    fn len(&self) -> usize {
        self.parts[0].len() + self.parts[1].len()
    }
}

/// One partition's recently stored batches, in offset order, contiguous.
pub(crate) struct RecentBatches {
    entries: VecDeque<Entry>,
    bytes: usize,
    budget: Rc<RecentBudget>,
}

impl RecentBatches {
    pub(crate) fn new(budget: Rc<RecentBudget>) -> RecentBatches {
        RecentBatches {
            entries: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    /// Adds a batch just stored: the first byte of `parts[0]` is the start
    /// of the batch as it is in the file. A batch that does not follow the
    /// last one (a cut after failed writes) starts the window afresh.
    pub(crate) fn push(&mut self, base_offset: i64, end_offset: i64, parts: &[Bytes; 2]) {
        if self.budget.partition_limit == 0 {
            return;
        }
        if self.entries.back().is_some_and(|e| e.end_offset != base_offset) {
            self.clear();
        }
        let len = parts[0].len() + parts[1].len();
        if len > self.budget.partition_limit {
            self.clear();
            return;
        }
        let parts = if len < COPY_BELOW {
            let mut copy = BytesMut::with_capacity(len);
            copy.extend_from_slice(&parts[0]);
            copy.extend_from_slice(&parts[1]);
            [copy.freeze(), Bytes::new()]
        } else {
            parts.clone()
        };
        self.entries.push_back(Entry {
            base_offset,
            end_offset,
            parts,
        });
        self.bytes += len;
        self.budget.used.set(self.budget.used.get() + len);
        while self.bytes > self.budget.partition_limit || self.budget.used.get() > self.budget.shard_limit {
            if !self.pop_oldest() {
                break;
            }
        }
    }

    fn pop_oldest(&mut self) -> bool {
        let Some(entry) = self.entries.pop_front() else {
            return false;
        };
        self.bytes -= entry.len();
        self.budget.used.set(self.budget.used.get() - entry.len());
        true
    }

    fn clear(&mut self) {
        while self.pop_oldest() {}
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at
    /// least one with `at_least_one`), if the window holds that batch;
    /// `None` sends the read to the file.
    pub(crate) fn read(&self, offset: i64, max_bytes: usize, at_least_one: bool) -> Option<Bytes> {
        let first = self.entries.front()?;
        if offset < first.base_offset {
            return None;
        }
        let from = self.entries.partition_point(|e| e.end_offset <= offset);
        let mut take = 0;
        let mut len = 0;
        for entry in self.entries.range(from..) {
            let fits = len + entry.len() <= max_bytes || (take == 0 && at_least_one);
            if !fits {
                break;
            }
            take += 1;
            len += entry.len();
        }
        if take == 0 {
            // Nothing here (the window ends before `offset`), or the first
            // batch is over `max_bytes` without `at_least_one`: as a file
            // read would answer.
            return (from < self.entries.len()).then(Bytes::new);
        }
        if take == 1 && self.entries[from].parts[1].is_empty() {
            return Some(self.entries[from].parts[0].clone());
        }
        let mut out = BytesMut::with_capacity(len);
        for entry in self.entries.range(from..from + take) {
            out.extend_from_slice(&entry.parts[0]);
            out.extend_from_slice(&entry.parts[1]);
        }
        debug_assert!(out.len() < HEADER_LEN || batch::batch_size(&out).is_some());
        Some(out.freeze())
    }
}

impl Drop for RecentBatches {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(len: usize) -> [Bytes; 2] {
        [Bytes::from(vec![1u8; 16]), Bytes::from(vec![2u8; len - 16])]
    }

    #[test]
    fn reads_whole_batches_from_the_one_holding_the_offset() {
        let budget = RecentBudget::new(1 << 20);
        let mut recent = RecentBatches::new(budget.clone());
        recent.push(10, 15, &batch(100));
        recent.push(15, 20, &batch(100));
        recent.push(20, 21, &batch(100));
        assert_eq!(recent.read(9, 1000, true), None);
        assert_eq!(recent.read(12, 1000, true).map(|b| b.len()), Some(300));
        assert_eq!(recent.read(15, 250, true).map(|b| b.len()), Some(200));
        assert_eq!(recent.read(15, 50, true).map(|b| b.len()), Some(100));
        assert_eq!(recent.read(15, 50, false).map(|b| b.len()), Some(0));
        assert_eq!(recent.read(21, 1000, true), None);
        assert_eq!(budget.used(), 300);
        drop(recent);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn stays_within_the_partition_and_shard_budgets() {
        let budget = RecentBudget::new(4000);
        let mut a = RecentBatches::new(budget.clone());
        let mut b = RecentBatches::new(budget.clone());
        for i in 0..20 {
            a.push(i, i + 1, &batch(300));
        }
        assert!(a.bytes <= 1000);
        assert_eq!(a.read(0, 1000, true), None, "the oldest batches went");
        assert!(a.read(19, 1000, true).is_some());
        for i in 0..20 {
            b.push(i, i + 1, &batch(300));
        }
        assert!(budget.used() <= 4000);
    }

    #[test]
    fn a_gap_starts_the_window_afresh() {
        let budget = RecentBudget::new(1 << 20);
        let mut recent = RecentBatches::new(budget);
        recent.push(0, 5, &batch(100));
        recent.push(7, 9, &batch(100));
        assert_eq!(recent.read(0, 1000, true), None);
        assert_eq!(recent.read(7, 1000, true).map(|b| b.len()), Some(100));
    }
}
