//! Shared by the log and fetch benchmarks: the batch they store and a
//! scratch partition log filled with it.
#![allow(dead_code)]

use chronik_ingest::log::batch::{build_batch, validate};
use chronik_ingest::log::{LogConfig, PartitionLog};
use std::path::PathBuf;

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chronik-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// 16 records of 1 KiB-ish in one batch, as a batching producer sends them.
pub fn sixteen_kib_batch() -> Vec<u8> {
    let value = vec![b'v'; 1000];
    let records: Vec<(&[u8], &[u8])> = (0..16).map(|_| (&b"key"[..], &value[..])).collect();
    build_batch(0, 1_700_000_000_000, &records)
}

/// A partition log holding `bytes` of 16 KiB batches; removed on drop.
pub struct FilledLog {
    pub log: PartitionLog,
    dir: PathBuf,
}

impl FilledLog {
    pub fn new(name: &str, bytes: usize) -> FilledLog {
        let dir = scratch(name);
        let (mut log, _) = PartitionLog::open(&dir).expect("open");
        let batch = sixteen_kib_batch();
        let config = LogConfig::default();
        for _ in 0..bytes / batch.len() {
            let header = validate(&batch).expect("valid");
            log.append(&batch, header, &config).expect("append");
        }
        FilledLog { log, dir }
    }
}

impl Drop for FilledLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
