//! Starting, running and stopping the shards.

use crate::admission::{Admission, ConnectionLimits, LiveLimits, Rejection};
use crate::connection_table::{ConnectionEntry, ConnectionTable};
use crate::control::{self, GlobalView, ShardReport, CONTROL_TICK};
use crate::listener::bind_shard_listeners;
use crate::signal::{Signal, SignalTrigger};
use crate::stats::{bump, ShardCounters, ShardStats};
use crate::uring_probe::{probe_io_uring, UringUnavailable};
use crossbeam_channel::{Receiver, Sender};
use futures::future::{select, Either};
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::net::{TcpListener, TcpStream};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement, PoolPlacement};
use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Submission-queue depth of each executor's io_uring rings. The kernel
/// sizes a ring's cancel hash table from it (2^(log2(2 x depth) - 5)
/// buckets, at most 256), and every cancel glommio submits walks one bucket
/// of the polls armed on idle sockets. At glommio's default of 128 that is
/// 8 buckets: with 10,000 producing connections perf put 27% of the broker
/// in io_poll_find; at 2048 (128 buckets) 7%, and broker CPU fell from 68%
/// to 60% of a core (scripts/bench-many-producers.sh). Ring memory is
/// charged to the memory cgroup, not to RLIMIT_MEMLOCK, on kernels >= 5.12.
const RING_DEPTH: usize = 2048;

/// Messages one shard may have queued for another before senders wait.
const MESH_CHANNEL_CAPACITY: usize = 1024;

/// How the shards are laid out and how long they may take to stop.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Number of shards (executors); each is pinned to one allowed CPU, in
    /// turn, wrapping around if there are more shards than CPUs.
    pub shards: usize,
    /// Every address each shard listens on (a Kafka "listener" each); an
    /// accepted connection says which one it came in on by index.
    pub listen_addrs: Vec<SocketAddr>,
    pub backlog: i32,
    /// After this long, connections still open at shutdown are force-closed.
    pub shutdown_timeout: Duration,
    /// Memory each executor registers with io_uring for file I/O.
    pub io_memory: usize,
    pub limits: ConnectionLimits,
    /// Connections without a whole request for this long are closed.
    pub idle_timeout: Option<Duration>,
    /// Threads in each shard's blocking pool (disk work the shard hands
    /// off). Several, so one slow operation (a cold read) does not queue
    /// the others behind it; unpinned, so they run on whichever core is
    /// free rather than competing with their own shard's thread.
    pub blocking_threads: usize,
}

/// Built once on every shard; serves every connection that shard accepts
/// and every message other shards send it.
pub trait ShardService: 'static {
    /// What shards send each other (requests carry their own reply channel).
    type Message: Send + 'static;

    /// Runs a connection to its end. Should stop reading new requests once
    /// `conn.drain` fires and return when in-flight work is done; if it has
    /// not returned by the shutdown timeout it is dropped (force-closed).
    fn serve(self: Rc<Self>, conn: Connection) -> impl Future<Output = ()> + 'static;

    /// Called once on the shard, after the service is built and before it
    /// accepts: start the shard's background tasks here.
    fn on_start(self: &Rc<Self>) {}

    /// Handles a message from another shard; each runs as its own task.
    fn on_message(self: Rc<Self>, message: Self::Message) -> impl Future<Output = ()> + 'static;

    /// Called once every shard has drained its connections (so no more
    /// messages will come), before the executor exits: close files here.
    fn stop(self: Rc<Self>) -> impl Future<Output = ()> + 'static;
}

/// An accepted connection handed to a [`ShardService`].
pub struct Connection {
    pub stream: TcpStream,
    /// Index into [`RuntimeConfig::listen_addrs`] of the listener that
    /// accepted it.
    pub listener: usize,
    pub entry: Rc<ConnectionEntry>,
    /// Fires when the shard starts shutting down.
    pub drain: Signal,
}

