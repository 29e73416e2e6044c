//! Record-batch validation as Produce and log recovery run it.
#![no_main]

use chronik_ingest::log::batch::{batch_size, parse_header, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = batch_size(data);
    let _ = parse_header(data);
    if let Ok(header) = validate(data) {
        assert_eq!(header.size, data.len());
        assert!(header.records_count >= 1);
    }
});
