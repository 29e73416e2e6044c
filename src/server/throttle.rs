//! Client quotas on the request path: which quota applies to a
//! connection's (user, client id) or address, recording what a request
//! (or a new connection) used, and the throttle that follows. The session keeps the resolved sensor until the
//! quotas change, so a request pays a pointer comparison and a few atomic
//! adds; with no quota configured, nothing at all.

use super::session::Session;
use super::shard_broker::ShardBroker;
use crate::security::quotas::{Quotas, RateSensor, REQUEST_PERCENTAGE};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
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

/// A request quota's throttle is at most one window, as Kafka's.
const MAX_REQUEST_THROTTLE: Duration = Duration::from_secs(1);

/// connection_creation_rate: records a new connection from `ip` and says
/// whether its address is within its quota (Kafka closes the others).
pub(crate) fn connection_allowed(broker: &ShardBroker, ip: std::net::IpAddr) -> bool {
    let store = &broker.security().quotas;
    if !store.any() {
        return true;
    }
    let Some((quota, key)) = store.snapshot().resolve_ip(&ip.to_string()) else {
        return true;
    };
    store
        .sensor(&key)
        .record(broker.shard().id, 1, quota, Instant::now())
        .is_zero()
}

/// request_percentage: the sensor a session's request time is recorded
/// in, with its quota in microseconds per second (a percentage of one
/// thread's time), if one applies.
pub(crate) fn request_time_quota(
    broker: &ShardBroker,
    session: &Session,
    client_id: &str,
) -> Option<(f64, Arc<RateSensor>)> {
    resolved(broker, session, client_id, REQUEST_PERCENTAGE)
        .map(|(percent, sensor)| (percent / 100.0 * 1e6, sensor))
}

/// A handler's future whose time on the shard thread (the sum of its
/// polls, not the time it waits) is recorded against a request quota when
/// it completes; a request over the quota mutes the connection for the
/// throttle (Kafka's request quota, which counts thread time).
pub(crate) struct TimedRequest<F> {
    inner: Pin<Box<F>>,
    spent: Duration,
    quota: f64,
    sensor: Arc<RateSensor>,
    shard: usize,
    session: Rc<Session>,
}

impl<F> TimedRequest<F> {
    pub(crate) fn new(inner: F, quota: (f64, Arc<RateSensor>), shard: usize, session: Rc<Session>) -> Self {
        TimedRequest {
            inner: Box::pin(inner),
            spent: Duration::ZERO,
            quota: quota.0,
            sensor: quota.1,
            shard,
            session,
        }
    }
}

impl<F: Future> Future for TimedRequest<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        let now = Instant::now();
        self.spent += now - started;
        if polled.is_ready() {
            let micros = self.spent.as_micros().min(u64::MAX as u128) as u64;
            let throttle = self.sensor.record(self.shard, micros, self.quota, now);
            self.session.mute_for(throttle.min(MAX_REQUEST_THROTTLE));
        }
        polled
    }
}
