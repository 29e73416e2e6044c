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

pub(crate) use manifest::{catalog_key, topic_dir, Manifest};
pub(crate) use reads::RemoteReads;
pub(crate) use rebuild::rebuild_from_bucket;
pub(crate) use runtime::{SideHandle, SideRuntime, SIDE_THREAD_NAME};
pub(crate) use store::RemoteStore;
pub(crate) use tiered::{
    cache_manifest, latest_remote_manifest, load_cached_manifest, TieredLog, TieringContext,
};

use crate::metrics::{Metrics, ReasonLabels, ShardLabel};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Bytes of remote chunks a shard keeps for its readers.
pub(crate) const READ_CACHE_BYTES_PER_SHARD: usize = 64 << 20;
/// Segment uploads a shard runs at once (bounding the bytes in flight to
/// that many segment files' worth of parts).
pub(crate) const UPLOADS_PER_SHARD: u64 = 2;

/// A shard's tiering series: atomics only this shard writes.
pub(crate) struct TieringStats {
    shard: String,
    uploaded_bytes: Counter,
    uploaded_segments: Counter,
    upload_lag: Gauge,
    remote_read_bytes: Counter,
    remote_read_duration: Histogram,
    chunks_fetched: Counter,
    cache_hits: Counter,
    errors: Family<ReasonLabels, Counter>,
    /// Offsets not yet remote, per partition (the gauge is their sum).
    lag: RefCell<HashMap<Rc<str>, i64>>,
}

impl TieringStats {
    pub(crate) fn new(shard: usize, metrics: &Metrics) -> TieringStats {
        let label = ShardLabel {
            shard: shard.to_string(),
        };
        let families = &metrics.tiering;
        TieringStats {
            uploaded_bytes: families.uploaded_bytes.get_or_create_owned(&label),
            uploaded_segments: families.uploaded_segments.get_or_create_owned(&label),
            upload_lag: families.upload_lag.get_or_create_owned(&label),
            remote_read_bytes: families.remote_read_bytes.get_or_create_owned(&label),
            remote_read_duration: families.remote_read_duration.get_or_create_owned(&label),
            chunks_fetched: families.remote_chunks_fetched.get_or_create_owned(&label),
            cache_hits: families.remote_cache_hits.get_or_create_owned(&label),
            errors: families.errors.clone(),
            shard: label.shard,
            lag: RefCell::default(),
        }
    }

    fn uploaded(&self, bytes: u64) {
        self.uploaded_bytes.inc_by(bytes);
        self.uploaded_segments.inc();
    }

    fn read(&self, bytes: usize, took: Duration) {
        self.remote_read_bytes.inc_by(bytes as u64);
        self.remote_read_duration.observe(took.as_secs_f64());
    }

    fn fetched(&self) {
        self.chunks_fetched.inc();
    }

    fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    fn error(&self, kind: &'static str) {
        self.errors
            .get_or_create(&ReasonLabels {
                shard: self.shard.clone(),
                reason: kind.to_string(),
            })
            .inc();
    }

    fn set_lag(&self, partition: &Rc<str>, offsets: i64) {
        let mut lag = self.lag.borrow_mut();
        lag.insert(partition.clone(), offsets.max(0));
        self.upload_lag.set(lag.values().sum());
    }
}
