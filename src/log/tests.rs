//! Partition log behaviour on real files in scratch directories.

use super::batch::{self, build_batch, build_idempotent_batch, validate};
use super::partition_log::now_ms;
use super::*;
use kafka_protocol::ResponseError;
use std::fs;
use std::path::PathBuf;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chronik-log-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn append(log: &mut PartitionLog, batch: &[u8], config: &LogConfig) -> AppendOutcome {
    let header = validate(batch).unwrap();
    log.append(batch, header, config).unwrap()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i:06}-{}", "x".repeat(i % 50)).into_bytes()
}

/// Reads every batch from `from` to the end and returns (offset, value) of
/// each record, by walking the uncompressed records ourselves.
fn read_all(log: &PartitionLog, from: i64) -> Vec<i64> {
    let mut offsets = Vec::new();
    let mut next = from;
    loop {
        let bytes = log.read(next, 64 * 1024, true).unwrap();
        if bytes.is_empty() {
            return offsets;
        }
        let mut at = 0;
        while at < bytes.len() {
            let header = validate(&bytes[at..at + batch::batch_size(&bytes[at..]).unwrap()]).unwrap();
            for o in header.base_offset..=header.last_offset() {
                if o >= from {
                    offsets.push(o);
                }
            }
            next = header.next_offset();
            at += header.size;
        }
    }
}

#[test]
fn append_and_read_across_segment_rolls() {
    let dir = Scratch::new("rolls");
    let config = LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    };
    let (mut log, report) = PartitionLog::open(&dir.0).unwrap();
    assert!(!report.clean);
    let mut rolled = 0;
    for i in 0..500 {
        let v = value(i);
        let segments = log.segment_count();
        let out = append(
            &mut log,
            &build_batch(0, 1000 + i as i64, &[(b"k", &v), (b"k2", &v)]),
            &config,
        );
        assert_eq!(out.base_offset, 2 * i as i64);
        // The inline append sealed the rolled segment (fsync, recovery point).
        if log.segment_count() > segments {
            rolled += 1;
        }
    }
    assert!(rolled > 10, "only {rolled} rolls");
    assert_eq!(log.segment_count(), rolled + 1);
    assert_eq!(log.log_end_offset(), 1000);
    assert_eq!(read_all(&log, 0), (0..1000).collect::<Vec<_>>());
    // Reads that start mid-batch and mid-log still begin at the right batch.
    assert_eq!(read_all(&log, 777).first(), Some(&777));
    assert_eq!(read_all(&log, 1000), Vec::<i64>::new());
    assert!(matches!(log.read(1001, 100, true), Err(ReadError::OutOfRange)));
    // Time lookups through the time index.
    assert_eq!(log.offset_for_timestamp(1000).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1250).unwrap(), Some((500, 1250)));
    assert_eq!(log.offset_for_timestamp(5000).unwrap(), None);
    assert_eq!(log.max_timestamp().unwrap(), Some((998, 1499)));
    log.close().unwrap();

    let (log, report) = PartitionLog::open(&dir.0).unwrap();
    assert!(report.clean);
    assert_eq!(report.rescanned_segments, 0);
    assert_eq!(log.log_end_offset(), 1000);
    assert_eq!(read_all(&log, 0), (0..1000).collect::<Vec<_>>());
    // Opened from its indexes, the answers are the same.
    assert_eq!(log.max_timestamp().unwrap(), Some((998, 1499)));
    assert_eq!(log.offset_for_timestamp(1250).unwrap(), Some((500, 1250)));
}

#[test]
fn a_small_read_still_returns_one_whole_batch() {
    let dir = Scratch::new("min-one");
    let config = LogConfig::default();
    let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
    let big = vec![7u8; 10_000];
    let batch = build_batch(0, 1, &[(b"k", &big)]);
    append(&mut log, &batch, &config);
    append(&mut log, &build_batch(0, 2, &[(b"k", b"small")]), &config);
    let bytes = log.read(0, 100, true).unwrap();
    assert_eq!(bytes.len(), batch.len());
    assert!(log.read(0, 100, false).unwrap().is_empty());
    let both = log.read(0, 1 << 20, false).unwrap();
    assert!(both.len() > batch.len());
}

