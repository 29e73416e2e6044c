//! Group commit for acks=all: producers on one shard that need their data
//! durable share fdatasync calls, per file. While a file's sync runs on
//! the blocking pool, requests for that file queue; the next sync of the
//! file answers them all. Files sync independently and in parallel (up to
//! the pool's threads), so a slow sync of one partition does not hold the
//! acks=all answers of another.

use futures::channel::oneshot;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

type Waiter = oneshot::Sender<Result<(), String>>;

/// One file's queue: whether a sync is running, and who waits for the
/// next one (their data was written before they asked, which may be after
/// the running sync began).
#[derive(Default)]
struct FileQueue {
    running: bool,
    waiting: Vec<Waiter>,
}

#[derive(Default)]
pub(crate) struct GroupCommit {
    /// Keyed by the file's address: one entry per open segment file.
    files: RefCell<HashMap<usize, FileQueue>>,
    /// fdatasync calls made.
    pub syncs: Arc<AtomicU64>,
}

fn key(file: &Arc<File>) -> usize {
    Arc::as_ptr(file) as usize
}

impl GroupCommit {
    /// Returns once an internal partition's append (see
    /// `KeyedLog::append`) is durable: the segment it closed, if any,
    /// finished off the shard, then its file synced.
    pub(crate) async fn sync_appended(
        self: &Rc<Self>,
        (file, sealed): (Arc<File>, Option<crate::log::Sealed>),
    ) -> io::Result<()> {
        if let Some(sealed) = sealed {
            super::run_blocking("sealing an internal segment", move || sealed.finish())
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        self.sync(file).await
    }

    /// Returns once `file` has been fdatasync'ed after this call started.
    pub(crate) async fn sync(self: &Rc<Self>, file: Arc<File>) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut files = self.files.borrow_mut();
            let queue = files.entry(key(&file)).or_default();
            queue.waiting.push(tx);
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            glommio::spawn_local(self.clone().run(file)).detach();
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(_) => Err(io::Error::other("sync abandoned")),
        }
    }

    /// Syncs `file` for everyone waiting, round after round, until nobody
    /// waits; then forgets the file.
    async fn run(self: Rc<Self>, file: Arc<File>) {
        loop {
            let waiters = {
                let mut files = self.files.borrow_mut();
                let Some(queue) = files.get_mut(&key(&file)) else {
                    return;
                };
                if queue.waiting.is_empty() {
                    files.remove(&key(&file));
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            let syncing = file.clone();
            let result = glommio::executor()
                .spawn_blocking(move || syncing.sync_data())
                .await
                .map_err(|e| e.to_string());
            self.syncs.fetch_add(1, Ordering::Relaxed);
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }
}
