//! ApiVersions: the client's first request, answered from the handler table.

use super::{handler, Handler, Outcome, Request, HANDLERS};
use crate::protocol::response::encode_response;
use crate::server::ShardBroker;
use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;
use std::rc::Rc;

pub(crate) const HANDLER: Handler = handler!(ApiVersionsRequest, handle, versions = 0..=4);

async fn handle(_broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    request.decode::<ApiVersionsRequest>("ApiVersions")?;
    request.respond(&table(0))
}

/// What Kafka answers to an ApiVersions request at a version it does not
/// know: a v0 body with UNSUPPORTED_VERSION and the supported ranges, so the
/// client retries at a version both sides speak. The header is v0 as always.
pub(crate) fn unsupported_version_response(correlation_id: i32) -> Result<Bytes, String> {
    encode_response(
        correlation_id,
        0,
        &table(ResponseError::UnsupportedVersion.code()),
    )
}

fn table(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            HANDLERS
                .iter()
                .map(|h| {
                    ApiVersion::default()
                        .with_api_key(h.api_key)
                        .with_min_version(h.versions.min)
                        .with_max_version(h.versions.max)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn unsupported_version_answer_is_v0_header_and_v0_body() {
        let mut frame = unsupported_version_response(42).unwrap();
        let size = frame.get_i32() as usize;
        assert_eq!(size, frame.len());
        let header = ResponseHeader::decode(&mut frame, 0).unwrap();
        assert_eq!(header.correlation_id, 42);
        let body = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
        assert!(frame.is_empty());
        assert_eq!(body.error_code, ResponseError::UnsupportedVersion.code());
        assert_eq!(body.api_keys.len(), HANDLERS.len());
    }
}
