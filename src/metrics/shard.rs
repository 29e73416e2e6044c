//! One shard's handles to its own series. Looked up once per label value
//! and cached here, so recording is an atomic add on a series no other
//! shard writes.
//!
//! Which topics (and groups) get a label of their own is decided once per
//! name, first come first served, and kept until the topic is deleted (the
//! group disappears): the labelled set does not change from one scrape to
//! the next. Everything beyond it is summed under `_other`.

use super::*;
use kafka_protocol::messages::ApiKey;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The label value shared by topics (groups) beyond `MAX_LABELLED`.
pub const OTHER: &str = "_other";

/// Names that have a label of their own: the first `MAX_LABELLED` to ask,
/// until forgotten.
#[derive(Default)]
struct Labelled(HashSet<String>);

impl Labelled {
    /// The label value for `name`, labelling it now if there is room.
    fn label<'a>(&mut self, name: &'a str) -> &'a str {
        if self.0.contains(name) {
            return name;
        }
        // A topic literally named `_other` can only share that series.
        if self.0.len() < MAX_LABELLED && name != OTHER {
            self.0.insert(name.to_string());
            return name;
        }
        OTHER
    }
}

pub struct ShardMetrics {
    shard: String,
    metrics: Arc<Metrics>,
    per_api: RefCell<HashMap<i16, (Counter, Histogram)>>,
    /// Counters by label value (a topic, or `_other`).
    per_topic: RefCell<HashMap<String, [Counter; 4]>>,
    topics: RefCell<Labelled>,
    /// Label values that have log gauges now (to remove the ones that go).
    log_gauges: RefCell<HashSet<String>>,
    groups: RefCell<Labelled>,
    group_gauges: RefCell<HashSet<String>>,
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
            topics: RefCell::default(),
            log_gauges: RefCell::default(),
            groups: RefCell::default(),
            group_gauges: RefCell::default(),
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

    /// The shard's coordinator has `open` transactions now.
    pub fn set_open_transactions(&self, open: usize) {
        let labels = ShardLabel {
            shard: self.shard.clone(),
        };
        self.metrics
            .transactions_open
            .get_or_create(&labels)
            .set(open as i64);
    }

    /// A transaction ended (`outcome`: commit, abort or timeout) after
    /// `took`.
    pub fn transaction_ended(&self, outcome: &str, took: Duration) {
        let labels = ReasonLabels {
            shard: self.shard.clone(),
            reason: outcome.to_string(),
        };
        self.metrics.transactions_ended.get_or_create(&labels).inc();
        let shard = ShardLabel {
            shard: self.shard.clone(),
        };
        self.metrics
            .transaction_duration
            .get_or_create(&shard)
            .observe(took.as_secs_f64());
    }

