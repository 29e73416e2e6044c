//! Response framing: size prefix, response header at the version the API
//! requires (ApiVersions: always v0), then the body.
//!
//! A Fetch response is mostly stored record batches. Copying them into the
//! encoded frame cost a quarter of the fetch path (benches/fetch.rs), so
//! [`encode_response_spliced`] leaves large byte fields out of the encoded
//! buffer and hands them to the writer as their own slices: the frame is
//! written as encoded-bytes, records, encoded-bytes, records, ...

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Encodable, HeaderVersion};
use std::ops::Range;

/// Byte fields shorter than this are copied: below it an extra socket
/// write costs more than the copy it saves.
pub const SPLICE_MIN_BYTES: usize = 16 * 1024;

/// One whole response frame, as the slices to write in order.
#[derive(Debug, Clone)]
pub enum ResponseFrame {
    /// Every response but a Fetch with large record sets.
    Whole(Bytes),
    /// Encoded parts with stored record batches between them.
    Spliced(Vec<Bytes>),
}

impl ResponseFrame {
    /// The frame's size on the wire, size prefix included.
    pub fn len(&self) -> usize {
        self.parts().iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn parts(&self) -> &[Bytes] {
        match self {
            ResponseFrame::Whole(frame) => std::slice::from_ref(frame),
            ResponseFrame::Spliced(parts) => parts,
        }
    }

    /// The frame as one contiguous buffer (tests and tools; copies when
    /// spliced).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            ResponseFrame::Whole(frame) => frame.clone(),
            ResponseFrame::Spliced(parts) => parts.concat().into(),
        }
    }
}

/// Encodes one whole response frame, ready to write.
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Bytes, String> {
    match encode_response_spliced(correlation_id, version, body, Vec::new())? {
        ResponseFrame::Whole(frame) => Ok(frame),
        spliced => Ok(spliced.to_bytes()),
    }
}

/// Encodes a response frame, leaving out of the encoded buffer each byte
/// field that is one of `splice` (the same memory, not equal contents),
/// given in the order the encoder writes them. A field not found in that
/// order is copied, so a wrong list costs speed, never correctness.
pub fn encode_response_spliced<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
    splice: Vec<Bytes>,
) -> Result<ResponseFrame, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = R::header_version(version);
    // Sized up front: a response with many partitions would otherwise be
    // copied several times as the buffer doubles.
    let header_size = header
        .compute_size(header_version)
        .map_err(|e| format!("sizing response header: {e}"))?;
    let body_size = body
        .compute_size(version)
        .map_err(|e| format!("sizing response v{version}: {e}"))?;
    let size = i32::try_from(header_size + body_size)
        .map_err(|_| format!("response v{version} of {body_size} bytes is too large"))?;
    let splice: Vec<Bytes> = splice
        .into_iter()
        .filter(|b| b.len() >= SPLICE_MIN_BYTES)
        .collect();
    let spliced_bytes: usize = splice.iter().map(Bytes::len).sum();
    let mut buf = SplicingBuf {
        tail: BytesMut::with_capacity(4 + header_size + body_size - spliced_bytes.min(body_size)),
        parts: Vec::new(),
        taken: 0,
        splice,
        next: 0,
    };
    buf.put_i32(size);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| format!("encoding response header: {e}"))?;
    body.encode(&mut buf, version)
        .map_err(|e| format!("encoding response v{version}: {e}"))?;
    let frame = buf.finish();
    if frame.len() != 4 + header_size + body_size {
        return Err(format!(
            "response v{version} encoded to {} bytes, sized at {}",
            frame.len(),
            4 + header_size + body_size
        ));
    }
    Ok(frame)
}

/// A `BytesMut` that, when the encoder writes one of the expected byte
/// fields, closes the current part and keeps the field's `Bytes` instead of
/// copying it.
struct SplicingBuf {
    /// What has been encoded since the last spliced field.
    tail: BytesMut,
    /// Finished parts, in wire order.
    parts: Vec<Bytes>,
    /// Bytes in `parts` (offsets the encoder sees count them).
    taken: usize,
    splice: Vec<Bytes>,
    /// The next entry of `splice` the encoder should reach.
    next: usize,
}

