//! A partition's log in local segment files, with every disk operation off
//! the shard thread.
//!
//! Appends are decided on the shard (sequence check, offsets, file
//! position) and their bytes queued; one writer task per partition drains
//! the queue in order through the blocking pool, several batches per trip,
//! so the stored end only ever moves forward over whole, written batches.
//! Readers see up to the stored end; a read the page cache holds entirely
//! is done on the shard with RWF_NOWAIT (which never waits for the disk),
//! any other on the pool. A rolled segment is sealed (indexes,
//! fsync, producer snapshot, recovery point) in the background once the
//! writes before it are done, without holding up the writes after it.

use super::direct::{SegmentAppender, TripOutcome, WriteMode, TRIPS_IN_FLIGHT};
use super::direct_read::{DirectReads, ReadAheadBudget};
use super::read_ahead::{read_ahead, ReadAhead};
use super::recent::{RecentBatches, RecentBudget};
use super::{run_blocking, Appending, Log, LogFuture, LogOffsets, StorageError};
use crate::log::batch::BatchHeader;
use crate::log::{
    AppendError, ClosedSegment, LogConfig, Naming, PartitionLog, PendingWrite, ReadError, Sealed,
    SpareSegment, Unwritten, Written,
};
use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::Shared;
use futures::FutureExt;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::File;
use std::rc::Rc;
use std::sync::Arc;
use tracing::{error, warn};

/// Writes handed to the blocking pool in one trip at most.
const WRITES_PER_TRIP: usize = 256;

/// Bytes after which a trip takes no more writes: the stored end (and the
/// produce answers waiting on it) moves every millisecond or so at device
/// speed, and several trips keep the device busy (see `direct`).
const BYTES_PER_TRIP: usize = 1 << 20;

/// Called with the new stored end each time the writer advances it.
pub(crate) type OnStored = Rc<dyn Fn(i64)>;

/// Where a write's outcome goes: the file to sync for acks=all.
type WriteReply = oneshot::Sender<Result<Arc<File>, StorageError>>;

enum Queued {
    Write(PendingWrite, WriteReply),
    Seal(Sealed),
    /// Cuts what failed writes left behind, before the writes after it.
    Cut(Unwritten),
    /// Names a new segment's file (made ahead as a spare) before its writes.
    Name(Naming),
}

/// The state the writer task shares with the log.
struct Writer {
    queue: RefCell<VecDeque<Queued>>,
    running: Cell<bool>,
    stored: Cell<Written>,
    /// The first write error since the last cut: the writes queued after
    /// it fail too, and the next append first forgets them all.
    failed: RefCell<Option<String>>,
    /// Seals in flight, and who waits for none to be (close).
    seals: Cell<usize>,
    sealed: RefCell<Vec<oneshot::Sender<()>>>,
    /// Woken when the queue empties.
    idle: RefCell<Vec<oneshot::Sender<()>>>,
    on_stored: OnStored,
    appender: RefCell<SegmentAppender>,
    /// Done when the last seal queued is.
    last_seal: RefCell<Option<Shared<oneshot::Receiver<()>>>>,
    /// What was stored last, for readers of recent data.
    recent: RefCell<RecentBatches>,
}

/// How a shard's logs store and cache their batches.
#[derive(Clone)]
pub(crate) struct LocalLogOptions {
    pub write_mode: WriteMode,
    pub recent: Rc<RecentBudget>,
    pub read_ahead: Rc<ReadAheadBudget>,
    /// With an object store: what tiered partitions share on the shard.
    pub tiering: Option<crate::remote::TieringContext>,
}

pub(crate) struct LocalLog {
    log: PartitionLog,
    writer: Rc<Writer>,
    name: Rc<str>,
    /// The next segment's file, once made off the shard; `making` while
    /// that runs.
    spare: Rc<RefCell<Option<SpareSegment>>>,
    making_spare: Rc<Cell<bool>>,
    read_ahead: Rc<Cell<ReadAhead>>,
    /// Reads of what the cache no longer holds, when segments are written
    /// with O_DIRECT (their data is not in the page cache either).
    direct_reads: Option<Rc<DirectReads>>,
}

impl LocalLog {
    /// The partition's cache of what it stored last.
    pub(crate) fn recent_view(&self) -> super::RecentView {
        self.writer.recent.borrow().view()
    }