    /// A SASL authentication failed.
    pub fn auth_failed(&self, mechanism: &str, reason: &str) {
        let labels = AuthFailureLabels {
            shard: self.shard.clone(),
            mechanism: mechanism.to_string(),
            reason: reason.to_string(),
        };
        self.metrics.auth_failures.get_or_create(&labels).inc();
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

    fn topic_labels(&self, topic: &str) -> TopicLabels {
        TopicLabels {
            shard: self.shard.clone(),
            topic: topic.to_string(),
        }
    }

    fn group_labels(&self, group: &str) -> GroupLabels {
        GroupLabels {
            shard: self.shard.clone(),
            group: group.to_string(),
        }
    }

    /// Runs `record` on the counters `topic` counts under: its own, or
    /// `_other`'s beyond `MAX_LABELLED` topics.
    fn with_topic(&self, topic: &str, record: impl FnOnce(&[Counter; 4])) {
        let mut per_topic = self.per_topic.borrow_mut();
        if let Some(counters) = per_topic.get(topic) {
            return record(counters);
        }
        let key = self.topics.borrow_mut().label(topic);
        let counters = per_topic.entry(key.to_string()).or_insert_with(|| {
            let labels = self.topic_labels(key);
            [
                self.metrics.produce_records.get_or_create_owned(&labels),
                self.metrics.produce_bytes.get_or_create_owned(&labels),
                self.metrics.fetch_records.get_or_create_owned(&labels),
                self.metrics.fetch_bytes.get_or_create_owned(&labels),
            ]
        });
        record(counters)
    }

    pub fn produced(&self, topic: &str, records: u64, bytes: u64) {
        if !RECORDING {
            return;
        }
        self.with_topic(topic, |c| {
            c[PRODUCE_RECORDS].inc_by(records);
            c[PRODUCE_BYTES].inc_by(bytes);
        });
    }

    pub fn fetched(&self, topic: &str, records: u64, bytes: u64) {
        if !RECORDING {
            return;
        }
        self.with_topic(topic, |c| {
            c[FETCH_RECORDS].inc_by(records);
            c[FETCH_BYTES].inc_by(bytes);
        });
    }

    /// Replaces this shard's per-topic log gauges (end offsets, sizes):
    /// topics beyond the labelled ones are summed under `_other`, and the
    /// gauges of topics no longer here are removed.
    /// Compacted topics also get their cleanable bytes and dirty ratio.
    pub fn set_logs(&self, per_topic: &HashMap<String, crate::partition::TopicLogStats>) {
        // By name, so topics labelled in the same refresh are labelled in
        // an order that does not depend on the map's hashing.
        let mut names: Vec<&String> = per_topic.keys().collect();
        names.sort_unstable();
        let mut values: HashMap<String, (i64, i64, i64, u64, u64)> = HashMap::new();
        {
            let mut labelled = self.topics.borrow_mut();
            for name in names {
                let (end, size, unstable, cleanable, dirty) = per_topic[name];
                let sum = values.entry(labelled.label(name).to_string()).or_default();
                sum.0 += end;
                sum.1 += size as i64;
                sum.2 += unstable;
                sum.3 += cleanable;
                sum.4 += dirty;
            }
        }
        let mut gauged = self.log_gauges.borrow_mut();
        for gone in gauged.iter().filter(|t| !values.contains_key(*t)) {
            self.remove_log_gauges(&self.topic_labels(gone));
        }
        gauged.clear();
        for (topic, (end, size, unstable, cleanable, dirty)) in values {
            let labels = self.topic_labels(&topic);
            self.metrics.log_end_offset.get_or_create(&labels).set(end);
            self.metrics.log_size.get_or_create(&labels).set(size);
            self.metrics.log_unstable.get_or_create(&labels).set(unstable);
            if cleanable > 0 {
                self.metrics
                    .log_cleanable
                    .get_or_create(&labels)
                    .set(cleanable as i64);
                self.metrics
                    .log_dirty_ratio
                    .get_or_create(&labels)
                    .set(dirty as f64 / cleanable as f64);
            } else {
                self.metrics.log_cleanable.remove(&labels);
                self.metrics.log_dirty_ratio.remove(&labels);
            }
            gauged.insert(topic);
        }
    }

    fn remove_log_gauges(&self, labels: &TopicLabels) {
        let m = &self.metrics;
        m.log_end_offset.remove(labels);
        m.log_size.remove(labels);
        m.log_unstable.remove(labels);
        m.log_cleanable.remove(labels);
        m.log_dirty_ratio.remove(labels);
    }

    /// A cleaning finished.
    pub fn cleaned(&self, read: u64, written: u64, took: Duration) {
        let shard = ShardLabel {
            shard: self.shard.clone(),
        };
        self.metrics.cleaner_runs.get_or_create(&shard).inc();
        self.metrics.cleaner_read.get_or_create(&shard).inc_by(read);
        self.metrics.cleaner_written.get_or_create(&shard).inc_by(written);
        self.metrics
            .cleaner_duration
            .get_or_create(&shard)
            .observe(took.as_secs_f64());
    }

    /// Replaces this shard's group gauges: count, and members and lag per
    /// group. Groups beyond the labelled ones are summed under `_other`;
    /// groups no longer here (deleted, expired) lose their series and their
    /// label.
    pub fn set_groups(&self, groups: &[(String, usize, i64)]) {
        let label = ShardLabel {
            shard: self.shard.clone(),
        };
        let present: HashSet<&str> = groups.iter().map(|(g, _, _)| g.as_str()).collect();
        let gone: Vec<String> = self
            .groups
            .borrow()
            .0
            .iter()
            .filter(|g| !present.contains(g.as_str()))
            .cloned()
            .collect();
        for group in gone {
            self.forget_group(&group);
        }
        let mut ordered: Vec<&(String, usize, i64)> = groups.iter().collect();
        ordered.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut values: HashMap<String, (i64, i64)> = HashMap::new();
        {
            let mut labelled = self.groups.borrow_mut();
            for (group, members, lag) in ordered {
                let sum = values.entry(labelled.label(group).to_string()).or_default();
                sum.0 += *members as i64;
                sum.1 += lag;
            }
        }
        let mut gauged = self.group_gauges.borrow_mut();
        for gone in gauged.iter().filter(|g| !values.contains_key(*g)) {
            let labels = self.group_labels(gone);
            self.metrics.group_members.remove(&labels);
            self.metrics.group_lag.remove(&labels);
        }
        gauged.clear();
        for (group, (members, lag)) in values {
            let labels = self.group_labels(&group);
            self.metrics.group_members.get_or_create(&labels).set(members);
            self.metrics.group_lag.get_or_create(&labels).set(lag);
            gauged.insert(group);
        }
        // Last: the metrics endpoint reads from another thread, and a scrape
        // that sees the new count should also see the series behind it.
        self.metrics.groups.get_or_create(&label).set(groups.len() as i64);
    }

    /// A topic was deleted: its series on this shard go, and its label is
    /// free for another topic. What it counted under `_other` stays there
    /// (a counter does not go down).
    pub fn forget_topic(&self, topic: &str) {
        if !self.topics.borrow_mut().0.remove(topic) {
            return;
        }
        self.per_topic.borrow_mut().remove(topic);
        self.log_gauges.borrow_mut().remove(topic);
        let labels = self.topic_labels(topic);
        let m = &self.metrics;
        for family in [
            &m.produce_records,
            &m.produce_bytes,
            &m.fetch_records,
            &m.fetch_bytes,
        ] {
            family.remove(&labels);
        }
        self.remove_log_gauges(&labels);
    }

    /// A group is gone: its series on this shard go, and its label is free.
    pub fn forget_group(&self, group: &str) {
        if !self.groups.borrow_mut().0.remove(group) {
            return;
        }
        self.group_gauges.borrow_mut().remove(group);
        let labels = self.group_labels(group);
        self.metrics.group_members.remove(&labels);
        self.metrics.group_lag.remove(&labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard() -> (Arc<Metrics>, ShardMetrics) {
        let metrics = Arc::new(Metrics::new(RuntimeCounters::empty()));
        (metrics.clone(), ShardMetrics::new(0, metrics))
    }

    /// `label` value -> sample of every series of `name`.
    fn series(metrics: &Metrics, name: &str, label: &str) -> HashMap<String, f64> {
        let text = metrics.render().unwrap();
        let key = format!("{label}=\"");
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| {
                let value = l.split(&key).nth(1)?.split('"').next()?.to_string();
                Some((value, l.rsplit(' ').next()?.parse().ok()?))
            })
            .collect()
    }

    fn labelled(series: &HashMap<String, f64>) -> Vec<String> {
        let mut names: Vec<String> = series.keys().filter(|k| *k != OTHER).cloned().collect();
        names.sort();
        names
    }

    /// A fresh map each time, as each refresh builds one: its own hashing.
    fn logs(topics: impl Iterator<Item = String>) -> HashMap<String, crate::partition::TopicLogStats> {
        topics.map(|t| (t, (10, 100, 0, 0, 0))).collect()
    }

    #[test]
    fn labels_stay_the_same_from_scrape_to_scrape_and_the_rest_is_summed() {
        let (metrics, shard) = shard();
        let extra = 5;
        let names = || (0..MAX_LABELLED + extra).map(|i| format!("t{i:05}"));
        shard.set_logs(&logs(names()));
        let first = series(&metrics, "chronik_log_end_offset", "topic");
        assert_eq!(labelled(&first).len(), MAX_LABELLED);
        assert_eq!(first[OTHER], (10 * extra) as f64, "_other is the sum of the rest");
        let sizes = series(&metrics, "chronik_log_size_bytes", "topic");
        assert_eq!(sizes[OTHER], (100 * extra) as f64);
        for _ in 0..5 {
            shard.set_logs(&logs(names()));
            let again = series(&metrics, "chronik_log_end_offset", "topic");
            let (now, before) = (labelled(&again), labelled(&first));
            let moved: Vec<&String> = now
                .iter()
                .filter(|t| !before.contains(t))
                .chain(before.iter().filter(|t| !now.contains(t)))
                .collect();
            assert!(moved.is_empty(), "the labelled set moved: {moved:?}");
            assert_eq!(again[OTHER], (10 * extra) as f64);
        }
        // Topics already labelled keep their counters' label; new ones
        // beyond the cap add to `_other`.
        shard.produced("t00000", 3, 30);
        shard.produced("late-a", 2, 20);
        shard.produced("late-b", 4, 40);
        let produced = series(&metrics, "chronik_produce_records_total", "topic");
        assert_eq!(produced["t00000"], 3.0);
        assert_eq!(produced[OTHER], 6.0);
        assert!(!produced.contains_key("late-a"));
    }

    #[test]
    fn deleted_topics_and_vanished_groups_lose_their_series() {
        let (metrics, shard) = shard();
        shard.produced("doomed", 5, 50);
        shard.fetched("doomed", 5, 50);
        shard.produced("kept", 1, 10);
        shard.set_logs(&logs(["doomed", "kept"].map(String::from).into_iter()));
        assert!(series(&metrics, "chronik_log_end_offset", "topic").contains_key("doomed"));
        shard.forget_topic("doomed");
        let text = metrics.render().unwrap();
        assert!(!text.contains("topic=\"doomed\""), "{text}");
        assert!(text.contains("topic=\"kept\""));
        // The next refresh, without the topic, does not bring it back.
        shard.set_logs(&logs(["kept"].map(String::from).into_iter()));
        assert!(!metrics.render().unwrap().contains("topic=\"doomed\""));

        let groups =
            |n: usize| -> Vec<(String, usize, i64)> { (0..n).map(|i| (format!("g{i:05}"), 1, 7)).collect() };
        shard.set_groups(&groups(MAX_LABELLED + 3));
        let members = series(&metrics, "chronik_consumer_group_members", "group");
        assert_eq!(labelled(&members).len(), MAX_LABELLED);
        assert_eq!(members[OTHER], 3.0, "_other is the sum of the rest");
        assert_eq!(
            series(&metrics, "chronik_consumer_group_lag", "group")[OTHER],
            21.0
        );
        // Two groups go (deleted, or their offsets expired).
        let mut fewer = groups(MAX_LABELLED + 3);
        fewer.retain(|(g, _, _)| g != "g00001" && g != "g00002");
        shard.set_groups(&fewer);
        let members = series(&metrics, "chronik_consumer_group_members", "group");
        assert!(!members.contains_key("g00001") && !members.contains_key("g00002"));
        assert_eq!(
            labelled(&members).len(),
            MAX_LABELLED,
            "their labels went to others"
        );
        assert_eq!(members[OTHER], 1.0);
        shard.set_groups(&fewer[..10]);
        let members = series(&metrics, "chronik_consumer_group_members", "group");
        assert_eq!(members.len(), 10, "no `_other` left with nothing in it");
        shard.forget_group("g00000");
        assert!(!series(&metrics, "chronik_consumer_group_lag", "group").contains_key("g00000"));
    }
}
