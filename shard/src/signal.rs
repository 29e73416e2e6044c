//! A one-shot, shard-local broadcast: "stop reading", "force-close". Many
//! tasks wait on one signal; firing it wakes them all at once.

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use std::cell::Cell;
use std::rc::Rc;

/// The waiting side; clone it into every task that must react.
#[derive(Clone)]
pub struct Signal {
    fired: Rc<Cell<bool>>,
    rx: Shared<oneshot::Receiver<()>>,
}

/// The firing side. Dropping it without firing also releases the waiters,
/// so a shard that unwinds never leaves its connections hanging.
pub struct SignalTrigger {
    fired: Rc<Cell<bool>>,
    tx: Option<oneshot::Sender<()>>,
}

impl Signal {
    pub fn new() -> (SignalTrigger, Signal) {
        let (tx, rx) = oneshot::channel();
        let fired = Rc::new(Cell::new(false));
        (
            SignalTrigger {
                fired: fired.clone(),
                tx: Some(tx),
            },
            Signal {
                fired,
                rx: rx.shared(),
            },
        )
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once the signal fires (or its trigger is dropped).
    pub async fn wait(&self) {
        // Err(Canceled) means the trigger went away: same meaning.
        let _ = self.rx.clone().await;
    }
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signal(fired: {})", self.is_fired())
    }
}

impl std::fmt::Debug for SignalTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignalTrigger(fired: {})", self.fired.get())
    }
}

impl SignalTrigger {
    pub fn fire(&mut self) {
        self.fired.set(true);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for SignalTrigger {
    fn drop(&mut self) {
        self.fired.set(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_wakes_every_waiter() {
        let (mut trigger, signal) = Signal::new();
        let a = signal.clone();
        let b = signal.clone();
        assert!(!signal.is_fired());
        trigger.fire();
        futures::executor::block_on(async {
            a.wait().await;
            b.wait().await;
        });
        assert!(signal.is_fired());
    }

    #[test]
    fn dropping_the_trigger_releases_waiters() {
        let (trigger, signal) = Signal::new();
        drop(trigger);
        futures::executor::block_on(signal.wait());
        assert!(signal.is_fired());
    }
}
