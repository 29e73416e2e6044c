//! The handler table: which Kafka APIs this broker answers, at which
//! versions, and with what. ApiVersions is derived from this table, so what
//! is advertised is exactly what is implemented.

mod acl_operations;
mod acls;
mod api_versions;
mod client_quotas;
mod cluster;
mod configs;
mod fetch;
mod group_offsets;
mod groups;
mod leader_hint;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
mod producers;
mod refused;
mod sasl;
mod scram_users;
mod topics_admin;
mod transactions;
mod transactions_admin;
mod txn_markers;

use crate::protocol::response::{encode_response, encode_response_spliced, ResponseFrame};
pub(crate) use crate::server::authorize::{AclOperation, Resource};
use crate::server::session::Session;
use crate::server::{ProtocolWait, ShardBroker};
use bytes::Bytes;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Message, Request as KafkaRequest, VersionRange,
};
use kafka_protocol::ResponseError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

pub(crate) use api_versions::unsupported_version_response;

/// One decoded-header request, as a handler receives it.
pub(crate) struct Request {
    pub header: RequestHeader,
    pub version: i16,
    /// The body, a slice of the connection's read buffer.
    pub body: Bytes,
    /// The local address the client reached us at.
    pub local_addr: SocketAddr,
    /// Which listener (index into the configured listeners) it came in on:
    /// Metadata answers with that listener's advertised address.
    pub listener: usize,
    /// The client's address (DescribeGroups shows it as the member's host).
    pub peer: SocketAddr,
    /// Until when the protocol lets this request wait (see
    /// `server::deadline`); handlers that may hold an answer set it.
    pub wait: ProtocolWait,
    /// The connection's session: listener, security protocol, principal,
    /// authentication state (`listener`, `peer` and `local_addr` above are
    /// its fields, copied for the handlers that use them).
    pub session: Rc<Session>,
}

/// A whole response frame, nothing (acks=0), or why the request was
/// malformed (the connection is closed, as Kafka does).
pub(crate) type Outcome = Result<Option<ResponseFrame>, String>;
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Outcome>>>;

pub(crate) struct Handler {
    pub api_key: i16,
    pub versions: VersionRange,
    pub handle: fn(Rc<ShardBroker>, Request) -> HandlerFuture,
}

impl Handler {
    /// A handler for request type `R` at `tested` versions: the range the
    /// tests exercise (tests/api_calls answers every advertised version).
    /// It must lie within what the crate can both decode the request and
    /// encode the response in; otherwise the `const` handler entry fails to
    /// compile. So a crate upgrade never widens what is advertised (new
    /// versions stay unadvertised until tested), and one that drops a
    /// tested version stops the build instead of advertising less silently.
    const fn of<R: KafkaRequest>(
        tested: VersionRange,
        handle: fn(Rc<ShardBroker>, Request) -> HandlerFuture,
    ) -> Handler {
        let req = <R as Message>::VERSIONS;
        let resp = <R::Response as Message>::VERSIONS;
        let crate_min = if req.min > resp.min { req.min } else { resp.min };
        let crate_max = if req.max < resp.max { req.max } else { resp.max };
        assert!(
            crate_min <= tested.min && tested.min <= tested.max && tested.max <= crate_max,
            "tested versions outside what kafka-protocol can decode and encode"
        );
        Handler {
            api_key: R::KEY,
            versions: tested,
            handle,
        }
    }

    pub fn supports(&self, version: i16) -> bool {
        self.versions.min <= version && version <= self.versions.max
    }
}

impl Request {
    /// Whether this request's principal may perform `operation` on
    /// `resource`: the single authorization call point. `Err` is the error
    /// Kafka answers for the denied resource (TOPIC_AUTHORIZATION_FAILED,
    /// GROUP_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED, ...).
    pub fn authorize(&self, operation: AclOperation, resource: Resource<'_>) -> Result<(), ResponseError> {
        self.session.authorize(operation, resource)
    }

    /// Whether the principal may perform `operation` on `resource`, asked
    /// only to filter a listing or report `authorized_operations`: a
    /// denial here is not logged.
    pub fn may(&self, operation: AclOperation, resource: Resource<'_>) -> bool {
        self.session.may(operation, resource)
    }

    /// Authorizes `operation` on every topic a request names, by name or
    /// (name empty) by id, resolved in the catalog; an unknown id is left
    /// to the handler, which answers UNKNOWN_TOPIC_ID for it. CREATE on the
    /// cluster covers every topic, as in Kafka. `Err`: the first denial.
    pub fn authorize_topics<'a>(
        &self,
        broker: &ShardBroker,
        operation: AclOperation,
        topics: impl IntoIterator<Item = (&'a str, uuid::Uuid)>,
    ) -> Result<(), ResponseError> {
        if operation == AclOperation::Create && self.may(operation, Resource::Cluster) {
            return Ok(());
        }
        let catalog = broker.catalog().snapshot();
        for (name, id) in topics {
            let name = match name {
                "" => catalog.by_id(&id).map(|t| t.name.as_str()),
                name => Some(name),
            };
            if let Some(name) = name {
                self.authorize(operation, Resource::Topic(name))?;
            }
        }
        Ok(())
    }

