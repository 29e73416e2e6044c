//! Request header and body decoding for every api key and version in the
//! handler table, exactly as a connection decodes them: the first two bytes
//! pick (api, version), the rest is the frame after api key and version.
#![no_main]

use bytes::Bytes;
use chronik_ingest::protocol::header::decode_header;
use kafka_protocol::messages::{ApiKey, RequestKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let apis = chronik_ingest::supported_apis();
    let [pick, version, rest @ ..] = data else { return };
    let (api_key, min, max) = apis[usize::from(*pick) % apis.len()];
    let span = (max - min + 1) as u8;
    let version = min + i16::from(*version % span);
    let Ok(api) = ApiKey::try_from(api_key) else { return };
    let mut frame = Vec::with_capacity(rest.len() + 4);
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(rest);
    if let Ok((_, mut body)) = decode_header(api, version, Bytes::from(frame)) {
        let _ = RequestKind::decode(api, &mut body, version);
    }
});
