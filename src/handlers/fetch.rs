//! Fetch: read each partition on its owning shard, and long-poll: when
//! there is less than `min_bytes`, leave a watch on every partition's owner
//! and sleep until an append wakes us or `max_wait_ms` passes. Sessionless
//! (every answer carries session id 0, which clients accept).

use super::leader_hint;
use super::{handler, Handler, Outcome, Request};
use crate::log::batch;
use crate::metrics::ShardMetrics;
use crate::partition::ReadSpec;
use crate::security::quotas::CONSUMER_BYTE_RATE;
use crate::server::throttle;
use crate::server::ShardBroker;
use crate::topics::TopicPartition;
use futures::future::{select, select_all, Either};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub(crate) const HANDLER: Handler = handler!(FetchRequest, handle, versions = 4..=18);

/// One partition of the request, in request order.
struct Wanted {
    topic: usize,
    partition: i32,
    /// `None`: not read, answered with `missing` (the topic is unknown,
    /// or the principal may not read it).
    tp: Option<TopicPartition>,
    missing: i16,
    /// isolation_level=read_committed.
    read_committed: bool,
    offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
}

async fn handle(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let fetch: FetchRequest = request.decode("Fetch")?;
    if fetch.session_id != 0 {
        // We never hand out sessions, so a client cannot hold one.
        let response = FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code());
        return request.respond(&response);
    }
    // consumer_byte_rate: a consumer over its quota gets an empty answer
    // with the throttle, and nothing is read (Kafka's KIP-219 behaviour).
    let client_id = request.header.client_id.as_deref().unwrap_or_default();
    let owed = throttle::owed(&broker, &request.session, client_id, CONSUMER_BYTE_RATE);
    if !owed.is_zero() {
        request.session.mute_for(owed);
        return request.respond(
            &FetchResponse::default()
                .with_session_id(0)
                .with_throttle_time_ms(throttle::millis(owed)),
        );
    }
    let by_id = request.version >= 13;
    let catalog = broker.catalog().snapshot();
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
        // Kafka authorizes each topic (READ) before looking it up; a
        // denied topic's partitions are answered TOPIC_AUTHORIZATION_FAILED
        // and the request's other topics are read.
        let name = if by_id {
            entry.map(|e| e.name.as_str())
        } else {
            Some(topic.topic.as_str())
        };
        let denied = name.is_some_and(|n| {
            request
                .authorize(super::AclOperation::Read, super::Resource::Topic(n))
                .is_err()
        });
        let (entry, missing) = if denied {
            (None, ResponseError::TopicAuthorizationFailed.code())
        } else {
            (entry, unknown.code())
        };
        for p in &topic.partitions {
            wanted.push(Wanted {
                topic: t,
                partition: p.partition,
                tp: entry.map(|e| TopicPartition::new(&e.name, p.partition)),
                missing,
                read_committed: fetch.isolation_level == 1,
                offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                current_leader_epoch: p.current_leader_epoch,
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
        let results = read_all(&broker, &wanted, max_bytes, deadline).await;
        let bytes: usize = results.iter().map(|r| r.records.len()).sum();
        let failed = results.iter().any(|r| r.error_code != 0);
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || failed || now >= deadline || broker.shard().drain.is_fired() {
            break results;
        }
        let watches = watch_all(&broker, &wanted, &results).await;
        if watches.is_empty() {
            break results;
        }
        let woken = pin!(select_all(watches));
        let timeout = pin!(glommio::timer::sleep(deadline - now));
        let drained = pin!(broker.shard().drain.wait());
        if let Either::Right(_) = select(woken, select(timeout, drained)).await {
            break read_all(&broker, &wanted, max_bytes, deadline).await;
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
    let mut leaders = Vec::new();
    for (want, result) in wanted.iter().zip(results) {
        record_fetch(&broker, want, &result);
        // KIP-951 (v16+): who leads it now, for a client that asked the
        // wrong broker or at a stale epoch.
        let hint = match &want.tp {
            Some(tp) if request.version >= 16 && leader_hint::wants_hint(result.error_code, true) => {
                let (id, epoch) = leader_hint::current_leader(&broker, tp);
                leaders.push(id);
                Some(
                    LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(id))
                        .with_leader_epoch(epoch),
                )
            }
            _ => None,
        };
        topics[want.topic].partitions.push(
            PartitionData::default()
                .with_current_leader(hint.unwrap_or_default())
                .with_partition_index(want.partition)
                .with_error_code(result.error_code)
                .with_high_watermark(result.high_watermark)
                .with_last_stable_offset(result.last_stable_offset)
                .with_log_start_offset(result.log_start_offset)
                .with_aborted_transactions(result.aborted.map(|aborted| {
                    aborted
                        .into_iter()
                        .map(|(producer_id, first_offset)| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(producer_id))
                                .with_first_offset(first_offset)
                        })
                        .collect()
                }))
                .with_preferred_read_replica(BrokerId(-1))
                .with_records(Some(result.records)),
        );
    }
    // Stored batches go to the socket as read, not copied into the frame:
    // listed in the order the encoder meets them.
    let splice: Vec<bytes::Bytes> = topics
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.clone())
        .collect();
    let fetched: u64 = splice.iter().map(|r| r.len() as u64).sum();
    let client_id = request.header.client_id.as_deref().unwrap_or_default();
    let throttled = throttle::record(&broker, &request.session, client_id, CONSUMER_BYTE_RATE, fetched);
    let endpoints =
        leader_hint::node_endpoints!(NodeEndpoint, leader_hint::endpoints(&broker, &request, leaders));
    request.respond_spliced(
        &FetchResponse::default()
            .with_node_endpoints(endpoints)
            .with_session_id(0)
            .with_throttle_time_ms(throttle::millis(throttled))
            .with_responses(topics),
        splice,
    )
}

