//! Cluster mode's write-ahead log in object storage: what makes an
//! acknowledged acks=all write outlive its leader.
//!
//! Each shard gathers the batches its led partitions accepted and, every
//! flush interval (sooner once enough bytes wait), writes them as one
//! object, then commits one pointer per partition (offset range, object,
//! byte range) in etcd, each guarded by a compare on the partition's
//! leader key as this leadership wrote it. A broker that lost a partition
//! (its lease expired, or another broker took over and bumped the epoch)
//! therefore cannot commit for it, and acks=all is answered only after
//! the commit. A new leader rebuilds the partition from the committed
//! pointers before it serves (see [`ShardWal::restore`]).

mod housekeeping;
mod restore;

pub(crate) use housekeeping::Fold;

use super::etcd::{Compare, Etcd, EtcdError, Op};
use super::keys;
use crate::metrics::{Metrics, ShardLabel};
use crate::remote::{RemoteStore, SideHandle};
use crate::routing::PartitionRouter;
use crate::storage::StorageError;
use crate::topics::TopicPartition;
use bytes::Bytes;
use futures::channel::oneshot;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use uuid::Uuid;

/// A committed pointer, stored under `keys::wal_pointer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WalPointer {
    /// The object's key in the store.
    pub object: String,
    /// Byte range of this partition's batches in it.
    pub position: u64,
    pub length: u64,
    /// Offsets `[base, end)`.
    pub base: i64,
    pub end: i64,
    pub epoch: i32,
    pub node: i32,
    /// One object of this partition's batches alone, that replaced the
    /// WAL pointers of its range (see [`ShardWal::fold`]).
    #[serde(default)]
    pub folded: bool,
}

/// What a partition's WAL holds since its last fold.
#[derive(Debug, Clone, Copy)]
struct Unfolded {
    /// Where the last fold ended (the first offset not folded).
    base: i64,
    pointers: usize,
    bytes: u64,
}

/// Batches accepted for one partition, not yet committed.
#[derive(Clone)]
struct Pending {
    tp: TopicPartition,
    topic_id: Uuid,
    /// The leader key's revision when this leadership began: the commit
    /// holds only while the key is still that one.
    leader_revision: i64,
    epoch: i32,
    base: i64,
    end: i64,
    bytes: Vec<Bytes>,
    size: usize,
}

/// One object on its way: written by `put`, then committed.
struct Flight {
    batch: Vec<Pending>,
    pointers: Vec<WalPointer>,
    size: u64,
    started: std::time::Instant,
    /// Resolves with when the object was written.
    put: glommio::Task<std::time::Instant>,
}

struct Waiter {
    end: i64,
    done: oneshot::Sender<Result<(), StorageError>>,
}

/// How the WAL is paced and bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalSettings {
    pub flush_interval: Duration,
    /// Flush at once when this many bytes wait.
    pub flush_bytes: usize,
    /// acks=all waits at most this long for its commit.
    pub ack_timeout: Duration,
    /// A WAL object no pointer names is garbage once it is this old (see
    /// `housekeeping::sweep`).
    pub garbage_grace: Duration,
}

impl WalSettings {
    /// A flight whose commit keeps failing writes its batches again
    /// rather than commit pointers to an object this old, which a sweep
    /// could take for garbage meanwhile.
    fn object_commit_window(&self) -> Duration {
        self.garbage_grace / 3
    }