    /// Wraps a log opened elsewhere (shard start-up recovery).
    pub(crate) fn with_log(
        log: PartitionLog,
        name: &str,
        on_stored: OnStored,
        options: &LocalLogOptions,
    ) -> LocalLog {
        let stored = log.written_end();
        LocalLog {
            log,
            writer: Rc::new(Writer {
                queue: RefCell::default(),
                running: Cell::new(false),
                stored: Cell::new(stored),
                failed: RefCell::new(None),
                seals: Cell::new(0),
                sealed: RefCell::default(),
                idle: RefCell::default(),
                on_stored,
                appender: RefCell::new(SegmentAppender::new(options.write_mode)),
                last_seal: RefCell::default(),
                recent: RefCell::new(RecentBatches::new(options.recent.clone())),
            }),
            name: Rc::from(name),
            spare: Rc::default(),
            making_spare: Rc::default(),
            read_ahead: Rc::default(),
            direct_reads: (options.write_mode == WriteMode::Direct)
                .then(|| DirectReads::new(options.read_ahead.clone())),
        }
    }

    /// Hands the log a spare file for its next roll, making one in the
    /// background when it has none, so a roll creates no file on the
    /// shard thread.
    fn keep_a_spare(&mut self) {
        if let Some(spare) = self.spare.borrow_mut().take() {
            self.log.give_spare(spare);
        }
        let Some(dir) = self.log.wants_spare() else {
            return;
        };
        if self.making_spare.replace(true) {
            return;
        }
        let (slot, making, name) = (self.spare.clone(), self.making_spare.clone(), self.name.clone());
        glommio::spawn_local(async move {
            match run_blocking("making the next segment's file", move || SpareSegment::create(&dir)).await {
                Ok(spare) => *slot.borrow_mut() = Some(spare),
                Err(e) => warn!(partition = %name, error = %e, "could not make the next segment's file ahead; the roll will"),
            }
            making.set(false);
        })
        .detach();
    }

    /// Queues a rolled segment's seal, after naming the new segment's file
    /// if it was the spare.
    fn rolled(&self, mut sealed: Sealed) {
        if let Some(naming) = sealed.naming.take() {
            self.enqueue(Queued::Name(naming));
        }
        self.enqueue(Queued::Seal(sealed));
    }

    fn enqueue(&self, item: Queued) {
        self.writer.queue.borrow_mut().push_back(item);
        if !self.writer.running.replace(true) {
            glommio::spawn_local(run_writer(self.writer.clone(), self.name.clone())).detach();
        }
    }

    /// Resolves once every write queued so far is stored and every seal done.
    fn drained(&self) -> impl std::future::Future<Output = ()> + 'static {
        let waiting = if self.writer.running.get() {
            let (tx, rx) = oneshot::channel();
            self.writer.idle.borrow_mut().push(tx);
            Some(rx)
        } else {
            None
        };
        let writer = self.writer.clone();
        async move {
            if let Some(rx) = waiting {
                let _ = rx.await;
            }
            if writer.seals.get() > 0 {
                let (tx, rx) = oneshot::channel();
                writer.sealed.borrow_mut().push(tx);
                let _ = rx.await;
            }
        }
    }

    /// After failed writes (a full disk): forget the batches reserved past
    /// what is stored and cut the files back before anything new is
    /// written, so appends resume at the first unwritten offset.
    fn recover_from_failed_writes(&mut self) {
        if self.writer.failed.borrow_mut().take().is_some() {
            let cut = self.log.forget_unwritten(self.writer.stored.get());
            self.enqueue(Queued::Cut(cut));
        }
    }
}

/// What the writer does next.
enum Next {
    Writes(Vec<(PendingWrite, WriteReply)>),
    Seal(Sealed),
    Cut(Unwritten),
    Name(Naming),
    Nothing,
}

/// Takes the next trip's writes (consecutive, one segment, a few MiB) off
/// the front of the queue, or the seal, cut or naming there once no trip
/// is in flight (`Nothing` before that: the caller lands a trip first).
fn take_next(writer: &Writer, nothing_in_flight: bool) -> Next {
    let mut queue = writer.queue.borrow_mut();
    let mut writes: Vec<(PendingWrite, WriteReply)> = Vec::new();
    let mut bytes = 0;
    while writes.len() < WRITES_PER_TRIP && bytes < BYTES_PER_TRIP {
        match queue.pop_front() {
            Some(Queued::Write(w, tx)) if writes.last().is_none_or(|(last, _)| last.path == w.path) => {
                bytes += w.size();
                writes.push((w, tx));
            }
            // Seals, cuts and namings wait for every write before them.
            Some(Queued::Seal(s)) if writes.is_empty() && nothing_in_flight => return Next::Seal(s),
            Some(Queued::Cut(c)) if writes.is_empty() && nothing_in_flight => return Next::Cut(c),
            Some(Queued::Name(n)) if writes.is_empty() && nothing_in_flight => return Next::Name(n),
            Some(other) => {
                queue.push_front(other);
                break;
            }
            None => break,
        }
    }
    if writes.is_empty() {
        Next::Nothing
    } else {
        Next::Writes(writes)
    }
}

