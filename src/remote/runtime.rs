//! The side thread that runs the object-store clients.
//!
//! `object_store`'s HTTP clients are tokio futures; the shards run glommio
//! and must never block on the network. One thread runs a small tokio
//! runtime; a shard hands it a future and awaits the answer through a
//! oneshot channel, whose wake-up glommio accepts from a foreign thread.

use futures::channel::oneshot;
use std::future::Future;
use std::io;
use std::thread::JoinHandle;

/// The side thread's name; etcd documents are never read from it (see
/// `metadata::ClusterStore`), since that would wait for itself.
pub(crate) const SIDE_THREAD_NAME: &str = "chronik-remote";

/// The runtime thread; stops when dropped (queued work is abandoned, and
/// whoever awaited it sees the side runtime gone).
pub(crate) struct SideRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SideRuntime {
    pub(crate) fn start() -> io::Result<SideRuntime> {
        // reqwest's TLS takes the process's default provider: the same
        // ring the Kafka listeners use (installing twice is harmless).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(SIDE_THREAD_NAME.into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(SideRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn handle(&self) -> SideHandle {
        SideHandle(self.handle.clone())
    }
}

impl Drop for SideRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where shards send object-store work.
#[derive(Clone, Debug)]
pub(crate) struct SideHandle(tokio::runtime::Handle);

/// The side runtime stopped before answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SideGone;

impl SideHandle {
    /// Runs `work` on the side thread; the returned future (awaitable from
    /// any executor) resolves to its output.
    pub(crate) fn run<F, T>(&self, work: F) -> impl Future<Output = Result<T, SideGone>> + 'static
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.0.spawn(async move {
            let _ = tx.send(work.await);
        });
        async move { rx.await.map_err(|_| SideGone) }
    }
}
