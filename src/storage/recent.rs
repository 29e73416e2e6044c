//! The broker's own cache of recently stored batches: with O_DIRECT writes
//! the page cache no longer holds what was just written, and consumers
//! that keep up with producers (or read back the last hours) read exactly
//! that. A fetch whose offset falls in a partition's cached window is
//! answered from memory.
//!
//! One budget per shard, shared by its partitions and spent oldest first
//! across all of them (as Redpanda's batch cache is): recency decides,
//! so a busy partition may hold most of it while an idle one's batches age
//! out. The budget is the operator's limit, lowered while the host runs
//! short of memory ([`follow_host_memory`]), since memory held here is
//! memory the kernel cannot reclaim.

use crate::log::batch::{self, HEADER_LEN};
use bytes::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// Batches smaller than this that are slices of the request they came in
/// (buffered writes) are copied into the cache rather than kept, which
/// would pin the whole request buffer for a few bytes of batch. Slices of
/// a trip's image are kept as they are: the image holds only batches.
const COPY_BELOW: usize = 64 << 10;

/// A shard's cache budget, shared by its partitions.
#[derive(Debug)]
pub(crate) struct RecentBudget {
    /// The operator's limit.
    limit: usize,
    /// What may be held now: `limit`, or less while the host is short of
    /// memory.
    allowed: Cell<usize>,
    used: Cell<usize>,
    /// Every cached batch of the shard, oldest first.
    order: RefCell<VecDeque<Held>>,
    /// Batches still cached; `order` also holds stale records of batches a
    /// window dropped by itself, compacted away when they outnumber these.
    live: Cell<usize>,
}

/// Which batch of which window: the window's first batch when it is this
/// one's turn to go, unless the window dropped it already.
#[derive(Debug)]
struct Held {
    window: Weak<RefCell<Window>>,
    base_offset: i64,
}

impl RecentBudget {
    /// `limit` bytes for the shard; 0 turns the cache off.
    pub(crate) fn new(limit: usize) -> Rc<RecentBudget> {
        Rc::new(RecentBudget {
            limit,
            allowed: Cell::new(limit),
            used: Cell::new(0),
            order: RefCell::new(VecDeque::new()),
            live: Cell::new(0),
        })
    }

    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.get()
    }

    /// Sets what may be held now (at most the limit) and drops the oldest
    /// batches of the shard until within it.
    fn allow(&self, bytes: usize) {
        self.allowed.set(bytes.min(self.limit));
        self.evict();
    }

    fn evict(&self) {
        while self.used.get() > self.allowed.get() {
            let Some(held) = self.order.borrow_mut().pop_front() else {
                break;
            };
            let Some(window) = held.window.upgrade() else {
                continue;
            };
            let mut window = window.borrow_mut();
            if window
                .entries
                .front()
                .is_some_and(|e| e.base_offset == held.base_offset)
            {
                window.pop_oldest(self);
            }
        }
        let stale = self.order.borrow().len().saturating_sub(self.live.get());
        if stale > self.live.get() + 1024 {
            self.order.borrow_mut().retain(|held| {
                held.window.upgrade().is_some_and(|w| {
                    w.borrow()
                        .entries
                        .binary_search_by_key(&held.base_offset, |e| e.base_offset)
                        .is_ok()
                })
            });
        }
    }

    fn add(&self, len: usize) {
        self.used.set(self.used.get() + len);
        self.live.set(self.live.get() + 1);
    }

    fn remove(&self, len: usize) {
        self.used.set(self.used.get() - len);
        self.live.set(self.live.get() - 1);
    }
}