/// Crash anywhere inside the last batch: recovery keeps every whole batch
/// before it and nothing of it.
#[test]
fn recovery_truncates_a_torn_tail_at_every_byte() {
    let dir = Scratch::new("torn");
    let config = LogConfig::default();
    let last = build_batch(0, 5, &[(b"key", b"the-last-batch"), (b"k", b"v")]);
    {
        let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
        for i in 0..20 {
            append(
                &mut log,
                &build_batch(0, i, &[(b"k", &value(i as usize))]),
                &config,
            );
        }
        append(&mut log, &last, &config);
        // No close: as after kill -9.
    }
    let segment = dir.0.join("00000000000000000000.log");
    let full = fs::read(&segment).unwrap();
    let start_of_last = full.len() - last.len();
    for cut in start_of_last..full.len() {
        fs::write(&segment, &full[..cut]).unwrap();
        let (log, report) = PartitionLog::open(&dir.0).unwrap();
        assert_eq!(log.log_end_offset(), 20, "cut at {cut}");
        assert_eq!(read_all(&log, 0), (0..20).collect::<Vec<_>>());
        if cut > start_of_last {
            let (end, bytes, _) = report.truncated.expect("truncation reported");
            assert_eq!((end, bytes), (20, (cut - start_of_last) as u64));
        }
        assert_eq!(fs::metadata(&segment).unwrap().len() as usize, start_of_last);
    }
    // And a flipped bit in the last batch is cut the same way.
    let mut corrupt = full.clone();
    corrupt[full.len() - 3] ^= 1;
    fs::write(&segment, &corrupt).unwrap();
    let (log, report) = PartitionLog::open(&dir.0).unwrap();
    assert_eq!(log.log_end_offset(), 20);
    assert!(report.truncated.unwrap().2.contains("CRC"));
}

#[test]
fn deleted_or_damaged_indexes_are_rebuilt() {
    let dir = Scratch::new("index");
    let config = LogConfig {
        segment_bytes: 8192,
        ..LogConfig::default()
    };
    {
        let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
        for i in 0..300 {
            append(
                &mut log,
                &build_batch(0, i, &[(b"k", &value(i as usize))]),
                &config,
            );
        }
        log.close().unwrap();
    }
    let mut indexes: Vec<_> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index" || e == "timeindex"))
        .collect();
    indexes.sort();
    assert!(indexes.len() >= 4);
    fs::remove_file(&indexes[0]).unwrap();
    fs::write(&indexes[2], b"garbage").unwrap();
    let (log, report) = PartitionLog::open(&dir.0).unwrap();
    assert!(report.clean);
    assert_eq!(read_all(&log, 0), (0..300).collect::<Vec<_>>());
    assert_eq!(read_all(&log, 150).first(), Some(&150));
    assert_eq!(log.offset_for_timestamp(100).unwrap(), Some((100, 100)));
}