/// What a shard knows about itself; given to the service factory.
pub struct ShardContext<M: Send + 'static> {
    pub id: usize,
    pub count: usize,
    /// The addresses every shard listens on, in configured order (real
    /// ports where 0 was asked).
    pub listen_addrs: Rc<[SocketAddr]>,
    pub drain: Signal,
    pub connections: Rc<ConnectionTable>,
    pub counters: Arc<ShardCounters>,
    /// The connection limits in force, shared by every shard; changing
    /// them here changes them everywhere.
    pub limits: Arc<LiveLimits>,
    view: Rc<RefCell<Arc<GlobalView>>>,
    mesh: Rc<Senders<M>>,
    admission: Rc<Admission>,
}

impl<M: Send + 'static> Clone for ShardContext<M> {
    fn clone(&self) -> Self {
        ShardContext {
            id: self.id,
            count: self.count,
            listen_addrs: self.listen_addrs.clone(),
            drain: self.drain.clone(),
            connections: self.connections.clone(),
            counters: self.counters.clone(),
            limits: self.limits.clone(),
            view: self.view.clone(),
            mesh: self.mesh.clone(),
            admission: self.admission.clone(),
        }
    }
}

impl<M: Send + 'static> ShardContext<M> {
    /// The merged process-wide view; see `control` for how stale it can be.
    pub fn global_view(&self) -> Arc<GlobalView> {
        self.view.borrow().clone()
    }

    /// Bans `ip` for the configured ban time (RATE_LIMIT_BAN_SECS) on every
    /// shard, as a broken connection rate limit does: the service's own
    /// reason, such as repeated failed authentications. An address in
    /// RATE_LIMIT_EXEMPT is never banned; returns whether it was.
    pub fn ban(&self, ip: std::net::IpAddr) -> bool {
        self.admission.ban(ip, Instant::now())
    }

    /// Sends `message` to another shard's `on_message` (waits while that
    /// shard's inbox is full). Never for this shard itself: call directly.
    /// On failure (the shard is gone, or `shard` is this one) the message is
    /// dropped, which drops any reply channel it carries.
    pub async fn send_to(&self, shard: usize, message: M) -> Result<(), ShardUnreachable> {
        self.mesh
            .send_to(shard, message)
            .await
            .map_err(|_| ShardUnreachable(shard))
    }
}

/// A message could not be delivered to the shard it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardUnreachable(pub usize);

impl std::fmt::Display for ShardUnreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard {} is not reachable", self.0)
    }
}

