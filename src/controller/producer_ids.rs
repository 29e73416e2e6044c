//! Producer ids, unique across restarts: handed out from blocks whose end
//! is persisted before any id in them is used (a crash skips the rest of
//! a block).

use crate::metadata::{documents, MetadataStore};
use crate::storage::{run_blocking, StorageError};
use glommio::sync::Semaphore;
use std::cell::Cell;
use std::io;
use std::sync::Arc;

const PRODUCER_ID_BLOCK: i64 = 1000;

/// Its document holds the end of the last block handed out, as a decimal
/// number; every id below it may be in use.
pub(crate) struct ProducerIds {
    store: Arc<dyn MetadataStore>,
    next: Cell<i64>,
    block_end: Cell<i64>,
    /// One block persisted at a time; allocations wait for it.
    persisting: Semaphore,
}

impl ProducerIds {
    pub(crate) fn with_store(store: Arc<dyn MetadataStore>) -> io::Result<ProducerIds> {
        let name = documents::PRODUCER_ID_BLOCK;
        let next = match store.get(name)? {
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.trim().parse::<i64>().ok())
                .filter(|end| *end >= 0)
                .ok_or_else(|| store.invalid(name, "not a producer id"))?,
            None => 0,
        };
        Ok(ProducerIds {
            store,
            next: Cell::new(next),
            block_end: Cell::new(next),
            persisting: Semaphore::new(1),
        })
    }

    pub(crate) async fn allocate(&self) -> Result<i64, StorageError> {
        let _turn =
            self.persisting.acquire_permit(1).await.map_err(|e| {
                StorageError::io("allocating a producer id", &io::Error::other(e.to_string()))
            })?;
        if self.next.get() >= self.block_end.get() {
            // Durable (the store syncs the directory too) before any id
            // in the block is handed out.
            let store = self.store.clone();
            let from = self.next.get();
            let start = run_blocking("persisting the producer-id block", move || {
                claim_block(&*store, from)
            })
            .await?;
            self.next.set(start);
            self.block_end.set(start + PRODUCER_ID_BLOCK);
        }
        let id = self.next.get();
        self.next.set(id + 1);
        Ok(id)
    }
}

/// Claims the next block of ids and returns its first. On one broker the
/// block follows this process's own; in cluster mode every broker claims
/// from the stored end, which only one of them can move at a time.
fn claim_block(store: &dyn MetadataStore, from: i64) -> io::Result<i64> {
    const ATTEMPTS: usize = 32;
    let name = documents::PRODUCER_ID_BLOCK;
    if !store.shared(name) {
        let end = from + PRODUCER_ID_BLOCK;
        store.put(name, end.to_string().as_bytes())?;
        return Ok(from);
    }
    for _ in 0..ATTEMPTS {
        let stored = store.get(name)?;
        let start = match &stored {
            Some(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.trim().parse::<i64>().ok())
                .filter(|end| *end >= 0)
                .ok_or_else(|| store.invalid(name, "not a producer id"))?,
            None => 0,
        };
        let end = start + PRODUCER_ID_BLOCK;
        if store.replace(name, stored.as_deref(), end.to_string().as_bytes())? {
            return Ok(start);
        }
    }
    Err(io::Error::other(format!(
        "{}: claimed by other brokers {ATTEMPTS} times in a row",
        store.locate(name)
    )))
}