/// A trip on the blocking pool and who waits for its writes.
struct Flight {
    task: glommio::task::JoinHandle<TripOutcome>,
    replies: Vec<WriteReply>,
}

/// Drains the queue: consecutive writes go to the blocking pool in trips,
/// several at a time; the stored end moves over each trip in order once it
/// and those before it are done. A seal or a cut waits for every trip
/// before it.
async fn run_writer(writer: Rc<Writer>, name: Rc<str>) {
    let mut flights: VecDeque<Flight> = VecDeque::new();
    loop {
        let room = flights.len() < TRIPS_IN_FLIGHT && writer.appender.borrow().ready();
        let next = if room {
            take_next(&writer, flights.is_empty())
        } else {
            Next::Nothing
        };
        match next {
            Next::Writes(writes) => {
                if let Some(flight) = launch(&writer, writes) {
                    flights.push_back(flight);
                }
            }
            Next::Seal(sealed) => seal(&writer, &name, sealed),
            Next::Cut(cut) => {
                if let Err(e) = run_blocking("cutting failed writes", move || cut.finish()).await {
                    error!(partition = %name, error = %e, "cutting back failed writes failed");
                    fail_queued(&writer, &e.to_string());
                }
            }
            Next::Name(naming) => {
                if let Err(e) = run_blocking("naming a new segment", move || naming.finish()).await {
                    error!(partition = %name, error = %e, "naming a new segment's file failed");
                    fail_queued(&writer, &e.to_string());
                }
            }
            Next::Nothing => match flights.pop_front() {
                Some(flight) => land(&writer, &name, flight).await,
                None => {
                    writer.running.set(false);
                    for tx in writer.idle.borrow_mut().drain(..) {
                        let _ = tx.send(());
                    }
                    return;
                }
            },
        }
    }
}

/// Starts a trip on the pool, or fails its writes at once after an
/// earlier failure.
fn launch(writer: &Writer, writes: Vec<(PendingWrite, WriteReply)>) -> Option<Flight> {
    if let Some(e) = writer.failed.borrow().clone() {
        for (_, tx) in writes {
            let _ = tx.send(Err(StorageError::Io {
                what: "an earlier write",
                error: e.clone(),
            }));
        }
        return None;
    }
    let (pending, replies): (Vec<PendingWrite>, Vec<_>) = writes.into_iter().unzip();
    let trip = writer.appender.borrow_mut().trip(pending);
    // A task of its own, so the trip is handed to the pool now, in order,
    // while this writer goes on to plan the next.
    let task = glommio::spawn_local(glommio::executor().spawn_blocking(move || trip.run())).detach();
    Some(Flight { task, replies })
}

