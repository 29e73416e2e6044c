//! Client quotas as Kafka defines them: configured per user, client id,
//! or both (with defaults), resolved by Kafka's precedence, measured per
//! broker over a sliding window, and turned into a throttle time the
//! response reports and the connection waits out (KIP-219).
//!
//! Measuring per broker without shared locks: every quota sensor holds a
//! row of time slots per shard, written only by that shard; the broker's
//! rate is the sum of every row, read when a shard records.

use crate::metadata::{documents, MetadataStore};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const USER: &str = "user";
pub(crate) const CLIENT_ID: &str = "client-id";
pub(crate) const IP: &str = "ip";

pub(crate) const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub(crate) const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub(crate) const REQUEST_PERCENTAGE: &str = "request_percentage";
const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";
pub(crate) const CONNECTION_CREATION_RATE: &str = "connection_creation_rate";

/// An entity: (type, name), `None` name = the type's default.
pub(crate) type Entity = Vec<(String, Option<String>)>;

/// An entity to look up: (type, name or `None` for the default).
type EntityRef<'a> = [(&'a str, Option<&'a str>)];

/// One quota entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct QuotaEntry {
    pub entity: Entity,
    pub values: BTreeMap<String, f64>,
}

/// One AlterClientQuotas op.
#[derive(Debug, Clone)]
pub(crate) struct QuotaOp {
    pub key: String,
    pub value: f64,
    pub remove: bool,
}

/// Every configured quota.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Quotas {
    pub entries: Vec<QuotaEntry>,
}

/// Puts an entity's components in Kafka's canonical order (user, then
/// client-id) and checks the combination and its keys.
fn canonical(entity: &Entity) -> Result<Entity, String> {
    let mut sorted = entity.clone();
    sorted.sort_by_key(|(t, _)| match t.as_str() {
        USER => 0,
        CLIENT_ID => 1,
        _ => 2,
    });
    let types: Vec<&str> = sorted.iter().map(|(t, _)| t.as_str()).collect();
    match types.as_slice() {
        [USER] | [CLIENT_ID] | [USER, CLIENT_ID] | [IP] => Ok(sorted),
        _ => Err(format!(
            "invalid quota entity {types:?}: user, client-id, user and client-id, or ip"
        )),
    }
}

fn check_key(entity: &Entity, key: &str, value: f64) -> Result<(), String> {
    let is_ip = entity.iter().any(|(t, _)| t == IP);
    let allowed: &[&str] = if is_ip {
        &[CONNECTION_CREATION_RATE]
    } else {
        &[
            PRODUCER_BYTE_RATE,
            CONSUMER_BYTE_RATE,
            REQUEST_PERCENTAGE,
            CONTROLLER_MUTATION_RATE,
        ]
    };
    if !allowed.contains(&key) {
        return Err(format!(
            "{key} is not a quota of this entity (allowed: {})",
            allowed.join(", ")
        ));
    }
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("{key} must be a positive number"));
    }
    Ok(())
}

impl Quotas {
    fn value(&self, entity: &EntityRef<'_>, key: &str) -> Option<f64> {
        self.entries
            .iter()
            .find(|e| {
                e.entity.len() == entity.len()
                    && e.entity
                        .iter()
                        .zip(entity)
                        .all(|((t, n), (wt, wn))| t == wt && n.as_deref() == *wn)
            })
            .and_then(|e| e.values.get(key).copied())
    }