/// One partition's answer: an error code and what was read.
#[derive(Debug, Default)]
struct ReadResult {
    error_code: i16,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    records: bytes::Bytes,
    aborted: Option<Vec<(i64, i64)>>,
}

/// Reads every wanted partition (each owner's share in one operation,
/// each read bounded by its own and the request's limit), then trims to
/// the request's `max_bytes` in request order (see `trim_to_limits`).
async fn read_all(
    broker: &Rc<ShardBroker>,
    wanted: &[Wanted],
    max_bytes: usize,
    answer_by: Instant,
) -> Vec<ReadResult> {
    let mut unspent = max_bytes;
    let known: Vec<(usize, ReadSpec)> = wanted
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let remote_max_bytes = w.max_bytes.min(unspent);
            unspent = unspent.saturating_sub(w.max_bytes);
            let tp = w.tp.clone()?;
            Some((
                i,
                ReadSpec {
                    tp,
                    offset: w.offset,
                    max_bytes: w.max_bytes.min(max_bytes),
                    current_leader_epoch: w.current_leader_epoch,
                    answer_by: Some(answer_by),
                    remote_max_bytes,
                    read_committed: w.read_committed,
                },
            ))
        })
        .collect();
    let (indexes, specs): (Vec<usize>, Vec<ReadSpec>) = known.into_iter().unzip();
    let answers = broker.partitions().read(specs).await;
    let mut results: Vec<ReadResult> = wanted
        .iter()
        .map(|w| ReadResult {
            error_code: w.missing,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            ..Default::default()
        })
        .collect();
    for (i, answer) in indexes.into_iter().zip(answers) {
        results[i] = match answer {
            Ok(a) => ReadResult {
                error_code: a.error.map_or(0, |e| e.code()),
                high_watermark: a.high_watermark,
                last_stable_offset: a.last_stable_offset,
                log_start_offset: a.log_start_offset,
                records: a.records,
                aborted: a.aborted,
            },
            Err(e) => ReadResult {
                error_code: e.code(),
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                records: bytes::Bytes::new(),
                aborted: None,
            },
        };
    }
    let mut parts: Vec<(bytes::Bytes, usize)> = wanted
        .iter()
        .zip(results.iter_mut())
        .map(|(w, r)| (std::mem::take(&mut r.records), w.max_bytes))
        .collect();
    trim_to_limits(&mut parts, max_bytes);
    for (r, (records, _)) in results.iter_mut().zip(parts) {
        r.records = records;
    }
    results
}

/// Kafka's response limits (KIP-74; ReplicaManager.readFromLog with
/// LogSegment.read's `minOneMessage`): partitions, in request order, share
/// the request's `max_bytes`; each gets whole batches within the smaller of
/// its `partition_max_bytes` and what is left. Until some partition has
/// returned data, a partition's first batch is returned whole however large
/// (so a batch bigger than every limit still reaches the consumer); after
/// that, nothing goes over a limit. `parts`: (whole batches read, the
/// partition's limit), trimmed in place.
fn trim_to_limits(parts: &mut [(bytes::Bytes, usize)], max_bytes: usize) {
    let mut left = max_bytes;
    let mut min_one = true;
    for (records, partition_max) in parts.iter_mut() {
        let limit = (*partition_max).min(left);
        // Reads return whole batches: what fits needs no walk.
        let end = if records.len() <= limit {
            records.len()
        } else {
            whole_batches_within(records, limit, min_one)
        };
        *records = records.slice(..end);
        left = left.saturating_sub(end);
        if end > 0 {
            min_one = false;
        }
    }
}

