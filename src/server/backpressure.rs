//! Shard-wide backpressure: when more than BACKPRESSURE_THRESHOLD requests
//! are pending on a shard, its connections stop reading new frames until
//! the count drains back to the threshold. Nothing accepted is dropped;
//! each move into backpressure is counted.
//!
//! Counting requests does not bound memory (64 in flight per connection
//! x MAX_REQUEST_BYTES each), so the shard also has a byte budget,
//! QUEUED_MAX_REQUEST_BYTES (Kafka's queued.max.request.bytes): a frame's
//! bytes are reserved as soon as its size prefix is read, before its body
//! is, and held until its response has been written. While the budget is
//! spent, connections read no new frames and frames whose size is known
//! wait, in arrival order, for their reservation.

use futures::channel::oneshot;
use prometheus_client::metrics::gauge::Gauge;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub(crate) struct Backpressure {
    /// Shared by every shard: a dynamic broker config changes it for all.
    threshold: Arc<AtomicUsize>,
    pending: Cell<usize>,
    engaged: Cell<bool>,
    waiting: RefCell<Vec<oneshot::Sender<()>>>,
    bytes: Rc<ByteBudget>,
}

impl Backpressure {
    pub(crate) fn new(threshold: Arc<AtomicUsize>) -> Backpressure {
        Backpressure {
            threshold,
            pending: Cell::new(0),
            engaged: Cell::new(false),
            waiting: RefCell::default(),
            bytes: Rc::default(),
        }
    }

    /// The shard's request byte budget.
    pub(crate) fn bytes(&self) -> &Rc<ByteBudget> {
        &self.bytes
    }

    fn threshold(&self) -> usize {
        self.threshold.load(Ordering::Relaxed)
    }

    /// A request was accepted for processing; true if this engaged
    /// backpressure (a transition to count).
    pub(crate) fn started(&self) -> bool {
        self.pending.set(self.pending.get() + 1);
        if self.pending.get() > self.threshold() && !self.engaged.get() {
            self.engaged.set(true);
            return true;
        }
        false
    }

    /// A request finished; readers resume once the count is back down.
    pub(crate) fn finished(&self) {
        self.pending.set(self.pending.get().saturating_sub(1));
        if self.engaged.get() && self.pending.get() <= self.threshold() {
            self.engaged.set(false);
            for waiter in self.waiting.borrow_mut().drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Waits while backpressure is engaged.
    pub(crate) async fn ready_to_read(&self) {
        while self.engaged.get() {
            let (tx, rx) = oneshot::channel();
            self.waiting.borrow_mut().push(tx);
            let _ = rx.await;
        }
    }
}

/// The shard's budget of request bytes. The limit is passed with each
/// call (0 = no limit; the bytes are still counted for the metric).
#[derive(Default)]
pub(crate) struct ByteBudget {
    in_use: Cell<usize>,
    peak: Cell<usize>,
    /// Reservations waiting, by ticket, in arrival order: the front one is
    /// served first, so a large frame is not passed over forever by
    /// small ones.
    queue: RefCell<VecDeque<u64>>,
    next_ticket: Cell<u64>,
    /// Woken whenever bytes are released or the queue moves; each waiter
    /// checks again whether it may go.
    wakers: RefCell<Vec<oneshot::Sender<()>>>,
    /// The shard's `chronik_queued_request_bytes` series and their peak.
    gauges: OnceCell<(Gauge, Gauge)>,
}

/// Bytes held against the budget; given back when dropped (the response
/// was written, or the connection went away).
pub(crate) struct HeldBytes {
    budget: Rc<ByteBudget>,
    bytes: usize,
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// Takes a queued reservation out of the queue if its wait is abandoned
/// (connection closed, shutdown), so the ones behind it are not stuck.
struct Ticket<'a> {
    budget: &'a ByteBudget,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut queue = self.budget.queue.borrow_mut();
        if let Some(at) = queue.iter().position(|t| *t == self.id) {
            queue.remove(at);
        }
        drop(queue);
        self.budget.wake_all();
    }
}

impl ByteBudget {
    /// Sets the metric series the budget reports to (once per shard).
    pub(crate) fn report_to(&self, gauges: impl FnOnce() -> (Gauge, Gauge)) {
        let _ = self.gauges.get_or_init(gauges);
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.get()
    }

    /// Whether `bytes` more may be held now. A frame larger than the whole
    /// budget is let through when nothing else is held, so it is served
    /// (alone) rather than waiting forever.
    fn fits(&self, bytes: usize, limit: usize) -> bool {
        let in_use = self.in_use.get();
        limit == 0 || in_use == 0 || in_use.saturating_add(bytes) <= limit
    }

    /// Whether new frames should wait: the budget is used up, or earlier
    /// frames are already waiting for their share.
    pub(crate) fn spent(&self, limit: usize) -> bool {
        limit != 0 && (self.in_use.get() >= limit || !self.queue.borrow().is_empty())
    }