    /// The quota `key` that applies to (user, client id), by Kafka's
    /// precedence, with the sensor it is measured in: Kafka's metric tags,
    /// so that, say, a per-user quota is shared by all the user's clients.
    pub(crate) fn resolve(&self, key: &str, user: &str, client: &str) -> Option<(f64, SensorKey)> {
        if self.entries.is_empty() {
            return None;
        }
        let both = |u, c| SensorKey {
            key: key.to_string(),
            user: u,
            client: c,
        };
        let (u, c) = (Some(user), Some(client));
        let user_client = [(USER, u), (CLIENT_ID, c)];
        let user_default_client = [(USER, u), (CLIENT_ID, None)];
        let user_only = [(USER, u)];
        let default_user_client = [(USER, None), (CLIENT_ID, c)];
        let default_user_default_client = [(USER, None), (CLIENT_ID, None)];
        let default_user = [(USER, None)];
        let client_only = [(CLIENT_ID, c)];
        let default_client = [(CLIENT_ID, None)];
        // (entity, measured per user, measured per client id)
        let levels: [(&EntityRef<'_>, bool, bool); 8] = [
            (&user_client, true, true),
            (&user_default_client, true, true),
            (&user_only, true, false),
            (&default_user_client, true, true),
            (&default_user_default_client, true, true),
            (&default_user, true, false),
            (&client_only, false, true),
            (&default_client, false, true),
        ];
        let found = levels.iter().find_map(|&(entity, by_user, by_client)| {
            self.value(entity, key).map(|quota| {
                let tag = |on: bool, v: &str| if on { v.to_string() } else { String::new() };
                (quota, both(tag(by_user, user), tag(by_client, client)))
            })
        });
        found
    }

    /// connection_creation_rate for client address `ip`: its own entry,
    /// else the ip default; measured per address.
    pub(crate) fn resolve_ip(&self, ip: &str) -> Option<(f64, SensorKey)> {
        let own = [(IP, Some(ip))];
        let default = [(IP, None)];
        let quota = self
            .value(&own, CONNECTION_CREATION_RATE)
            .or_else(|| self.value(&default, CONNECTION_CREATION_RATE))?;
        Some((
            quota,
            SensorKey {
                key: CONNECTION_CREATION_RATE.to_string(),
                user: ip.to_string(),
                client: String::new(),
            },
        ))
    }

    /// Entries matching DescribeClientQuotas components: (type, match
    /// type 0 exact / 1 default / 2 any specified, name); `strict`: the
    /// entity has exactly the listed types.
    pub(crate) fn describe(
        &self,
        components: &[(String, i8, Option<String>)],
        strict: bool,
    ) -> Vec<&QuotaEntry> {
        self.entries
            .iter()
            .filter(|e| {
                let matched = components.iter().all(|(t, how, name)| {
                    e.entity.iter().any(|(et, en)| {
                        et == t
                            && match how {
                                0 => en == name,
                                1 => en.is_none(),
                                _ => en.is_some(),
                            }
                    })
                });
                matched && (!strict || e.entity.len() == components.len())
            })
            .collect()
    }
}

/// Which sensor a quota is measured in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SensorKey {
    pub key: String,
    pub user: String,
    pub client: String,
}

/// Kafka's window: 11 samples of one second.
const SAMPLES: usize = 11;
const SAMPLE: Duration = Duration::from_secs(1);
/// The longest a connection is muted for one response.
const MAX_THROTTLE: Duration = Duration::from_secs(10);

/// One shard's samples: (second, amount) pairs, written by that shard.
struct ShardSamples {
    seconds: [AtomicU64; SAMPLES],
    amounts: [AtomicU64; SAMPLES],
}

/// A rate measured across shards.
pub(crate) struct RateSensor {
    started: Instant,
    shards: Vec<ShardSamples>,
}

impl RateSensor {
    fn new(shards: usize, started: Instant) -> RateSensor {
        RateSensor {
            started,
            shards: (0..shards)
                .map(|_| ShardSamples {
                    seconds: Default::default(),
                    amounts: Default::default(),
                })
                .collect(),
        }
    }

    /// Adds `amount` for `shard` at `now`; returns the throttle the
    /// broker-wide rate calls for against `quota` (zero if within it).
    pub(crate) fn record(&self, shard: usize, amount: u64, quota: f64, now: Instant) -> Duration {
        let second = now.saturating_duration_since(self.started).as_secs() + 1;
        if let Some(own) = self.shards.get(shard) {
            let slot = second as usize % SAMPLES;
            if own.seconds[slot].load(Ordering::Relaxed) != second {
                own.seconds[slot].store(second, Ordering::Relaxed);
                own.amounts[slot].store(0, Ordering::Relaxed);
            }
            own.amounts[slot].fetch_add(amount, Ordering::Relaxed);
        }
        self.throttle(quota, now)
    }