/// The length of the whole batches at the start of `records` that fit in
/// `limit`; with `whole_first`, the first batch counts whatever its size.
fn whole_batches_within(records: &[u8], limit: usize, whole_first: bool) -> usize {
    let mut end = 0;
    while let Some(size) = records.get(end..).and_then(batch::batch_size) {
        let exempt = whole_first && end == 0;
        if end + size > records.len() || (end + size > limit && !exempt) {
            break;
        }
        end += size;
    }
    end
}

/// Leaves a watch on every owner of a wanted partition; each resolves when
/// one of its partitions' high watermark passes the fetch offset. A
/// read_committed read waits past the high watermark it last saw: data
/// above the stable offset wakes nothing until a write (a marker among
/// them) moves the high watermark on.
async fn watch_all(
    broker: &Rc<ShardBroker>,
    wanted: &[Wanted],
    seen: &[ReadResult],
) -> Vec<futures::channel::oneshot::Receiver<()>> {
    let parts = wanted
        .iter()
        .zip(seen)
        .filter_map(|(w, r)| {
            let from = match w.read_committed {
                true => w.offset.max(r.high_watermark),
                false => w.offset,
            };
            Some((w.tp.clone()?, from))
        })
        .collect();
    broker.partitions().watch(parts).await
}

/// Per-topic fetched records and bytes, and per-partition errors.
fn record_fetch(broker: &ShardBroker, want: &Wanted, result: &ReadResult) {
    if result.error_code != 0 {
        let error = ShardMetrics::error_name(result.error_code);
        broker.metrics().request_error(ApiKey::Fetch as i16, &error);
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
        .metrics()
        .fetched(&tp.topic, records, result.records.len() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Whole batches of roughly these sizes, concatenated.
    fn batches(sizes: &[usize]) -> (Bytes, Vec<usize>) {
        let mut out = Vec::new();
        let mut actual = Vec::new();
        for &size in sizes {
            let b = batch::build_batch(0, 0, &[(b"", &vec![7u8; size])]);
            actual.push(b.len());
            out.extend(b);
        }
        (Bytes::from(out), actual)
    }

    fn kept(parts: &[(Bytes, usize)]) -> Vec<usize> {
        parts.iter().map(|(r, _)| r.len()).collect()
    }

    #[test]
    fn the_request_limit_bounds_the_sum_of_partitions() {
        let (a, sa) = batches(&[400, 400, 400]);
        let (b, sb) = batches(&[300, 300]);
        let mut parts = vec![(a, 10_000), (b, 10_000)];
        trim_to_limits(&mut parts, sa[0] + sa[1] + sb[0] + 10);
        // Two of the first partition's batches, then one of the second.
        assert_eq!(kept(&parts), vec![sa[0] + sa[1], sb[0]]);
    }

    #[test]
    fn each_partition_stays_within_its_own_limit() {
        let (a, sa) = batches(&[400, 400]);
        let (b, sb) = batches(&[300, 300]);
        let mut parts = vec![(a, sa[0] + 10), (b, sb[0] + sb[1])];
        trim_to_limits(&mut parts, 1_000_000);
        assert_eq!(kept(&parts), vec![sa[0], sb[0] + sb[1]]);
    }

    #[test]
    fn only_the_first_batch_of_the_response_may_exceed_the_limits() {
        let (a, sa) = batches(&[5000, 100]);
        let (b, _) = batches(&[5000]);
        let (c, sc) = batches(&[50]);
        // The first partition's first batch goes whole past both limits;
        // nothing after it goes over.
        let mut parts = vec![(a, 1000), (b, 1000), (c.clone(), 1000)];
        trim_to_limits(&mut parts, 1000);
        assert_eq!(kept(&parts), vec![sa[0], 0, 0]);
        // An empty first partition leaves the exception to the next one.
        let (b, sb) = batches(&[5000]);
        let mut parts = vec![(Bytes::new(), 1000), (b, 1000), (c.clone(), 1000)];
        trim_to_limits(&mut parts, 1000);
        assert_eq!(kept(&parts), vec![0, sb[0], 0]);
        // Room left after a small first partition goes to later ones, but
        // a too-large batch there is not the first of the response.
        let (b, _) = batches(&[5000]);
        let mut parts = vec![(c, 1000), (b, 1000)];
        trim_to_limits(&mut parts, 10_000);
        assert_eq!(kept(&parts), vec![sc[0], 0]);
    }
}
