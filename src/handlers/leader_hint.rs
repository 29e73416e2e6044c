//! KIP-951: a NOT_LEADER_OR_FOLLOWER (or, in Fetch, FENCED_LEADER_EPOCH)
//! answer names the partition's current leader and that broker's
//! endpoints, so a client redirects at once instead of waiting for a
//! Metadata round trip. Produce carries them from v10, Fetch from v16.

use crate::server::{BrokerAddress, ShardBroker};
use crate::topics::TopicPartition;
use kafka_protocol::ResponseError;
use std::collections::BTreeSet;

/// Whether an answer with `error_code` should carry the leader hint.
pub(crate) fn wants_hint(error_code: i16, fenced_too: bool) -> bool {
    error_code == ResponseError::NotLeaderOrFollower.code()
        || (fenced_too && error_code == ResponseError::FencedLeaderEpoch.code())
}

/// (leader id, leader epoch) as this broker knows them; (-1, -1) while
/// nobody leads `tp`.
pub(crate) fn current_leader(broker: &ShardBroker, tp: &TopicPartition) -> (i32, i32) {
    broker.leader_of(tp).unwrap_or((-1, -1))
}

/// The endpoints, on the listener `request` came in on, of the brokers
/// the hints name (a leader not live any more is left out).
pub(crate) fn endpoints(
    broker: &ShardBroker,
    request: &super::Request,
    leaders: impl IntoIterator<Item = i32>,
) -> Vec<BrokerAddress> {
    let named: BTreeSet<i32> = leaders.into_iter().filter(|node| *node >= 0).collect();
    if named.is_empty() {
        return Vec::new();
    }
    broker
        .brokers_for(request)
        .into_iter()
        .filter(|b| named.contains(&b.node))
        .collect()
}

/// Builds a response's NodeEndpoints from [`endpoints`]: Produce and
/// Fetch each have their own (same-shaped) generated type.
macro_rules! node_endpoints {
    ($endpoint:ty, $addresses:expr) => {
        $addresses
            .into_iter()
            .map(|b: $crate::server::BrokerAddress| {
                <$endpoint>::default()
                    .with_node_id(kafka_protocol::messages::BrokerId(b.node))
                    .with_host(kafka_protocol::protocol::StrBytes::from_string(b.host))
                    .with_port(i32::from(b.port))
                    .with_rack(b.rack.map(kafka_protocol::protocol::StrBytes::from_string))
            })
            .collect::<Vec<$endpoint>>()
    };
}
pub(crate) use node_endpoints;
