//! The broker's own per-shard counters (the runtime keeps connection and
//! byte counts). Only the owning shard writes; anyone may read.

use chronik_shard::ShardStats;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct BrokerCounters {
    pub requests: AtomicU64,
    /// Malformed frames and requests the broker cannot answer (unknown api
    /// key or version, undecodable header or body): each closed a connection.
    pub frame_errors: AtomicU64,
    /// Connections closed at once for breaking their address's
    /// connection_creation_rate quota.
    pub connection_quota_rejected: AtomicU64,
}

/// One shard's counters at a point in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardSnapshot {
    pub runtime: ShardStats,
    pub requests: u64,
    pub frame_errors: u64,
}

impl BrokerCounters {
    pub(crate) fn snapshot(&self, runtime: ShardStats) -> ShardSnapshot {
        ShardSnapshot {
            runtime,
            requests: self.requests.load(Ordering::Relaxed),
            frame_errors: self.frame_errors.load(Ordering::Relaxed),
        }
    }
}
