//! Where a partition lives: the one place that computes ownership.
//!
//! Handlers ask the [`PartitionRouter`] for a topic-partition and get a
//! [`Route`]: local on shard S at leader epoch E, another broker (none
//! today; the cluster store will fill it), or not the leader. Work for a
//! partition then goes, as a typed operation (`partition::PartitionOp`), to the shard that owns
//! it (or, later, to the broker that does) through the partition layer's
//! client. The routing table is a snapshot read without a lock on every request,
//! like the topic catalog.

use crate::topics::TopicPartition;
use arc_swap::ArcSwap;
use std::collections::HashMap;

/// Partitions of the group-offsets space (Kafka's
/// offsets.topic.num.partitions): partition = crc32c(group id) % 50.
pub const OFFSETS_PARTITIONS: u32 = 50;
/// The internal topic whose partitions group coordinators follow.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Where one partition is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// This broker leads it; shard `shard` owns its log.
    Local { shard: usize, leader_epoch: i32 },
    /// Another broker leads it. Only cluster mode (partition leadership
    /// held in etcd) routes here; a single broker leads everything.
    #[allow(dead_code)]
    Remote { broker: i32, leader_epoch: i32 },
    /// Nobody here or known leads it.
    NotLeader,
}

/// One immutable view of who leads what.
#[derive(Debug)]
pub(crate) struct RoutingTable {
    shards: usize,
    /// Leader epochs that differ from the default 0 (none on one broker:
    /// its leadership never changes).
    epochs: HashMap<TopicPartition, i32>,
}

impl RoutingTable {
    fn route(&self, tp: &TopicPartition) -> Route {
        if tp.partition < 0 {
            return Route::NotLeader;
        }
        Route::Local {
            shard: owner_shard(tp, self.shards),
            leader_epoch: self.epochs.get(tp).copied().unwrap_or(0),
        }
    }
}

/// Which shard owns a partition's log: a stable hash of topic and
/// partition, the same on every shard and across restarts with the same
/// shard count. Private: everything else asks the router.
fn owner_shard(tp: &TopicPartition, shards: usize) -> usize {
    let hash = crc32c::crc32c_append(crc32c::crc32c(tp.topic.as_bytes()), &tp.partition.to_be_bytes());
    chronik_shard::owner_shard(u64::from(hash), shards)
}

/// The group-offsets partition that holds `group_id`'s state.
pub fn offsets_partition(group_id: &str) -> u32 {
    crc32c::crc32c(group_id.as_bytes()) % OFFSETS_PARTITIONS
}

/// Kafka's transaction.state.log.num.partitions default.
pub const TRANSACTION_STATE_PARTITIONS: u32 = 50;
/// The internal topic whose partitions transaction coordinators follow.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// The transaction-state partition that holds `transactional_id`'s state.
pub fn transaction_state_partition(transactional_id: &str) -> u32 {
    crc32c::crc32c(transactional_id.as_bytes()) % TRANSACTION_STATE_PARTITIONS
}

/// The routing snapshot every shard reads.
pub(crate) struct PartitionRouter {
    table: ArcSwap<RoutingTable>,
}

impl PartitionRouter {
    pub(crate) fn single_broker(shards: usize) -> PartitionRouter {
        PartitionRouter {
            table: ArcSwap::from_pointee(RoutingTable {
                shards: shards.max(1),
                epochs: HashMap::new(),
            }),
        }
    }

    pub(crate) fn route(&self, tp: &TopicPartition) -> Route {
        self.table.load().route(tp)
    }

    /// Where `group_id`'s coordinator runs: wherever its offsets
    /// partition is led.
    pub(crate) fn group_coordinator(&self, group_id: &str) -> Route {
        self.route(&group_partition(group_id))
    }

    /// Where `transactional_id`'s coordinator is: the leader of its
    /// transaction-state partition, as in Kafka.
    pub(crate) fn transaction_coordinator(&self, transactional_id: &str) -> Route {
        self.route(&TopicPartition::new(
            TRANSACTION_STATE_TOPIC,
            transaction_state_partition(transactional_id) as i32,
        ))
    }

    /// The shard that owns `tp` if this broker leads it.
    pub(crate) fn local_shard(&self, tp: &TopicPartition) -> Option<usize> {
        match self.route(tp) {
            Route::Local { shard, .. } => Some(shard),
            _ => None,
        }
    }
}

/// The offsets partition of `group_id`, as a topic-partition.
pub(crate) fn group_partition(group_id: &str) -> TopicPartition {
    TopicPartition::new(OFFSETS_TOPIC, offsets_partition(group_id) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_routes_to_one_stable_shard() {
        let router = PartitionRouter::single_broker(4);
        let tp = TopicPartition::new("events", 3);
        let first = router.route(&tp);
        assert!(matches!(first, Route::Local { shard, leader_epoch: 0 } if shard < 4));
        assert_eq!(router.route(&tp), first);
        // Spread: 64 partitions land on more than one shard.
        let shards: std::collections::HashSet<_> = (0..64)
            .filter_map(|p| router.local_shard(&TopicPartition::new("events", p)))
            .collect();
        assert!(shards.len() > 1);
    }

    #[test]
    fn a_group_follows_its_offsets_partition() {
        let router = PartitionRouter::single_broker(3);
        assert_eq!(
            router.group_coordinator("g"),
            router.route(&TopicPartition::new(OFFSETS_TOPIC, offsets_partition("g") as i32))
        );
    }
}
