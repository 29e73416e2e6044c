//! `chronik-shard`: the thread-per-core runtime under Chronik Ingest.
//!
//! It knows nothing of Kafka. It starts one pinned glommio executor per shard,
//! gives each its own SO_REUSEPORT listener so the kernel spreads connections
//! without an acceptor thread, keeps each shard's connection table on that
//! shard, merges the few facts that must be global on a control thread, and
//! shuts everything down in order: stop accepting, drain, force-close, join.
//!
//! The one thing a user of this crate supplies is a [`ShardService`]: built
//! once on every shard, it is handed each accepted [`Connection`].

mod admission;
mod connection_table;
mod control;
mod listener;
mod runtime;
mod signal;
mod stats;
mod uring_probe;

pub use admission::{ConnectionLimits, IpNet, LiveLimits, Rejection};
pub use connection_table::{ConnectionEntry, ConnectionTable};
pub use control::{GlobalView, CONTROL_TICK};
pub use runtime::{
    Connection, Runtime, RuntimeConfig, ShardContext, ShardService, ShardUnreachable, StartError, Stopper,
};
pub use signal::{Signal, SignalTrigger};
pub use stats::{bump, ShardCounters, ShardStats};
pub use uring_probe::{probe_io_uring, UringUnavailable};

/// Which of `shard_count` shards owns the item whose stable hash is `hash`.
///
/// Pure and total, so every shard computes the same owner for the same key
/// without asking anyone (glommio's sharding example does the same).
pub fn owner_shard(hash: u64, shard_count: usize) -> usize {
    if shard_count <= 1 {
        return 0;
    }
    (hash % shard_count as u64) as usize
}