    /// How often the controller sweeps.
    pub(crate) fn sweep_interval(&self) -> Duration {
        (self.garbage_grace / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// One shard's WAL.
pub(crate) struct ShardWal {
    node: i32,
    shard: usize,
    settings: WalSettings,
    etcd: Etcd,
    side: SideHandle,
    store: RemoteStore,
    router: Arc<PartitionRouter>,
    pending: RefCell<Vec<Pending>>,
    pending_bytes: Cell<usize>,
    /// Per partition: committed end offset (everything below is in object
    /// storage, pointed to from etcd).
    committed: RefCell<HashMap<TopicPartition, i64>>,
    /// Per partition: where its WAL starts, as last recorded in etcd.
    trimmed: RefCell<HashMap<TopicPartition, i64>>,
    waiters: RefCell<HashMap<TopicPartition, Vec<Waiter>>>,
    unfolded: RefCell<HashMap<TopicPartition, Unfolded>>,
    kick: RefCell<Option<oneshot::Sender<()>>>,
    /// Objects being written, oldest first, each committed after those
    /// before it.
    flights: RefCell<VecDeque<Flight>>,
    in_flight_bytes: Cell<usize>,
    flight_added: RefCell<Option<oneshot::Sender<()>>>,
    slot_freed: RefCell<Option<oneshot::Sender<()>>>,
    closing: Cell<bool>,
    last_complaint: Cell<Option<std::time::Instant>>,
    sequence: Cell<u64>,
    metrics: WalMetrics,
}

/// The shard's WAL series.
struct WalMetrics {
    flush: Histogram,
    commit: Histogram,
    bytes: Counter,
    flushes: Counter,
    failures: Counter,
    rebuilds: Counter,
}

impl WalMetrics {
    fn new(shard: usize, metrics: &Metrics) -> WalMetrics {
        let label = ShardLabel {
            shard: shard.to_string(),
        };
        let families = &metrics.cluster;
        WalMetrics {
            flush: families.wal_flush_duration.get_or_create_owned(&label),
            commit: families.wal_commit_duration.get_or_create_owned(&label),
            bytes: families.wal_bytes.get_or_create_owned(&label),
            flushes: families.wal_flushes.get_or_create_owned(&label),
            failures: families.wal_failures.get_or_create_owned(&label),
            rebuilds: families.wal_rebuilds.get_or_create_owned(&label),
        }
    }
}

impl ShardWal {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        node: i32,
        shard: usize,
        settings: WalSettings,
        etcd: Etcd,
        side: SideHandle,
        store: RemoteStore,
        router: Arc<PartitionRouter>,
        metrics: &Metrics,
    ) -> ShardWal {
        ShardWal {
            node,
            shard,
            settings,
            etcd,
            side,
            store,
            router,
            pending: RefCell::default(),
            pending_bytes: Cell::new(0),
            committed: RefCell::default(),
            trimmed: RefCell::default(),
            waiters: RefCell::default(),
            unfolded: RefCell::default(),
            kick: RefCell::default(),
            flights: RefCell::default(),
            in_flight_bytes: Cell::new(0),
            flight_added: RefCell::default(),
            slot_freed: RefCell::default(),
            closing: Cell::new(false),
            last_complaint: Cell::new(None),
            sequence: Cell::new(0),
            metrics: WalMetrics::new(shard, metrics),
        }
    }

    /// Takes a batch the partition just accepted at `[base, end)`, as
    /// stored (offsets assigned), in pieces. Refused (NOT_LEADER) if this
    /// broker no longer leads the partition at `epoch`.
    pub(crate) fn add(
        &self,
        tp: &TopicPartition,
        topic_id: Uuid,
        epoch: i32,
        base: i64,
        end: i64,
        stored: Vec<Bytes>,
    ) -> Result<(), StorageError> {
        if self.pending_bytes.get() + self.in_flight_bytes.get() >= PENDING_CAP {
            // Object storage or etcd has been failing for a while: what
            // waits is bounded, as the disk is by TIERING_LOCAL_CAP_MB.
            return Err(StorageError::Unreachable(
                "the WAL cannot reach object storage or etcd and holds all it may".into(),
            ));
        }
        let leader_revision = self.leader_revision(tp, epoch).ok_or(StorageError::NotLeader)?;
        let size: usize = stored.iter().map(Bytes::len).sum();
        let mut pending = self.pending.borrow_mut();
        match pending.iter_mut().rev().find(|p| &p.tp == tp) {
            Some(last) if last.end == base && last.leader_revision == leader_revision => {
                last.end = end;
                last.size += size;
                last.bytes.extend(stored);
            }
            _ => pending.push(Pending {
                tp: tp.clone(),
                topic_id,
                leader_revision,
                epoch,
                base,
                end,
                bytes: stored,
                size,
            }),
        }
        drop(pending);
        let waiting = self.pending_bytes.get() + size;
        self.pending_bytes.set(waiting);
        if waiting >= self.settings.flush_bytes {
            if let Some(kick) = self.kick.borrow_mut().take() {
                let _ = kick.send(());
            }
        }
        Ok(())
    }

    /// The revision of `tp`'s leader key if this broker leads it at
    /// `epoch`: what its commits are compared against.
    fn leader_revision(&self, tp: &TopicPartition, epoch: i32) -> Option<i64> {
        self.router
            .snapshot()
            .cluster()
            .and_then(|c| c.leaders.get(tp).copied())
            .filter(|l| l.node == self.node && l.epoch == epoch)
            .map(|l| l.revision)
    }

    /// Resolves once everything of `tp` below `end` is committed, or with
    /// REQUEST_TIMED_OUT after the ack timeout (never a false ack), or
    /// NOT_LEADER if the leadership it was written under ended first.
    pub(crate) fn durable(
        &self,
        tp: &TopicPartition,
        end: i64,
    ) -> impl std::future::Future<Output = Result<(), StorageError>> {
        let committed = self.committed.borrow().get(tp).copied().unwrap_or(0);
        let waiting = (committed < end).then(|| {
            let (done, wait) = oneshot::channel();
            self.waiters
                .borrow_mut()
                .entry(tp.clone())
                .or_default()
                .push(Waiter { end, done });
            wait
        });
        let timeout = self.settings.ack_timeout;
        async move {
            let Some(wait) = waiting else {
                return Ok(());
            };
            let timer = std::pin::pin!(glommio::timer::sleep(timeout));
            match futures::future::select(wait, timer).await {
                futures::future::Either::Left((Ok(result), _)) => result,
                futures::future::Either::Left((Err(_), _)) => Err(StorageError::NotLeader),
                futures::future::Either::Right(_) => Err(StorageError::TimedOut(
                    "object storage or etcd did not confirm the write in time".into(),
                )),
            }
        }
    }

    fn wake(&self, tp: &TopicPartition, committed: i64) {
        let mut waiters = self.waiters.borrow_mut();
        if let Some(list) = waiters.get_mut(tp) {
            let (done, left): (Vec<Waiter>, Vec<Waiter>) = list.drain(..).partition(|w| w.end <= committed);
            *list = left;
            for waiter in done {
                let _ = waiter.done.send(Ok(()));
            }
        }
    }

    fn fail(&self, tp: &TopicPartition, error: StorageError) {
        if let Some(list) = self.waiters.borrow_mut().remove(tp) {
            for waiter in list {
                let _ = waiter.done.send(Err(error.clone()));
            }
        }
    }

    /// The shard's flush loop, until `drain`: every flush interval (or
    /// sooner, once enough bytes wait) what was accepted goes out as one
    /// object. Up to `FLIGHTS` objects are written at once, so a slow PUT
    /// does not hold the next flush back; their commits go to etcd in
    /// flush order (see `commit_in_order`), so a partition's committed
    /// pointers never have a gap.
    pub(crate) async fn run(self: Rc<Self>, drain: chronik_shard::Signal) {
        let committer = glommio::spawn_local(self.clone().commit_in_order());
        loop {
            let (kick, kicked) = oneshot::channel();
            *self.kick.borrow_mut() = Some(kick);
            let sleep = std::pin::pin!(glommio::timer::sleep(self.settings.flush_interval));
            let stop = std::pin::pin!(drain.wait());
            let woken = futures::future::select(kicked, sleep);
            if let futures::future::Either::Right(_) = futures::future::select(woken, stop).await {
                break;
            }
            // With an object already on its way, a small batch waits for
            // it to land (its commit wakes this loop): a store that takes
            // requests one at a time gets fewer, larger ones; a backlog
            // still goes out in parallel.
            if !self.flights.borrow().is_empty() && self.pending_bytes.get() < FLIGHT_MIN_BYTES {
                continue;
            }
            while self.flights.borrow().len() >= FLIGHTS {
                let (freed, wait) = oneshot::channel();
                *self.slot_freed.borrow_mut() = Some(freed);
                let _ = wait.await;
            }
            self.take_off();
        }
        // One last flush: what was accepted goes out before the lease is
        // handed over (bounded: the store or etcd may be down).
        self.take_off();
        self.closing.set(true);
        self.wake_committer();
        let landed = std::pin::pin!(committer);
        let limit = std::pin::pin!(glommio::timer::sleep(self.settings.ack_timeout));
        let _ = futures::future::select(landed, limit).await;
    }

    /// Starts writing what waits as one object.
    fn take_off(self: &Rc<Self>) {
        let batch: Vec<Pending> = std::mem::take(&mut *self.pending.borrow_mut());
        if batch.is_empty() {
            return;
        }
        self.pending_bytes.set(0);
        let (object, body, pointers) = self.object_of(&batch);
        let size = body.iter().map(|b| b.len() as u64).sum();
        self.in_flight_bytes
            .set(self.in_flight_bytes.get() + size as usize);
        let wal = self.clone();
        let put = glommio::spawn_local(async move { wal.put_until_written(&object, body).await });
        self.flights.borrow_mut().push_back(Flight {
            batch,
            pointers,
            size,
            started: std::time::Instant::now(),
            put,
        });
        self.wake_committer();
    }

    /// One object of `batch`'s bytes, partition after partition: its
    /// name, body (the stored pieces, sent as they are), and the pointer
    /// to each partition's range in it.
    fn object_of(&self, batch: &[Pending]) -> (String, Vec<Bytes>, Vec<WalPointer>) {
        let sequence = self.sequence.get();
        self.sequence.set(sequence + 1);
        let object = format!(
            "wal/{}/{}/{}-{:08}",
            self.node,
            self.shard,
            crate::log::partition_log::now_ms(),
            sequence
        );
        let mut body = Vec::with_capacity(batch.iter().map(|p| p.bytes.len()).sum());
        let mut position = 0u64;
        let mut pointers = Vec::with_capacity(batch.len());
        for pending in batch {
            body.extend(pending.bytes.iter().cloned());
            pointers.push(WalPointer {
                object: object.clone(),
                position,
                length: pending.size as u64,
                base: pending.base,
                end: pending.end,
                epoch: pending.epoch,
                node: self.node,
                folded: false,
            });
            position += pending.size as u64;
        }
        (object, body, pointers)
    }

    /// Written until it is, with a pause after each failure: the flights
    /// behind it wait for its commit anyway. Returns when it was written:
    /// how old the object is, as a sweep would judge it.
    async fn put_until_written(&self, key: &str, body: Vec<Bytes>) -> std::time::Instant {
        loop {
            match self.store.put_pieces(key, body.clone()).await {
                Ok(()) => return std::time::Instant::now(),
                Err(e) => {
                    self.metrics.failures.inc();
                    self.complain(&format!("WAL object {key} not written: {e}; retrying"));
                    glommio::timer::sleep(RETRY_BACKOFF).await;
                }
            }
        }
    }

    fn wake_committer(&self) {
        if let Some(wake) = self.flight_added.borrow_mut().take() {
            let _ = wake.send(());
        }
    }

    /// Commits each flight once its object is written, oldest first.
    async fn commit_in_order(self: Rc<Self>) {
        loop {
            let next = self.flights.borrow_mut().pop_front();
            let Some(flight) = next else {
                if self.closing.get() {
                    return;
                }
                let (wake, woken) = oneshot::channel();
                *self.flight_added.borrow_mut() = Some(wake);
                let _ = woken.await;
                continue;
            };
            if let Some(freed) = self.slot_freed.borrow_mut().take() {
                let _ = freed.send(());
            }
            let mut written = flight.put.await;
            let mut left: Vec<(Pending, WalPointer)> =
                flight.batch.into_iter().zip(flight.pointers).collect();
            while !left.is_empty() {
                if written.elapsed() > self.settings.object_commit_window() {
                    // The sweeper may take an object this old that no
                    // pointer names for garbage: never commit one, write
                    // the rest again under a new name.
                    let batch: Vec<Pending> = left.into_iter().map(|(pending, _)| pending).collect();
                    let (object, body, pointers) = self.object_of(&batch);
                    self.complain(&format!(
                        "WAL commits kept failing: the batches go again as {object}"
                    ));
                    written = self.put_until_written(&object, body).await;
                    left = batch.into_iter().zip(pointers).collect();
                }
                left = self.commit_flight(left).await;
                if !left.is_empty() {
                    self.metrics.failures.inc();
                    glommio::timer::sleep(RETRY_BACKOFF).await;
                }
            }
            self.in_flight_bytes
                .set(self.in_flight_bytes.get().saturating_sub(flight.size as usize));
            self.metrics.flushes.inc();
            self.metrics.bytes.inc_by(flight.size);
            if let Some(kick) = self.kick.borrow_mut().take() {
                let _ = kick.send(());
            }
            self.metrics.flush.observe(flight.started.elapsed().as_secs_f64());
        }
    }

    /// Commits a flight's pointers; returns those to try again (etcd did
    /// not answer). Partitions whose leadership ended are answered
    /// NOT_LEADER and dropped.
    async fn commit_flight(&self, flight: Vec<(Pending, WalPointer)>) -> Vec<(Pending, WalPointer)> {
        let mut again = Vec::new();
        for chunk in flight.chunks(COMMIT_CHUNK) {
            match self.commit(chunk).await {
                Ok(true) => {
                    for (pending, _) in chunk {
                        self.committed(pending);
                    }
                }
                Ok(false) => {
                    // Someone's leadership ended: find whose, one by one.
                    for one in chunk {
                        match self.commit(std::slice::from_ref(one)).await {
                            Ok(true) => self.committed(&one.0),
                            Ok(false) => {
                                info!(partition = %one.0.tp, "no longer the leader: accepted writes not committed");
                                self.fail(&one.0.tp, StorageError::NotLeader);
                            }
                            Err(e) => {
                                self.complain(&format!("WAL commit failed: {e}; retrying"));
                                again.push(one.clone());
                            }
                        }
                    }
                }
                Err(e) => {
                    self.complain(&format!("WAL commit failed: {e}; retrying"));
                    again.extend(chunk.iter().cloned());
                }
            }
        }
        again
    }

    /// A warning at most every few seconds: an outage is said, not
    /// shouted once per flush.
    fn complain(&self, what: &str) {
        let now = std::time::Instant::now();
        if self
            .last_complaint
            .get()
            .is_none_or(|at| now.duration_since(at) >= COMPLAINT_INTERVAL)
        {
            warn!(shard = self.shard, "{what}");
            self.last_complaint.set(Some(now));
        }
    }

    fn committed(&self, pending: &Pending) {
        let mut unfolded = self.unfolded.borrow_mut();
        let since = unfolded.entry(pending.tp.clone()).or_insert(Unfolded {
            base: pending.base,
            pointers: 0,
            bytes: 0,
        });
        since.pointers += 1;
        since.bytes += pending.size as u64;
        drop(unfolded);
        let mut committed = self.committed.borrow_mut();
        let end = committed.entry(pending.tp.clone()).or_insert(0);
        *end = (*end).max(pending.end);
        let end = *end;
        drop(committed);
        self.wake(&pending.tp, end);
    }

    async fn commit(&self, chunk: &[(Pending, WalPointer)]) -> Result<bool, EtcdError> {
        let compares: Vec<Compare> = chunk
            .iter()
            .map(|(p, _)| Compare::ModRevision(keys::leader(&p.tp), p.leader_revision))
            .collect();
        let ops: Vec<Op> = chunk
            .iter()
            .map(|(p, pointer)| Op::Put {
                key: keys::wal_pointer(&p.tp, p.topic_id, p.base),
                value: serde_json::to_vec(pointer).unwrap_or_default(),
                lease: 0,
            })
            .collect();
        let etcd = self.etcd.clone();
        let started = std::time::Instant::now();
        let committed = self
            .side
            .run(async move { etcd.txn(&compares, &ops).await.map(|(ok, _)| ok) })
            .await
            .map_err(|_| EtcdError::Unreachable("the etcd client thread stopped".into()))?;
        self.metrics.commit.observe(started.elapsed().as_secs_f64());
        committed
    }
}

/// A partition's WAL pointers are folded into one object past this many,
/// or past this many bytes.
const FOLD_POINTERS: usize = 64;
const FOLD_BYTES: u64 = 16 << 20;

/// Bytes a shard's WAL may hold uncommitted before new writes are refused.
const PENDING_CAP: usize = 512 << 20;
/// Pause after a failed object write or commit.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Ranged GETs a rebuild has in flight.
const RESTORE_READS: usize = 16;
/// While an object is being written, the next waits for this many bytes.
const FLIGHT_MIN_BYTES: usize = 256 << 10;
/// Objects a shard writes at once.
const FLIGHTS: usize = 4;
/// At most one warning about failing writes or commits per this long.
const COMPLAINT_INTERVAL: Duration = Duration::from_secs(10);

/// Partitions per etcd transaction: etcd allows 128 operations by default.
const COMMIT_CHUNK: usize = 64;
