//! Tiered storage (KIP-405's model): closed segments copied to object
//! storage through the `object_store` crate (S3 and S3-compatible servers,
//! GCS, Azure, a local directory: `OBJECT_STORE_URL`), the local disk
//! keeping a recent window, reads below it served from the bucket, and a
//! broker with an empty data directory rebuilt from what the bucket holds.
//!
//! The object-store clients run on one side thread ([`runtime`]); shards
//! await them through channels and never block. A tiered partition is a
//! [`TieredLog`] around its local log, behind the same `Log` interface.

mod manifest;
mod reads;
mod rebuild;
mod runtime;
mod store;
mod tiered;

pub(crate) use manifest::Manifest;
pub(crate) use reads::RemoteReads;
pub(crate) use rebuild::rebuild_from_bucket;
pub(crate) use runtime::SideRuntime;
pub(crate) use store::RemoteStore;
pub(crate) use tiered::{load_cached_manifest, TieredLog, TieringContext};

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Bytes of remote chunks a shard keeps for its readers.
pub(crate) const READ_CACHE_BYTES_PER_SHARD: usize = 64 << 20;
/// Segment uploads a shard runs at once (bounding the bytes in flight to
/// that many segment files' worth of parts).
pub(crate) const UPLOADS_PER_SHARD: u64 = 2;

/// A shard's tiering figures, read by its metrics.
#[derive(Default)]
pub(crate) struct TieringStats {
    pub uploaded_bytes: Cell<u64>,
    pub uploaded_segments: Cell<u64>,
    pub upload_seconds: Cell<f64>,
    pub remote_read_bytes: Cell<u64>,
    pub remote_reads: Cell<u64>,
    pub remote_read_seconds: Cell<f64>,
    pub fetched_bytes: Cell<u64>,
    pub cache_hits: Cell<u64>,
    pub errors: RefCell<HashMap<&'static str, u64>>,
    /// Offsets not yet remote, per partition.
    pub lag: RefCell<HashMap<Rc<str>, i64>>,
}

impl TieringStats {
    fn uploaded(&self, bytes: u64, took: Duration) {
        self.uploaded_bytes.set(self.uploaded_bytes.get() + bytes);
        self.uploaded_segments.set(self.uploaded_segments.get() + 1);
        self.upload_seconds
            .set(self.upload_seconds.get() + took.as_secs_f64());
    }

    fn read(&self, bytes: usize, took: Duration) {
        self.remote_read_bytes
            .set(self.remote_read_bytes.get() + bytes as u64);
        self.remote_reads.set(self.remote_reads.get() + 1);
        self.remote_read_seconds
            .set(self.remote_read_seconds.get() + took.as_secs_f64());
    }

    fn fetched(&self, bytes: usize) {
        self.fetched_bytes.set(self.fetched_bytes.get() + bytes as u64);
    }

    fn cache_hit(&self) {
        self.cache_hits.set(self.cache_hits.get() + 1);
    }

    fn error(&self, kind: &'static str) {
        *self.errors.borrow_mut().entry(kind).or_default() += 1;
    }

    fn set_lag(&self, partition: &Rc<str>, offsets: i64) {
        self.lag.borrow_mut().insert(partition.clone(), offsets.max(0));
    }
}
