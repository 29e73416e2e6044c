//! What every cleaning on a shard does, whatever log it cleans (a
//! compacted topic's partition or an internal one): the rewrite on a
//! thread of its own, so neither the shard nor its blocking pool waits for
//! it; the install on the shard; the leftovers off it.

use crate::log::cleaner::{CleanJob, CleanResult};
use crate::log::keyed_log::KeyedLog;
use crate::log::Installed;
use crate::storage::run_blocking;
use futures::channel::oneshot;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// How a shard's cleaner works (LOG_CLEANER_* settings).
#[derive(Debug, Clone)]
pub(crate) struct CleanerSettings {
    pub map_budget_bytes: usize,
    /// 0: unpaced.
    pub io_bytes_per_second: u64,
}

impl CleanerSettings {
    /// A pace for one cleaning, counted from its own start: an idle
    /// cleaner earns no credit to burst with later.
    pub(crate) fn throttle(&self) -> std::sync::Arc<crate::log::cleaner::Throttle> {
        std::sync::Arc::new(crate::log::cleaner::Throttle::new(self.io_bytes_per_second))
    }
}

/// One cleaning's figures, for the metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CleanReport {
    pub read: u64,
    pub written: u64,
    pub took: Duration,
}

/// Runs `job` on a thread named for the shard; `None` (logged) if it
/// could not run or failed (the next round tries again).
pub(crate) async fn rewrite(shard: usize, what: &str, job: CleanJob) -> Option<CleanResult> {
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("cleaner-{shard}"))
        .spawn(move || {
            let _ = tx.send(crate::log::cleaner::clean(&job));
        });
    if let Err(e) = spawned {
        error!(log = what, error = %e, "cannot start the cleaner thread");
        return None;
    }
    match rx.await {
        Ok(Ok(result)) => Some(result),
        Ok(Err(e)) => {
            error!(log = what, error = %e, "cleaning failed; the next round tries again");
            None
        }
        Err(_) => None,
    }
}

/// After the install: the replaced files removed and the checkpoint
/// stored off the shard; the cleaning logged and reported.
pub(crate) async fn finish(
    what: String,
    installed: Result<Installed, impl std::fmt::Display>,
    figures: (u64, u64, usize, f64),
    started: Instant,
) -> Option<CleanReport> {
    let installed = match installed {
        Ok(installed) => installed,
        Err(e) => {
            error!(log = %what, error = %e, "installing a cleaned segment failed; the next start finishes it");
            return None;
        }
    };
    let swaps = installed.swaps;
    if let Err(e) = run_blocking("finishing a cleaning", move || installed.finish()).await {
        warn!(log = %what, error = %e, "removing replaced segments failed; the next start does");
    }
    let (read, written, keys, dirty_ratio) = figures;
    let report = CleanReport {
        read,
        written,
        took: started.elapsed(),
    };
    info!(log = %what, dirty_ratio = format!("{dirty_ratio:.2}"), keys, segments = swaps,
        read_bytes = read, written_bytes = written, took_ms = report.took.as_millis() as u64, "cleaned");
    Some(report)
}

/// What owns an internal partition (the offsets store, the transaction
/// state) lends the cleaner its log.
pub(crate) trait InternalLog {
    fn keyed(&self) -> &KeyedLog;
    fn keyed_mut(&mut self) -> &mut KeyedLog;
}

impl InternalLog for KeyedLog {
    fn keyed(&self) -> &KeyedLog {
        self
    }
    fn keyed_mut(&mut self) -> &mut KeyedLog {
        self
    }
}

/// The per-topic gauges' figures (see `TopicLogStats`) of an internal
/// topic's partitions on this shard.
pub(crate) fn internal_log_stats<T: InternalLog>(logs: &RefCell<HashMap<u32, T>>) -> super::TopicLogStats {
    logs.borrow().values().fold((0, 0, 0, 0, 0), |sum, log| {
        let (end, size, (cleanable, dirty)) = log.keyed().stats();
        (sum.0 + end, sum.1 + size, 0, sum.3 + cleanable, sum.4 + dirty)
    })
}

/// Cleans the partition of `logs` (internal topic `topic`'s partitions on
/// this shard) that most needs it, if any is due.
pub(crate) async fn clean_dirtiest_internal<T: InternalLog>(
    shard: usize,
    topic: &str,
    logs: &RefCell<HashMap<u32, T>>,
    settings: &CleanerSettings,
) -> Option<CleanReport> {
    let (partition, candidate) = logs
        .borrow()
        .iter()
        .filter_map(|(n, log)| {
            let candidate = log
                .keyed()
                .clean_candidate(settings.map_budget_bytes, settings.throttle())?;
            Some((*n, candidate))
        })
        .max_by(|(_, a), (_, b)| {
            (a.overdue, a.dirty_ratio)
                .partial_cmp(&(b.overdue, b.dirty_ratio))
                .unwrap_or(std::cmp::Ordering::Equal)
        })?;
    let what = format!("{topic}-{partition}");
    let started = Instant::now();
    let result = rewrite(shard, &what, candidate.job).await?;
    let figures = (
        result.bytes_read,
        result.bytes_written,
        result.keys,
        candidate.dirty_ratio,
    );
    let installed = logs
        .borrow_mut()
        .get_mut(&partition)?
        .keyed_mut()
        .install_cleaned(result);
    finish(what, installed, figures, started).await
}
