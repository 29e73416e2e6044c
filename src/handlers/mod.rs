//! The handler table: which Kafka APIs this broker answers, at which
//! versions, and with what. ApiVersions is derived from this table, so what
//! is advertised is exactly what is implemented.

mod api_versions;
mod metadata;

use crate::server::ShardBroker;
use bytes::Bytes;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::{Message, Request as KafkaRequest, VersionRange};
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
}

/// A whole response frame, nothing (acks=0), or why the request was
/// malformed (the connection is closed, as Kafka does).
pub(crate) type Outcome = Result<Option<Bytes>, String>;
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

/// Every API this broker implements.
pub(crate) static HANDLERS: &[Handler] = &[api_versions::HANDLER, metadata::HANDLER];

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