#[derive(Debug)]
pub enum StartError {
    Uring(UringUnavailable),
    Bind(SocketAddr, std::io::Error),
    Spawn(String),
    /// A shard could not build its service (recovery failed, ...).
    Service(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Uring(e) => write!(f, "{e}"),
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::Spawn(e) => write!(f, "cannot start shard executors: {e}"),
            StartError::Service(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The running shards. Dropping it does not stop them; call `stop` + `join`.
pub struct Runtime {
    local_addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    running: Arc<AtomicUsize>,
    executors: Vec<ExecutorJoinHandle<()>>,
    control: Option<std::thread::JoinHandle<()>>,
    counters: Vec<Arc<ShardCounters>>,
}

/// Everything one shard's executor thread takes with it.
struct ShardSeed<F, M: Send + 'static> {
    limits: Arc<LiveLimits>,
    exempt: Vec<crate::admission::IpNet>,
    admitted: Arc<AtomicUsize>,
    mesh: MeshBuilder<M, Full>,
    drained: Arc<AtomicUsize>,
    id: usize,
    count: usize,
    listen_addrs: Vec<SocketAddr>,
    /// One per listen address, in the same order.
    listeners: Vec<OwnedFd>,
    make_service: Arc<F>,
    stop: Arc<AtomicBool>,
    running: Arc<AtomicUsize>,
    reports: Sender<ShardReport>,
    views: Receiver<Arc<GlobalView>>,
    counters: Arc<ShardCounters>,
    shutdown_timeout: Duration,
    /// Whether the service was built, reported once.
    built: std::sync::mpsc::Sender<Result<(), String>>,
}

impl Runtime {
    /// Probes io_uring, binds every shard's listener, starts the control
    /// thread and the pinned executors. Returns once all are spawned.
    /// `make_service` builds each shard's service on its thread (it may
    /// fail: the error names what); `start` returns once every shard has
    /// built its service, or with the first failure after stopping the
    /// shards that did start.
    pub fn start<F, S>(config: RuntimeConfig, make_service: F) -> Result<Runtime, StartError>
    where
        F: Fn(ShardContext<S::Message>) -> Result<S, String> + Send + Sync + 'static,
        S: ShardService,
    {
        probe_io_uring().map_err(StartError::Uring)?;
        let shards = config.shards.max(1);
        // listeners_by_shard[shard][listener]: every shard gets its own
        // socket on every address.
        let mut listeners_by_shard: Vec<Vec<OwnedFd>> = (0..shards).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::with_capacity(config.listen_addrs.len());
        for &addr in &config.listen_addrs {
            let (fds, bound) =
                bind_shard_listeners(addr, shards, config.backlog).map_err(|e| StartError::Bind(addr, e))?;
            for (shard, fd) in fds.into_iter().enumerate() {
                listeners_by_shard[shard].push(fd);
            }
            local_addrs.push(bound);
        }
        if local_addrs.is_empty() {
            return Err(StartError::Spawn("no listen address configured".into()));
        }
        let live = Arc::new(LiveLimits::new(&config.limits, config.idle_timeout));
        let plane = control::start(shards, live.clone()).map_err(|e| StartError::Spawn(e.to_string()))?;
        let admitted = Arc::new(AtomicUsize::new(0));
        let cpus: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        if !cpus.is_empty() && shards > cpus.len() {
            warn!(
                shards,
                cpus = cpus.len(),
                "more shards than CPUs this process may use; some shards share a core"
            );
        }

        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicUsize::new(0));
        let make_service = Arc::new(make_service);
        let mesh = MeshBuilder::full(shards, MESH_CHANNEL_CAPACITY);
        let drained = Arc::new(AtomicUsize::new(0));
        let (built_tx, built_rx) = std::sync::mpsc::channel();
        let mut runtime = Runtime {
            local_addrs: local_addrs.clone(),
            stop: stop.clone(),
            running: running.clone(),
            executors: Vec::with_capacity(shards),
            control: None,
            counters: Vec::with_capacity(shards),
        };
        for (id, (listeners, views)) in listeners_by_shard.into_iter().zip(plane.views).enumerate() {
            let counters = Arc::new(ShardCounters::default());
            runtime.counters.push(counters.clone());
            let placement = match cpus.get(id % cpus.len().max(1)) {
                Some(cpu) => Placement::Fixed(*cpu),
                None => Placement::Unbound,
            };
            let seed = ShardSeed {
                limits: live.clone(),
                exempt: config.limits.exempt.clone(),
                admitted: admitted.clone(),
                mesh: mesh.clone(),
                drained: drained.clone(),
                id,
                count: shards,
                listen_addrs: local_addrs.clone(),
                listeners,
                make_service: make_service.clone(),
                stop: stop.clone(),
                running: running.clone(),
                reports: plane.reports.clone(),
                views,
                counters,
                shutdown_timeout: config.shutdown_timeout,
                built: built_tx.clone(),
            };
            let spawned = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{id}"))
                .io_memory(config.io_memory)
                .ring_depth(RING_DEPTH)
                .blocking_thread_pool_placement(PoolPlacement::Unbound(config.blocking_threads.max(1)))
                .spawn(move || run_shard(seed));
            match spawned {
                Ok(handle) => runtime.executors.push(handle),
                Err(e) => {
                    runtime.stop();
                    let _ = runtime.join();
                    return Err(StartError::Spawn(format!("shard {id}: {e}")));
                }
            }
        }
        // The control thread ends once every shard has dropped its sender.
        drop(plane.reports);
        runtime.control = Some(plane.thread);
        drop(built_tx);
        let mut failures = Vec::new();
        for _ in 0..shards {
            match built_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                // A shard ended without saying (its thread failed).
                Err(_) => {
                    failures.push("a shard ended before building its service".to_string());
                    break;
                }
            }
        }
        if !failures.is_empty() {
            runtime.stop();
            let _ = runtime.join();
            return Err(StartError::Service(failures.join("; ")));
        }
        Ok(runtime)
    }