    /// The throttle the current rate calls for, without recording.
    pub(crate) fn throttle(&self, quota: f64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.started);
        let second = elapsed.as_secs() + 1;
        // Seconds are numbered from 1; the window is the last SAMPLES.
        let oldest = second.saturating_sub(SAMPLES as u64 - 1).max(1);
        let mut total = 0u64;
        for shard in &self.shards {
            for (s, a) in shard.seconds.iter().zip(&shard.amounts) {
                let at = s.load(Ordering::Relaxed);
                if at >= oldest && at <= second {
                    total += a.load(Ordering::Relaxed);
                }
            }
        }
        // The window spans the full samples plus the current one's part,
        // and at least one sample, so a new sensor's first milliseconds
        // do not read as a huge rate.
        let span =
            (elapsed.as_secs_f64() - (oldest - 1) as f64 * SAMPLE.as_secs_f64()).max(SAMPLE.as_secs_f64());
        let rate = total as f64 / span;
        if rate <= quota {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(((rate - quota) / quota * span).min(MAX_THROTTLE.as_secs_f64()))
    }
}

/// The persisted quotas and the broker's sensors.
pub(crate) struct QuotaStore {
    store: Arc<dyn MetadataStore>,
    current: ArcSwap<Quotas>,
    shards: usize,
    sensors: Mutex<HashMap<SensorKey, Arc<RateSensor>>>,
}

/// Per entry of an AlterClientQuotas request: `Err` = (error, message).
pub(crate) type AlterOutcome = Result<(), (kafka_protocol::ResponseError, String)>;

impl QuotaStore {
    /// Blocking (start-up).
    pub(crate) fn open(store: Arc<dyn MetadataStore>, shards: usize) -> io::Result<QuotaStore> {
        let quotas = store.get_json(documents::CLIENT_QUOTAS)?.unwrap_or_default();
        Ok(QuotaStore {
            store,
            current: ArcSwap::from_pointee(quotas),
            shards,
            sensors: Mutex::default(),
        })
    }

    pub(crate) fn snapshot(&self) -> Arc<Quotas> {
        self.current.load_full()
    }

    /// Whether any quota is configured (the produce/fetch fast path asks).
    pub(crate) fn any(&self) -> bool {
        !self.current.load().entries.is_empty()
    }

    /// The sensor for `key`, made on first use. Taken once per connection
    /// and quota, not per request.
    pub(crate) fn sensor(&self, key: &SensorKey) -> Arc<RateSensor> {
        let mut sensors = match self.sensors.lock() {
            Ok(sensors) => sensors,
            Err(poisoned) => poisoned.into_inner(),
        };
        sensors
            .entry(key.clone())
            .or_insert_with(|| Arc::new(RateSensor::new(self.shards, Instant::now())))
            .clone()
    }

