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
use std::time::{Duration, Instant};

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
    /// Addresses banned for breaking the connection rate limit, and until when.
    pub bans: AHashMap<IpAddr, Instant>,
}

/// A shard's changes since its previous report.
#[derive(Default)]
pub(crate) struct ShardReport {
    pub(crate) ip_deltas: Vec<(IpAddr, i64)>,
    /// New connection attempts per address (rate-limited addresses only).
    pub(crate) attempts: Vec<(IpAddr, u32)>,
    /// Addresses this shard banned itself (its own bucket ran dry).
    pub(crate) bans: Vec<(IpAddr, Instant)>,
}

/// What the control thread enforces across shards: the live rate limit
/// and ban length, read on every merge.
pub(crate) type RatePolicy = Arc<crate::admission::LiveLimits>;

pub(crate) struct ControlPlane {
    pub(crate) reports: Sender<ShardReport>,
    pub(crate) views: Vec<Receiver<Arc<GlobalView>>>,
    pub(crate) thread: JoinHandle<()>,
}

/// Starts the control thread for `shards` shards. It exits by itself once
/// every shard has dropped its report sender.
pub(crate) fn start(shards: usize, policy: RatePolicy) -> std::io::Result<ControlPlane> {
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
        .spawn(move || run(report_rx, view_txs, policy))?;
    Ok(ControlPlane {
        reports: report_tx,
        views: view_rxs,
        thread,
    })
}

/// Each shard's view channel, with a receiver of our own so that a view the
/// shard has not picked up yet can be replaced by a newer one.
type ViewSlot = (Sender<Arc<GlobalView>>, Receiver<Arc<GlobalView>>);

/// Connection attempts per address over the last second, in 100 ms slots.
#[derive(Default)]
struct Window {
    slots: [u32; 10],
    slot_started: Option<Instant>,
    current: usize,
}

const SLOT: Duration = Duration::from_millis(100);

impl Window {
    fn add(&mut self, now: Instant, count: u32) -> u32 {
        match self.slot_started {
            None => self.slot_started = Some(now),
            Some(started) => {
                let elapsed = (now.duration_since(started).as_millis() / SLOT.as_millis()) as usize;
                for step in 1..=elapsed.min(10) {
                    self.slots[(self.current + step) % 10] = 0;
                }
                if elapsed > 0 {
                    self.current = (self.current + elapsed) % 10;
                    self.slot_started = Some(started + SLOT * elapsed as u32);
                }
            }
        }
        self.slots[self.current] += count;
        self.slots.iter().sum()
    }
}

fn run(reports: Receiver<ShardReport>, views: Vec<ViewSlot>, policy: RatePolicy) {
    let mut view = GlobalView::default();
    let mut windows: AHashMap<IpAddr, Window> = AHashMap::new();
    loop {
        // Wake for the next ban expiry even when no shard reports.
        let next_expiry = view
            .bans
            .values()
            .min()
            .map(|t| t.saturating_duration_since(Instant::now()));
        let wait = next_expiry
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(1), Duration::from_secs(1));
        let mut changed = false;
        match reports.recv_timeout(wait) {
            Ok(report) => {
                changed |= merge(&mut view, &mut windows, &policy, report);
                while let Ok(report) = reports.try_recv() {
                    changed |= merge(&mut view, &mut windows, &policy, report);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let before = view.bans.len();
        view.bans.retain(|_, until| *until > now);
        changed |= view.bans.len() != before;
        windows.retain(|_, w| {
            w.slot_started
                .is_some_and(|s| now.duration_since(s) < Duration::from_secs(2))
        });
        if !changed {
            continue;
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

/// Folds a report into the view; true if the view changed.
fn merge(
    view: &mut GlobalView,
    windows: &mut AHashMap<IpAddr, Window>,
    policy: &RatePolicy,
    report: ShardReport,
) -> bool {
    let now = Instant::now();
    let mut changed = !report.ip_deltas.is_empty() || !report.bans.is_empty();
    for (ip, delta) in report.ip_deltas {
        let count = view.per_ip.entry(ip).or_insert(0);
        let next = (*count as i64 + delta).max(0);
        *count = next as u32;
        if next == 0 {
            view.per_ip.remove(&ip);
        }
        view.connections = (view.connections as i64 + delta).max(0) as u64;
    }
    for (ip, until) in report.bans {
        let entry = view.bans.entry(ip).or_insert(until);
        *entry = (*entry).max(until);
    }
    let per_second = policy.rate_limit();
    if per_second > 0 {
        for (ip, attempts) in report.attempts {
            let in_last_second = windows.entry(ip).or_default().add(now, attempts);
            if in_last_second > per_second && !view.bans.contains_key(&ip) {
                view.bans.insert(ip, now + policy.ban_duration());
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_view_reaches_every_shard() {
        let limits = crate::admission::ConnectionLimits {
            rate_limit: 5,
            ban_duration: Duration::from_millis(300),
            ..Default::default()
        };
        let plane = start(2, Arc::new(crate::admission::LiveLimits::new(&limits, None))).unwrap();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        plane
            .reports
            .send(ShardReport {
                ip_deltas: vec![(ip, 3)],
                ..Default::default()
            })
            .unwrap();
        plane
            .reports
            .send(ShardReport {
                ip_deltas: vec![(ip, -1)],
                ..Default::default()
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
        // Six attempts within a second from one address: banned on every
        // shard, and the ban lifts by itself.
        let noisy: IpAddr = "10.0.0.9".parse().unwrap();
        plane
            .reports
            .send(ShardReport {
                attempts: vec![(noisy, 3)],
                ..Default::default()
            })
            .unwrap();
        plane
            .reports
            .send(ShardReport {
                attempts: vec![(noisy, 3)],
                ..Default::default()
            })
            .unwrap();
        for rx in &plane.views {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let view = rx.recv_timeout(Duration::from_secs(5)).unwrap();
                if view.bans.contains_key(&noisy) {
                    break;
                }
                assert!(std::time::Instant::now() < deadline);
            }
        }
        for rx in &plane.views {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let view = rx.recv_timeout(Duration::from_secs(5)).unwrap();
                if !view.bans.contains_key(&noisy) {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "ban never expired");
            }
        }
        drop(plane.reports);
        plane.thread.join().unwrap();
    }
}