    /// The first listen address (the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    /// Every listen address, in configured order (real ports).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Shards whose event loop has started and not yet finished.
    pub fn running_shards(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    pub fn shard_count(&self) -> usize {
        self.counters.len()
    }

    /// A handle that can stop the runtime from any thread (signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Asks every shard to stop accepting and drain; returns at once.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Each shard's live counters (for a metrics collector).
    pub fn counters(&self) -> Vec<Arc<ShardCounters>> {
        self.counters.clone()
    }

    pub fn shard_stats(&self) -> Vec<ShardStats> {
        self.counters
            .iter()
            .enumerate()
            .map(|(shard, c)| c.snapshot(shard))
            .collect()
    }

    /// Waits for every shard and the control thread to finish.
    pub fn join(mut self) -> Result<(), String> {
        let mut failures = Vec::new();
        for (id, handle) in self.executors.drain(..).enumerate() {
            if let Err(e) = handle.join() {
                failures.push(format!("shard {id}: {e}"));
            }
        }
        if let Some(control) = self.control.take() {
            if control.join().is_err() {
                failures.push("control thread panicked".into());
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}

/// Stops a [`Runtime`] from another thread.
#[derive(Clone)]
pub struct Stopper(Arc<AtomicBool>);

impl Stopper {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }
}

async fn run_shard<F, S>(seed: ShardSeed<F, S::Message>)
where
    F: Fn(ShardContext<S::Message>) -> Result<S, String> + Send + Sync + 'static,
    S: ShardService,
{
    // Every shard joins before any serves, so a forwarded request always
    // finds its peer. A single shard has an empty mesh.
    let (senders, mut receivers) = match seed.mesh.join().await {
        Ok(joined) => joined,
        Err(e) => {
            warn!(shard = seed.id, error = %e, "could not join the shard mesh");
            let _ = seed.built.send(Err(format!(
                "shard {}: could not join the shard mesh: {e}",
                seed.id
            )));
            return;
        }
    };
    let (drain_trigger, drain) = Signal::new();
    let (mut force_trigger, force) = Signal::new();
    let admission = Rc::new(Admission::new(
        seed.limits.clone(),
        seed.exempt.clone(),
        seed.admitted.clone(),
    ));
    let ctx = ShardContext {
        id: seed.id,
        count: seed.count,
        listen_addrs: seed.listen_addrs.clone().into(),
        drain,
        connections: Rc::new(ConnectionTable::new(seed.id, seed.counters.clone())),
        counters: seed.counters.clone(),
        limits: seed.limits.clone(),
        view: Rc::new(RefCell::new(Arc::new(GlobalView::default()))),
        mesh: Rc::new(senders),
        admission: admission.clone(),
    };
    let listeners: Vec<TcpListener> = seed
        .listeners
        .into_iter()
        .map(|fd| {
            // SAFETY: the fd came from `bind_shard_listeners`: a bound,
            // listening TCP socket that nothing else owns; `into_raw_fd`
            // gives up our ownership, so the listener becomes its only owner
            // and closes it exactly once.
            unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) }
        })
        .collect();
    let service = match (seed.make_service)(ctx.clone()) {
        Ok(service) => {
            let _ = seed.built.send(Ok(()));
            Rc::new(service)
        }
        Err(e) => {
            // Every other shard is told to stop (and stops cleanly);
            // `Runtime::start` returns the error.
            warn!(shard = seed.id, error = %e, "shard could not start");
            seed.stop.store(true, Ordering::Release);
            let _ = seed.built.send(Err(format!("shard {}: {e}", seed.id)));
            seed.drained.fetch_add(1, Ordering::AcqRel);
            ctx.mesh.close();
            return;
        }
    };
    service.on_start();
    glommio::spawn_local(close_idle_connections(ctx.clone())).detach();
    let inboxes: Vec<_> = receivers
        .streams()
        .into_iter()
        .map(|(_, inbox)| {
            let service = service.clone();
            glommio::spawn_local(async move {
                while let Some(message) = inbox.recv().await {
                    glommio::spawn_local(service.clone().on_message(message)).detach();
                }
            })
        })
        .collect();
    let ticker = glommio::spawn_local(tick(
        ctx.clone(),
        admission.clone(),
        seed.stop.clone(),
        seed.reports,
        seed.views,
        drain_trigger,
    ));
    seed.running.fetch_add(1, Ordering::AcqRel);
    info!(
        shard = seed.id,
        listen = ?seed.listen_addrs,
        "shard listening"
    );

    let accepting = listeners
        .iter()
        .enumerate()
        .map(|(index, listener)| accept_until_drained(&ctx, listener, index, &service, &force, &admission));
    futures::future::join_all(accepting).await;
    drop(listeners);

    let open = ctx.connections.len();
    debug!(shard = ctx.id, open, "shard stopped accepting; draining");
    let deadline = Instant::now() + seed.shutdown_timeout;
    while !ctx.connections.is_empty() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if !ctx.connections.is_empty() {
        warn!(
            shard = ctx.id,
            open = ctx.connections.len(),
            "shutdown timeout reached; force-closing connections"
        );
        force_trigger.fire();
        // Force-closed connections unwind on their next poll.
        let give_up = Instant::now() + Duration::from_secs(1);
        while !ctx.connections.is_empty() && Instant::now() < give_up {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }
    ticker.await;

    // Wait (bounded) until every shard has drained: until then another
    // shard may still forward requests here.
    seed.drained.fetch_add(1, Ordering::AcqRel);
    let give_up = Instant::now() + seed.shutdown_timeout + Duration::from_secs(2);
    while seed.drained.load(Ordering::Acquire) < seed.count && Instant::now() < give_up {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    service.stop().await;
    ctx.mesh.close();
    drop(inboxes);
    seed.running.fetch_sub(1, Ordering::AcqRel);
    info!(shard = ctx.id, "shard stopped");
}

async fn accept_until_drained<S: ShardService>(
    ctx: &ShardContext<S::Message>,
    listener: &TcpListener,
    listener_index: usize,
    service: &Rc<S>,
    force: &Signal,
    admission: &Admission,
) {
    let mut backoff = Duration::ZERO;
    let mut rejections_logged = RateLimitedLog::default();
    loop {
        let accepted = {
            let accept = pin!(listener.accept());
            let drained = pin!(ctx.drain.wait());
            match select(accept, drained).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => return,
            }
        };
        let stream = match accepted {
            Ok(stream) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(e) => {
                bump(&ctx.counters.accept_errors, 1);
                let e = std::io::Error::from(e);
                if is_resource_exhaustion(&e) {
                    // At the open-file limit accept fails at once, every
                    // time: back off instead of spinning, and say so once per
                    // back-off step rather than once per attempt.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    warn!(shard = ctx.id, error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                    glommio::timer::sleep(backoff).await;
                } else {
                    debug!(shard = ctx.id, error = %e, "accept failed");
                }
                continue;
            }
        };
        let (peer, local) = match (stream.peer_addr(), stream.local_addr()) {
            (Ok(peer), Ok(local)) => (peer, local),
            // The peer is already gone; nothing to serve.
            _ => continue,
        };
        let view = ctx.global_view();
        let slot = match admission.admit(peer.ip(), &view, &ctx.connections, Instant::now()) {
            Ok(slot) => slot,
            Err(rejection) => {
                let counter = match rejection {
                    Rejection::MaxConnections => &ctx.counters.rejected_max_connections,
                    Rejection::MaxPerIp => &ctx.counters.rejected_max_per_ip,
                    Rejection::RateLimit => &ctx.counters.rejected_rate_limit,
                    Rejection::Banned => &ctx.counters.rejected_banned,
                };
                bump(counter, 1);
                if let Some(suppressed) = rejections_logged.allow() {
                    warn!(shard = ctx.id, peer = %peer, reason = rejection.reason(), suppressed, "connection refused");
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let guard = ctx.connections.insert(peer, local);
        let conn = Connection {
            stream,
            listener: listener_index,
            entry: guard.entry().clone(),
            drain: ctx.drain.clone(),
        };
        let serve = service.clone().serve(conn);
        let force = force.clone();
        let closed = guard.entry().closed();
        glommio::spawn_local(async move {
            let _registered = guard;
            let _slot = slot;
            let serve = pin!(serve);
            let forced = pin!(force.wait());
            let closed = pin!(closed.wait());
            select(serve, select(forced, closed)).await;
        })
        .detach();
    }
}

fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Publishes this shard's deltas and picks up the merged view every tick;
/// turns the process-wide stop flag into this shard's drain signal.
async fn tick<M: Send + 'static>(
    ctx: ShardContext<M>,
    admission: Rc<Admission>,
    stop: Arc<AtomicBool>,
    reports: Sender<ShardReport>,
    views: Receiver<Arc<GlobalView>>,
    mut drain: SignalTrigger,
) {
    loop {
        let ip_deltas = ctx.connections.take_unpublished();
        let (attempts, bans) = admission.take_report(Instant::now());
        if !(ip_deltas.is_empty() && attempts.is_empty() && bans.is_empty()) {
            let _ = reports.send(ShardReport {
                ip_deltas,
                attempts,
                bans,
            });
        }
        if let Some(newest) = views.try_iter().last() {
            *ctx.view.borrow_mut() = newest;
        }
        if stop.load(Ordering::Acquire) {
            drain.fire();
            return;
        }
        glommio::timer::sleep(CONTROL_TICK).await;
    }
}

/// At most one log line per second for refused connections, saying how
/// many were not logged in between.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Closes connections that sent no whole request for `idle`. Each
/// connection has one deadline in a min-heap; a sweep pops only the
/// deadlines that have passed and re-arms those that saw a request since,
/// so its cost follows the connections due, not the connections open.
async fn close_idle_connections<M: Send + 'static>(ctx: ShardContext<M>) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut deadlines: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut current = ctx.limits.idle_timeout();
    while !ctx.drain.is_fired() {
        // The timeout is a dynamic config: a change re-dates every
        // connection; with none (0 = never) connections are looked at
        // again each second, so a timeout set later finds them.
        let live = ctx.limits.idle_timeout();
        let idle = live.unwrap_or(Duration::from_secs(1));
        let sweep = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        glommio::timer::sleep(sweep).await;
        let now = Instant::now();
        if live != current {
            current = live;
            deadlines = deadlines
                .into_iter()
                .map(|Reverse((_, id))| Reverse((now, id)))
                .collect();
        }
        for (id, accepted) in ctx.connections.take_fresh() {
            deadlines.push(Reverse((accepted + idle, id)));
        }
        while let Some(Reverse((deadline, id))) = deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            deadlines.pop();
            let Some(entry) = ctx.connections.get(id) else {
                continue;
            };
            let due = entry.last_request() + idle;
            if live.is_some() && due <= now && entry.in_flight() == 0 {
                debug!(shard = ctx.id, conn = id, peer = %entry.peer(), "closing idle connection");
                bump(&ctx.counters.idle_closed, 1);
                entry.close();
            } else {
                deadlines.push(Reverse((due.max(now + sweep), id)));
            }
        }
    }
}
