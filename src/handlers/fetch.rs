//! Fetch: read each partition on its owning shard, and long-poll: when
//! there is less than `min_bytes`, leave a watch on every partition's owner
//! and sleep until an append wakes us or `max_wait_ms` passes. Sessionless
//! (every answer carries session id 0, which clients accept).

use super::{handler, Handler, Outcome, Request};
use crate::log::batch;
use crate::metrics::ShardMetrics;
use crate::server::ShardBroker;
use crate::storage::ReadResult;
use crate::topics::TopicPartition;
use futures::future::{join_all, select, select_all, Either};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub(crate) const HANDLER: Handler = handler!(FetchRequest, handle);

/// One partition of the request, in request order.
struct Wanted {
    topic: usize,
    partition: i32,
    /// `None`: the topic is unknown (answered with `unknown`).
    tp: Option<TopicPartition>,
    offset: i64,
    max_bytes: usize,
}

async fn handle(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let fetch: FetchRequest = request.decode("Fetch")?;
    if fetch.session_id != 0 {
        // We never hand out sessions, so a client cannot hold one.
        let response = FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code());
        return request.respond(&response);
    }
    let by_id = request.version >= 13;
    let catalog = broker.catalog.snapshot();
    let unknown = if by_id {
        ResponseError::UnknownTopicId
    } else {
        ResponseError::UnknownTopicOrPartition
    };
    let mut wanted = Vec::new();
    for (t, topic) in fetch.topics.iter().enumerate() {
        let entry = if by_id {
            catalog.by_id(&topic.topic_id)
        } else {
            catalog.get(&topic.topic)
        };
        for p in &topic.partitions {
            wanted.push(Wanted {
                topic: t,
                partition: p.partition,
                tp: entry.map(|e| TopicPartition::new(&e.name, p.partition)),
                offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
            });
        }
    }
    let min_bytes = usize::try_from(fetch.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(fetch.max_bytes).unwrap_or(usize::MAX);
    // The client bounds the long poll; the connection waits that long.
    let max_wait = Duration::from_millis(u64::try_from(fetch.max_wait_ms).unwrap_or(0));
    let deadline = Instant::now() + max_wait;
    request.wait.until(deadline);

    let results = loop {
        let results = read_all(&broker, &wanted, max_bytes, unknown.code()).await;
        let bytes: usize = results.iter().map(|r| r.records.len()).sum();
        let failed = results.iter().any(|r| r.error_code != 0);
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || failed || now >= deadline || broker.shard.drain.is_fired() {
            break results;
        }
        let watches = watch_all(&broker, &wanted).await;
        if watches.is_empty() {
            break results;
        }
        let woken = pin!(select_all(watches));
        let timeout = pin!(glommio::timer::sleep(deadline - now));
        let drained = pin!(broker.shard.drain.wait());
        if let Either::Right(_) = select(woken, select(timeout, drained)).await {
            break read_all(&broker, &wanted, max_bytes, unknown.code()).await;
        }
    };

    let mut topics: Vec<FetchableTopicResponse> = fetch
        .topics
        .iter()
        .map(|t| {
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
        })
        .collect();
    for (want, result) in wanted.iter().zip(results) {
        record_fetch(&broker, want, &result);
        topics[want.topic].partitions.push(
            PartitionData::default()
                .with_partition_index(want.partition)
                .with_error_code(result.error_code)
                .with_high_watermark(result.high_watermark)
                .with_last_stable_offset(result.high_watermark)
                .with_log_start_offset(result.log_start_offset)
                .with_aborted_transactions(Some(Vec::new()))
                .with_preferred_read_replica(BrokerId(-1))
                .with_records(Some(result.records)),
        );
    }
    // Stored batches go to the socket as read, not copied into the frame:
    // listed in the order the encoder meets them.
    let splice = topics
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.clone())
        .collect();
    request.respond_spliced(
        &FetchResponse::default().with_session_id(0).with_responses(topics),
        splice,
    )
}

