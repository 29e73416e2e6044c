//! Prometheus metrics, thread-per-core style: every series carries a
//! `shard` label and is written only by that shard (prometheus-client's
//! series are atomics), so recording never contends across cores. Each
//! shard keeps its own handles to its series ([`ShardMetrics`]) so the hot
//! path never touches the families' shared maps; the scrape reads all
//! series at once and renders one OpenMetrics exposition.
//!
//! Cardinality is bounded by design: no per-partition or per-connection
//! labels; per-topic series per shard stop at [`MAX_LABELLED`] distinct
//! topics (and per-group series at as many groups), the first to appear,
//! beyond which values are summed under `topic="_other"` /
//! `group="_other"`. A deleted topic's or group's series are removed.

mod collectors;
mod http;
mod shard;

pub use collectors::RuntimeCounters;
pub use http::{MetricsServer, Readiness};
pub use shard::ShardMetrics;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Distinct topics (or groups) labelled per shard before `_other`.
pub const MAX_LABELLED: usize = 1000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    pub shard: String,
}

/// Cluster mode's per-broker series (the membership agent is no shard's).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub shard: String,
    pub api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub shard: String,
    pub api: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub shard: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    pub shard: String,
    pub mechanism: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub shard: String,
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub shard: String,
    pub group: String,
}

type DurationFamily = Family<ApiLabels, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Request latency buckets: 50 µs .. ~1.6 s, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Transaction durations: 1 ms .. ~65 s, doubling.
fn transaction_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Why a connection was refused at accept (the limits issue fills these).
pub const REJECT_REASONS: &[&str] = &[
    "max_connections",
    "max_connections_per_ip",
    "rate_limit",
    "banned",
];

/// Every metric family, registered once; shards write their own series.
pub struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) requests: Family<ApiLabels, Counter>,
    pub(crate) request_errors: Family<ErrorLabels, Counter>,
    pub(crate) request_duration: DurationFamily,
    pub(crate) request_timeouts: Family<ShardLabel, Counter>,
    pub(crate) pending_requests: Family<ShardLabel, Gauge>,
    pub(crate) backpressure_events: Family<ShardLabel, Counter>,
    pub(crate) queued_request_bytes: Family<ShardLabel, Gauge>,
    pub(crate) queued_request_bytes_peak: Family<ShardLabel, Gauge>,
    pub(crate) tls_handshake_failures: Family<ReasonLabels, Counter>,
    pub(crate) auth_failures: Family<AuthFailureLabels, Counter>,
    pub(crate) produce_records: Family<TopicLabels, Counter>,
    pub(crate) produce_bytes: Family<TopicLabels, Counter>,
    pub(crate) fetch_records: Family<TopicLabels, Counter>,
    pub(crate) fetch_bytes: Family<TopicLabels, Counter>,
    pub(crate) log_end_offset: Family<TopicLabels, Gauge>,
    pub(crate) log_size: Family<TopicLabels, Gauge>,
    pub(crate) log_unstable: Family<TopicLabels, Gauge>,
    pub(crate) log_cleanable: Family<TopicLabels, Gauge>,
    pub(crate) log_dirty_ratio: Family<TopicLabels, FloatGauge>,
    pub(crate) cleaner_runs: Family<ShardLabel, Counter>,
    pub(crate) cleaner_read: Family<ShardLabel, Counter>,
    pub(crate) cleaner_written: Family<ShardLabel, Counter>,
    pub(crate) cleaner_duration: Family<ShardLabel, Histogram, fn() -> Histogram>,
    pub(crate) groups: Family<ShardLabel, Gauge>,
    pub(crate) transactions_open: Family<ShardLabel, Gauge>,
    pub(crate) transactions_ended: Family<ReasonLabels, Counter>,
    pub(crate) transaction_duration: Family<ShardLabel, Histogram, fn() -> Histogram>,
    pub(crate) group_members: Family<GroupLabels, Gauge>,
    pub(crate) group_lag: Family<GroupLabels, Gauge>,
    pub(crate) executor_stalls: Family<ShardLabel, Counter>,
    pub(crate) executor_loop_lag: Family<ShardLabel, FloatGauge>,
    pub(crate) executor_tasks: Family<ShardLabel, Counter>,
    pub(crate) tiering: TieringFamilies,
    pub(crate) cluster: ClusterFamilies,
}