/// Keeps the shard's budget within what the host can spare: every second,
/// the cache may grow into the memory the host has available above an
/// eighth of its total (split between the shards), and gives memory back,
/// oldest batches first, when available memory falls below that.
pub(crate) async fn follow_host_memory(
    budget: Rc<RecentBudget>,
    shards: usize,
    drain: chronik_shard::Signal,
) {
    if budget.limit == 0 {
        return;
    }
    let shards = shards.max(1);
    loop {
        // /proc is answered from kernel memory: no disk wait on the shard.
        if let Some(memory) = HostMemory::read() {
            let reserve = memory.total / 8;
            let used = budget.used.get();
            if memory.available >= reserve {
                budget.allow(used + (memory.available - reserve) / shards);
            } else {
                budget.allow(used.saturating_sub((reserve - memory.available) / shards));
                // What the cache let go of may sit free in an allocator
                // arena: give it back.
                let _ = glommio::executor().spawn_blocking(release_free_memory).await;
            }
        }
        let sleep = std::pin::pin!(glommio::timer::sleep(Duration::from_secs(1)));
        let drained = std::pin::pin!(drain.wait());
        if let futures::future::Either::Right(_) = futures::future::select(sleep, drained).await {
            return;
        }
    }
}

/// Returns the allocator's free memory to the kernel.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks
    // and releases free pages; it touches no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The host's memory, from /proc/meminfo.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostMemory {
    pub total: usize,
    pub available: usize,
}

impl HostMemory {
    pub(crate) fn read() -> Option<HostMemory> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let field = |name: &str| -> Option<usize> {
            let line = text.lines().find(|l| l.starts_with(name))?;
            let kib: usize = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib << 10)
        };
        Some(HostMemory {
            total: field("MemTotal:")?,
            available: field("MemAvailable:")?,
        })
    }
}

struct Entry {
    base_offset: i64,
    /// The offset after the batch.
    end_offset: i64,
    parts: [Bytes; 2],
    /// The trip image `parts[0]` is a slice of, if it is one: consecutive
    /// batches of one image are read as one slice of it.
    image: Option<Bytes>,
}

impl Entry {
    fn len(&self) -> usize {
        self.parts[0].len() + self.parts[1].len()
    }
}

#[derive(Default)]
struct Window {
    entries: VecDeque<Entry>,
}

impl Window {
    fn pop_oldest(&mut self, budget: &RecentBudget) -> bool {
        let Some(entry) = self.entries.pop_front() else {
            return false;
        };
        budget.remove(entry.len());
        true
    }
}

/// A partition's window as its tiering upload sees it: a segment just
/// closed is usually all still here, and sending it from memory spares the
/// device a read of every byte it has just written (on a disk shared by
/// reads and writes, that read costs produce as much as the write).
#[derive(Clone)]
pub(crate) struct RecentView(Rc<RefCell<Window>>);

impl RecentView {
    /// The stored bytes of the batches `base_offset..next_offset`, in
    /// order, if the window holds all of them and they come to `size` (a
    /// closed segment's whole file); otherwise `None`.
    pub(crate) fn span(&self, base_offset: i64, next_offset: i64, size: u64) -> Option<Vec<Bytes>> {
        let window = self.0.borrow();
        let entries = &window.entries;
        let from = entries.partition_point(|e| e.base_offset < base_offset);
        let to = entries.partition_point(|e| e.end_offset <= next_offset);
        if from >= to || entries[from].base_offset != base_offset || entries[to - 1].end_offset != next_offset
        {
            return None;
        }
        let pieces: Vec<Bytes> = entries
            .range(from..to)
            .flat_map(|e| e.parts.iter().filter(|p| !p.is_empty()).cloned())
            .collect();
        let held: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        (held == size).then_some(pieces)
    }
}

/// One partition's recently stored batches, in offset order, contiguous.
pub(crate) struct RecentBatches {
    window: Rc<RefCell<Window>>,
    budget: Rc<RecentBudget>,
}

impl RecentBatches {
    pub(crate) fn new(budget: Rc<RecentBudget>) -> RecentBatches {
        RecentBatches {
            window: Rc::default(),
            budget,
        }
    }

    /// The window, for a reader outside the log.
    pub(crate) fn view(&self) -> RecentView {
        RecentView(self.window.clone())
    }

    /// Adds a batch just stored: the first byte of `parts[0]` is the start
    /// of the batch as it is in the file. A batch that does not follow the
    /// last one (a cut after failed writes) starts the window afresh.
    pub(crate) fn push(&mut self, base_offset: i64, end_offset: i64, parts: &[Bytes; 2]) {
        self.add(base_offset, end_offset, parts.clone(), None);
    }