    /// Reserves `bytes`, waiting (behind earlier waiters) until they fit.
    pub(crate) async fn reserve(self: &Rc<Self>, bytes: usize, limit: usize) -> HeldBytes {
        if !self.fits(bytes, limit) || !self.queue.borrow().is_empty() {
            let id = self.next_ticket.get();
            self.next_ticket.set(id.wrapping_add(1));
            self.queue.borrow_mut().push_back(id);
            let _ticket = Ticket { budget: self, id };
            while self.queue.borrow().front() != Some(&id) || !self.fits(bytes, limit) {
                self.changed().await;
            }
            self.queue.borrow_mut().pop_front();
            // `_ticket` wakes the next in line: it may fit as well.
        }
        self.take(bytes);
        HeldBytes {
            budget: self.clone(),
            bytes,
        }
    }

    /// Waits while the budget is spent.
    pub(crate) async fn until_available(&self, limit: usize) {
        while self.spent(limit) {
            self.changed().await;
        }
    }

    async fn changed(&self) {
        let (tx, rx) = oneshot::channel();
        self.wakers.borrow_mut().push(tx);
        let _ = rx.await;
    }

    fn wake_all(&self) {
        for waker in self.wakers.borrow_mut().drain(..) {
            let _ = waker.send(());
        }
    }

    fn take(&self, bytes: usize) {
        let in_use = self.in_use.get() + bytes;
        self.in_use.set(in_use);
        if in_use > self.peak.get() {
            self.peak.set(in_use);
        }
        self.report();
    }

    fn release(&self, bytes: usize) {
        self.in_use.set(self.in_use.get().saturating_sub(bytes));
        self.report();
        self.wake_all();
    }

    fn report(&self) {
        if let Some((in_use, peak)) = self.gauges.get() {
            in_use.set(i64::try_from(self.in_use.get()).unwrap_or(i64::MAX));
            peak.set(i64::try_from(self.peak.get()).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engages_above_the_threshold_and_releases_at_it() {
        let bp = Backpressure::new(Arc::new(AtomicUsize::new(2)));
        assert!(!bp.started());
        assert!(!bp.started());
        assert!(bp.started(), "third pending request engages");
        assert!(!bp.started(), "counted once per transition");
        bp.finished();
        assert!(bp.engaged.get());
        bp.finished();
        assert!(!bp.engaged.get());
        futures::executor::block_on(bp.ready_to_read());
    }
}

#[cfg(test)]
mod byte_budget_tests {
    use super::*;
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;

    #[test]
    fn reservations_wait_in_order_and_never_exceed_the_limit() {
        let budget = Rc::new(ByteBudget::default());
        let mut pool = LocalPool::new();
        let held: Rc<RefCell<Vec<HeldBytes>>> = Rc::default();
        let order: Rc<RefCell<Vec<usize>>> = Rc::default();
        let first = pool.run_until(budget.reserve(60, 100));
        assert!(!budget.spent(100) && budget.in_use() == 60);
        for (i, size) in [50usize, 10, 30].into_iter().enumerate() {
            let (budget, held, order) = (budget.clone(), held.clone(), order.clone());
            pool.spawner()
                .spawn_local(async move {
                    let h = budget.reserve(size, 100).await;
                    assert!(budget.in_use() <= 100);
                    order.borrow_mut().push(i);
                    held.borrow_mut().push(h);
                })
                .unwrap();
        }
        pool.run_until_stalled();
        // 50 does not fit beside 60; 10 would, but waits its turn.
        assert!(order.borrow().is_empty());
        assert!(budget.spent(100));
        drop(first);
        pool.run_until_stalled();
        assert_eq!(*order.borrow(), vec![0, 1, 2]);
        assert_eq!(budget.in_use(), 90);
        held.borrow_mut().clear();
        assert_eq!((budget.in_use(), budget.peak.get()), (0, 90));
    }

    #[test]
    fn a_frame_larger_than_the_budget_is_served_alone() {
        let budget = Rc::new(ByteBudget::default());
        let mut pool = LocalPool::new();
        let small = pool.run_until(budget.reserve(10, 100));
        let big = {
            let budget = budget.clone();
            pool.spawner()
                .spawn_local_with_handle(async move { budget.reserve(500, 100).await })
                .unwrap()
        };
        pool.run_until_stalled();
        assert_eq!(budget.in_use(), 10, "waits while anything else is held");
        drop(small);
        let big = pool.run_until(big);
        assert_eq!(budget.in_use(), 500);
        drop(big);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn an_abandoned_wait_does_not_hold_up_the_queue() {
        let budget = Rc::new(ByteBudget::default());
        let mut pool = LocalPool::new();
        let first = pool.run_until(budget.reserve(100, 100));
        let abandoned = {
            let budget = budget.clone();
            pool.spawner()
                .spawn_local_with_handle(async move { budget.reserve(100, 100).await })
                .unwrap()
        };
        let behind = {
            let budget = budget.clone();
            pool.spawner()
                .spawn_local_with_handle(async move { budget.reserve(40, 100).await })
                .unwrap()
        };
        pool.run_until_stalled();
        drop(abandoned);
        drop(first);
        let behind = pool.run_until(behind);
        assert_eq!(budget.in_use(), 40);
        drop(behind);
        // No limit: counted, never waits.
        let a = pool.run_until(budget.reserve(1 << 30, 0));
        let b = pool.run_until(budget.reserve(1 << 30, 0));
        assert_eq!(budget.in_use(), 2 << 30);
        drop((a, b));
    }
}