#[test]
fn retention_by_time_and_size_deletes_whole_segments() {
    let dir = Scratch::new("retention");
    let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
    let old = now_ms() - 3_600_000;
    let small = LogConfig {
        segment_bytes: 2048,
        ..LogConfig::default()
    };
    for i in 0..100 {
        append(&mut log, &build_batch(0, old, &[(b"k", &value(i))]), &small);
    }
    for i in 0..100 {
        append(&mut log, &build_batch(0, now_ms(), &[(b"k", &value(i))]), &small);
    }
    let segments = log.segment_count();
    // Keep an hour minus a minute: the old half goes.
    let by_time = LogConfig {
        retention_ms: Some(3_540_000),
        ..small.clone()
    };
    let deleted = log.apply_retention(&by_time).unwrap();
    assert!(deleted > 0 && log.segment_count() < segments);
    assert!(log.log_start_offset() > 0 && log.log_start_offset() <= 100);
    assert!(matches!(log.read(0, 100, true), Err(ReadError::OutOfRange)));
    let start = log.log_start_offset();
    assert_eq!(read_all(&log, start).len() as i64, 200 - start);
    // Size bound: at most ~4 KiB kept.
    let by_size = LogConfig {
        retention_bytes: Some(4096),
        retention_ms: None,
        ..small
    };
    log.apply_retention(&by_size).unwrap();
    assert!(log.size_bytes() <= 4096 + 2048, "{} bytes kept", log.size_bytes());
    assert!(log.log_start_offset() > start);
    // Everything expired: the active segment rolls and goes too.
    let all = LogConfig {
        retention_ms: Some(0),
        ..LogConfig::default()
    };
    std::thread::sleep(std::time::Duration::from_millis(5));
    log.apply_retention(&all).unwrap();
    assert_eq!(log.log_start_offset(), 200);
    assert_eq!(log.log_end_offset(), 200);
    drop(log);
    let (log, _) = PartitionLog::open(&dir.0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (200, 200));
}

#[test]
fn delete_records_advances_the_log_start() {
    let dir = Scratch::new("delete-records");
    let config = LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
    for i in 0..100 {
        append(
            &mut log,
            &build_batch(0, i, &[(b"k", &value(i as usize))]),
            &config,
        );
    }
    assert_eq!(log.delete_records(42).unwrap(), 42);
    assert!(matches!(log.read(41, 100, true), Err(ReadError::OutOfRange)));
    assert_eq!(read_all(&log, 42).first(), Some(&42));
    assert!(matches!(log.delete_records(101), Err(ReadError::OutOfRange)));
    assert_eq!(log.delete_records(-1).unwrap(), 100);
    drop(log);
    let (log, _) = PartitionLog::open(&dir.0).unwrap();
    assert_eq!(log.log_start_offset(), 100);
}

#[test]
fn producer_state_survives_clean_restart_and_crash() {
    let dir = Scratch::new("producers");
    let config = LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    };
    let batch = |seq: i32| build_idempotent_batch(0, 0, 7, 0, seq, &[(b"k", b"v"), (b"k", b"w")]);
    {
        let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
        for i in 0..30 {
            append(&mut log, &batch(2 * i), &config);
        }
        log.close().unwrap();
    }
    {
        let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
        // A retry of the last batch from before the restart is a duplicate.
        let out = append(&mut log, &batch(58), &config);
        assert!(out.duplicate);
        assert_eq!(out.base_offset, 58);
        for i in 30..40 {
            append(&mut log, &batch(2 * i), &config);
        }
        // Crash: no close.
    }
    let (mut log, report) = PartitionLog::open(&dir.0).unwrap();
    assert!(!report.clean);
    let out = append(&mut log, &batch(78), &config);
    assert!(out.duplicate && out.base_offset == 78);
    let gap = build_idempotent_batch(0, 0, 7, 0, 99, &[(b"k", b"v")]);
    let header = validate(&gap).unwrap();
    assert!(matches!(
        log.append(&gap, header, &config),
        Err(AppendError::Producer(ResponseError::OutOfOrderSequenceNumber))
    ));
    assert_eq!(log.log_end_offset(), 80);
}