    /// Adds a batch just stored as `len` bytes from `at` of the image its
    /// trip wrote (nothing copied: the image holds only stored batches).
    pub(crate) fn push_written(
        &mut self,
        base_offset: i64,
        end_offset: i64,
        image: &Bytes,
        at: usize,
        len: usize,
    ) {
        let parts = [image.slice(at..at + len), Bytes::new()];
        self.add(base_offset, end_offset, parts, Some(image));
    }

    fn add(&mut self, base_offset: i64, end_offset: i64, parts: [Bytes; 2], image: Option<&Bytes>) {
        let budget = &self.budget;
        let len = parts[0].len() + parts[1].len();
        {
            let mut window = self.window.borrow_mut();
            if window.entries.back().is_some_and(|e| e.end_offset != base_offset) {
                while window.pop_oldest(budget) {}
            }
            if len > budget.allowed.get() {
                while window.pop_oldest(budget) {}
                return;
            }
            let parts = if len < COPY_BELOW && image.is_none() {
                let mut copy = BytesMut::with_capacity(len);
                copy.extend_from_slice(&parts[0]);
                copy.extend_from_slice(&parts[1]);
                [copy.freeze(), Bytes::new()]
            } else {
                parts
            };
            window.entries.push_back(Entry {
                base_offset,
                end_offset,
                parts,
                image: image.cloned(),
            });
        }
        budget.add(len);
        budget.order.borrow_mut().push_back(Held {
            window: Rc::downgrade(&self.window),
            base_offset,
        });
        budget.evict();
    }

    /// Drops the batches that start below `offset`: the cleaner rewrote
    /// that part of the log, and readers must see what it kept.
    pub(crate) fn forget_below(&mut self, offset: i64) {
        let mut window = self.window.borrow_mut();
        while window.entries.front().is_some_and(|e| e.base_offset < offset) {
            window.pop_oldest(&self.budget);
        }
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at
    /// least one with `at_least_one`), if the window holds that batch;
    /// `None` sends the read to the file.
    pub(crate) fn read(&self, offset: i64, max_bytes: usize, at_least_one: bool) -> Option<Bytes> {
        let window = self.window.borrow();
        let entries = &window.entries;
        let first = entries.front()?;
        if offset < first.base_offset {
            return None;
        }
        let from = entries.partition_point(|e| e.end_offset <= offset);
        let mut take = 0;
        let mut len = 0;
        for entry in entries.range(from..) {
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
            return (from < entries.len()).then(Bytes::new);
        }
        if take == 1 && entries[from].parts[1].is_empty() {
            return Some(entries[from].parts[0].clone());
        }
        if let Some(slice) = one_slice(entries.range(from..from + take), len) {
            return Some(slice);
        }
        let mut out = BytesMut::with_capacity(len);
        for entry in entries.range(from..from + take) {
            out.extend_from_slice(&entry.parts[0]);
            out.extend_from_slice(&entry.parts[1]);
        }
        debug_assert!(out.len() < HEADER_LEN || batch::batch_size(&out).is_some());
        Some(out.freeze())
    }
}

/// The entries as one slice of their trip image, if they all lie end to
/// end in the same one.
fn one_slice<'a>(mut entries: impl Iterator<Item = &'a Entry>, len: usize) -> Option<Bytes> {
    let first = entries.next()?;
    let image = first.image.as_ref()?;
    let mut end = first.parts[0].as_ptr_range().end;
    for entry in entries {
        let same = entry.image.as_ref().is_some_and(|i| i.as_ptr() == image.as_ptr());
        if !same || entry.parts[0].as_ptr() != end || !entry.parts[1].is_empty() {
            return None;
        }
        end = entry.parts[0].as_ptr_range().end;
    }
    let at = (first.parts[0].as_ptr() as usize).checked_sub(image.as_ptr() as usize)?;
    (at + len <= image.len()).then(|| image.slice(at..at + len))
}