    /// The topics among `names` the principal may not `operation` (each
    /// denial logged): Kafka answers those TOPIC_AUTHORIZATION_FAILED and
    /// serves the request's other topics.
    pub fn denied_topics<'a>(
        &self,
        operation: AclOperation,
        names: impl IntoIterator<Item = &'a str>,
    ) -> std::collections::HashSet<String> {
        names
            .into_iter()
            .filter(|name| self.authorize(operation, Resource::Topic(name)).is_err())
            .map(str::to_string)
            .collect()
    }

    /// Decodes the body as `R` at the request's version.
    pub fn decode<R: Decodable>(&mut self, api: &str) -> Result<R, String> {
        R::decode(&mut self.body, self.version).map_err(|e| format!("bad {api} v{} body: {e}", self.version))
    }

    /// Encodes `body` as this request's response frame.
    pub fn respond<R: Encodable + HeaderVersion>(&self, body: &R) -> Outcome {
        encode_response(self.header.correlation_id, self.version, body)
            .map(|frame| Some(ResponseFrame::Whole(frame)))
    }

    /// Encodes `body` as this request's response frame, keeping each of
    /// `splice` (byte fields of `body`, in encoding order) out of the
    /// encoded buffer: the writer sends them from where they are.
    pub fn respond_spliced<R: Encodable + HeaderVersion>(&self, body: &R, splice: Vec<Bytes>) -> Outcome {
        encode_response_spliced(self.header.correlation_id, self.version, body, splice).map(Some)
    }
}

/// Answers every partition of every topic concurrently and regroups the
/// answers by topic, in request order: the shape shared by ListOffsets,
/// OffsetForLeaderEpoch and DeleteRecords. `answer` gets the topic and one
/// partition's request and must return a future owning what it needs.
pub(crate) async fn per_partition<T, P, R, Fut>(
    topics: Vec<(T, Vec<P>)>,
    answer: impl Fn(&T, P) -> Fut,
) -> Vec<(T, Vec<R>)>
where
    Fut: Future<Output = R>,
{
    let mut topics = topics;
    let pending: Vec<Vec<Fut>> = topics
        .iter_mut()
        .map(|(topic, partitions)| partitions.drain(..).map(|p| answer(topic, p)).collect())
        .collect();
    let answers = futures::future::join_all(pending.into_iter().map(futures::future::join_all)).await;
    topics.into_iter().map(|(topic, _)| topic).zip(answers).collect()
}

/// A handler entry for request type `$request`, served by async fn
/// `$handle`, advertised at versions `$min..=$max` (what its tests cover).
macro_rules! handler {
    ($request:ty, $handle:path, versions = $min:literal..=$max:literal) => {
        $crate::handlers::Handler::of::<$request>(
            kafka_protocol::protocol::VersionRange { min: $min, max: $max },
            |broker, request| Box::pin($handle(broker, request)),
        )
    };
}
pub(crate) use handler;

/// Every API this broker implements.
pub(crate) static HANDLERS: &[Handler] = &[
    produce::HANDLER,
    fetch::HANDLER,
    offsets::LIST_OFFSETS,
    metadata::HANDLER,
    offsets::OFFSET_FOR_LEADER_EPOCH,
    api_versions::HANDLER,
    topics_admin::CREATE_TOPICS,
    topics_admin::DELETE_TOPICS,
    topics_admin::DELETE_RECORDS,
    producer_id::HANDLER,
    configs::DESCRIBE_CONFIGS,
    topics_admin::CREATE_PARTITIONS,
    configs::ALTER_CONFIGS,
    configs::INCREMENTAL_ALTER_CONFIGS,
    cluster::HANDLER,
    groups::FIND_COORDINATOR,
    groups::JOIN_GROUP,
    groups::HEARTBEAT,
    groups::LEAVE_GROUP,
    groups::SYNC_GROUP,
    groups::DESCRIBE_GROUPS,
    groups::LIST_GROUPS,
    sasl::HANDSHAKE,
    groups::DELETE_GROUPS,
    group_offsets::OFFSET_COMMIT,
    group_offsets::OFFSET_FETCH,
    group_offsets::OFFSET_DELETE,
    sasl::AUTHENTICATE,
    scram_users::DESCRIBE,
    scram_users::ALTER,
    acls::DESCRIBE,
    acls::CREATE,
    acls::DELETE,
    client_quotas::ALTER,
    client_quotas::DESCRIBE,
    transactions::ADD_PARTITIONS,
    transactions::ADD_OFFSETS,
    transactions::END_TXN,
    txn_markers::HANDLER,
    transactions::TXN_OFFSET_COMMIT,
    transactions_admin::DESCRIBE,
    transactions_admin::LIST,
    producers::HANDLER,
];