/// Cluster mode's series (present with ETCD_ENDPOINTS): the membership
/// agent's (one per broker, no shard) and each shard's WAL.
pub(crate) struct ClusterFamilies {
    pub partitions_led: Family<NodeLabel, Gauge>,
    pub lease_renew_duration: Family<NodeLabel, Histogram, fn() -> Histogram>,
    pub etcd_unreachable: Family<NodeLabel, Gauge>,
    pub failovers: Family<NodeLabel, Counter>,
    pub wal_flush_duration: Family<ShardLabel, Histogram, fn() -> Histogram>,
    pub wal_commit_duration: Family<ShardLabel, Histogram, fn() -> Histogram>,
    pub wal_bytes: Family<ShardLabel, Counter>,
    pub wal_flushes: Family<ShardLabel, Counter>,
    pub wal_failures: Family<ShardLabel, Counter>,
    pub wal_rebuilds: Family<ShardLabel, Counter>,
}

impl ClusterFamilies {
    fn new() -> ClusterFamilies {
        ClusterFamilies {
            partitions_led: Family::default(),
            lease_renew_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            etcd_unreachable: Family::default(),
            failovers: Family::default(),
            wal_flush_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            wal_commit_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            wal_bytes: Family::default(),
            wal_flushes: Family::default(),
            wal_failures: Family::default(),
            wal_rebuilds: Family::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "chronik_cluster_partitions_led",
            "Partitions (topics' and the internal coordinator partitions) this broker leads",
            self.partitions_led.clone(),
        );
        r.register(
            "chronik_cluster_lease_renew_duration_seconds",
            "Time etcd took to renew this broker's lease",
            self.lease_renew_duration.clone(),
        );
        r.register(
            "chronik_cluster_etcd_unreachable",
            "1 while the membership agent cannot reach etcd",
            self.etcd_unreachable.clone(),
        );
        r.register(
            "chronik_cluster_failovers",
            "Partitions this broker took over from a broker that led them before",
            self.failovers.clone(),
        );
        r.register(
            "chronik_cluster_wal_flush_duration_seconds",
            "One WAL flush: the object written to object storage and its pointers committed in etcd",
            self.wal_flush_duration.clone(),
        );
        r.register(
            "chronik_cluster_wal_commit_duration_seconds",
            "The etcd transaction that commits a WAL flush's pointers",
            self.wal_commit_duration.clone(),
        );
        r.register(
            "chronik_cluster_wal_bytes",
            "Batch bytes written to the WAL in object storage and committed",
            self.wal_bytes.clone(),
        );
        r.register(
            "chronik_cluster_wal_flushes",
            "WAL flushes committed",
            self.wal_flushes.clone(),
        );
        r.register(
            "chronik_cluster_wal_failures",
            "WAL flushes that failed (object storage or etcd) and were retried",
            self.wal_failures.clone(),
        );
        r.register(
            "chronik_cluster_wal_rebuilds",
            "Partitions rebuilt from the WAL when this broker began leading them",
            self.wal_rebuilds.clone(),
        );
    }
}

/// Tiered storage's series (present with OBJECT_STORE_URL).
pub(crate) struct TieringFamilies {
    pub uploaded_bytes: Family<ShardLabel, Counter>,
    pub uploaded_segments: Family<ShardLabel, Counter>,
    pub upload_lag: Family<ShardLabel, Gauge>,
    pub remote_read_bytes: Family<ShardLabel, Counter>,
    pub remote_read_duration: Family<ShardLabel, Histogram, fn() -> Histogram>,
    pub remote_chunks_fetched: Family<ShardLabel, Counter>,
    pub remote_cache_hits: Family<ShardLabel, Counter>,
    pub errors: Family<ReasonLabels, Counter>,
}