/// Reads every wanted partition (each owner's share in one message), then
/// trims to `max_bytes` in request order: the first partition with data
/// keeps at least one whole batch, later ones only what still fits.
async fn read_all(
    broker: &Rc<ShardBroker>,
    wanted: &[Wanted],
    max_bytes: usize,
    unknown: i16,
) -> Vec<ReadResult> {
    let mut by_owner: BTreeMap<usize, Vec<(usize, TopicPartition, i64, usize)>> = BTreeMap::new();
    for (i, w) in wanted.iter().enumerate() {
        if let Some(tp) = &w.tp {
            by_owner
                .entry(broker.owner(tp))
                .or_default()
                .push((i, tp.clone(), w.offset, w.max_bytes));
        }
    }
    let reads = by_owner.into_iter().map(|(owner, parts)| {
        broker.on_shard(owner, move |b| async move {
            parts
                .into_iter()
                .map(|(i, tp, offset, max)| (i, b.storage.read(&tp, offset, max, true)))
                .collect::<Vec<_>>()
        })
    });
    let mut results: Vec<ReadResult> = wanted
        .iter()
        .map(|_| ReadResult {
            error_code: unknown,
            high_watermark: -1,
            log_start_offset: -1,
            ..Default::default()
        })
        .collect();
    for read in join_all(reads).await {
        match read {
            Ok(parts) => {
                for (i, result) in parts {
                    results[i] = result;
                }
            }
            Err(_) => {
                for r in results.iter_mut().filter(|r| r.error_code == unknown) {
                    r.error_code = ResponseError::KafkaStorageError.code();
                }
            }
        }
    }
    let mut budget = max_bytes;
    let mut first = true;
    for (w, r) in wanted.iter().zip(results.iter_mut()) {
        if r.records.is_empty() {
            continue;
        }
        let fits = r.records.len() <= budget && r.records.len() <= w.max_bytes.max(1);
        if first || fits {
            budget = budget.saturating_sub(r.records.len());
            first = false;
        } else {
            r.records = bytes::Bytes::new();
        }
    }
    results
}

/// Leaves a watch on every owner of a wanted partition; each resolves when
/// one of its partitions grows past the fetch offset.
async fn watch_all(
    broker: &Rc<ShardBroker>,
    wanted: &[Wanted],
) -> Vec<futures::channel::oneshot::Receiver<()>> {
    let mut by_owner: BTreeMap<usize, Vec<(TopicPartition, i64)>> = BTreeMap::new();
    for w in wanted {
        if let Some(tp) = &w.tp {
            by_owner
                .entry(broker.owner(tp))
                .or_default()
                .push((tp.clone(), w.offset));
        }
    }
    let watches = by_owner
        .into_iter()
        // The watch is registered on the owner; the receiver comes back here
        // to be awaited, which is why the closure's value is itself a future.
        .map(|(owner, parts)| {
            broker.on_shard(owner, move |b| {
                let receiver = b.storage.watch(&parts);
                std::future::ready(receiver)
            })
        });
    join_all(watches)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect()
}

/// Per-topic fetched records and bytes, and per-partition errors.
fn record_fetch(broker: &ShardBroker, want: &Wanted, result: &ReadResult) {
    if result.error_code != 0 {
        let error = ShardMetrics::error_name(result.error_code);
        broker.metrics.request_error(ApiKey::Fetch as i16, &error);
        return;
    }
    let (Some(tp), false) = (&want.tp, result.records.is_empty()) else {
        return;
    };
    let mut records = 0u64;
    let mut at = 0;
    while let Some(header) = result.records.get(at..).and_then(|b| batch::parse_header(b).ok()) {
        records += u64::from(header.last_offset_delta.max(0) as u32) + 1;
        at += header.size;
    }
    broker
        .metrics
        .fetched(&tp.topic, records, result.records.len() as u64);
}
