//! Series read at scrape time from counters the runtime and the connection
//! code already keep (one writer each), so nothing is counted twice.

use super::ShardLabel;
use crate::server::BrokerCounters;
use chronik_shard::ShardCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

/// Each shard's runtime and connection counters. The runtime's are known
/// only once it has started, after the registry exists, hence the cell.
#[derive(Debug, Clone)]
pub struct RuntimeCounters {
    pub(crate) runtime: Arc<OnceLock<Vec<Arc<ShardCounters>>>>,
    pub(crate) broker: Vec<Arc<BrokerCounters>>,
}

impl RuntimeCounters {
    /// No shards yet (benchmarks, tools): the collector renders nothing.
    pub fn empty() -> RuntimeCounters {
        RuntimeCounters {
            runtime: Arc::new(OnceLock::new()),
            broker: Vec::new(),
        }
    }
}

impl Collector for RuntimeCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(runtime) = self.runtime.get() else {
            return Ok(());
        };
        let shards: Vec<(&ShardCounters, &BrokerCounters)> = runtime
            .iter()
            .zip(&self.broker)
            .map(|(r, b)| (r.as_ref(), b.as_ref()))
            .collect();
        type Read = fn(&ShardCounters, &BrokerCounters) -> u64;
        let counters: [(&str, &str, Read); 4] = [
            ("chronik_connections", "Connections accepted", |r, _| {
                r.connections_accepted.load(Ordering::Relaxed)
            }),
            ("chronik_bytes_received", "Bytes read from clients", |r, _| {
                r.bytes_received.load(Ordering::Relaxed)
            }),
            ("chronik_bytes_sent", "Bytes written to clients", |r, _| {
                r.bytes_sent.load(Ordering::Relaxed)
            }),
            (
                "chronik_frame_errors",
                "Malformed or unanswerable requests; each closed its connection",
                |_, b| b.frame_errors.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, read) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (shard, (runtime, broker)) in shards.iter().enumerate() {
                let labels = ShardLabel {
                    shard: shard.to_string(),
                };
                ConstCounter::new(read(runtime, broker)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut rejected = encoder.encode_descriptor(
            "chronik_connections_rejected",
            "Connections refused at accept, by reason",
            None,
            MetricType::Counter,
        )?;
        for (shard, (runtime, broker)) in shards.iter().enumerate() {
            let counts = runtime.snapshot(shard).rejected;
            for (reason, count) in chronik_shard::Rejection::ALL.iter().zip(counts) {
                let labels = super::ReasonLabels {
                    shard: shard.to_string(),
                    reason: reason.reason().into(),
                };
                ConstCounter::new(count).encode(rejected.encode_family(&labels)?)?;
            }
            // Refused by the broker just after accept: a client quota.
            let labels = super::ReasonLabels {
                shard: shard.to_string(),
                reason: "connection_creation_rate".into(),
            };
            let quota = broker.connection_quota_rejected.load(Ordering::Relaxed);
            ConstCounter::new(quota).encode(rejected.encode_family(&labels)?)?;
        }
        let mut active = encoder.encode_descriptor(
            "chronik_connections_active",
            "Connections open now",
            None,
            MetricType::Gauge,
        )?;
        for (shard, (runtime, _)) in shards.iter().enumerate() {
            let labels = ShardLabel {
                shard: shard.to_string(),
            };
            let open = runtime.connections_active.load(Ordering::Relaxed) as i64;
            ConstGauge::new(open).encode(active.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