impl TieringFamilies {
    fn new() -> TieringFamilies {
        TieringFamilies {
            uploaded_bytes: Family::default(),
            uploaded_segments: Family::default(),
            upload_lag: Family::default(),
            remote_read_bytes: Family::default(),
            remote_read_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            remote_chunks_fetched: Family::default(),
            remote_cache_hits: Family::default(),
            errors: Family::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "chronik_tiered_uploaded_bytes",
            "Segment bytes the shard copied to object storage",
            self.uploaded_bytes.clone(),
        );
        r.register(
            "chronik_tiered_uploaded_segments",
            "Segments the shard copied to object storage (named in their manifest)",
            self.uploaded_segments.clone(),
        );
        r.register(
            "chronik_tiered_upload_lag_offsets",
            "Offsets of the shard's tiered partitions not yet in object storage",
            self.upload_lag.clone(),
        );
        r.register(
            "chronik_tiered_remote_read_bytes",
            "Batch bytes served to fetches from object storage",
            self.remote_read_bytes.clone(),
        );
        r.register(
            "chronik_tiered_remote_read_duration_seconds",
            "Time to serve one partition's fetch from object storage",
            self.remote_read_duration.clone(),
        );
        r.register(
            "chronik_tiered_remote_chunks_fetched",
            "Ranged GETs of segment chunks (read cache misses)",
            self.remote_chunks_fetched.clone(),
        );
        r.register(
            "chronik_tiered_remote_cache_hits",
            "Reads of segment chunks served from the shard's read cache",
            self.remote_cache_hits.clone(),
        );
        r.register(
            "chronik_tiered_errors",
            "Object-storage failures by kind (request, denied, not_found, missing, corrupt, local_io, stopped)",
            self.errors.clone(),
        );
    }
}