/// Waits for a trip and answers its writes.
async fn land(writer: &Writer, name: &str, flight: Flight) {
    let outcome = flight.task.await;
    let result = match outcome {
        Some((pending, Ok(mut landed))) if writer.failed.borrow().is_none() => {
            writer.appender.borrow_mut().learn(&mut landed);
            Ok((pending, landed.image))
        }
        Some((_, Ok(_))) => Err(StorageError::Io {
            what: "an earlier write",
            error: writer.failed.borrow().clone().unwrap_or_default(),
        }),
        Some((_, Err(e))) => Err(StorageError::io("write", &e)),
        None => Err(StorageError::Io {
            what: "write",
            error: "the write task was cancelled".into(),
        }),
    };
    match result {
        Ok((pending, image)) => {
            if let Some(last) = pending.last() {
                writer.stored.set(last.end);
                let mut recent = writer.recent.borrow_mut();
                let mut at = image.as_ref().map_or(0, |i| i.first);
                for w in &pending {
                    match &image {
                        Some(image) => {
                            recent.push_written(w.base_offset, w.end.offset, &image.bytes, at, w.size())
                        }
                        None => recent.push(w.base_offset, w.end.offset, &w.parts),
                    }
                    at += w.size();
                }
                drop(recent);
                (writer.on_stored)(last.end.offset);
            }
            for (w, tx) in pending.into_iter().zip(flight.replies) {
                let _ = tx.send(Ok(w.file));
            }
        }
        Err(e) => {
            if writer.failed.borrow().is_none() {
                error!(partition = %name, error = %e, "write failed; the writes queued after it fail too");
                writer.appender.borrow_mut().reset();
                fail_queued(writer, &e.to_string());
            }
            for tx in flight.replies {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}

/// Seals a rolled segment in the background once its writes are stored.
/// A segment whose writes failed is not sealed: its recovery point would
/// cover data that is not there.
fn seal(writer: &Rc<Writer>, name: &Rc<str>, sealed: Sealed) {
    if writer.failed.borrow().is_some() {
        return;
    }
    let (name, writer) = (name.clone(), writer.clone());
    writer.seals.set(writer.seals.get() + 1);
    // One seal at a time, in roll order: each writes the producer snapshot
    // and the recovery point, and an older one must not land last.
    let (done, this) = oneshot::channel::<()>();
    let before = writer.last_seal.replace(Some(this.shared()));
    glommio::spawn_local(async move {
        if let Some(before) = before {
            let _ = before.await;
        }
        if let Err(e) = run_blocking("sealing a rolled segment", move || sealed.finish()).await {
            error!(partition = %name, error = %e, "sealing a rolled segment failed; the next start re-reads it");
        }
        writer.seals.set(writer.seals.get() - 1);
        if writer.seals.get() == 0 {
            for tx in writer.sealed.borrow_mut().drain(..) {
                let _ = tx.send(());
            }
        }
        let _ = done.send(());
    })
    .detach();
}

/// A write failed: everything queued after it fails (and seals of
/// segments whose data did not all reach the disk are dropped, so no
/// recovery point passes unwritten data); the next append cuts back.
fn fail_queued(writer: &Writer, error: &str) {
    *writer.failed.borrow_mut() = Some(error.to_string());
    for queued in writer.queue.borrow_mut().drain(..) {
        if let Queued::Write(_, tx) = queued {
            let _ = tx.send(Err(StorageError::Io {
                what: "an earlier write",
                error: error.to_string(),
            }));
        }
    }
}

impl LocalLog {
    /// Rolled and sealed segments, oldest first (tiering uploads them).
    pub(crate) fn closed_segments(&self) -> Vec<ClosedSegment> {
        self.log.closed_segments()
    }

    pub(crate) fn dir(&self) -> &std::path::Path {
        self.log.dir()
    }
}

impl Log for LocalLog {
    fn first_unstable_offset(&self) -> Option<i64> {
        self.log.first_unstable_offset()
    }

    fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.log.end_offset_for_epoch(epoch)
    }

    fn aborted_transactions(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        self.log.aborted_transactions(from, to)
    }

    fn producers(&self) -> Vec<crate::log::producer_state::ProducerSummary> {
        self.log.producers()
    }

    fn dirty_bytes(&self, config: &LogConfig, now: i64) -> (u64, u64) {
        self.log.dirty_bytes(config, now)
    }

    fn clean_candidate(
        &self,
        config: &LogConfig,
        now: i64,
        map_budget_bytes: usize,
        throttle: Arc<crate::log::cleaner::Throttle>,
    ) -> Option<crate::log::CleanCandidate> {
        self.log.clean_candidate(config, now, map_budget_bytes, throttle)
    }

    fn install_cleaned(
        &mut self,
        result: crate::log::cleaner::CleanResult,
    ) -> Result<Option<crate::log::Installed>, StorageError> {
        let cleaned_to = result.cleaned_to;
        let installed = self
            .log
            .install_cleaned(result)
            .map_err(|e| StorageError::io("installing a cleaned segment", &e))?;
        self.writer.recent.borrow_mut().forget_below(cleaned_to);
        Ok(Some(installed))
    }

    fn offsets(&self) -> LogOffsets {
        LogOffsets {
            log_start: self.log.log_start_offset(),
            log_end: self.log.log_end_offset(),
            stored_end: self.writer.stored.get().offset,
        }
    }

    fn append(
        &mut self,
        batch: &Bytes,
        header: BatchHeader,
        config: &LogConfig,
    ) -> Result<Appending, StorageError> {
        self.recover_from_failed_writes();
        self.keep_a_spare();
        let mut outcome = self.log.reserve(batch, header, config).map_err(|e| match e {
            AppendError::Producer(code) => StorageError::Producer(code),
            AppendError::Io(e) => StorageError::io("rolling a segment", &e),
        })?;
        if let Some(sealed) = outcome.rolled.take() {
            self.rolled(sealed);
        }
        let stored_parts = outcome
            .write
            .as_ref()
            .map(|w| w.parts.to_vec())
            .unwrap_or_default();
        let stored: super::LogFuture<Option<Arc<File>>> = match outcome.write.take() {
            Some(write) => {
                let (tx, rx) = oneshot::channel();
                self.enqueue(Queued::Write(write, tx));
                async move {
                    match rx.await {
                        Ok(Ok(file)) => Ok(Some(file)),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(StorageError::Io {
                            what: "write",
                            error: "the partition was closed".into(),
                        }),
                    }
                }
                .boxed_local()
            }
            None => async { Ok(None) }.boxed_local(),
        };
        Ok(Appending {
            base_offset: outcome.base_offset,
            log_append_time: outcome.log_append_time,
            duplicate: outcome.duplicate,
            stored,
            stored_parts,
        })
    }

    fn read(&self, offset: i64, max_bytes: usize, at_least_one: bool) -> LogFuture<Bytes> {
        let stored = self.writer.stored.get();
        let planned = self.log.plan_read(offset, stored);
        if planned.is_ok() {
            if offset >= stored.offset {
                // Waiting for data, as a consumer at the head does.
                return async { Ok(Bytes::new()) }.boxed_local();
            }
            if let Some(bytes) = self.writer.recent.borrow().read(offset, max_bytes, at_least_one) {
                return async move { Ok(bytes) }.boxed_local();
            }
        }
        let ahead = self.read_ahead.clone();
        let direct = self.direct_reads.clone();
        async move {
            let plan = match planned {
                Ok(plan) => plan,
                Err(ReadError::OutOfRange) => return Err(StorageError::OutOfRange),
                Err(ReadError::Io(e)) => return Err(StorageError::io("read", &e)),
            };
            if let Some(direct) = direct {
                match direct.read(plan.clone(), offset, max_bytes, at_least_one).await {
                    Ok(Some(bytes)) => return Ok(bytes),
                    // O_DIRECT refused here: the buffered read below.
                    Ok(None) => {}
                    Err(e) => return Err(StorageError::io("read", &e)),
                }
            }
            // Recent data is in the page cache: read it here (RWF_NOWAIT
            // cannot wait for the disk) and save the trip to the pool;
            // anything else goes to the pool.
            let (bytes, end) = match plan.execute_cached(max_bytes, at_least_one) {
                Some(read) => read,
                None => run_blocking("read", move || plan.execute(max_bytes, at_least_one)).await?,
            };
            if let Some(end) = end {
                read_ahead(&ahead, end);
            }
            Ok(Bytes::from(bytes))
        }
        .boxed_local()
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> LogFuture<Option<(i64, i64)>> {
        let stored = self.writer.stored.get();
        let plan = self.log.plan_offset_for_timestamp(timestamp, stored);
        async move { run_blocking("timestamp lookup", move || plan.execute()).await }.boxed_local()
    }

    fn max_timestamp(&self) -> LogFuture<Option<(i64, i64)>> {
        let stored = self.writer.stored.get();
        let plan = self.log.plan_max_timestamp(stored);
        async move { run_blocking("max timestamp lookup", move || plan.execute()).await }.boxed_local()
    }

    fn delete_records(&mut self, offset: i64, limit: i64) -> Result<LogFuture<i64>, StorageError> {
        let trimmed = self.log.trim_to(offset, limit).map_err(|e| match e {
            ReadError::OutOfRange => StorageError::OutOfRange,
            ReadError::Io(e) => StorageError::io("delete records", &e),
        })?;
        let start = self.log.log_start_offset();
        Ok(async move {
            run_blocking("delete records", move || trimmed.finish()).await?;
            Ok(start)
        }
        .boxed_local())
    }

    fn apply_retention(&mut self, config: &LogConfig, keep_from: i64) -> Result<usize, StorageError> {
        self.log.expire_producers();
        // Only stored data may go: a segment with writes still queued stays.
        let keep_from = keep_from.min(self.writer.stored.get().offset);
        let mut trimmed = self
            .log
            .trim_for_retention(config, keep_from)
            .map_err(|e| StorageError::io("retention", &e))?;
        if let Some(sealed) = trimmed.rolled.take() {
            self.rolled(sealed);
        }
        let deleted = trimmed.deleted_segments;
        if deleted > 0 {
            let name = self.name.clone();
            glommio::spawn_local(async move {
                if let Err(e) = run_blocking("retention", move || trimmed.finish()).await {
                    warn!(partition = %name, error = %e, "removing segments past retention failed");
                }
            })
            .detach();
        }
        Ok(deleted)
    }

    fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    fn close(self: Box<Self>) -> LogFuture<()> {
        let drained = self.drained();
        async move {
            drained.await;
            let log = self.log;
            run_blocking("closing the log", move || log.close()).await
        }
        .boxed_local()
    }

    fn delete(self: Box<Self>) -> LogFuture<()> {
        let drained = self.drained();
        async move {
            drained.await;
            let log = self.log;
            run_blocking("deleting the partition", move || log.delete()).await
        }
        .boxed_local()
    }
}
