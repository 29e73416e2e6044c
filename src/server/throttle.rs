//! Client quotas on the request path: which quota applies to a
//! connection's (user, client id), recording what a request used, and the
//! throttle that follows. The session keeps the resolved sensor until the
//! quotas change, so a request pays a pointer comparison and a few atomic
//! adds; with no quota configured, nothing at all.

use super::session::Session;
use super::shard_broker::ShardBroker;
use crate::security::quotas::{Quotas, RateSensor};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One quota key's resolution for a session, valid for one version of the
/// quotas (`quotas`) and one client id.
pub(crate) struct ResolvedQuota {
    quotas: Arc<Quotas>,
    client_id: String,
    sensor: Option<(f64, Arc<RateSensor>)>,
}

fn resolved(
    broker: &ShardBroker,
    session: &Session,
    client_id: &str,
    key: &'static str,
) -> Option<(f64, Arc<RateSensor>)> {
    let store = &broker.security().quotas;
    if !store.any() {
        return None;
    }
    let current = store.snapshot();
    let mut cache = session.quotas.borrow_mut();
    let fresh = cache
        .get(key)
        .is_some_and(|r| Arc::ptr_eq(&r.quotas, &current) && r.client_id == client_id);
    if !fresh {
        let user = session.principal().name.clone();
        let sensor = current
            .resolve(key, &user, client_id)
            .map(|(quota, sensor_key)| (quota, store.sensor(&sensor_key)));
        cache.insert(
            key,
            ResolvedQuota {
                quotas: current,
                client_id: client_id.to_string(),
                sensor,
            },
        );
    }
    let sensor = cache.get(key).and_then(|r| r.sensor.clone());
    if sensor.is_some() {
        session.quota_applies.set(true);
    }
    sensor
}

/// Records `amount` against quota `key` (a byte rate) for this session's
/// user and client; returns the throttle, and mutes the connection for it
/// (KIP-219: the broker answers at once and then reads nothing more from
/// the client until the throttle has passed).
pub(crate) fn record(
    broker: &ShardBroker,
    session: &Session,
    client_id: &str,
    key: &'static str,
    amount: u64,
) -> Duration {
    let Some((quota, sensor)) = resolved(broker, session, client_id, key) else {
        return Duration::ZERO;
    };
    let throttle = sensor.record(broker.shard().id, amount, quota, Instant::now());
    session.mute_for(throttle);
    throttle
}

/// The throttle quota `key` calls for now, recording nothing: a fetch
/// over its quota is answered empty without reading, as in Kafka.
pub(crate) fn owed(broker: &ShardBroker, session: &Session, client_id: &str, key: &'static str) -> Duration {
    match resolved(broker, session, client_id, key) {
        Some((quota, sensor)) => sensor.throttle(quota, Instant::now()),
        None => Duration::ZERO,
    }
}

/// A throttle as a response's `throttle_time_ms`.
pub(crate) fn millis(throttle: Duration) -> i32 {
    throttle.as_millis().min(i32::MAX as u128) as i32
}
