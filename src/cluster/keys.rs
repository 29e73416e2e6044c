//! Where cluster mode keeps things in etcd: the one place that names keys.

use crate::topics::TopicPartition;

/// Every key of the cluster starts here.
pub(crate) const ROOT: &str = "/chronik/";

/// A live broker's registration (under its lease).
pub(crate) const BROKERS: &str = "/chronik/brokers/";
/// Partition leaders (each under its leader's lease).
pub(crate) const LEADERS: &str = "/chronik/leaders/";
/// The last leader epoch of each partition (no lease: outlives leaders).
pub(crate) const EPOCHS: &str = "/chronik/epochs/";
/// The elected controller (under its lease).
pub(crate) const CONTROLLER: &str = "/chronik/controller";
/// The cluster id, fixed by the first broker.
pub(crate) const CLUSTER_ID: &str = "/chronik/cluster-id";
/// Shared metadata documents (see `metadata::ClusterStore`).
const DOCUMENTS: &str = "/chronik/docs/";

pub(crate) fn broker(node: i32) -> String {
    format!("{BROKERS}{node}")
}

/// `<topic>/<partition>`: topic names cannot hold '/', so it splits back.
fn partition_suffix(tp: &TopicPartition) -> String {
    format!("{}/{}", tp.topic, tp.partition)
}

pub(crate) fn leader(tp: &TopicPartition) -> String {
    format!("{LEADERS}{}", partition_suffix(tp))
}

pub(crate) fn epoch(tp: &TopicPartition) -> String {
    format!("{EPOCHS}{}", partition_suffix(tp))
}

pub(crate) fn document(name: &str) -> String {
    format!("{DOCUMENTS}{name}")
}

/// The partition a leader or epoch key names.
pub(crate) fn partition_of(key: &str, prefix: &str) -> Option<TopicPartition> {
    let (topic, partition) = key.strip_prefix(prefix)?.rsplit_once('/')?;
    Some(TopicPartition::new(topic, partition.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_split_back() {
        let tp = TopicPartition::new("orders.v2", 11);
        assert_eq!(partition_of(&leader(&tp), LEADERS), Some(tp.clone()));
        assert_eq!(partition_of(&epoch(&tp), EPOCHS), Some(tp));
        assert_eq!(partition_of("/chronik/leaders/x", LEADERS), None);
    }
}