#[test]
fn log_append_time_is_stamped() {
    let dir = Scratch::new("append-time");
    let config = LogConfig {
        log_append_time: true,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
    let before = now_ms();
    let out = append(&mut log, &build_batch(0, 5, &[(b"k", b"v")]), &config);
    assert!(out.log_append_time >= before);
    let stored = log.read(0, 1000, true).unwrap();
    let header = validate(&stored).unwrap();
    assert_eq!(header.max_timestamp, out.log_append_time);
}

/// A new leader replaying its WAL from a start above zero: the log
/// begins there, a producer met mid-sequence is taken (its earlier
/// batches lie below), stored timestamps stay, and the producer then goes
/// on from its replayed sequence.
#[test]
fn a_replay_starts_where_asked_and_takes_batches_as_stored() {
    let dir = Scratch::new("replay");
    let config = LogConfig {
        log_append_time: true,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::create_at(&dir.0, 500).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    let mid = build_idempotent_batch(500, 1234, 7, 0, 40, &[(b"k", b"v"), (b"k", b"w")]);
    let header = validate(&mid).unwrap();
    assert!(matches!(
        log.append(&mid, header, &config),
        Err(AppendError::Producer(ResponseError::OutOfOrderSequenceNumber))
    ));
    let out = log.append_replayed(&mid, header, &config).unwrap();
    assert_eq!((out.base_offset, out.log_append_time), (500, -1));
    let stored = log.read(500, 1000, true).unwrap();
    assert_eq!(validate(&stored).unwrap().max_timestamp, 1234);
    let next = build_idempotent_batch(0, 0, 7, 0, 42, &[(b"k", b"x")]);
    assert_eq!(append(&mut log, &next, &config).base_offset, 502);
    assert!(is_duplicate(&mut log, 7, 40).is_some());
}

/// Appends `batches` two-record batches of producer `pid` and closes.
fn write_producer(dir: &std::path::Path, pid: i64, batches: i32) {
    let config = LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(dir).unwrap();
    for i in 0..batches {
        let b = build_idempotent_batch(0, 0, pid, 0, 2 * i, &[(b"k", b"v"), (b"k", b"w")]);
        append(&mut log, &b, &config);
    }
    log.close().unwrap();
}

fn is_duplicate(log: &mut PartitionLog, pid: i64, seq: i32) -> Option<i64> {
    let b = build_idempotent_batch(0, 0, pid, 0, seq, &[(b"k", b"v"), (b"k", b"w")]);
    let header = validate(&b).unwrap();
    match log.append(&b, header, &LogConfig::default()) {
        Ok(out) if out.duplicate => Some(out.base_offset),
        _ => None,
    }
}

#[test]
fn producer_state_is_snapshotted_in_binary() {
    let dir = Scratch::new("producer-binary");
    write_producer(&dir.0, 7, 30);
    let bytes = fs::read(dir.0.join(partition_log::PRODUCER_STATE)).unwrap();
    assert_eq!(bytes[0], producer_state::SNAPSHOT_VERSION);
    let (offset, state) = producer_state::decode_snapshot(&bytes).unwrap();
    assert_eq!((offset, state.len()), (60, 1));
    assert!(!dir.0.join(partition_log::LEGACY_PRODUCER_STATE).exists());
}

#[test]
fn a_corrupted_producer_snapshot_means_a_full_replay() {
    let dir = Scratch::new("producer-corrupt");
    write_producer(&dir.0, 7, 30);
    let path = dir.0.join(partition_log::PRODUCER_STATE);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
    assert_eq!(log.producer_count(), 1);
    assert_eq!(is_duplicate(&mut log, 7, 58), Some(58), "rebuilt from the log");
}

#[test]
fn an_old_json_producer_snapshot_still_loads() {
    let dir = Scratch::new("producer-json");
    write_producer(&dir.0, 7, 3);
    fs::remove_file(dir.0.join(partition_log::PRODUCER_STATE)).unwrap();
    // As an earlier version wrote it at offset 6, but naming a producer (9)
    // the log does not hold: only the file can have told the log about it.
    let json = r#"{"offset":6,"state":{"producers":{
        "7":{"epoch":0,"batches":[{"first_sequence":4,"last_sequence":5,"base_offset":4,"last_offset":5}]},
        "9":{"epoch":0,"batches":[{"first_sequence":0,"last_sequence":1,"base_offset":0,"last_offset":1}]}}}}"#;
    fs::write(dir.0.join(partition_log::LEGACY_PRODUCER_STATE), json).unwrap();
    {
        let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
        assert_eq!(log.producer_count(), 2);
        assert_eq!(is_duplicate(&mut log, 9, 0), Some(0));
        assert_eq!(is_duplicate(&mut log, 7, 4), Some(4));
        // The next snapshot is binary and replaces the JSON one.
        log.close().unwrap();
    }
    assert!(!dir.0.join(partition_log::LEGACY_PRODUCER_STATE).exists());
    let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
    assert_eq!(
        is_duplicate(&mut log, 9, 0),
        Some(0),
        "kept, not expired, across the upgrade"
    );
}

