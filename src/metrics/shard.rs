//! One shard's handles to its own series. Looked up once per label value
//! and cached here, so recording is an atomic add on a series no other
//! shard writes.

use super::*;
use kafka_protocol::messages::ApiKey;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub struct ShardMetrics {
    shard: String,
    metrics: Arc<Metrics>,
    per_api: RefCell<HashMap<i16, (Counter, Histogram)>>,
    per_topic: RefCell<HashMap<String, [Counter; 4]>>,
    pub(crate) pending: Gauge,
    backpressure: Counter,
    /// Request bytes held against QUEUED_MAX_REQUEST_BYTES, and their peak.
    pub(crate) queued_bytes: Gauge,
    pub(crate) queued_bytes_peak: Gauge,
    timeouts: Counter,
    pub(crate) stalls: Counter,
    pub(crate) loop_lag: FloatGauge,
    pub(crate) tasks: Counter,
}

/// Whether hot-path recording is compiled in (the `metrics` feature).
const RECORDING: bool = cfg!(feature = "metrics");

/// Error series created (at zero) with the shard, so the
/// `chronik_request_errors` family is in the first scrape and a rate or
/// increase over it is 0, not absent, until errors happen; the others
/// appear as they occur. The errors a misconfigured client or a failing
/// disk produces first.
const SEEDED_ERRORS: &[(ApiKey, &str)] = &[
    (ApiKey::Metadata, "UnknownTopicOrPartition"),
    (ApiKey::Produce, "UnknownTopicOrPartition"),
    (ApiKey::Produce, "RequestTimedOut"),
    (ApiKey::Fetch, "UnknownTopicOrPartition"),
];

/// Per-topic counters, in this order.
const PRODUCE_RECORDS: usize = 0;
const PRODUCE_BYTES: usize = 1;
const FETCH_RECORDS: usize = 2;
const FETCH_BYTES: usize = 3;

fn api_name(api: i16) -> String {
    ApiKey::try_from(api).map_or_else(|()| format!("api_{api}"), |k| format!("{k:?}"))
}

impl ShardMetrics {
    /// Creates this shard's series (zero) for every family, so each shows
    /// one series per shard from the first scrape.
    pub fn new(shard: usize, metrics: Arc<Metrics>) -> ShardMetrics {
        let label = ShardLabel {
            shard: shard.to_string(),
        };
        for reason in crate::tls::FAILURE_REASONS {
            let _ = metrics.tls_handshake_failures.get_or_create(&ReasonLabels {
                shard: label.shard.clone(),
                reason: reason.to_string(),
            });
        }
        let _ = metrics.groups.get_or_create(&label);
        for (api, error) in SEEDED_ERRORS {
            let _ = metrics.request_errors.get_or_create(&ErrorLabels {
                shard: label.shard.clone(),
                api: api_name(*api as i16),
                error: error.to_string(),
            });
        }
        ShardMetrics {
            pending: metrics.pending_requests.get_or_create_owned(&label),
            backpressure: metrics.backpressure_events.get_or_create_owned(&label),
            queued_bytes: metrics.queued_request_bytes.get_or_create_owned(&label),
            queued_bytes_peak: metrics.queued_request_bytes_peak.get_or_create_owned(&label),
            timeouts: metrics.request_timeouts.get_or_create_owned(&label),
            stalls: metrics.executor_stalls.get_or_create_owned(&label),
            loop_lag: metrics.executor_loop_lag.get_or_create_owned(&label),
            tasks: metrics.executor_tasks.get_or_create_owned(&label),
            shard: label.shard,
            metrics,
            per_api: RefCell::default(),
            per_topic: RefCell::default(),
        }
    }

    fn api(&self, api: i16) -> (Counter, Histogram) {
        self.per_api
            .borrow_mut()
            .entry(api)
            .or_insert_with(|| {
                let labels = ApiLabels {
                    shard: self.shard.clone(),
                    api: api_name(api),
                };
                (
                    self.metrics.requests.get_or_create_owned(&labels),
                    self.metrics.request_duration.get_or_create_owned(&labels),
                )
            })
            .clone()
    }

    /// A request was not answered within REQUEST_TIMEOUT_SECS.
    pub fn request_timeout(&self) {
        self.timeouts.inc();
    }

