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
/// Committed WAL pointers, per partition by base offset. Outside `ROOT`,
/// which the membership agent reads whole every round.
pub(crate) const WAL: &str = "/chronik-wal/";
/// Per partition, the first offset its WAL still serves (retention and
/// DeleteRecords move it); apart from `WAL` so a partition's pointers are
/// its whole prefix there.
pub(crate) const WAL_STARTS: &str = "/chronik-wal-start/";
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

/// Every WAL pointer of a partition (of this topic id: a topic deleted
/// and made again under its name starts a WAL of its own).
pub(crate) fn wal_pointers(tp: &TopicPartition, topic_id: uuid::Uuid) -> String {
    format!("{WAL}{}/{topic_id}/{}/", tp.topic, tp.partition)
}

/// The WAL pointer of a partition's batches from `base`: zero-padded, so
/// key order is offset order.
pub(crate) fn wal_pointer(tp: &TopicPartition, topic_id: uuid::Uuid, base: i64) -> String {
    format!("{}{base:020}", wal_pointers(tp, topic_id))
}

/// Where a partition's WAL starts (see [`WAL_STARTS`]).
pub(crate) fn wal_start(tp: &TopicPartition, topic_id: uuid::Uuid) -> String {
    format!("{WAL_STARTS}{}/{topic_id}/{}", tp.topic, tp.partition)
}

/// Every WAL key (pointers and starts) of one topic id, under `root`
/// ([`WAL`] or [`WAL_STARTS`]).
pub(crate) fn wal_topic(root: &str, topic: &str, topic_id: uuid::Uuid) -> String {
    format!("{root}{topic}/{topic_id}/")
}

/// The topic and topic id a WAL pointer key belongs to.
pub(crate) fn wal_topic_of(key: &str) -> Option<(String, uuid::Uuid)> {
    let mut parts = key.strip_prefix(WAL)?.split('/');
    let topic = parts.next()?;
    let id = parts.next()?.parse().ok()?;
    Some((topic.to_string(), id))
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

    #[test]
    fn a_wal_pointer_names_its_topic_and_id() {
        let tp = TopicPartition::new("orders.v2", 3);
        let id = uuid::Uuid::new_v4();
        let key = wal_pointer(&tp, id, 42);
        assert_eq!(wal_topic_of(&key), Some(("orders.v2".to_string(), id)));
        assert!(key.starts_with(&wal_topic(WAL, "orders.v2", id)));
        assert!(wal_start(&tp, id).starts_with(&wal_topic(WAL_STARTS, "orders.v2", id)));
        assert_eq!(wal_topic_of("/chronik-wal/x"), None);
    }
}
