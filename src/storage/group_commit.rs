//! Group commit for acks=all: producers on one shard that need their data
//! durable share fdatasync calls. While one round of syncs runs on a
//! blocking thread, new requests queue; the next round syncs every file
//! they touched once and answers them all.

use futures::channel::oneshot;
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub(crate) struct GroupCommit {
    files: RefCell<Vec<Arc<File>>>,
    waiters: RefCell<Vec<oneshot::Sender<Result<(), String>>>>,
    running: Cell<bool>,
    /// fdatasync calls made (one per file per round).
    pub syncs: Arc<AtomicU64>,
}

impl GroupCommit {
    /// Returns once `file` has been fdatasync'ed after this call started.
    pub(crate) async fn sync(self: &Rc<Self>, file: Arc<File>) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut files = self.files.borrow_mut();
            if !files.iter().any(|f| Arc::ptr_eq(f, &file)) {
                files.push(file);
            }
        }
        self.waiters.borrow_mut().push(tx);
        if !self.running.replace(true) {
            glommio::spawn_local(self.clone().run()).detach();
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(_) => Err(io::Error::other("sync abandoned")),
        }
    }

    async fn run(self: Rc<Self>) {
        loop {
            let files = std::mem::take(&mut *self.files.borrow_mut());
            let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
            if waiters.is_empty() {
                self.running.set(false);
                return;
            }
            let count = files.len() as u64;
            let result = glommio::executor()
                .spawn_blocking(move || {
                    for file in &files {
                        file.sync_data()?;
                    }
                    Ok::<(), io::Error>(())
                })
                .await
                .map_err(|e| e.to_string());
            self.syncs.fetch_add(count, Ordering::Relaxed);
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }
}
