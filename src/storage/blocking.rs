//! Disk work off the shard thread: the executor's blocking pool.

use super::StorageError;

/// Runs `work` on the shard's blocking pool; the shard keeps serving
/// meanwhile. `what` names the work in the error.
pub(crate) async fn run_blocking<T, F>(what: &'static str, work: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    glommio::executor()
        .spawn_blocking(work)
        .await
        .map_err(|e| StorageError::io(what, &e))
}
