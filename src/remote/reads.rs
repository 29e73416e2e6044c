//! A shard's cache of what it read from object storage: fixed chunks of
//! segment objects (a consumer reading on sequentially takes its next
//! fetches from the chunk the first one loaded) and parsed offset indexes,
//! both bounded, the least recently used let go first.

use super::store::{RemoteError, RemoteStore};
use super::TieringStats;
use crate::log::index::OffsetIndex;
use bytes::{Bytes, BytesMut};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// Bytes of a segment object read by one ranged GET.
const CHUNK_BYTES: u64 = 4 << 20;
/// Offset indexes kept per shard.
const INDEXES_KEPT: usize = 256;

pub(crate) struct RemoteReads {
    budget: usize,
    chunks: RefCell<Chunks>,
    indexes: RefCell<Indexes>,
    stats: Rc<TieringStats>,
}

/// Parsed offset indexes by object key, and their keys oldest first.
type Indexes = (HashMap<String, Rc<OffsetIndex>>, VecDeque<String>);

#[derive(Default)]
struct Chunks {
    held: HashMap<(String, u64), Bytes>,
    /// Least recently used first.
    order: VecDeque<(String, u64)>,
    bytes: usize,
}

impl Chunks {
    fn get(&mut self, key: &(String, u64)) -> Option<Bytes> {
        let found = self.held.get(key).cloned()?;
        if let Some(i) = self.order.iter().position(|k| k == key) {
            if let Some(k) = self.order.remove(i) {
                self.order.push_back(k);
            }
        }
        Some(found)
    }

    fn keep(&mut self, key: (String, u64), bytes: Bytes, budget: usize) {
        if bytes.len() > budget {
            return;
        }
        while self.bytes + bytes.len() > budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.held.remove(&old) {
                self.bytes -= gone.len();
            }
        }
        self.bytes += bytes.len();
        if let Some(replaced) = self.held.insert(key.clone(), bytes) {
            self.bytes -= replaced.len();
        } else {
            self.order.push_back(key);
        }
    }
}

impl RemoteReads {
    pub(crate) fn new(budget: usize, stats: Rc<TieringStats>) -> Rc<RemoteReads> {
        Rc::new(RemoteReads {
            budget,
            chunks: RefCell::default(),
            indexes: RefCell::default(),
            stats,
        })
    }

    /// Bytes `start..end` of the object `key` (`size` bytes long).
    pub(crate) async fn range(
        &self,
        store: &RemoteStore,
        key: &str,
        size: u64,
        start: u64,
        end: u64,
    ) -> Result<Bytes, RemoteError> {
        let end = end.min(size);
        if start >= end {
            return Ok(Bytes::new());
        }
        let (first, last) = (start / CHUNK_BYTES, (end - 1) / CHUNK_BYTES);
        if first == last {
            let chunk = self.chunk(store, key, size, first).await?;
            let from = (start - first * CHUNK_BYTES) as usize;
            let to = ((end - first * CHUNK_BYTES) as usize).min(chunk.len());
            return Ok(chunk.slice(from.min(to)..to));
        }
        let mut joined = BytesMut::with_capacity((end - start) as usize);
        for n in first..=last {
            let chunk = self.chunk(store, key, size, n).await?;
            let chunk_start = n * CHUNK_BYTES;
            let from = start.saturating_sub(chunk_start) as usize;
            let to = ((end - chunk_start) as usize).min(chunk.len());
            joined.extend_from_slice(&chunk[from.min(to)..to]);
        }
        Ok(joined.freeze())
    }

    async fn chunk(&self, store: &RemoteStore, key: &str, size: u64, n: u64) -> Result<Bytes, RemoteError> {
        let id = (key.to_string(), n);
        if let Some(bytes) = self.chunks.borrow_mut().get(&id) {
            self.stats.cache_hit();
            return Ok(bytes);
        }
        let start = n * CHUNK_BYTES;
        let bytes = store
            .get_range(key, start..(start + CHUNK_BYTES).min(size))
            .await?;
        self.stats.fetched();
        self.chunks.borrow_mut().keep(id, bytes.clone(), self.budget);
        Ok(bytes)
    }

    pub(crate) fn offset_index(&self, key: &str) -> Option<Rc<OffsetIndex>> {
        self.indexes.borrow().0.get(key).cloned()
    }

    pub(crate) fn keep_offset_index(&self, key: String, index: OffsetIndex) -> Rc<OffsetIndex> {
        let index = Rc::new(index);
        let mut held = self.indexes.borrow_mut();
        let (map, order) = &mut *held;
        if map.insert(key.clone(), index.clone()).is_none() {
            order.push_back(key);
        }
        while order.len() > INDEXES_KEPT {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        index
    }
}
