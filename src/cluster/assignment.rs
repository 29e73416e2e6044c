//! Which live broker should lead a partition: a pure function of the
//! partition and the live brokers, so every broker works out the same
//! answer from the same etcd view without asking anyone.

use crate::topics::TopicPartition;

/// The broker that should lead `tp` among `live` (sorted, not empty).
/// A topic's partitions go round the brokers from a point its name picks,
/// so each topic is spread evenly (12 partitions on 3 brokers: 4 each)
/// and different topics start on different brokers.
pub(crate) fn preferred_leader(tp: &TopicPartition, live: &[i32]) -> Option<i32> {
    if live.is_empty() || tp.partition < 0 {
        return None;
    }
    let start = crc32c::crc32c(tp.topic.as_bytes()) as usize;
    let index = start.wrapping_add(tp.partition as usize) % live.len();
    Some(live[index])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_spreads_evenly_over_the_live_brokers() {
        let live = [1, 2, 3];
        let mut counts = [0; 3];
        for p in 0..12 {
            let leader = preferred_leader(&TopicPartition::new("events", p), &live).unwrap();
            counts[(leader - 1) as usize] += 1;
        }
        assert_eq!(counts, [4, 4, 4]);
        assert_eq!(preferred_leader(&TopicPartition::new("events", 0), &[]), None);
    }

    #[test]
    fn everyone_computes_the_same_leader() {
        let tp = TopicPartition::new("orders", 5);
        assert_eq!(preferred_leader(&tp, &[4, 7]), preferred_leader(&tp, &[4, 7]));
        assert_eq!(preferred_leader(&tp, &[9]), Some(9));
    }
}
