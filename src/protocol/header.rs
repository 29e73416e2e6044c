//! Request headers (v1: api key, version, correlation id, client id; v2 adds
//! tagged fields), decoded by `kafka-protocol` once we know the api key.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;

/// The three fields at fixed offsets in every request header version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestIds {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Reads the fixed-position fields without parsing anything else, so a
/// request from a newer client (unknown api, unknown header layout) can
/// still be answered or named in a log line. `frame` must hold at least
/// `frame::MIN_REQUEST_BYTES`, which `frame::split_frame` guarantees.
pub fn peek_ids(frame: &[u8]) -> Option<RequestIds> {
    let b = frame.get(..8)?;
    Some(RequestIds {
        api_key: i16::from_be_bytes([b[0], b[1]]),
        api_version: i16::from_be_bytes([b[2], b[3]]),
        correlation_id: i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    })
}

/// The client id (a legacy nullable string right after the fixed fields in
/// header v1 and v2), for log lines about requests we will not parse.
pub fn peek_client_id(frame: &[u8]) -> Option<&str> {
    let len = i16::from_be_bytes(frame.get(8..10)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    std::str::from_utf8(frame.get(10..10 + len)?).ok()
}

/// Decodes the header of a request whose api key and version are known to
/// be supported; returns it and the body that follows, still a slice of
/// the same buffer.
pub fn decode_header(
    api_key: ApiKey,
    api_version: i16,
    mut frame: Bytes,
) -> Result<(RequestHeader, Bytes), String> {
    let header_version = api_key.request_header_version(api_version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| format!("bad request header v{header_version}: {e}"))?;
    Ok((header, frame))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn v1_header(api_key: i16, version: i16, correlation_id: i32, client_id: Option<&str>) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_i16(api_key);
        buf.put_i16(version);
        buf.put_i32(correlation_id);
        match client_id {
            Some(id) => {
                buf.put_i16(id.len() as i16);
                buf.put_slice(id.as_bytes());
            }
            None => buf.put_i16(-1),
        }
        buf
    }

    #[test]
    fn header_v1_with_and_without_client_id() {
        // Metadata v4 uses header v1.
        let mut frame = v1_header(3, 4, 77, Some("kcat"));
        frame.put_slice(b"BODY");
        let (header, body) = decode_header(ApiKey::Metadata, 4, frame.freeze()).unwrap();
        assert_eq!(header.correlation_id, 77);
        assert_eq!(header.client_id.as_deref(), Some("kcat"));
        assert_eq!(&body[..], b"BODY");

        let frame = v1_header(3, 4, 78, None);
        let (header, body) = decode_header(ApiKey::Metadata, 4, frame.freeze()).unwrap();
        assert_eq!(header.client_id, None);
        assert!(body.is_empty());
    }

    #[test]
    fn header_v2_skips_tagged_fields() {
        // Metadata v9+ uses header v2: client id stays a legacy string, then
        // a tagged-field section (here: one field, tag 5, 3 bytes).
        let mut frame = v1_header(3, 12, 9, Some("rdkafka"));
        frame.put_u8(1); // one tagged field
        frame.put_u8(5); // tag
        frame.put_u8(3); // size
        frame.put_slice(b"xyz");
        frame.put_slice(b"B");
        let (header, body) = decode_header(ApiKey::Metadata, 12, frame.freeze()).unwrap();
        assert_eq!(header.client_id.as_deref(), Some("rdkafka"));
        assert_eq!(
            header.unknown_tagged_fields.get(&5).map(|b| &b[..]),
            Some(&b"xyz"[..])
        );
        assert_eq!(&body[..], b"B");
    }

    #[test]
    fn truncated_header_is_an_error_not_a_panic() {
        let mut frame = v1_header(3, 4, 1, Some("client"));
        frame.truncate(11);
        assert!(decode_header(ApiKey::Metadata, 4, frame.freeze()).is_err());
        assert_eq!(peek_ids(&[0, 3]), None);
        assert_eq!(peek_client_id(&[0, 3, 0, 0, 0, 0, 0, 1, 0, 9, b'x']), None);
    }

    #[test]
    fn ids_are_read_from_fixed_offsets() {
        let frame = v1_header(18, 99, 1234, None);
        assert_eq!(
            peek_ids(&frame),
            Some(RequestIds {
                api_key: 18,
                api_version: 99,
                correlation_id: 1234
            })
        );
        assert_eq!(peek_client_id(&v1_header(3, 4, 1, Some("kcat"))), Some("kcat"));
        assert_eq!(peek_client_id(&v1_header(3, 4, 1, None)), None);
    }
}
