//! Per-shard counters that other threads may read (tests, the metrics
//! scrape) but only the owning shard writes, so no lock and no contended
//! cache line on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

/// Written by exactly one shard, read by anyone.
#[derive(Debug, Default)]
pub struct ShardCounters {
    pub connections_accepted: AtomicU64,
    pub connections_active: AtomicU64,
    pub accept_errors: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Refused at accept, by reason (see `Rejection`).
    pub rejected_max_connections: AtomicU64,
    pub rejected_max_per_ip: AtomicU64,
    pub rejected_rate_limit: AtomicU64,
    pub rejected_banned: AtomicU64,
    /// Closed after IDLE timeout without a whole request.
    pub idle_closed: AtomicU64,
}

/// A point-in-time copy of one shard's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub shard: usize,
    pub connections_accepted: u64,
    pub connections_active: u64,
    pub accept_errors: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub rejected: [u64; 4],
    pub idle_closed: u64,
}

/// Adds `n` to a counter that only the calling shard writes. A plain
/// load + store avoids the locked read-modify-write that `fetch_add` costs;
/// it is exact because there is a single writer.
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

pub(crate) fn drop_one(counter: &AtomicU64) {
    counter.store(
        counter.load(Ordering::Relaxed).saturating_sub(1),
        Ordering::Relaxed,
    );
}

impl ShardCounters {
    pub fn snapshot(&self, shard: usize) -> ShardStats {
        ShardStats {
            shard,
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_active: self.connections_active.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            rejected: [
                self.rejected_max_connections.load(Ordering::Relaxed),
                self.rejected_max_per_ip.load(Ordering::Relaxed),
                self.rejected_rate_limit.load(Ordering::Relaxed),
                self.rejected_banned.load(Ordering::Relaxed),
            ],
            idle_closed: self.idle_closed.load(Ordering::Relaxed),
        }
    }
}
