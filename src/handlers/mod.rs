//! The handler table: which Kafka APIs this broker answers, at which
//! versions, and with what. ApiVersions is derived from this table, so what
//! is advertised is exactly what is implemented.

mod acl_operations;
mod api_versions;
mod cluster;
mod configs;
mod fetch;
mod group_offsets;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
mod topics_admin;

use crate::protocol::response::{encode_response, encode_response_spliced, ResponseFrame};
use crate::server::{ProtocolWait, ShardBroker};
use bytes::Bytes;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Message, Request as KafkaRequest, VersionRange,
};
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
    /// A handler for request type `R`, at every version the crate can both
    /// decode the request and encode the response in.
    const fn of<R: KafkaRequest>(handle: fn(Rc<ShardBroker>, Request) -> HandlerFuture) -> Handler {
        let req = <R as Message>::VERSIONS;
        let resp = <R::Response as Message>::VERSIONS;
        Handler {
            api_key: R::KEY,
            versions: VersionRange {
                min: if req.min > resp.min { req.min } else { resp.min },
                max: if req.max < resp.max { req.max } else { resp.max },
            },
            handle,
        }
    }

    pub fn supports(&self, version: i16) -> bool {
        self.versions.min <= version && version <= self.versions.max
    }
}

impl Request {
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

/// A handler entry for request type `$request`, served by async fn `$handle`.
macro_rules! handler {
    ($request:ty, $handle:path) => {
        $crate::handlers::Handler::of::<$request>(|broker, request| Box::pin($handle(broker, request)))
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
    groups::DELETE_GROUPS,
    group_offsets::OFFSET_COMMIT,
    group_offsets::OFFSET_FETCH,
    group_offsets::OFFSET_DELETE,
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
}
