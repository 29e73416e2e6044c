//! Shard-wide backpressure: when more than BACKPRESSURE_THRESHOLD requests
//! are pending on a shard, its connections stop reading new frames until
//! the count drains back to the threshold. Nothing accepted is dropped;
//! each move into backpressure is counted.

use futures::channel::oneshot;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub(crate) struct Backpressure {
    /// Shared by every shard: a dynamic broker config changes it for all.
    threshold: Arc<AtomicUsize>,
    pending: Cell<usize>,
    engaged: Cell<bool>,
    waiting: RefCell<Vec<oneshot::Sender<()>>>,
}

impl Backpressure {
    pub(crate) fn new(threshold: Arc<AtomicUsize>) -> Backpressure {
        Backpressure {
            threshold,
            pending: Cell::new(0),
            engaged: Cell::new(false),
            waiting: RefCell::default(),
        }
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