impl Metrics {
    /// Registers every family, plus the collector that reads the runtime's
    /// per-shard counters (connections, bytes, frame errors) at scrape time.
    pub fn new(runtime: RuntimeCounters) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(runtime));
        let metrics = Metrics {
            requests: Family::default(),
            request_errors: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            request_timeouts: Family::default(),
            pending_requests: Family::default(),
            backpressure_events: Family::default(),
            queued_request_bytes: Family::default(),
            queued_request_bytes_peak: Family::default(),
            tls_handshake_failures: Family::default(),
            auth_failures: Family::default(),
            produce_records: Family::default(),
            produce_bytes: Family::default(),
            fetch_records: Family::default(),
            fetch_bytes: Family::default(),
            log_end_offset: Family::default(),
            log_size: Family::default(),
            log_unstable: Family::default(),
            log_cleanable: Family::default(),
            log_dirty_ratio: Family::default(),
            cleaner_runs: Family::default(),
            cleaner_read: Family::default(),
            cleaner_written: Family::default(),
            cleaner_duration: Family::new_with_constructor(transaction_histogram as fn() -> Histogram),
            groups: Family::default(),
            transactions_open: Family::default(),
            transactions_ended: Family::default(),
            transaction_duration: Family::new_with_constructor(transaction_histogram as fn() -> Histogram),
            group_members: Family::default(),
            group_lag: Family::default(),
            executor_stalls: Family::default(),
            executor_loop_lag: Family::default(),
            executor_tasks: Family::default(),
            tiering: TieringFamilies::new(),
            cluster: ClusterFamilies::new(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "chronik_requests",
            "Requests handled, by API",
            metrics.requests.clone(),
        );
        r.register(
            "chronik_request_errors",
            "Requests or partitions answered with an error, by API and Kafka error",
            metrics.request_errors.clone(),
        );
        r.register(
            "chronik_request_duration_seconds",
            "Time from a whole request frame to its encoded response, by API",
            metrics.request_duration.clone(),
        );
        r.register(
            "chronik_request_timeouts",
            "Requests answered REQUEST_TIMED_OUT",
            metrics.request_timeouts.clone(),
        );
        r.register(
            "chronik_pending_requests",
            "Requests in flight on the shard",
            metrics.pending_requests.clone(),
        );
        r.register(
            "chronik_backpressure_events",
            "Times the shard stopped reading because too many requests were pending",
            metrics.backpressure_events.clone(),
        );
        r.register(
            "chronik_queued_request_bytes",
            "Bytes of requests being read or processed on the shard, counted against QUEUED_MAX_REQUEST_BYTES",
            metrics.queued_request_bytes.clone(),
        );
        r.register(
            "chronik_queued_request_bytes_peak",
            "Highest chronik_queued_request_bytes since the broker started",
            metrics.queued_request_bytes_peak.clone(),
        );
        r.register(
            "chronik_tls_handshake_failures",
            "TLS handshakes that failed, by reason (no_client_cert, unknown_ca, cert_expired, protocol_version, not_tls, timeout, ...)",
            metrics.tls_handshake_failures.clone(),
        );
        r.register(
            "chronik_auth_failures",
            "SASL authentications that failed, by mechanism and reason (bad_password, unknown_user, malformed, expired, bad_signature, bad_claims, unsupported_mechanism, ...)",
            metrics.auth_failures.clone(),
        );
        r.register(
            "chronik_produce_records",
            "Records appended, by topic",
            metrics.produce_records.clone(),
        );
        r.register(
            "chronik_produce_bytes",
            "Record-batch bytes appended, by topic",
            metrics.produce_bytes.clone(),
        );
        r.register(
            "chronik_fetch_records",
            "Records returned by Fetch, by topic",
            metrics.fetch_records.clone(),
        );
        r.register(
            "chronik_fetch_bytes",
            "Record-batch bytes returned by Fetch, by topic",
            metrics.fetch_bytes.clone(),
        );
        r.register(
            "chronik_log_end_offset",
            "Sum of the log end offsets of the topic's partitions owned by the shard",
            metrics.log_end_offset.clone(),
        );
        r.register(
            "chronik_log_size_bytes",
            "Bytes on disk of the topic's partitions owned by the shard",
            metrics.log_size.clone(),
        );
        r.register(
            "chronik_log_unstable_records",
            "Records above the last stable offset (in transactions not yet decided), summed over the topic's partitions: how far read_committed consumers lag the high watermark",
            metrics.log_unstable.clone(),
        );
        r.register(
            "chronik_log_cleanable_bytes",
            "Compacted topics: bytes of the topic's partitions owned by the shard that the cleaner may clean (closed, below the stable offset and min.compaction.lag.ms)",
            metrics.log_cleanable.clone(),
        );
        r.register(
            "chronik_log_dirty_ratio",
            "Compacted topics: share of the cleanable bytes not cleaned yet (the cleaner takes a partition at min.cleanable.dirty.ratio)",
            metrics.log_dirty_ratio.clone(),
        );
        r.register(
            "chronik_cleaner_runs",
            "Cleanings of compacted partitions done by the shard's cleaner",
            metrics.cleaner_runs.clone(),
        );
        r.register(
            "chronik_cleaner_read_bytes",
            "Bytes the shard's cleaner read (key map and rewrite)",
            metrics.cleaner_read.clone(),
        );
        r.register(
            "chronik_cleaner_written_bytes",
            "Bytes of cleaned segments the shard's cleaner wrote",
            metrics.cleaner_written.clone(),
        );
        r.register(
            "chronik_cleaner_run_seconds",
            "Time of one cleaning, from picking the partition to installing its segments",
            metrics.cleaner_duration.clone(),
        );
        r.register(
            "chronik_consumer_groups",
            "Consumer groups coordinated by the shard",
            metrics.groups.clone(),
        );
        r.register(
            "chronik_transactions_open",
            "Transactions open (begun, not yet committed or aborted) on the shard's transaction coordinator",
            metrics.transactions_open.clone(),
        );
        r.register(
            "chronik_transactions_ended",
            "Transactions ended, by outcome (reason: commit, abort, timeout)",
            metrics.transactions_ended.clone(),
        );
        r.register(
            "chronik_transaction_duration_seconds",
            "From a transaction's first partition to its last marker",
            metrics.transaction_duration.clone(),
        );
        r.register(
            "chronik_consumer_group_members",
            "Members of each group",
            metrics.group_members.clone(),
        );
        r.register(
            "chronik_consumer_group_lag",
            "Sum over a group's committed partitions of log end offset minus committed offset",
            metrics.group_lag.clone(),
        );
        r.register(
            "chronik_executor_stalls",
            "Times the shard's event loop woke more than 50 ms late",
            metrics.executor_stalls.clone(),
        );
        r.register(
            "chronik_executor_loop_lag_seconds",
            "How late the shard's event loop last woke for a 10 ms timer",
            metrics.executor_loop_lag.clone(),
        );
        r.register(
            "chronik_executor_tasks",
            "Tasks the shard's executor has run",
            metrics.executor_tasks.clone(),
        );
        metrics.tiering.register(r);
        metrics.cluster.register(r);
        Metrics { registry, ..metrics }
    }

    /// The OpenMetrics text exposition of every series.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The same series in the Prometheus text format (0.0.4), for scrapers
    /// and tools (promtool) that do not ask for OpenMetrics.
    pub fn render_prometheus_text(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
