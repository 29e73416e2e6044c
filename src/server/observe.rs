//! Each shard's own observation loop: refreshes its log and group gauges,
//! publishes its partitions' end offsets for other shards' lag figures,
//! watches its event loop for stalls, and logs a one-line summary every
//! `metrics_interval`.

use super::ShardBroker;
use crate::topics::TopicPartition;
use arc_swap::ArcSwap;
use chronik_shard::ShardStats;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// Each shard's latest published end offsets, read by every shard.
pub(crate) type EndOffsets = Arc<Vec<ArcSwap<HashMap<TopicPartition, i64>>>>;

/// How often gauges refresh.
const REFRESH: Duration = Duration::from_secs(1);
/// The stall probe's timer, and how late a wake-up counts as a stall.
const PROBE: Duration = Duration::from_millis(10);
const STALL: Duration = Duration::from_millis(50);

pub(crate) async fn observe(broker: Rc<ShardBroker>, ends: EndOffsets) {
    let stall_probe = glommio::spawn_local(probe_stalls(broker.clone()));
    let mut last_summary = Instant::now();
    let mut last_stats: Option<ShardStats> = None;
    let mut last_requests = 0u64;
    let mut last_tasks = 0u64;
    while !broker.shard().drain.is_fired() {
        glommio::timer::sleep(REFRESH).await;
        let (mut per_topic, owned_ends) = broker.local_partitions().log_stats();
        // The internal compacted partitions, under their Kafka names.
        for (topic, stats) in [
            (crate::routing::OFFSETS_TOPIC, broker.groups().log_stats()),
            (
                crate::routing::TRANSACTION_STATE_TOPIC,
                broker.transactions().log_stats(),
            ),
        ] {
            if stats.1 > 0 {
                per_topic.insert(topic.to_string(), stats);
            }
        }
        broker.metrics().set_logs(&per_topic);
        if let Some(mine) = ends.get(broker.shard().id) {
            mine.store(Arc::new(owned_ends));
        }
        let groups = broker.groups().lag_stats(|topic, partition| {
            let tp = TopicPartition::new(topic, partition);
            let owner = broker.partitions().router().local_shard(&tp)?;
            ends.get(owner)
                .and_then(|snapshot| snapshot.load().get(&tp).copied())
        });
        broker.metrics().set_groups(&groups);
        let tasks = glommio::executor().executor_stats().tasks_executed();
        broker.metrics().tasks.inc_by(tasks.saturating_sub(last_tasks));
        last_tasks = tasks;

        let elapsed = last_summary.elapsed();
        if elapsed >= broker.config().metrics_interval {
            let stats = broker.shard().counters.snapshot(broker.shard().id);
            let requests = broker
                .net()
                .counters
                .requests
                .load(std::sync::atomic::Ordering::Relaxed);
            let previous = last_stats.unwrap_or_default();
            let secs = elapsed.as_secs_f64().max(0.001);
            info!(
                shard = broker.shard().id,
                connections = stats.connections_active,
                requests_per_sec = format!("{:.1}", (requests - last_requests) as f64 / secs),
                bytes_in_per_sec = format!(
                    "{:.0}",
                    (stats.bytes_received - previous.bytes_received) as f64 / secs
                ),
                bytes_out_per_sec = format!("{:.0}", (stats.bytes_sent - previous.bytes_sent) as f64 / secs),
                "shard summary"
            );
            last_summary = Instant::now();
            last_stats = Some(stats);
            last_requests = requests;
        }
    }
    drop(stall_probe);
}

/// Sleeps for `PROBE` over and over; waking much later than asked means
/// some task held the event loop.
async fn probe_stalls(broker: Rc<ShardBroker>) {
    while !broker.shard().drain.is_fired() {
        let asked = Instant::now();
        glommio::timer::sleep(PROBE).await;
        let late = asked.elapsed().saturating_sub(PROBE);
        broker.metrics().loop_lag.set(late.as_secs_f64());
        if late > STALL {
            broker.metrics().stalls.inc();
        }
    }
}
