//! The raw Produce request and answer shared by the raw-socket load
//! generators (many_producers, blast_producers): one batch built once,
//! framed once, re-sent as is.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

pub const VERSION: i16 = 9;

/// A whole Produce frame (size prefix included) carrying `batch` for
/// `topic`/`partition`, or why it could not be encoded.
pub fn produce_frame(
    topic: &str,
    partition: i32,
    acks: i16,
    client_id: &'static str,
    batch: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let body = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch.into()))])]);
    let header = RequestHeader::default()
        .with_request_api_key(ProduceRequest::KEY)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str(client_id)));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, ProduceRequest::header_version(VERSION))
        .and_then(|()| body.encode(&mut buf, VERSION))
        .map_err(|e| format!("cannot encode the Produce request: {e}"))?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.to_vec())
}

/// Whether a Produce answer (the frame after its size prefix) reports no
/// error for any partition.
pub fn answer_ok(mut frame: Bytes) -> bool {
    ResponseHeader::decode(&mut frame, ProduceResponse::header_version(VERSION))
        .and_then(|_| ProduceResponse::decode(&mut frame, VERSION))
        .map(|r| {
            r.responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .all(|p| p.error_code == 0)
        })
        .unwrap_or(false)
}