#[test]
fn producers_idle_past_the_expiration_are_dropped_at_open() {
    let dir = Scratch::new("producer-expiry");
    write_producer(&dir.0, 7, 3);
    write_producer(&dir.0, 8, 3);
    // Producer 7 last wrote two days ago, 8 just now (a snapshot as the
    // broker would have written it at close, offset 12 = log end).
    let path = dir.0.join(partition_log::PRODUCER_STATE);
    let (offset, state) = producer_state::decode_snapshot(&fs::read(&path).unwrap()).unwrap();
    assert_eq!((offset, state.len()), (12, 2));
    let mut aged = producer_state::ProducerStates::default();
    let now = now_ms();
    for (pid, at, base) in [
        (7, now - 2 * producer_state::PRODUCER_ID_EXPIRATION_MS, 4),
        (8, now, 10),
    ] {
        let b = build_idempotent_batch(base, 0, pid, 0, 4, &[(b"k", b"v"), (b"k", b"w")]);
        aged.record_at(&validate(&b).unwrap(), at);
    }
    fs::write(&path, aged.snapshot_bytes(12)).unwrap();
    let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
    assert_eq!(log.producer_count(), 1, "the idle producer is forgotten");
    assert_eq!(is_duplicate(&mut log, 8, 4), Some(10));
    assert_eq!(is_duplicate(&mut log, 7, 4), None);
}

/// A transactional batch of producer `pid` (validate refuses those only in
/// the produce path's validator, not here).
fn transactional_batch(pid: i64, seq: i32) -> Vec<u8> {
    let mut bytes = build_idempotent_batch(0, 0, pid, 0, seq, &[(b"k", b"v"), (b"k", b"w")]);
    batch::mark_transactional(&mut bytes);
    bytes
}

fn append_marker(log: &mut PartitionLog, marker: control::Marker, pid: i64, config: &LogConfig) -> i64 {
    let bytes = control::marker_batch(marker, pid, 0, 0, 0);
    let header = batch::parse_header(&bytes).unwrap();
    log.append(&bytes, header, config).unwrap().base_offset
}