impl Drop for RecentBatches {
    fn drop(&mut self) {
        let mut window = self.window.borrow_mut();
        while window.pop_oldest(&self.budget) {}
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
        let view = recent.view();
        let span = view
            .span(15, 21, 200)
            .map(|p| p.iter().map(|b| b.len()).sum::<usize>());
        assert_eq!(span, Some(200));
        assert!(
            view.span(15, 21, 201).is_none(),
            "a size that differs is not the segment"
        );
        assert!(view.span(12, 21, 250).is_none(), "no batch starts at 12");
        assert!(view.span(5, 15, 100).is_none(), "offsets before the window");
        drop(view);
        assert_eq!(budget.used(), 300);
        drop(recent);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_shard_budget_goes_to_the_most_recent_batches_of_any_partition() {
        let budget = RecentBudget::new(4000);
        let mut a = RecentBatches::new(budget.clone());
        let mut b = RecentBatches::new(budget.clone());
        for i in 0..10 {
            a.push(i, i + 1, &batch(300));
        }
        assert_eq!(budget.used(), 3000, "one busy partition may use most of it");
        for i in 0..10 {
            b.push(i, i + 1, &batch(300));
        }
        assert!(budget.used() <= 4000);
        assert_eq!(
            a.read(0, 1000, true),
            None,
            "the shard's oldest batches went first"
        );
        assert!(
            b.read(0, 1000, true).is_some(),
            "b's batches are all newer than a's"
        );
        assert!(a.read(7, 1000, true).is_some());
        a.push(10, 11, &batch(300));
        assert_eq!(
            a.read(7, 1000, true),
            None,
            "a's older batches go before any of b's"
        );
        assert!(b.read(0, 1000, true).is_some());
        assert!(a.read(8, 1000, true).is_some());
    }

    #[test]
    fn less_memory_allowed_drops_the_oldest_batches_now() {
        let budget = RecentBudget::new(1 << 20);
        let mut a = RecentBatches::new(budget.clone());
        for i in 0..10 {
            a.push(i, i + 1, &batch(1000));
        }
        budget.allow(2500);
        assert_eq!(budget.used(), 2000);
        assert_eq!(a.read(7, 1000, true), None);
        assert!(a.read(8, 1000, true).is_some());
        budget.allow(usize::MAX);
        assert_eq!(budget.allowed.get(), 1 << 20, "never above the operator's limit");
    }

    #[test]
    fn a_gap_starts_the_window_afresh_and_stale_records_stay_bounded() {
        let budget = RecentBudget::new(1 << 20);
        let mut recent = RecentBatches::new(budget.clone());
        recent.push(0, 5, &batch(100));
        recent.push(7, 9, &batch(100));
        assert_eq!(recent.read(0, 1000, true), None);
        assert_eq!(recent.read(7, 1000, true).map(|b| b.len()), Some(100));
        for i in 0..5000 {
            // Every batch after a gap: the window holds one at a time.
            recent.push(i * 10, i * 10 + 1, &batch(100));
        }
        assert_eq!(budget.used(), 100);
        assert!(budget.order.borrow().len() <= 1024 + 2);
    }

    #[test]
    fn batches_of_one_trip_image_are_read_as_one_slice_of_it() {
        let budget = RecentBudget::new(1 << 20);
        let mut recent = RecentBatches::new(budget);
        let image = Bytes::from(vec![7u8; 1000]);
        let other = Bytes::from(vec![8u8; 1000]);
        // A head of 100 bytes, then three batches of 300; then a batch of
        // another trip's image.
        recent.push_written(0, 2, &image, 100, 300);
        recent.push_written(2, 4, &image, 400, 300);
        recent.push_written(4, 6, &image, 700, 300);
        recent.push_written(6, 8, &other, 0, 300);
        let read = recent.read(0, 900, true).unwrap();
        assert_eq!(read.len(), 900);
        assert_eq!(
            read.as_ptr(),
            image[100..].as_ptr(),
            "a slice of the image, not a copy"
        );
        let read = recent.read(2, 600, true).unwrap();
        assert_eq!(read.as_ptr(), image[400..].as_ptr());
        let across = recent.read(4, 600, true).unwrap();
        assert_eq!(across.len(), 600, "across two images: copied, still whole");
        assert_eq!(&across[..300], &image[700..]);
        assert_eq!(&across[300..], &other[..300]);
    }

    #[test]
    fn host_memory_is_read() {
        let memory = HostMemory::read().expect("/proc/meminfo");
        assert!(memory.total > 0 && memory.available <= memory.total);
    }
}
