//! Which live broker should lead each partition: a pure function of the
//! partitions, who leads them now and the live brokers, so every broker
//! works out the same answer from the same etcd view without asking
//! anyone.
//!
//! Per topic, each broker leads at most its fair share (the partition
//! count over the live brokers, rounded up), and a partition stays with
//! a live leader unless that leader is over its share: a broker that dies
//! moves only its own partitions, one that joins takes only its share.
//! Moving a partition costs its new leader a rebuild from the WAL, so
//! stability matters as much as balance.

use crate::topics::TopicPartition;
use std::collections::{BTreeMap, HashMap};

/// How much `node` wants `tp` (rendezvous hashing): breaks ties the same
/// way on every broker, and differently for each partition.
fn affinity(tp: &TopicPartition, node: i32) -> u32 {
    let hash = crc32c::crc32c_append(crc32c::crc32c(tp.topic.as_bytes()), &tp.partition.to_be_bytes());
    crc32c::crc32c_append(hash, &node.to_be_bytes())
}

/// The leader each partition should have, among `live` brokers, given
/// `current` leaders (a leader not in `live` counts as none).
pub(crate) fn desired_leaders(
    partitions: &[TopicPartition],
    current: &HashMap<TopicPartition, i32>,
    live: &[i32],
) -> HashMap<TopicPartition, i32> {
    let mut desired = HashMap::with_capacity(partitions.len());
    if live.is_empty() {
        return desired;
    }
    let mut by_topic: BTreeMap<&str, Vec<&TopicPartition>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp);
    }
    for (_, mut topic) in by_topic {
        topic.sort_by_key(|tp| tp.partition);
        let share = topic.len().div_ceil(live.len());
        let mut led: BTreeMap<i32, Vec<&TopicPartition>> = live.iter().map(|n| (*n, Vec::new())).collect();
        let mut unassigned = Vec::new();
        for tp in &topic {
            match current.get(*tp).and_then(|n| led.get_mut(n)) {
                Some(list) => list.push(tp),
                None => unassigned.push(*tp),
            }
        }
        // Over its share: a broker keeps the partitions it wants most.
        for (node, list) in led.iter_mut() {
            if list.len() > share {
                list.sort_by_key(|tp| std::cmp::Reverse(affinity(tp, *node)));
                unassigned.extend(list.drain(share..));
            }
        }
        unassigned.sort_by_key(|tp| tp.partition);
        for tp in unassigned {
            let Some(node) = live
                .iter()
                .copied()
                .min_by_key(|n| (led[n].len(), std::cmp::Reverse(affinity(tp, *n))))
            else {
                continue;
            };
            if let Some(list) = led.get_mut(&node) {
                list.push(tp);
            }
        }
        for (node, list) in led {
            for tp in list {
                desired.insert(tp.clone(), node);
            }
        }
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, n: i32) -> Vec<TopicPartition> {
        (0..n).map(|p| TopicPartition::new(name, p)).collect()
    }

    fn counts(desired: &HashMap<TopicPartition, i32>, live: &[i32]) -> Vec<usize> {
        live.iter()
            .map(|n| desired.values().filter(|v| *v == n).count())
            .collect()
    }

    #[test]
    fn a_new_topic_spreads_evenly() {
        let parts = topic("events", 12);
        let desired = desired_leaders(&parts, &HashMap::new(), &[1, 2, 3]);
        assert_eq!(counts(&desired, &[1, 2, 3]), vec![4, 4, 4]);
        let again = desired_leaders(&parts, &HashMap::new(), &[1, 2, 3]);
        assert_eq!(desired, again, "every broker computes the same answer");
    }

    #[test]
    fn a_dead_broker_moves_only_its_own_partitions() {
        let parts = topic("events", 12);
        let before = desired_leaders(&parts, &HashMap::new(), &[1, 2, 3]);
        let after = desired_leaders(&parts, &before, &[1, 2]);
        for (tp, leader) in &before {
            if *leader != 3 {
                assert_eq!(after[tp], *leader, "{tp} moved");
            }
        }
        assert_eq!(counts(&after, &[1, 2]), vec![6, 6]);
    }

    #[test]
    fn a_joining_broker_takes_only_its_share() {
        let parts = topic("events", 12);
        let before = desired_leaders(&parts, &HashMap::new(), &[1, 2, 3]);
        let after = desired_leaders(&parts, &before, &[1, 2, 3, 4]);
        assert_eq!(counts(&after, &[1, 2, 3, 4]), vec![3, 3, 3, 3]);
        let moved = parts.iter().filter(|tp| before[*tp] != after[*tp]).count();
        assert_eq!(moved, 3);
    }

    #[test]
    fn no_live_broker_no_leader() {
        assert!(desired_leaders(&topic("t", 3), &HashMap::new(), &[]).is_empty());
    }
}
