//! The control thread: the one place where facts that must be global
//! (connection totals, per-IP counts) are merged.
//!
//! Shards never share state. Each shard sends its per-IP connection deltas
//! every [`CONTROL_TICK`]; the control thread folds them into one
//! [`GlobalView`] and pushes a fresh copy back to every shard, which picks it
//! up on its next tick.
//!
//! **Staleness bound:** a connection accepted or closed on one shard is
//! reflected in every shard's view within two ticks (one for the shard to
//! publish, one for the others to pick the merged view up), i.e. 2 x
//! `CONTROL_TICK` = 20 ms, plus however long a shard's event loop is kept
//! busy by a single task (the executor's preemption bound, 100 ms worst case
//! by glommio's default). Limits enforced against the view can therefore
//! overshoot by at most the connections accepted within that window.

use ahash::AHashMap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often shards publish deltas and pick up the merged view.
pub const CONTROL_TICK: Duration = Duration::from_millis(10);

/// What every shard knows about the whole process, at most two ticks old.
#[derive(Debug, Default, Clone)]
pub struct GlobalView {
    /// Bumped on every merge, so a shard can tell a new view from an old one.
    pub version: u64,
    /// Open connections on all shards together.
    pub connections: u64,
    /// Open connections per client address on all shards together.
    pub per_ip: AHashMap<IpAddr, u32>,
}

/// A shard's changes since its previous report.
pub(crate) struct ShardReport {
    pub(crate) ip_deltas: Vec<(IpAddr, i64)>,
}

pub(crate) struct ControlPlane {
    pub(crate) reports: Sender<ShardReport>,
    pub(crate) views: Vec<Receiver<Arc<GlobalView>>>,
    pub(crate) thread: JoinHandle<()>,
}

/// Starts the control thread for `shards` shards. It exits by itself once
/// every shard has dropped its report sender.
pub(crate) fn start(shards: usize) -> std::io::Result<ControlPlane> {
    let (report_tx, report_rx) = crossbeam_channel::unbounded::<ShardReport>();
    let mut view_txs = Vec::with_capacity(shards);
    let mut view_rxs = Vec::with_capacity(shards);
    for _ in 0..shards {
        // Bounded at one: a shard only ever wants the newest view.
        let (tx, rx) = crossbeam_channel::bounded(1);
        view_txs.push((tx, rx.clone()));
        view_rxs.push(rx);
    }
    let thread = std::thread::Builder::new()
        .name("chronik-control".into())
        .spawn(move || run(report_rx, view_txs))?;
    Ok(ControlPlane {
        reports: report_tx,
        views: view_rxs,
        thread,
    })
}

/// Each shard's view channel, with a receiver of our own so that a view the
/// shard has not picked up yet can be replaced by a newer one.
type ViewSlot = (Sender<Arc<GlobalView>>, Receiver<Arc<GlobalView>>);

fn run(reports: Receiver<ShardReport>, views: Vec<ViewSlot>) {
    let mut view = GlobalView::default();
    loop {
        let first = match reports.recv_timeout(Duration::from_secs(1)) {
            Ok(report) => report,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        merge(&mut view, first);
        while let Ok(report) = reports.try_recv() {
            merge(&mut view, report);
        }
        view.version += 1;
        let shared = Arc::new(view.clone());
        for (tx, stale) in &views {
            // Full means the shard has not picked up the previous view yet:
            // replace it, since only the newest one matters.
            if let Err(crossbeam_channel::TrySendError::Full(newest)) = tx.try_send(shared.clone()) {
                let _ = stale.try_recv();
                let _ = tx.try_send(newest);
            }
        }
    }
}

fn merge(view: &mut GlobalView, report: ShardReport) {
    for (ip, delta) in report.ip_deltas {
        let count = view.per_ip.entry(ip).or_insert(0);
        let next = (*count as i64 + delta).max(0);
        *count = next as u32;
        if next == 0 {
            view.per_ip.remove(&ip);
        }
        view.connections = (view.connections as i64 + delta).max(0) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_view_reaches_every_shard() {
        let plane = start(2).unwrap();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        plane
            .reports
            .send(ShardReport {
                ip_deltas: vec![(ip, 3)],
            })
            .unwrap();
        plane
            .reports
            .send(ShardReport {
                ip_deltas: vec![(ip, -1)],
            })
            .unwrap();
        let mut last = [0u64; 2];
        for (i, rx) in plane.views.iter().enumerate() {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(view) = rx.recv_timeout(Duration::from_millis(100)) {
                    last[i] = view.connections;
                    if view.connections == 2 {
                        assert_eq!(view.per_ip.get(&ip), Some(&2));
                        break;
                    }
                }
            }
        }
        assert_eq!(last, [2, 2]);
        drop(plane.reports);
        plane.thread.join().unwrap();
    }
}
