//! Who may connect: the total connection limit, the per-address limit, the
//! per-address connection rate with bans, and the addresses exempt from it.
//!
//! Exactness, per limit:
//! - `max_connections` is exact (never exceeded): shards reserve a slot
//!   from one shared counter at accept, the only shared write, and it is on
//!   the accept path, not the request path.
//! - `max_per_ip` counts this shard's connections exactly and the other
//!   shards' from the merged view, at most two control ticks (20 ms) old:
//!   it can be exceeded by the connections the same address opens on other
//!   shards within that window.
//! - The rate limit is a token bucket per address on each shard (a shard
//!   alone bans at once) plus a one-second window over all shards on the
//!   control thread; a ban reaches every shard within two ticks.

use crate::connection_table::ConnectionTable;
use crate::control::GlobalView;
use ahash::AHashMap;
use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CIDR block, e.g. 127.0.0.0/8 or ::1/128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("bad prefix length in {text:?}"))?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The connection limits a runtime enforces (0 = no limit).
#[derive(Debug, Clone, Default)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    /// New connections per second per address; 0 = no limit.
    pub rate_limit: u32,
    pub ban_duration: Duration,
    /// Addresses the rate limit (and bans) do not apply to.
    pub exempt: Vec<IpNet>,
}

/// The limits in force, changeable while the runtime runs (dynamic broker
/// configs). Shards and the control thread read them where they enforce
/// them, so a change applies from the next connection attempt on every
/// shard (the idle timeout: from the next sweep). Relaxed loads: each
/// value stands alone and the accept path pays one plain load per limit.
#[derive(Debug, Default)]
pub struct LiveLimits {
    max_connections: AtomicUsize,
    max_per_ip: AtomicUsize,
    rate_limit: AtomicU32,
    ban_ms: AtomicU64,
    /// 0 = never.
    idle_timeout_ms: AtomicU64,
}

impl LiveLimits {
    pub fn new(limits: &ConnectionLimits, idle_timeout: Option<Duration>) -> LiveLimits {
        let live = LiveLimits::default();
        live.set(limits, idle_timeout);
        live
    }

    /// Replaces every limit (the exempt list is fixed at start).
    pub fn set(&self, limits: &ConnectionLimits, idle_timeout: Option<Duration>) {
        self.max_connections
            .store(limits.max_connections, Ordering::Relaxed);
        self.max_per_ip.store(limits.max_per_ip, Ordering::Relaxed);
        self.rate_limit.store(limits.rate_limit, Ordering::Relaxed);
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.ban_ms.store(millis(limits.ban_duration), Ordering::Relaxed);
        self.idle_timeout_ms
            .store(idle_timeout.map_or(0, millis), Ordering::Relaxed);
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Relaxed)
    }

    pub fn max_per_ip(&self) -> usize {
        self.max_per_ip.load(Ordering::Relaxed)
    }

    pub fn rate_limit(&self) -> u32 {
        self.rate_limit.load(Ordering::Relaxed)
    }

    pub fn ban_duration(&self) -> Duration {
        Duration::from_millis(self.ban_ms.load(Ordering::Relaxed))
    }

    /// `None`: idle connections are never closed.
    pub fn idle_timeout(&self) -> Option<Duration> {
        match self.idle_timeout_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MaxConnections,
    MaxPerIp,
    RateLimit,
    Banned,
}

impl Rejection {
    /// Every reason, in the order `ShardStats::rejected` counts them.
    pub const ALL: [Rejection; 4] = [
        Rejection::MaxConnections,
        Rejection::MaxPerIp,
        Rejection::RateLimit,
        Rejection::Banned,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Rejection::MaxConnections => "max_connections",
            Rejection::MaxPerIp => "max_connections_per_ip",
            Rejection::RateLimit => "rate_limit",
            Rejection::Banned => "banned",
        }
    }
}