impl SplicingBuf {
    fn finish(mut self) -> ResponseFrame {
        if self.parts.is_empty() {
            return ResponseFrame::Whole(self.tail.freeze());
        }
        if !self.tail.is_empty() {
            self.parts.push(self.tail.freeze());
        }
        ResponseFrame::Spliced(self.parts)
    }
}

// SAFETY: the three required methods forward to `self.tail`, a `BytesMut`,
// unchanged: `chunk_mut` returns the tail's spare capacity, and
// `advance_mut(cnt)` is passed the caller's own promise that `cnt` bytes of
// that chunk are initialised, which is exactly `BytesMut`'s contract. The
// override of `put_slice` only calls safe methods.
unsafe impl BufMut for SplicingBuf {
    fn remaining_mut(&self) -> usize {
        self.tail.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's guarantee about `chunk_mut` is forwarded as
        // is; see the impl's comment.
        unsafe { self.tail.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.tail.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        let expected = self.splice.get(self.next);
        // Same memory, same length: this is the stored batch itself.
        if let Some(field) = expected.filter(|f| f.as_ptr() == src.as_ptr() && f.len() == src.len()) {
            let field = field.clone();
            self.next += 1;
            if !self.tail.is_empty() {
                let encoded = self.tail.split().freeze();
                self.taken += encoded.len();
                self.parts.push(encoded);
            }
            self.taken += field.len();
            self.parts.push(field);
            return;
        }
        self.tail.put_slice(src);
    }
}

// Offsets count spliced parts too. kafka-protocol seeks back into what it
// wrote (gaps) only inside record-batch encoding, never across a message
// body's byte fields, so a gap always lies in `tail`.
impl ByteBufMut for SplicingBuf {
    fn offset(&self) -> usize {
        self.taken + self.tail.len()
    }

    fn seek(&mut self, offset: usize) {
        self.tail.resize(offset.saturating_sub(self.taken), 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let start = r.start.saturating_sub(self.taken);
        let end = r.end.saturating_sub(self.taken);
        self.tail.get_mut(start..end).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};

    fn fetch_response(records: &[Bytes]) -> FetchResponse {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(
                records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        PartitionData::default()
                            .with_partition_index(i as i32)
                            .with_high_watermark(99)
                            .with_records(Some(r.clone()))
                    })
                    .collect(),
            )])
    }

    #[test]
    fn spliced_frames_are_byte_for_byte_the_copied_encoding() {
        let big = |fill: u8, len: usize| Bytes::from(vec![fill; len]);
        let records = vec![big(1, 20_000), big(2, 100), Bytes::new(), big(3, 70_000)];
        let response = fetch_response(&records);
        for version in [4, 11, 12, 16] {
            let copied = encode_response(9, version, &response).unwrap();
            let spliced = encode_response_spliced(9, version, &response, records.clone()).unwrap();
            let ResponseFrame::Spliced(parts) = &spliced else {
                panic!("v{version}: nothing spliced");
            };
            // The two large record sets are the stored memory itself.
            assert_eq!(
                parts.iter().filter(|p| p.as_ptr() == records[0].as_ptr()).count(),
                1
            );
            assert_eq!(
                parts.iter().filter(|p| p.as_ptr() == records[3].as_ptr()).count(),
                1
            );
            assert_eq!(spliced.to_bytes(), copied, "v{version}");
            assert_eq!(spliced.len(), copied.len());

            let mut body = copied.slice(4..);
            let header_version = FetchResponse::header_version(version);
            ResponseHeader::decode(&mut body, header_version).unwrap();
            let decoded = FetchResponse::decode(&mut body, version).unwrap();
            assert_eq!(
                decoded.responses[0].partitions[3].records,
                Some(records[3].clone())
            );
        }
    }

    #[test]
    fn fields_out_of_the_expected_order_are_copied_not_lost() {
        let a = Bytes::from(vec![7u8; 30_000]);
        let b = Bytes::from(vec![8u8; 30_000]);
        let response = fetch_response(&[a.clone(), b.clone()]);
        let copied = encode_response(1, 12, &response).unwrap();
        let swapped = encode_response_spliced(1, 12, &response, vec![b, a]).unwrap();
        assert_eq!(swapped.to_bytes(), copied);
        let small =
            encode_response_spliced(1, 12, &fetch_response(&[Bytes::from_static(b"x")]), vec![]).unwrap();
        assert!(matches!(small, ResponseFrame::Whole(_)));
    }
}