/// Open transactions hold the stable offset; markers close them; aborted
/// ones are remembered; all of it survives a clean restart (snapshot) and
/// a crash (replay of the segments, markers read from the files).
#[test]
fn transactions_survive_clean_restart_and_crash() {
    let dir = Scratch::new("transactions");
    let config = LogConfig {
        segment_bytes: 512,
        ..LogConfig::default()
    };
    {
        let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
        append(&mut log, &build_batch(0, 0, &[(b"k", b"v")]), &config); // 0
        append(&mut log, &transactional_batch(7, 0), &config); // 1-2
        append(&mut log, &transactional_batch(8, 0), &config); // 3-4
        assert_eq!(log.first_unstable_offset(), Some(1));
        assert_eq!(append_marker(&mut log, control::Marker::Abort, 7, &config), 5);
        assert_eq!(log.first_unstable_offset(), Some(3));
        append(&mut log, &transactional_batch(7, 2), &config); // 6-7
        log.close().unwrap();
    }
    let check = |log: &PartitionLog| {
        assert_eq!(log.first_unstable_offset(), Some(3));
        assert_eq!(log.aborted_transactions(0, 100), vec![(7, 1)]);
    };
    {
        let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
        check(&log);
        assert_eq!(append_marker(&mut log, control::Marker::Commit, 8, &config), 8);
        assert_eq!(log.first_unstable_offset(), Some(6));
        // Crash: no close, so the next open replays from the old snapshot.
    }
    let (mut log, report) = PartitionLog::open(&dir.0).unwrap();
    assert!(!report.clean);
    assert_eq!(log.first_unstable_offset(), Some(6));
    assert_eq!(log.aborted_transactions(0, 100), vec![(7, 1)]);
    // Without any snapshot, the whole log is replayed.
    fs::remove_file(dir.0.join("producer-state.snapshot")).ok();
    assert_eq!(append_marker(&mut log, control::Marker::Abort, 7, &config), 9);
    drop(log);
    for entry in fs::read_dir(&dir.0).unwrap().flatten() {
        if entry.file_name().to_string_lossy().contains("producer") {
            fs::remove_file(entry.path()).unwrap();
        }
    }
    let (log, _) = PartitionLog::open(&dir.0).unwrap();
    assert_eq!(log.first_unstable_offset(), None);
    assert_eq!(log.aborted_transactions(0, 100), vec![(7, 1), (7, 6)]);
    assert_eq!(log.aborted_transactions(8, 100), vec![(7, 6)]);
}

/// Every stored batch from the log's start: its header and bytes.
fn stored_batches(log: &PartitionLog) -> Vec<(batch::BatchHeader, Vec<u8>)> {
    let mut batches = Vec::new();
    let mut next = log.log_start_offset();
    loop {
        let bytes = log.read(next, 1 << 20, true).unwrap();
        if bytes.is_empty() {
            return batches;
        }
        let mut at = 0;
        while at < bytes.len() {
            let size = batch::batch_size(&bytes[at..]).unwrap();
            let header = batch::validate_stored(&bytes[at..at + size]).unwrap();
            next = header.next_offset();
            batches.push((header, bytes[at..at + size].to_vec()));
            at += size;
        }
    }
}

/// (offset, key) of every record from the log's start, through the
/// records of each (uncompressed) batch.
fn keyed_records(log: &PartitionLog) -> Vec<(i64, Vec<u8>)> {
    let mut records = Vec::new();
    for (header, bytes) in stored_batches(log) {
        for record in batch::parse_records(&bytes[batch::HEADER_LEN..]).unwrap() {
            records.push((
                header.base_offset + record.offset_delta,
                record.key.unwrap().to_vec(),
            ));
        }
    }
    records
}