/// A reserved slot of the total limit; released when dropped.
pub(crate) struct Slot(Option<Arc<AtomicUsize>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(admitted) = self.0.take() {
            admitted.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// Attempts per address, and bans this shard decided, since the last report.
pub(crate) type AdmissionReport = (Vec<(IpAddr, u32)>, Vec<(IpAddr, Instant)>);

/// One shard's admission state.
pub(crate) struct Admission {
    limits: Arc<LiveLimits>,
    exempt: Vec<IpNet>,
    admitted: Arc<AtomicUsize>,
    buckets: RefCell<AHashMap<IpAddr, Bucket>>,
    bans: RefCell<AHashMap<IpAddr, Instant>>,
    attempts: RefCell<AHashMap<IpAddr, u32>>,
    new_bans: RefCell<Vec<(IpAddr, Instant)>>,
}

impl Admission {
    pub(crate) fn new(limits: Arc<LiveLimits>, exempt: Vec<IpNet>, admitted: Arc<AtomicUsize>) -> Admission {
        Admission {
            limits,
            exempt,
            admitted,
            buckets: RefCell::default(),
            bans: RefCell::default(),
            attempts: RefCell::default(),
            new_bans: RefCell::default(),
        }
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|net| net.contains(ip))
    }

    /// Decides on a connection from `ip`.
    pub(crate) fn admit(
        &self,
        ip: IpAddr,
        view: &GlobalView,
        table: &ConnectionTable,
        now: Instant,
    ) -> Result<Slot, Rejection> {
        let rate_limit = self.limits.rate_limit();
        if !self.exempt(ip) {
            // Bans hold whatever their reason: a broken rate limit, or the
            // service's own (`ShardContext::ban`).
            let banned_until = self
                .bans
                .borrow()
                .get(&ip)
                .copied()
                .into_iter()
                .chain(view.bans.get(&ip).copied())
                .max();
            if banned_until.is_some_and(|until| until > now) {
                return Err(Rejection::Banned);
            }
        }
        if rate_limit > 0 && !self.exempt(ip) {
            *self.attempts.borrow_mut().entry(ip).or_insert(0) += 1;
            let rate = f64::from(rate_limit);
            let mut buckets = self.buckets.borrow_mut();
            let bucket = buckets.entry(ip).or_insert(Bucket {
                tokens: rate,
                refilled: now,
            });
            bucket.tokens =
                (bucket.tokens + now.duration_since(bucket.refilled).as_secs_f64() * rate).min(rate);
            bucket.refilled = now;
            if bucket.tokens < 1.0 {
                let until = now + self.limits.ban_duration();
                self.bans.borrow_mut().insert(ip, until);
                self.new_bans.borrow_mut().push((ip, until));
                return Err(Rejection::RateLimit);
            }
            bucket.tokens -= 1.0;
        }
        let max_connections = self.limits.max_connections();
        let slot = if max_connections > 0 {
            if self.admitted.fetch_add(1, Ordering::AcqRel) >= max_connections {
                self.admitted.fetch_sub(1, Ordering::AcqRel);
                return Err(Rejection::MaxConnections);
            }
            Slot(Some(self.admitted.clone()))
        } else {
            Slot(None)
        };
        let max_per_ip = self.limits.max_per_ip();
        if max_per_ip > 0 {
            let mine = table.count_for_ip(ip) as usize;
            let others = (view.per_ip.get(&ip).copied().unwrap_or(0) as usize)
                .saturating_sub(table.published_for_ip(ip));
            if mine + others >= max_per_ip {
                return Err(Rejection::MaxPerIp);
            }
        }
        Ok(slot)
    }

    /// Bans `ip` from `now` for the ban time, here and (through the next
    /// report) on every shard; an exempt address is not banned.
    pub(crate) fn ban(&self, ip: IpAddr, now: Instant) -> bool {
        if self.exempt(ip) {
            return false;
        }
        let until = now + self.limits.ban_duration();
        self.bans.borrow_mut().insert(ip, until);
        self.new_bans.borrow_mut().push((ip, until));
        true
    }

    /// Attempts and bans since the last call, for the control thread; also
    /// forgets expired local bans and idle buckets.
    pub(crate) fn take_report(&self, now: Instant) -> AdmissionReport {
        self.bans.borrow_mut().retain(|_, until| *until > now);
        let rate = f64::from(self.limits.rate_limit().max(1));
        self.buckets
            .borrow_mut()
            .retain(|_, b| now.duration_since(b.refilled).as_secs_f64() * rate < rate * 2.0);
        let attempts = self.attempts.borrow_mut().drain().collect();
        let bans = std::mem::take(&mut *self.new_bans.borrow_mut());
        (attempts, bans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ShardCounters;
    use std::rc::Rc;

    #[test]
    fn cidr_blocks() {
        let lo = IpNet::parse("127.0.0.0/8").unwrap();
        assert!(lo.contains("127.1.2.3".parse().unwrap()));
        assert!(!lo.contains("128.0.0.1".parse().unwrap()));
        assert!(!lo.contains("::1".parse().unwrap()));
        assert!(IpNet::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("nonsense").is_err());
    }

    #[test]
    fn total_limit_rate_limit_and_exemption() {
        let limits = ConnectionLimits {
            max_connections: 3,
            max_per_ip: 0,
            rate_limit: 2,
            ban_duration: Duration::from_secs(60),
            exempt: vec![IpNet::parse("127.0.0.9").unwrap()],
        };
        let exempt = limits.exempt.clone();
        let admission = Admission::new(Arc::new(LiveLimits::new(&limits, None)), exempt, Arc::default());
        let table = Rc::new(ConnectionTable::new(0, Arc::new(ShardCounters::default())));
        let view = GlobalView::default();
        let now = Instant::now();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = admission.admit(a, &view, &table, now).unwrap();
        let _s2 = admission.admit(a, &view, &table, now).unwrap();
        assert_eq!(
            admission.admit(a, &view, &table, now).err(),
            Some(Rejection::RateLimit)
        );
        assert_eq!(
            admission.admit(a, &view, &table, now).err(),
            Some(Rejection::Banned)
        );
        let exempt: IpAddr = "127.0.0.9".parse().unwrap();
        let _s3 = admission.admit(exempt, &view, &table, now).unwrap();
        assert_eq!(
            admission.admit(exempt, &view, &table, now).err(),
            Some(Rejection::MaxConnections)
        );
        drop(s1);
        assert!(
            admission.admit(exempt, &view, &table, now).is_ok(),
            "a slot was released"
        );
        let (attempts, bans) = admission.take_report(now);
        assert_eq!(attempts, vec![(a, 3)]);
        assert_eq!(bans.len(), 1);
    }
}
