//! A shard's own table of its connections. Only the owning shard touches it,
//! so plain `Cell`/`RefCell` suffice; the per-IP counts it keeps are
//! published to the control thread as deltas.

use crate::signal::{Signal, SignalTrigger};
use crate::stats::{bump, drop_one, ShardCounters};
use ahash::AHashMap;
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// One accepted connection, as its shard sees it.
#[derive(Debug)]
pub struct ConnectionEntry {
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    accepted_at: Instant,
    last_activity: Cell<Instant>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    in_flight: Cell<u32>,
    /// When the last whole request arrived (idle timeout counts from it).
    last_request: Cell<Instant>,
    close: RefCell<Option<SignalTrigger>>,
    closed: Signal,
    counters: Arc<ShardCounters>,
}

impl ConnectionEntry {
    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
    pub fn local(&self) -> SocketAddr {
        self.local
    }
    pub fn accepted_at(&self) -> Instant {
        self.accepted_at
    }
    pub fn last_activity(&self) -> Instant {
        self.last_activity.get()
    }
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.get()
    }
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.get()
    }
    pub fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }

    pub fn record_read(&self, n: usize) {
        self.bytes_in.set(self.bytes_in.get() + n as u64);
        self.last_activity.set(Instant::now());
        bump(&self.counters.bytes_received, n as u64);
    }

    pub fn record_written(&self, n: usize) {
        self.bytes_out.set(self.bytes_out.get() + n as u64);
        bump(&self.counters.bytes_sent, n as u64);
    }

    pub fn request_started(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
        self.last_request.set(Instant::now());
    }

    pub fn last_request(&self) -> Instant {
        self.last_request.get()
    }

    /// Closes this connection now (its serving task is dropped).
    pub fn close(&self) {
        if let Some(mut trigger) = self.close.borrow_mut().take() {
            trigger.fire();
        }
    }

    /// Fires when `close` is called.
    pub fn closed(&self) -> Signal {
        self.closed.clone()
    }

    pub fn request_finished(&self) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
    }
}

/// The connections one shard currently holds.
#[derive(Default)]
pub struct ConnectionTable {
    next_id: Cell<u64>,
    shard: usize,
    entries: RefCell<AHashMap<u64, Rc<ConnectionEntry>>>,
    per_ip: RefCell<AHashMap<IpAddr, u32>>,
    /// Ids accepted since the idle sweeper last looked.
    fresh: RefCell<Vec<(u64, Instant)>>,
    /// Changes to `per_ip` not yet published to the control thread.
    unpublished: RefCell<AHashMap<IpAddr, i64>>,
    counters: Arc<ShardCounters>,
}

impl ConnectionTable {
    pub(crate) fn new(shard: usize, counters: Arc<ShardCounters>) -> Self {
        ConnectionTable {
            shard,
            counters,
            ..Default::default()
        }
    }

    /// Registers a connection; the returned guard removes it when dropped,
    /// however the connection ends (clean close, error, or force-close).
    pub fn get(&self, id: u64) -> Option<Rc<ConnectionEntry>> {
        self.entries.borrow().get(&id).cloned()
    }

    pub(crate) fn insert(self: &Rc<Self>, peer: SocketAddr, local: SocketAddr) -> EntryGuard {
        let seq = self.next_id.get();
        self.next_id.set(seq + 1);
        // Ids are unique across shards: the low bits say which shard.
        let id = (seq << 8) | (self.shard as u64 & 0xff);
        let now = Instant::now();
        let (close, closed) = Signal::new();
        let entry = Rc::new(ConnectionEntry {
            id,
            peer,
            local,
            accepted_at: now,
            last_activity: Cell::new(now),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            in_flight: Cell::new(0),
            last_request: Cell::new(now),
            close: RefCell::new(Some(close)),
            closed,
            counters: self.counters.clone(),
        });
        self.entries.borrow_mut().insert(id, entry.clone());
        self.fresh.borrow_mut().push((id, now));
        *self.per_ip.borrow_mut().entry(peer.ip()).or_insert(0) += 1;
        *self.unpublished.borrow_mut().entry(peer.ip()).or_insert(0) += 1;
        bump(&self.counters.connections_accepted, 1);
        bump(&self.counters.connections_active, 1);
        EntryGuard {
            table: self.clone(),
            entry,
        }
    }

    fn remove(&self, entry: &ConnectionEntry) {
        if self.entries.borrow_mut().remove(&entry.id).is_none() {
            return;
        }
        let ip = entry.peer.ip();
        let mut per_ip = self.per_ip.borrow_mut();
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
        *self.unpublished.borrow_mut().entry(ip).or_insert(0) -= 1;
        drop_one(&self.counters.connections_active);
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }

    /// Connections from `ip` on this shard alone.
    pub fn count_for_ip(&self, ip: IpAddr) -> u32 {
        self.per_ip.borrow().get(&ip).copied().unwrap_or(0)
    }

    /// Connections from `ip` on this shard as the control thread last heard.
    pub fn published_for_ip(&self, ip: IpAddr) -> usize {
        let exact = i64::from(self.count_for_ip(ip));
        let pending = self.unpublished.borrow().get(&ip).copied().unwrap_or(0);
        (exact - pending).max(0) as usize
    }

    /// Connections accepted since the last call (id, accepted at).
    pub(crate) fn take_fresh(&self) -> Vec<(u64, Instant)> {
        std::mem::take(&mut *self.fresh.borrow_mut())
    }

    /// A copy of every entry, for inspection (admin, tests); not hot path.
    pub fn entries(&self) -> Vec<Rc<ConnectionEntry>> {
        self.entries.borrow().values().cloned().collect()
    }

    /// Takes the per-IP changes accumulated since the last call.
    pub(crate) fn take_unpublished(&self) -> Vec<(IpAddr, i64)> {
        let mut pending = self.unpublished.borrow_mut();
        pending.drain().filter(|(_, delta)| *delta != 0).collect()
    }
}

/// Keeps a connection registered while it lives.
pub(crate) struct EntryGuard {
    table: Rc<ConnectionTable>,
    entry: Rc<ConnectionEntry>,
}

impl EntryGuard {
    pub(crate) fn entry(&self) -> &Rc<ConnectionEntry> {
        &self.entry
    }
}

impl Drop for EntryGuard {
    fn drop(&mut self) {
        self.table.remove(&self.entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn insert_and_drop_keep_counts_and_deltas() {
        let counters = Arc::new(ShardCounters::default());
        let table = Rc::new(ConnectionTable::new(1, counters.clone()));
        let a = table.insert(addr("127.0.0.2:5000"), addr("127.0.0.1:9092"));
        let b = table.insert(addr("127.0.0.2:5001"), addr("127.0.0.1:9092"));
        assert_ne!(a.entry().id(), b.entry().id());
        assert_eq!(a.entry().id() & 0xff, 1);
        assert_eq!(table.len(), 2);
        assert_eq!(table.count_for_ip("127.0.0.2".parse().unwrap()), 2);
        drop(a);
        assert_eq!(table.len(), 1);
        assert_eq!(table.take_unpublished(), vec![("127.0.0.2".parse().unwrap(), 1)]);
        assert!(table.take_unpublished().is_empty());
        drop(b);
        assert!(table.is_empty());
        let snap = counters.snapshot(1);
        assert_eq!(snap.connections_accepted, 2);
        assert_eq!(snap.connections_active, 0);
    }
}
