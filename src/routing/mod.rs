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
    Remote { broker: i32, leader_epoch: i32 },
    /// Nobody here or known leads it.
    NotLeader,
}

/// One immutable view of who leads what.
#[derive(Debug)]
pub(crate) struct RoutingTable {
    shards: usize,
    /// Cluster mode: leadership as etcd last said; `None` on a single
    /// broker, which leads everything at epoch 0.
    cluster: Option<ClusterRoutes>,
}

/// A partition's leader and the epoch it leads at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leader {
    pub node: i32,
    pub epoch: i32,
    /// The etcd revision the leader key was written at: this leadership,
    /// as the WAL's commits compare it.
    pub revision: i64,
}

/// A live broker as it registered: where each of its listeners is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerEndpoints {
    pub node: i32,
    pub rack: Option<String>,
    /// (listener name, host, port).
    pub listeners: Vec<(String, String, u16)>,
}

impl BrokerEndpoints {
    /// Where a client of `listener` reaches this broker; the first
    /// listener if it registered none of that name.
    pub(crate) fn on(&self, listener: &str) -> Option<(&str, u16)> {
        self.listeners
            .iter()
            .find(|(name, _, _)| name == listener)
            .or(self.listeners.first())
            .map(|(_, host, port)| (host.as_str(), *port))
    }
}

/// Cluster mode's view, published by the membership agent.
#[derive(Debug, Clone)]
pub(crate) struct ClusterRoutes {
    /// This broker.
    pub node: i32,
    pub controller: i32,
    /// Live brokers, by node id.
    pub brokers: Vec<BrokerEndpoints>,
    pub leaders: HashMap<TopicPartition, Leader>,
    /// This broker leads nothing from then on unless its lease is renewed
    /// first: a broker paused past its lease's end (SIGSTOP, a long GC-like
    /// stall, a partition from etcd) must not answer as leader before its
    /// agent has run and learnt what changed meanwhile.
    pub lease_valid_until: std::time::Instant,
    /// Set while etcd cannot be reached, to when the agent last tried:
    /// then nobody can take this broker's partitions, and it leads on
    /// past the lease's end as long as that attempt is recent (within
    /// `outage_grace`).
    pub etcd_unreachable_at: Option<std::time::Instant>,
    pub outage_grace: std::time::Duration,
}

impl ClusterRoutes {
    /// Whether this broker may act as the leader of what it leads now.
    fn leading(&self) -> bool {
        let now = std::time::Instant::now();
        now < self.lease_valid_until
            || self
                .etcd_unreachable_at
                .is_some_and(|at| now < at + self.outage_grace)
    }
}

impl RoutingTable {
    fn route(&self, tp: &TopicPartition) -> Route {
        if tp.partition < 0 {
            return Route::NotLeader;
        }
        let Some(cluster) = &self.cluster else {
            return Route::Local {
                shard: owner_shard(tp, self.shards),
                leader_epoch: 0,
            };
        };
        match cluster.leaders.get(tp) {
            Some(leader) if leader.node == cluster.node => {
                if !cluster.leading() {
                    return Route::NotLeader;
                }
                Route::Local {
                    shard: owner_shard(tp, self.shards),
                    leader_epoch: leader.epoch,
                }
            }
            Some(leader) => Route::Remote {
                broker: leader.node,
                leader_epoch: leader.epoch,
            },
            None => Route::NotLeader,
        }
    }

    /// Cluster mode's view; `None` on a single broker.
    pub(crate) fn cluster(&self) -> Option<&ClusterRoutes> {
        self.cluster.as_ref()
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
    /// Cluster mode: the leader epoch each offsets partition's groups were
    /// loaded at here (-1: not loaded). A group is coordinated here only
    /// once its partition is loaded at the epoch this broker leads it at.
    offsets_loaded: Vec<std::sync::atomic::AtomicI32>,
}

fn not_loaded() -> Vec<std::sync::atomic::AtomicI32> {
    (0..OFFSETS_PARTITIONS)
        .map(|_| std::sync::atomic::AtomicI32::new(-1))
        .collect()
}

impl PartitionRouter {
    pub(crate) fn single_broker(shards: usize) -> PartitionRouter {
        PartitionRouter {
            table: ArcSwap::from_pointee(RoutingTable {
                shards: shards.max(1),
                cluster: None,
            }),
            offsets_loaded: not_loaded(),
        }
    }

    /// Cluster mode: nothing is led here until the agent says otherwise.
    pub(crate) fn cluster(shards: usize, node: i32) -> PartitionRouter {
        PartitionRouter {
            table: ArcSwap::from_pointee(RoutingTable {
                shards: shards.max(1),
                cluster: Some(ClusterRoutes {
                    node,
                    controller: -1,
                    brokers: Vec::new(),
                    leaders: HashMap::new(),
                    lease_valid_until: std::time::Instant::now(),
                    etcd_unreachable_at: None,
                    outage_grace: std::time::Duration::ZERO,
                }),
            }),
            offsets_loaded: not_loaded(),
        }
    }

    /// Publishes what the cluster agent learnt (cluster mode only).
    pub(crate) fn publish(&self, routes: ClusterRoutes) {
        let shards = self.table.load().shards;
        self.table.store(std::sync::Arc::new(RoutingTable {
            shards,
            cluster: Some(routes),
        }));
    }

    /// The current view, for answers that list brokers and leaders.
    pub(crate) fn snapshot(&self) -> std::sync::Arc<RoutingTable> {
        self.table.load_full()
    }

    /// The shard whose log a partition lives in on this broker, whoever
    /// leads it: group and transaction coordinators keep their partitions'
    /// state on that shard, and take leadership as it comes and goes.
    pub(crate) fn shard_of(&self, tp: &TopicPartition) -> usize {
        owner_shard(tp, self.table.load().shards)
    }

    pub(crate) fn route(&self, tp: &TopicPartition) -> Route {
        self.table.load().route(tp)
    }

    /// Where `group_id`'s coordinator runs: wherever its offsets
    /// partition is led (in cluster mode, here only once its groups are
    /// loaded at this leadership's epoch: until then NotLeader, which
    /// clients are told as COORDINATOR_NOT_AVAILABLE and retry).
    pub(crate) fn group_coordinator(&self, group_id: &str) -> Route {
        self.offsets_route(offsets_partition(group_id))
    }

    /// Where offsets partition `partition` is served: here only once its
    /// groups are loaded at the epoch this broker leads it at (cluster
    /// mode), else as any partition.
    pub(crate) fn offsets_route(&self, partition: u32) -> Route {
        let route = self.route(&TopicPartition::new(OFFSETS_TOPIC, partition as i32));
        match route {
            Route::Local { leader_epoch, .. }
                if self.table.load().cluster.is_some()
                    && self.offsets_loaded_at(partition) != leader_epoch =>
            {
                Route::NotLeader
            }
            route => route,
        }
    }

    /// The epoch offsets partition `partition`'s groups were loaded at.
    pub(crate) fn offsets_loaded_at(&self, partition: u32) -> i32 {
        self.offsets_loaded
            .get(partition as usize)
            .map_or(-1, |e| e.load(std::sync::atomic::Ordering::Acquire))
    }

    pub(crate) fn set_offsets_loaded(&self, partition: u32, epoch: i32) {
        if let Some(e) = self.offsets_loaded.get(partition as usize) {
            e.store(epoch, std::sync::atomic::Ordering::Release);
        }
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
