//! Producer ids, unique across restarts: handed out from blocks whose end
//! is persisted before any id in them is used (a crash skips the rest of
//! a block).

use crate::storage::{run_blocking, StorageError};
use glommio::sync::Semaphore;
use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};

const PRODUCER_ID_BLOCK: i64 = 1000;

pub(crate) struct ProducerIds {
    path: PathBuf,
    next: Cell<i64>,
    block_end: Cell<i64>,
    /// One block persisted at a time; allocations wait for it.
    persisting: Semaphore,
}

impl ProducerIds {
    /// Blocking (start-up): reads the persisted block end.
    pub(crate) fn open(dir: &Path) -> io::Result<ProducerIds> {
        let path = dir.join("producer-id-block");
        let next = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a number", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(ProducerIds {
            path,
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
            let end = self.next.get() + PRODUCER_ID_BLOCK;
            let path = self.path.clone();
            run_blocking("persisting the producer-id block", move || {
                crate::log::index::write_file(&path, end.to_string().as_bytes())
            })
            .await?;
            self.block_end.set(end);
        }
        let id = self.next.get();
        self.next.set(id + 1);
        Ok(id)
    }
}
