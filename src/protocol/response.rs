//! Response framing: size prefix, response header at the version the API
//! requires (ApiVersions: always v0), then the body.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::{Encodable, HeaderVersion};

/// Encodes one whole response frame, ready to write.
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Bytes, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // Sized up front: a Fetch response carrying a megabyte of records would
    // otherwise be copied a dozen times as the buffer doubles.
    let body_size = body
        .compute_size(version)
        .map_err(|e| format!("sizing response v{version}: {e}"))?;
    let mut buf = BytesMut::with_capacity(4 + 8 + body_size);
    buf.put_i32(0);
    header
        .encode(&mut buf, R::header_version(version))
        .map_err(|e| format!("encoding response header: {e}"))?;
    body.encode(&mut buf, version)
        .map_err(|e| format!("encoding response v{version}: {e}"))?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}