pub(crate) fn find(api_key: i16) -> Option<&'static Handler> {
    HANDLERS.iter().find(|h| h.api_key == api_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn table_has_one_entry_per_api_and_only_real_ranges() {
        for (i, h) in HANDLERS.iter().enumerate() {
            assert!(ApiKey::try_from(h.api_key).is_ok());
            assert!(!h.versions.is_empty(), "api {}", h.api_key);
            assert!(HANDLERS[i + 1..].iter().all(|o| o.api_key != h.api_key));
        }
        let api_versions = find(ApiKey::ApiVersions as i16).unwrap();
        assert_eq!((api_versions.versions.min, api_versions.versions.max), (0, 4));
        let metadata = find(ApiKey::Metadata as i16).unwrap();
        assert!(metadata.supports(0) && metadata.supports(12));
    }

    /// The whole advertised table, pinned: a change to what clients are
    /// told (a handler's range edited, a handler added or removed) must be
    /// made here too, with tests/api_calls covering every version in it.
    #[test]
    fn advertised_versions_are_pinned() {
        use ApiKey::*;
        let pinned: &[(ApiKey, i16, i16)] = &[
            (Produce, 3, 13),
            (Fetch, 4, 18),
            (ListOffsets, 1, 10),
            (Metadata, 0, 13),
            (OffsetForLeaderEpoch, 2, 4),
            (ApiVersions, 0, 4),
            (CreateTopics, 2, 7),
            (DeleteTopics, 1, 6),
            (DeleteRecords, 0, 2),
            (InitProducerId, 0, 5),
            (DescribeConfigs, 1, 4),
            (CreatePartitions, 0, 3),
            (AlterConfigs, 0, 2),
            (IncrementalAlterConfigs, 0, 1),
            (DescribeCluster, 0, 2),
            (FindCoordinator, 0, 6),
            (JoinGroup, 0, 9),
            (Heartbeat, 0, 4),
            (LeaveGroup, 0, 5),
            (SyncGroup, 0, 5),
            (DescribeGroups, 0, 6),
            (ListGroups, 0, 5),
            (SaslHandshake, 0, 1),
            (DeleteGroups, 0, 2),
            (OffsetCommit, 2, 9),
            (OffsetFetch, 1, 9),
            (OffsetDelete, 0, 0),
            (SaslAuthenticate, 0, 2),
            (DescribeUserScramCredentials, 0, 0),
            (AlterUserScramCredentials, 0, 0),
            (DescribeAcls, 1, 3),
            (CreateAcls, 1, 3),
            (DeleteAcls, 1, 3),
            (AlterClientQuotas, 0, 1),
            (DescribeClientQuotas, 0, 1),
            (AddPartitionsToTxn, 0, 5),
            (AddOffsetsToTxn, 0, 3),
            (EndTxn, 0, 4),
            (WriteTxnMarkers, 1, 1),
            (TxnOffsetCommit, 0, 3),
            (DescribeTransactions, 0, 0),
            (ListTransactions, 0, 1),
            (DescribeProducers, 0, 0),
        ];
        let advertised: Vec<(i16, i16, i16)> = HANDLERS
            .iter()
            .map(|h| (h.api_key, h.versions.min, h.versions.max))
            .collect();
        let expected: Vec<(i16, i16, i16)> = pinned.iter().map(|(k, lo, hi)| (*k as i16, *lo, *hi)).collect();
        assert_eq!(advertised, expected);
    }

    async fn never(_: Rc<ShardBroker>, _: Request) -> Outcome {
        Ok(None)
    }

    /// In a `const` handler entry this is a compile error; called at run
    /// time it panics, which is what this checks.
    #[test]
    #[should_panic(expected = "tested versions outside")]
    fn a_tested_version_the_crate_cannot_encode_is_refused() {
        let crate_max = <kafka_protocol::messages::ProduceRequest as Message>::VERSIONS.max;
        let _ = handler!(kafka_protocol::messages::ProduceRequest, never, versions = 3..=99);
        unreachable!("crate max is {crate_max}");
    }

    #[test]
    #[should_panic(expected = "tested versions outside")]
    fn a_tested_version_below_the_crate_minimum_is_refused() {
        // Produce v0-2 (message sets) are gone from the crate's range.
        let _ = handler!(kafka_protocol::messages::ProduceRequest, never, versions = 0..=13);
    }
}