/// Compaction: every key keeps its latest record (and older ones only in
/// the segments the cleaner may not touch yet), offsets never move, reads
/// cross the gaps; a restart reads the same; a crash with a finished
/// rewrite not yet installed finishes it at open, and one mid-rewrite
/// leaves the old segments.
#[test]
fn compaction_keeps_each_keys_latest_record_across_restarts_and_crashes() {
    use super::cleaner::{clean, Throttle};
    use std::sync::Arc;
    let dir = Scratch::new("compaction");
    let config = LogConfig {
        segment_bytes: 4096,
        compact: true,
        delete: false,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
    let write = |log: &mut PartitionLog, from: usize, to: usize| {
        for i in from..to {
            let key = format!("key-{}", i % 40);
            append(
                log,
                &build_batch(0, now_ms(), &[(key.as_bytes(), &value(i))]),
                &config,
            );
        }
    };
    write(&mut log, 0, 1500);
    let before = keyed_records(&log);
    let latest = |records: &[(i64, Vec<u8>)]| {
        let mut latest: std::collections::HashMap<Vec<u8>, i64> = Default::default();
        for (offset, key) in records {
            latest.insert(key.clone(), *offset);
        }
        latest
    };
    let clean_now = |log: &PartitionLog| {
        let candidate = log
            .clean_candidate(&config, now_ms(), 1 << 20, Arc::new(Throttle::new(0)))
            .expect("due");
        clean(&candidate.job).unwrap()
    };
    let result = clean_now(&log);
    assert!(result.bytes_written < result.bytes_read);
    let cleaned_to = result.cleaned_to;
    let installed = log.install_cleaned(result).unwrap();
    assert!(installed.swaps > 0);
    installed.finish().unwrap();
    let check = |log: &PartitionLog| {
        let after = keyed_records(log);
        assert_eq!(
            latest(&after),
            latest(&before),
            "every key's latest record is kept"
        );
        // Below the cleaned part's end, a key's records were deduplicated
        // against what the key map saw: only its latest there is left.
        let below: Vec<(i64, Vec<u8>)> = after.iter().filter(|(o, _)| *o < cleaned_to).cloned().collect();
        assert_eq!(
            below.len(),
            latest(&below).len(),
            "one record per key below {cleaned_to}"
        );
        assert!(
            after.windows(2).all(|w| w[0].0 < w[1].0),
            "offsets strictly increase"
        );
        after
    };
    let cleaned = check(&log);
    assert!(
        cleaned.len() < before.len() / 4,
        "{} of {}",
        cleaned.len(),
        before.len()
    );
    drop(log);
    let (log, _) = PartitionLog::open(&dir.0).unwrap();
    assert_eq!(keyed_records(&log), cleaned, "a restart reads the same");
    assert!(log
        .clean_candidate(&config, now_ms(), 1 << 20, Arc::new(Throttle::new(0)))
        .is_none());
    // More updates, cleaned, and a crash before the swap is installed.
    let mut log = log;
    write(&mut log, 1500, 3000);
    let before = keyed_records(&log);
    let result = clean_now(&log);
    std::fs::write(dir.0.join("00000000000000000000.cleaned"), b"half a rewrite").unwrap();
    drop(result);
    drop(log);
    let (log, _) = PartitionLog::open(&dir.0).unwrap();
    let after = keyed_records(&log);
    assert_eq!(latest(&after), latest(&before));
    assert!(
        after.len() < before.len() / 2,
        "the finished rewrite was installed at open"
    );
    let leftovers: Vec<String> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap") || n.ends_with(".deleted"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Markers outlive their transactions' batches, then go: an aborted
/// transaction's batches go at the first cleaning, a committed one's when
/// newer records supersede them; each marker stays through that cleaning,
/// stamped with a delete horizon, and goes at the next once the horizon
/// (`delete.retention.ms` later) has passed. A marker whose transaction
/// still has records stays.
#[test]
fn markers_go_once_their_transactions_have_no_batches_left() {
    use super::cleaner::{clean, Throttle};
    use std::sync::Arc;
    let dir = Scratch::new("compaction-markers");
    let config = LogConfig {
        segment_bytes: 400,
        compact: true,
        delete: false,
        delete_retention_ms: 0,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
    append(&mut log, &transactional_batch(7, 0), &config); // 0-1
    append_marker(&mut log, control::Marker::Abort, 7, &config); // 2
    append(&mut log, &transactional_batch(8, 0), &config); // 3-4
    append_marker(&mut log, control::Marker::Commit, 8, &config); // 5
    let mut live = build_idempotent_batch(0, 0, 9, 0, 0, &[(b"live", b"v")]);
    batch::mark_transactional(&mut live);
    append(&mut log, &live, &config); // 6
    append_marker(&mut log, control::Marker::Commit, 9, &config); // 7
                                                                  // Newer values of "k" (superseding pid 8's), enough to close the
                                                                  // segments above.
    for i in 0..40 {
        let key = if i % 2 == 0 {
            "k".to_string()
        } else {
            format!("f{i}")
        };
        append(
            &mut log,
            &build_batch(0, now_ms(), &[(key.as_bytes(), &value(i))]),
            &config,
        );
    }
    let markers = |log: &PartitionLog| -> Vec<i64> {
        stored_batches(log)
            .into_iter()
            .filter(|(header, _)| header.is_control())
            .map(|(header, _)| header.base_offset)
            .collect()
    };
    let clean_now = |log: &mut PartitionLog| {
        let candidate = log
            .clean_candidate(&config, now_ms(), 1 << 20, Arc::new(Throttle::new(0)))
            .expect("due");
        let result = clean(&candidate.job).unwrap();
        log.install_cleaned(result).unwrap().finish().unwrap();
    };
    assert_eq!(markers(&log), vec![2, 5, 7]);
    clean_now(&mut log);
    let records = keyed_records(&log);
    assert!(
        records.iter().all(|(o, _)| ![0, 1, 3, 4].contains(o)),
        "the transactions' batches are gone: {records:?}"
    );
    assert!(records.contains(&(6, b"live".to_vec())));
    assert_eq!(
        markers(&log),
        vec![2, 5, 7],
        "markers outlive their batches' cleaning"
    );
    assert_eq!(log.aborted_transactions(0, 1000), vec![(7, 0)]);
    // The ones with no batch left carry a delete horizon (KIP-534).
    let stamped: Vec<i64> = stored_batches(&log)
        .into_iter()
        .filter(|(header, _)| header.is_control() && header.attributes & 0x40 != 0)
        .map(|(header, _)| header.base_offset)
        .collect();
    assert_eq!(stamped, vec![2, 5]);
    // Due again: the kept markers' horizons have passed.
    clean_now(&mut log);
    assert_eq!(
        markers(&log),
        vec![7],
        "only the live transaction's marker is left"
    );
    // A read_committed consumer told of the aborted transaction would skip
    // pid 7's batches until an abort marker that is gone.
    assert!(log.aborted_transactions(0, 1000).is_empty());
    drop(log);
    let (log, _) = PartitionLog::open(&dir.0).unwrap();
    assert_eq!(markers(&log), vec![7]);
    assert_eq!(log.first_unstable_offset(), None);
    assert!(log.aborted_transactions(0, 1000).is_empty(), "after a crash too");
}

/// A roll's producer snapshot is taken at the roll and written later, off
/// the shard. A cleaning installed in between writes a newer one (without
/// the aborted transactions whose markers it removed); the roll's, written
/// after, must not bring them back for the next start.
#[test]
fn a_late_roll_snapshot_does_not_undo_a_cleanings() {
    use super::cleaner::CleanResult;
    let dir = Scratch::new("snapshot-order");
    let config = LogConfig {
        segment_bytes: 300,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(&dir.0).unwrap();
    append(&mut log, &transactional_batch(7, 0), &config); // 0-1
    let marker = append_marker(&mut log, control::Marker::Abort, 7, &config); // 2
    assert_eq!(log.aborted_transactions(0, 100), vec![(7, 0)]);
    // Appends until one rolls, its seal held back.
    let sealed = loop {
        let bytes = bytes::Bytes::from(build_batch(
            0,
            now_ms(),
            &[(b"k".as_slice(), value(1).as_slice())],
        ));
        let header = batch::validate(&bytes).unwrap();
        let mut outcome = log.reserve(&bytes, header, &config).unwrap();
        outcome.write.take().unwrap().write().unwrap();
        if let Some(sealed) = outcome.rolled.take() {
            break sealed;
        }
    };
    let installed = log
        .install_cleaned(CleanResult {
            removed_aborts: vec![(7, marker)],
            ..CleanResult::default()
        })
        .unwrap();
    installed.finish().unwrap();
    sealed.finish().unwrap();
    drop(log); // a crash: no clean-shutdown marker
    let (log, _) = PartitionLog::open(&dir.0).unwrap();
    assert!(log.aborted_transactions(0, 100).is_empty());
}
