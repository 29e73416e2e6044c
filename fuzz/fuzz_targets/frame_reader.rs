//! The connection read path: bytes arriving in arbitrary pieces through
//! the frame buffer, then the header fields peeked from each frame.
#![no_main]

use chronik_ingest::protocol::frame::FrameBuffer;
use chronik_ingest::protocol::header::{peek_client_id, peek_ids};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, mut rest)) = data.split_first() else { return };
    let piece = usize::from(piece).max(1);
    let mut reader = FrameBuffer::new(4096, 1 << 20);
    while !rest.is_empty() {
        let spare = reader.spare();
        let n = piece.min(spare.len()).min(rest.len());
        spare[..n].copy_from_slice(&rest[..n]);
        reader.commit(n);
        rest = &rest[n..];
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    let _ = peek_ids(&frame);
                    let _ = peek_client_id(&frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