    /// Validates and applies AlterClientQuotas entries (each all or
    /// nothing), durably unless `validate_only`. Blocking.
    pub(crate) fn alter(
        &self,
        entries: Vec<(Entity, Vec<QuotaOp>)>,
        validate_only: bool,
    ) -> Vec<AlterOutcome> {
        use kafka_protocol::ResponseError;
        let mut next = (*self.snapshot()).clone();
        let mut outcomes = Vec::with_capacity(entries.len());
        for (entity, ops) in entries {
            let checked = canonical(&entity).and_then(|entity| {
                for op in &ops {
                    if !op.remove {
                        check_key(&entity, &op.key, op.value)?;
                    }
                }
                Ok(entity)
            });
            let entity = match checked {
                Ok(entity) => entity,
                Err(message) => {
                    outcomes.push(Err((ResponseError::InvalidRequest, message)));
                    continue;
                }
            };
            let at = match next.entries.iter().position(|e| e.entity == entity) {
                Some(at) => at,
                None => {
                    next.entries.push(QuotaEntry {
                        entity,
                        values: BTreeMap::new(),
                    });
                    next.entries.len() - 1
                }
            };
            for op in ops {
                if op.remove {
                    next.entries[at].values.remove(&op.key);
                } else {
                    next.entries[at].values.insert(op.key, op.value);
                }
            }
            outcomes.push(Ok(()));
        }
        next.entries.retain(|e| !e.values.is_empty());
        if !validate_only && outcomes.iter().any(Result::is_ok) {
            let written = self.store.put_json(documents::CLIENT_QUOTAS, &next);
            match written {
                Ok(()) => self.current.store(Arc::new(next)),
                Err(e) => {
                    let failed = (
                        ResponseError::KafkaStorageError,
                        format!("persisting quotas: {e}"),
                    );
                    for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
                        *outcome = Err(failed.clone());
                    }
                }
            }
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(entity: &[(&str, Option<&str>)], key: &str, value: f64) -> QuotaEntry {
        QuotaEntry {
            entity: entity
                .iter()
                .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
                .collect(),
            values: [(key.to_string(), value)].into_iter().collect(),
        }
    }

    #[test]
    fn the_most_specific_quota_wins_with_kafkas_sensor_tags() {
        let quotas = Quotas {
            entries: vec![
                entry(&[(USER, None)], PRODUCER_BYTE_RATE, 10.0),
                entry(&[(USER, Some("alice"))], PRODUCER_BYTE_RATE, 20.0),
                entry(
                    &[(USER, Some("alice")), (CLIENT_ID, Some("bulk"))],
                    PRODUCER_BYTE_RATE,
                    30.0,
                ),
                entry(&[(CLIENT_ID, Some("tool"))], CONSUMER_BYTE_RATE, 40.0),
            ],
        };
        let (rate, sensor) = quotas.resolve(PRODUCER_BYTE_RATE, "alice", "bulk").unwrap();
        assert_eq!(
            (rate, sensor.user.as_str(), sensor.client.as_str()),
            (30.0, "alice", "bulk")
        );
        let (rate, sensor) = quotas.resolve(PRODUCER_BYTE_RATE, "alice", "other").unwrap();
        assert_eq!(
            (rate, sensor.client.as_str()),
            (20.0, ""),
            "per-user: shared by the user's clients"
        );
        assert_eq!(quotas.resolve(PRODUCER_BYTE_RATE, "bob", "x").unwrap().0, 10.0);
        assert_eq!(quotas.resolve(CONSUMER_BYTE_RATE, "bob", "tool").unwrap().0, 40.0);
        assert!(quotas.resolve(CONSUMER_BYTE_RATE, "bob", "x").is_none());
    }

    #[test]
    fn the_rate_is_summed_across_shards_and_throttled_as_kafka() {
        let start = Instant::now();
        let sensor = RateSensor::new(2, start);
        // 1,000 bytes/s allowed; 3,000 in the first second from two shards.
        assert_eq!(sensor.record(0, 1000, 1000.0, start), Duration::ZERO);
        let throttle = sensor.record(1, 2000, 1000.0, start + Duration::from_millis(500));
        // rate 3000/s over a 1 s span: (3000 - 1000) / 1000 * 1 s.
        assert_eq!(throttle, Duration::from_secs(2));
        // Eleven seconds later the burst has left the window.
        assert_eq!(
            sensor.throttle(1000.0, start + Duration::from_secs(12)),
            Duration::ZERO
        );
    }

    #[test]
    fn alterations_validate_entities_and_keys() {
        let dir = std::env::temp_dir().join(format!("chronik-quotas-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = QuotaStore::open(Arc::new(crate::metadata::FileStore::new(&dir)), 2).unwrap();
        let set = |key: &str, value: f64| QuotaOp {
            key: key.into(),
            value,
            remove: false,
        };
        let outcomes = store.alter(
            vec![
                (
                    vec![
                        (CLIENT_ID.into(), Some("c".into())),
                        (USER.into(), Some("u".into())),
                    ],
                    vec![set(PRODUCER_BYTE_RATE, 1e6)],
                ),
                (vec![(IP.into(), None)], vec![set(PRODUCER_BYTE_RATE, 1.0)]),
                (vec![("group".into(), None)], vec![set(PRODUCER_BYTE_RATE, 1.0)]),
                (
                    vec![(USER.into(), Some("u".into()))],
                    vec![set(CONSUMER_BYTE_RATE, -1.0)],
                ),
            ],
            false,
        );
        let codes: Vec<Option<i16>> = outcomes
            .iter()
            .map(|o| o.as_ref().err().map(|(e, _)| e.code()))
            .collect();
        assert_eq!(codes, vec![None, Some(42), Some(42), Some(42)]);
        let reopened = QuotaStore::open(Arc::new(crate::metadata::FileStore::new(&dir)), 2).unwrap();
        assert_eq!(
            reopened
                .snapshot()
                .resolve(PRODUCER_BYTE_RATE, "u", "c")
                .unwrap()
                .0,
            1e6
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