    /// A TLS handshake failed for `reason` (one of `tls::FAILURE_REASONS`).
    pub fn tls_handshake_failed(&self, reason: &str) {
        let labels = ReasonLabels {
            shard: self.shard.clone(),
            reason: reason.to_string(),
        };
        self.metrics.tls_handshake_failures.get_or_create(&labels).inc();
    }

    /// The shard stopped reading because too many requests were pending.
    pub fn backpressure_event(&self) {
        self.backpressure.inc();
    }

    /// A request of `api` was answered after `took`.
    pub fn request_done(&self, api: i16, took: Duration) {
        if !RECORDING {
            return;
        }
        let (count, duration) = self.api(api);
        count.inc();
        duration.observe(took.as_secs_f64());
    }

    /// A request (or one partition of it) was answered with `error`.
    pub fn request_error(&self, api: i16, error: &str) {
        let labels = ErrorLabels {
            shard: self.shard.clone(),
            api: api_name(api),
            error: error.to_string(),
        };
        self.metrics.request_errors.get_or_create(&labels).inc();
    }

    /// A Kafka error code as a label value (`UnknownTopicOrPartition`).
    pub fn error_name(code: i16) -> String {
        kafka_protocol::ResponseError::try_from_code(code).map_or_else(|| "None".into(), |e| format!("{e:?}"))
    }

    fn topic(&self, topic: &str, which: usize) -> Counter {
        let mut per_topic = self.per_topic.borrow_mut();
        let key = if per_topic.contains_key(topic) || per_topic.len() < MAX_LABELLED {
            topic
        } else {
            "_other"
        };
        if let Some(counters) = per_topic.get(key) {
            return counters[which].clone();
        }
        let labels = TopicLabels {
            shard: self.shard.clone(),
            topic: key.to_string(),
        };
        let counters = [
            self.metrics.produce_records.get_or_create_owned(&labels),
            self.metrics.produce_bytes.get_or_create_owned(&labels),
            self.metrics.fetch_records.get_or_create_owned(&labels),
            self.metrics.fetch_bytes.get_or_create_owned(&labels),
        ];
        let wanted = counters[which].clone();
        per_topic.insert(key.to_string(), counters);
        wanted
    }

    pub fn produced(&self, topic: &str, records: u64, bytes: u64) {
        if !RECORDING {
            return;
        }
        self.topic(topic, PRODUCE_RECORDS).inc_by(records);
        self.topic(topic, PRODUCE_BYTES).inc_by(bytes);
    }

    pub fn fetched(&self, topic: &str, records: u64, bytes: u64) {
        if !RECORDING {
            return;
        }
        self.topic(topic, FETCH_RECORDS).inc_by(records);
        self.topic(topic, FETCH_BYTES).inc_by(bytes);
    }

    /// Replaces this shard's per-topic log gauges (end offsets, sizes).
    pub fn set_logs(&self, per_topic: &HashMap<String, (i64, u64)>) {
        for (i, (topic, (end, size))) in per_topic.iter().enumerate() {
            let topic = if i < MAX_LABELLED {
                topic.as_str()
            } else {
                "_other"
            };
            let labels = TopicLabels {
                shard: self.shard.clone(),
                topic: topic.to_string(),
            };
            self.metrics.log_end_offset.get_or_create(&labels).set(*end);
            self.metrics.log_size.get_or_create(&labels).set(*size as i64);
        }
    }

    /// Replaces this shard's group gauges: count, and members and lag per group.
    pub fn set_groups(&self, groups: &[(String, usize, i64)]) {
        let label = ShardLabel {
            shard: self.shard.clone(),
        };
        self.metrics.groups.get_or_create(&label).set(groups.len() as i64);
        for (i, (group, members, lag)) in groups.iter().enumerate() {
            let group = if i < MAX_LABELLED {
                group.as_str()
            } else {
                "_other"
            };
            let labels = GroupLabels {
                shard: self.shard.clone(),
                group: group.to_string(),
            };
            self.metrics
                .group_members
                .get_or_create(&labels)
                .set(*members as i64);
            self.metrics.group_lag.get_or_create(&labels).set(*lag);
        }
    }
}
