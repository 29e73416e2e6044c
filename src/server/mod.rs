//! `IngestServer`: wires the configuration, the data directory and the
//! handlers onto the shard runtime.
//!
//! ```no_run
//! use chronik_ingest::{IngestServer, ServerConfig};
//! let config = ServerConfig::from_env()?;
//! let server = IngestServer::new(config.clone(), &config.storage_path);
//! let handle = server.start()?;
//! // ... later, from any thread: handle.stop();
//! handle.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod advertised;
pub(crate) mod authenticate;
pub(crate) mod authorize;
mod backpressure;
mod connection;
mod counters;
mod deadline;
mod observe;
mod service;
pub(crate) mod session;
mod shard_broker;
pub(crate) mod throttle;

pub use chronik_shard::Stopper;
pub use counters::ShardSnapshot;

use crate::cluster::etcd::Etcd;
use crate::cluster::{ClusterAgent, ClusterIdentity, ClusterSettings, DataDirLock};
use crate::config::{ConfigError, SecurityProtocol, ServerConfig};
use crate::controller::{
    Controller, ControllerContext, ControllerHandle, SendToController, CONTROLLER_SHARD,
};
use crate::groups::GroupCoordinator;
use crate::metrics::{Metrics, MetricsServer, RuntimeCounters, ShardMetrics};
use crate::partition::{PartitionClient, SendToShard, ShardPartitions};
use crate::remote::{
    rebuild_from_bucket, RemoteReads, RemoteStore, SideRuntime, TieringContext, TieringStats,
    READ_CACHE_BYTES_PER_SHARD, UPLOADS_PER_SHARD,
};
use crate::routing::PartitionRouter;
use crate::storage::{GroupCommit, LocalLogOptions, ReadAheadBudget, RecentBudget};
use crate::topics::CatalogStore;
use advertised::{Advertised, BrokerListener};
use chronik_shard::{Runtime, RuntimeConfig, ShardContext, StartError};
pub(crate) use counters::BrokerCounters;
pub(crate) use deadline::ProtocolWait;
pub(crate) use shard_broker::{BrokerAddress, ShardBroker};
use shard_broker::{NetServices, ShardMessage, ShardParts};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tracing::{info, warn};

/// Cluster mode: a shard's WAL flushes at once when this much waits,
/// without waiting for the flush interval.
const WAL_FLUSH_BYTES: usize = 4 << 20;
/// Cluster mode: how often a shard looks for partitions it began to lead.
const TAKE_UP_INTERVAL: Duration = Duration::from_millis(100);
/// Cluster mode: how often a shard looks for WAL pointers to fold.
const WAL_FOLD_INTERVAL: Duration = Duration::from_secs(1);

/// Listen backlog per shard; the kernel caps it at net.core.somaxconn.
const LISTEN_BACKLOG: i32 = 4096;
/// Blocking-pool threads per shard: segment writes, reads of data not in
/// memory, fsyncs and file management run there, off the shard thread.
/// Four lets a cold read, an fsync and the partition writers proceed at
/// once.
const BLOCKING_THREADS_PER_SHARD: usize = 4;
/// io_uring-registered buffer memory per shard. Network I/O does not use
/// it; kept small so many shards (and tests) stay far from memlock limits.
const IO_MEMORY_PER_SHARD: usize = 2 << 20;

/// Memory each shard's partitions may hold in chunks read ahead of
/// consumers of the files (4 MiB chunks, a few per partition read).
const READ_AHEAD_BYTES_PER_SHARD: usize = 256 << 20;

/// A configured, not yet running broker.
pub struct IngestServer {
    config: ServerConfig,
    data_dir: PathBuf,
}

/// Why the broker could not start.
#[derive(Debug)]
pub enum ServerError {
    /// A setting that only proved unusable at start (an unreadable
    /// certificate file, a key that does not fit it).
    Config(ConfigError),
    DataDir(PathBuf, std::io::Error),
    Metrics(SocketAddr, std::io::Error),
    Runtime(StartError),
    Shards(String),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Config(e) => write!(f, "{e}"),
            ServerError::DataDir(dir, e) => write!(f, "data directory {}: {e}", dir.display()),
            ServerError::Metrics(addr, e) => {
                write!(f, "cannot serve metrics on {addr} (METRICS_ADDRESS): {e}")
            }
            ServerError::Runtime(e) => write!(f, "{e}"),
            ServerError::Shards(e) => write!(f, "shard failure: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl IngestServer {
    pub fn new(config: ServerConfig, data_dir: impl Into<PathBuf>) -> Self {
        IngestServer {
            config,
            data_dir: data_dir.into(),
        }
    }

    /// Takes the data directory, starts the shards, and returns once every
    /// shard's listener is bound.
    pub fn start(self) -> Result<ServerHandle, ServerError> {
        // Before touching the data directory: without io_uring nothing runs.
        chronik_shard::probe_io_uring().map_err(|e| ServerError::Runtime(StartError::Uring(e)))?;
        let tls = match &self.config.tls_config {
            Some(settings) => Some(Arc::new(
                crate::tls::ServerTls::load(settings).map_err(ServerError::Config)?,
            )),
            None => None,
        };
        let listener_specs = self.config.listeners();
        let dir = self.data_dir.clone();
        let lock = DataDirLock::acquire(&dir).map_err(|e| ServerError::DataDir(dir.clone(), e))?;
        let local_identity =
            ClusterIdentity::load_or_create(&dir).map_err(|e| ServerError::DataDir(dir.clone(), e))?;
        // The side runtime runs the object-store clients and, in cluster
        // mode, etcd's; the cluster's shared documents are read through it
        // from here on.
        let side = match &self.config.object_store_url {
            Some(_) => Some(SideRuntime::start().map_err(|e| {
                ServerError::Config(crate::ConfigError {
                    setting: "OBJECT_STORE_URL".into(),
                    message: format!("cannot start the object-store thread: {e}"),
                })
            })?),
            None => None,
        };
        let cluster = match (&side, self.config.etcd_endpoints.is_empty()) {
            (Some(side), false) => Some(join_cluster(&self.config, side, &local_identity, &dir)?),
            _ => None,
        };
        let identity = Arc::new(match &cluster {
            Some((_, identity)) => identity.clone(),
            None => local_identity,
        });
        let metadata_store: Arc<dyn crate::metadata::MetadataStore> = match (&side, &cluster) {
            (Some(side), Some((etcd, _))) => Arc::new(crate::metadata::ClusterStore::new(
                crate::metadata::FileStore::new(&dir),
                etcd.clone(),
                side.handle(),
            )),
            _ => Arc::new(crate::metadata::FileStore::new(&dir)),
        };
        crate::transactions::move_per_shard_tables(&dir).map_err(|e| ServerError::DataDir(dir.clone(), e))?;
        // Dynamic configs first: they set the topic defaults the catalog
        // resolves with and the limits the shards start with.
        let dynamic = Arc::new(
            crate::config::dynamic::DynamicConfigStore::load(&dir)
                .map_err(|e| ServerError::DataDir(dir.clone(), e))?,
        );
        let live = crate::config::broker_configs::live_settings(&self.config, &dynamic.snapshot());
        let catalog = Arc::new(
            CatalogStore::open(metadata_store.clone(), live.topic_defaults.clone())
                .map_err(|e| ServerError::DataDir(dir.clone(), e))?,
        );
        let security = Arc::new(
            crate::security::SecurityServices::open(
                &self.config,
                Arc::new(crate::metadata::FileStore::new(&dir)),
            )
            .map_err(ServerError::Config)?,
        );
        let backpressure_threshold =
            Arc::new(std::sync::atomic::AtomicUsize::new(live.backpressure_threshold));
        let remote_store = match (&self.config.object_store_url, &side) {
            (Some(url), Some(side)) => {
                let unusable = |message: String| {
                    ServerError::Config(crate::ConfigError {
                        setting: "OBJECT_STORE_URL".into(),
                        message,
                    })
                };
                let store = RemoteStore::open(url, side.handle()).map_err(unusable)?;
                crate::topics::set_tiering_available(true);
                // A broker with topics of its own starts through a store
                // outage (produce and local reads need no bucket; uploads
                // wait and retry); one with none may be a rebuild, which an
                // unreachable bucket would silently turn into an empty
                // broker, so it refuses to start instead.
                let has_topics = catalog.snapshot().topics().next().is_some();
                match rebuild_from_bucket(&store, &catalog, &dir) {
                    Ok((topics, partitions)) if topics + partitions > 0 => {
                        info!(topics, partitions, url = %url, "took back tiered topics from object storage");
                    }
                    Ok(_) => {}
                    Err(e) if has_topics => {
                        warn!(error = %e, "object storage unreachable at start: starting with the local topics; uploads retry until it answers, and topics only in the bucket are taken back at the next start");
                    }
                    Err(e) => return Err(unusable(e)),
                }
                Some(store)
            }
            _ => None,
        };

        let shards = self.config.shard_count();
        let counters: Vec<Arc<BrokerCounters>> = (0..shards).map(|_| Arc::default()).collect();
        let runtime_config = RuntimeConfig {
            shards,
            listen_addrs: listener_specs.iter().map(|l| l.addr).collect(),
            backlog: LISTEN_BACKLOG,
            shutdown_timeout: self.config.shutdown_timeout,
            io_memory: IO_MEMORY_PER_SHARD,
            limits: live.limits.clone(),
            idle_timeout: live.idle_timeout,
            blocking_threads: BLOCKING_THREADS_PER_SHARD,
        };
        let runtime_counters = Arc::new(std::sync::OnceLock::new());
        let metrics = Arc::new(Metrics::new(RuntimeCounters {
            runtime: runtime_counters.clone(),
            broker: counters.clone(),
        }));
        let ready_shards = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Cluster mode: not ready while this broker holds no valid lease.
        let lease_held = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readiness = crate::metrics::Readiness {
            shards_ready: ready_shards.clone(),
            shards,
            lease_held: cluster.as_ref().map(|_| lease_held.clone()),
        };
        // Up before recovery starts, so /ready can say 503 while it runs.
        let metrics_server = match self.config.metrics_address {
            Some(addr) => Some(
                MetricsServer::start(addr, metrics.clone(), readiness)
                    .map_err(|e| ServerError::Metrics(addr, e))?,
            ),
            None => None,
        };
        let end_offsets: observe::EndOffsets = Arc::new(
            (0..shards)
                .map(|_| arc_swap::ArcSwap::from_pointee(Default::default()))
                .collect(),
        );
        let config = Arc::new(self.config);
        let shard_counters = counters.clone();
        let shard_identity = identity.clone();
        let shard_config = config.clone();
        let shard_dir = dir.clone();
        let shard_metrics = metrics.clone();
        let shard_ready = ready_shards.clone();
        let shard_ends = end_offsets.clone();
        let fsyncs: Arc<Mutex<Vec<Arc<AtomicU64>>>> = Arc::default();
        let shard_fsyncs = fsyncs.clone();
        let shard_tls = tls.clone();
        let router = Arc::new(match &cluster {
            Some(_) => PartitionRouter::cluster(shards, identity.node_id),
            None => PartitionRouter::single_broker(shards),
        });
        let agent_router = router.clone();
        let shard_metadata = metadata_store.clone();
        // Cluster mode: each shard's WAL reaches etcd and the store
        // through the side runtime.
        let shard_wal = match (&cluster, &side, &remote_store) {
            (Some((etcd, _)), Some(side), Some(store)) => Some((etcd.clone(), side.handle(), store.clone())),
            _ => None,
        };
        let wal_settings = crate::cluster::WalSettings {
            flush_interval: Duration::from_millis(config.wal_flush_interval_ms),
            flush_bytes: WAL_FLUSH_BYTES,
            ack_timeout: config.request_timeout,
            garbage_grace: Duration::from_millis(config.wal_garbage_grace_ms),
        };
        let agent_catalog = catalog.clone();
        let shard_remote = remote_store.clone();
        let runtime = Runtime::start(runtime_config, move |shard: ShardContext<ShardMessage>| {
            // Groups first: a failure here leaves no partition opened (and
            // so none without its clean-shutdown marker) on this shard.
            let group_commit: Rc<GroupCommit> = Rc::default();
            let groups = GroupCoordinator::open(
                shard.id,
                &shard_dir,
                Duration::from_millis(shard_config.group_initial_rebalance_delay_ms),
                Duration::from_secs(shard_config.offsets_retention_minutes * 60),
                router.clone(),
                group_commit.clone(),
                shard_config.offsets_topic_segment_bytes as u64,
            )
            .map(Rc::new)
            // The broker cannot coordinate groups without its offsets:
            // refuse to start rather than serve with them missing.
            .map_err(|e| format!("cannot load committed offsets: {e}"))?;
            let transactions = Rc::new(
                crate::transactions::TxnCoordinator::open(
                    &shard_dir,
                    shard.id,
                    &router,
                    (&*shard_config).into(),
                    (
                        group_commit.clone(),
                        shard_config.offsets_topic_segment_bytes as u64,
                    ),
                )
                .map_err(|e| format!("cannot load transaction state: {e}"))?,
            );
            let metrics = Rc::new(ShardMetrics::new(shard.id, shard_metrics.clone()));
            let forget: Box<dyn Fn(&str)> = {
                let metrics = metrics.clone();
                Box::new(move |topic| metrics.forget_topic(topic))
            };
            let recent = RecentBudget::new(shard_config.recent_cache_bytes_per_shard());
            glommio::spawn_local(crate::storage::follow_host_memory(
                recent.clone(),
                shards,
                shard.drain.clone(),
            ))
            .detach();
            let local = Rc::new(ShardPartitions::open(
                shard.id,
                shard_dir.clone(),
                catalog.clone(),
                router.clone(),
                group_commit,
                forget,
                LocalLogOptions {
                    write_mode: shard_config.segment_write,
                    recent: recent.clone(),
                    read_ahead: ReadAheadBudget::new(READ_AHEAD_BYTES_PER_SHARD),
                    tiering: shard_remote.clone().map(|store| {
                        let stats = Rc::new(TieringStats::new(shard.id, &shard_metrics));
                        TieringContext {
                            store,
                            reads: RemoteReads::new(READ_CACHE_BYTES_PER_SHARD, stats.clone()),
                            stats,
                            uploads: Rc::new(glommio::sync::Semaphore::new(UPLOADS_PER_SHARD)),
                            local_cap: (shard_config.tiering_local_cap_mb as u64) << 20,
                            fenced_manifests: shard_config.cluster_mode(),
                        }
                    }),
                },
            )?);
            if let Ok(mut all) = shard_fsyncs.lock() {
                all.push(local.fsync_counter());
            }
            if let Some((etcd, side, store)) = &shard_wal {
                let wal = Rc::new(crate::cluster::ShardWal::new(
                    shard_identity.node_id,
                    shard.id,
                    wal_settings,
                    etcd.clone(),
                    side.clone(),
                    store.clone(),
                    router.clone(),
                    &shard_metrics,
                ));
                local.set_wal(wal.clone());
                groups.set_wal(wal.clone());
                glommio::spawn_local(
                    groups
                        .clone()
                        .take_up_leadership_periodically(shard.drain.clone(), TAKE_UP_INTERVAL),
                )
                .detach();
                if shard.id == 0 {
                    glommio::spawn_local(wal.clone().sweep_periodically(shard.drain.clone())).detach();
                }
                glommio::spawn_local(
                    groups
                        .clone()
                        .fold_wal_periodically(shard.drain.clone(), WAL_FOLD_INTERVAL),
                )
                .detach();
                glommio::spawn_local(wal.run(shard.drain.clone())).detach();
                glommio::spawn_local(
                    local
                        .clone()
                        .fold_wal_periodically(shard.drain.clone(), WAL_FOLD_INTERVAL),
                )
                .detach();
                glommio::spawn_local(
                    local
                        .clone()
                        .take_up_leadership_periodically(shard.drain.clone(), TAKE_UP_INTERVAL),
                )
                .detach();
            }
            let partitions = {
                let mesh = shard.clone();
                let send: SendToShard = Rc::new(move |to, op| {
                    let mesh = mesh.clone();
                    Box::pin(async move {
                        mesh.send_to(to, ShardMessage::Partition(op))
                            .await
                            .map_err(|e| e.to_string())
                    })
                });
                PartitionClient::new(shard.id, router.clone(), local.clone(), send)
            };
            glommio::spawn_local(apply_retention_periodically(
                local.clone(),
                shard.drain.clone(),
                shard_config.retention_check_interval,
            ))
            .detach();
            glommio::spawn_local(drive_groups(groups.clone(), shard.drain.clone())).detach();
            if shard_config.log_cleaner_enable {
                let settings = crate::partition::CleanerSettings {
                    map_budget_bytes: shard_config.log_cleaner_dedupe_buffer_size,
                    io_bytes_per_second: shard_config.log_cleaner_io_max_bytes_per_second as u64,
                };
                glommio::spawn_local(clean_compacted_partitions(
                    CompactedLogs {
                        shard: shard.id,
                        partitions: local.clone(),
                        groups: groups.clone(),
                        transactions: transactions.clone(),
                    },
                    metrics.clone(),
                    shard.drain.clone(),
                    settings,
                    Duration::from_millis(shard_config.log_cleaner_backoff_ms),
                ))
                .detach();
            }
            let local_controller = if shard.id == CONTROLLER_SHARD {
                let context = ControllerContext {
                    config: shard_config.clone(),
                    identity: shard_identity.clone(),
                    catalog: catalog.clone(),
                    dynamic: dynamic.clone(),
                    security: security.clone(),
                    limits: shard.limits.clone(),
                    backpressure_threshold: backpressure_threshold.clone(),
                    shards: shard.count,
                };
                let controller = Controller::open(shard_metadata.clone(), context, partitions.clone())
                    .map_err(|e| format!("cannot load the controller's state: {e}"))?;
                Some(Rc::new(controller))
            } else {
                None
            };
            let controller = {
                let mesh = shard.clone();
                let send: SendToController = Rc::new(move |op| {
                    let mesh = mesh.clone();
                    Box::pin(async move {
                        mesh.send_to(CONTROLLER_SHARD, ShardMessage::Controller(op))
                            .await
                            .map_err(|e| e.to_string())
                    })
                });
                ControllerHandle::new(local_controller, send, catalog.clone())
            };
            let net = NetServices {
                backpressure: backpressure::Backpressure::new(backpressure_threshold.clone()),
                listeners: listener_specs
                    .iter()
                    .zip(shard.listen_addrs.iter())
                    .map(|(spec, bound)| BrokerListener {
                        name: spec.name.as_str().into(),
                        security: spec.security,
                        advertised: Advertised::new(spec.advertised.as_deref(), *bound),
                    })
                    .collect(),
                tls: shard_tls.clone(),
                counters: shard_counters[shard.id].clone(),
                authorizer: security.shard_authorizer(),
                auth_failures: Default::default(),
            };
            let broker = ShardBroker::new(ShardParts {
                dynamic: dynamic.clone(),
                security: security.clone(),
                end_offsets: shard_ends.clone(),
                metrics,
                identity: shard_identity.clone(),
                config: shard_config.clone(),
                catalog: catalog.clone(),
                partitions,
                local_partitions: local,
                groups,
                transactions,
                controller,
                net,
                shard,
            });
            shard_ready.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            Ok(broker)
        })
        .map_err(ServerError::Runtime)?;
        let listening: Vec<String> = config
            .listeners()
            .iter()
            .zip(runtime.local_addrs())
            .map(|(spec, bound)| format!("{}://{bound}", spec.name))
            .collect();
        let _ = runtime_counters.set(runtime.counters());
        let agent = match (&cluster, &side) {
            (Some((etcd, _)), Some(side)) => {
                let settings = cluster_settings(&config, runtime.local_addrs(), identity.node_id)?;
                info!(node = identity.node_id, listeners = ?settings.listeners, "joining the cluster");
                Some(ClusterAgent::start(
                    etcd.clone(),
                    &side.handle(),
                    settings,
                    (agent_router, agent_catalog),
                    &metrics,
                    lease_held.clone(),
                ))
            }
            _ => None,
        };
        // Said once the broker is in the cluster (in cluster mode), so a
        // client that connects on seeing it finds the broker in Metadata.
        info!(
            listen = %runtime.local_addr(),
            listeners = %listening.join(","),
            shards,
            cluster_id = %identity.cluster_id,
            data_dir = %dir.display(),
            "chronik-ingest started"
        );
        Ok(ServerHandle {
            listeners: config
                .listeners()
                .into_iter()
                .map(|l| (l.name, l.security))
                .collect(),
            tls,
            metrics_server,
            metrics,
            runtime,
            fsyncs,
            counters,
            identity,
            agent,
            side,
            _lock: lock,
        })
    }
}

/// Cluster mode at start: etcd's cluster id (the first broker's), this
/// broker's NODE_ID, both written to `meta.properties` too.
fn join_cluster(
    config: &ServerConfig,
    side: &SideRuntime,
    local: &ClusterIdentity,
    dir: &std::path::Path,
) -> Result<(Etcd, ClusterIdentity), ServerError> {
    let unusable = |message: String| {
        ServerError::Config(crate::ConfigError {
            setting: "ETCD_ENDPOINTS".into(),
            message,
        })
    };
    let etcd = Etcd::new(&config.etcd_endpoints).map_err(unusable)?;
    let cluster_id = ClusterAgent::cluster_id(&etcd, &side.handle(), &local.cluster_id)
        .map_err(|e| unusable(format!("cannot join the cluster: {e}")))?;
    let identity = ClusterIdentity {
        cluster_id,
        node_id: config.node_id.unwrap_or(0),
    };
    if identity.cluster_id != local.cluster_id || identity.node_id != local.node_id {
        identity
            .store(&crate::metadata::FileStore::new(dir))
            .map_err(|e| ServerError::DataDir(dir.to_path_buf(), e))?;
    }
    Ok((etcd, identity))
}

/// What the agent registers: every listener's advertised address, which
/// must be one other brokers' clients can reach (not a wildcard).
fn cluster_settings(
    config: &ServerConfig,
    bound: &[std::net::SocketAddr],
    node: i32,
) -> Result<ClusterSettings, ServerError> {
    let mut listeners = Vec::new();
    for (spec, bound) in config.listeners().iter().zip(bound) {
        let advertised = Advertised::new(spec.advertised.as_deref(), *bound);
        let Some((host, port)) = advertised.fixed() else {
            return Err(ServerError::Config(crate::ConfigError {
                setting: "ADVERTISED_LISTENERS".into(),
                message: format!(
                    "listener {} is bound to a wildcard address: cluster mode needs the address clients reach it at",
                    spec.name
                ),
            }));
        };
        listeners.push((spec.name.clone(), host, port));
    }
    Ok(ClusterSettings {
        node,
        lease_ttl: Duration::from_millis(config.cluster_lease_ttl_ms),
        rack: config.broker_rack.clone(),
        listeners,
    })
}

/// Reloads the TLS certificate, key and CA files from another thread.
#[derive(Clone)]
pub struct TlsReloader(Option<Arc<crate::tls::ServerTls>>);

impl TlsReloader {
    /// New handshakes use the re-read files from now on; connections
    /// already open keep their session. On error the files in use are kept
    /// and the error names the setting at fault. `Ok(false)` when TLS is not
    /// configured.
    pub fn reload(&self) -> Result<bool, ConfigError> {
        match &self.0 {
            Some(tls) => tls.reload().map(|()| true),
            None => Ok(false),
        }
    }
}

/// A running broker.
pub struct ServerHandle {
    /// Each listener's name and protocol, in `local_addrs` order.
    listeners: Vec<(String, SecurityProtocol)>,
    tls: Option<Arc<crate::tls::ServerTls>>,
    metrics_server: Option<MetricsServer>,
    metrics: Arc<Metrics>,
    runtime: Runtime,
    fsyncs: Arc<Mutex<Vec<Arc<AtomicU64>>>>,
    counters: Vec<Arc<BrokerCounters>>,
    identity: Arc<ClusterIdentity>,
    /// The object-store thread, stopped after the shards.
    /// Cluster mode's membership agent (before `side`, which runs it).
    agent: Option<ClusterAgent>,
    side: Option<SideRuntime>,
    _lock: DataDirLock,
}

impl ServerHandle {
    /// The first listener's address (the real port if 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.runtime.local_addr()
    }

    /// Every listener's address, in configured order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.runtime.local_addrs().to_vec()
    }

    /// The address of the first listener speaking `security`, if any.
    pub fn listener_addr(&self, security: SecurityProtocol) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .zip(self.runtime.local_addrs())
            .find(|((_, s), _)| *s == security)
            .map(|(_, addr)| *addr)
    }

    /// The address of the listener named `name` (LISTENERS), if any.
    pub fn listener_addr_named(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .zip(self.runtime.local_addrs())
            .find(|((n, _), _)| n.eq_ignore_ascii_case(name))
            .map(|(_, addr)| *addr)
    }

    /// A handle that reloads the TLS files from any thread.
    pub fn tls_reloader(&self) -> TlsReloader {
        TlsReloader(self.tls.clone())
    }

    pub fn cluster_id(&self) -> &str {
        &self.identity.cluster_id
    }

    /// Begins a graceful shutdown: stop accepting, drain, force-close after
    /// the shutdown timeout. Returns at once; `join` waits for the end.
    pub fn stop(&self) {
        self.runtime.stop();
    }

    /// Stops the server from another thread (a signal handler).
    pub fn stopper(&self) -> Stopper {
        self.runtime.stopper()
    }

    /// Each shard's counters, in shard order.
    pub fn shard_stats(&self) -> Vec<ShardSnapshot> {
        self.runtime
            .shard_stats()
            .into_iter()
            .zip(&self.counters)
            .map(|(runtime, broker)| broker.snapshot(runtime))
            .collect()
    }

    /// fdatasync calls made for acks=all so far, all shards together.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs
            .lock()
            .map(|all| all.iter().map(|c| c.load(Ordering::Relaxed)).sum())
            .unwrap_or(0)
    }

    /// Where /metrics, /health and /ready are served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// The OpenMetrics exposition, as /metrics serves it.
    pub fn render_metrics(&self) -> String {
        self.metrics.render().unwrap_or_default()
    }

    /// Shards whose event loop is running.
    pub fn running_shards(&self) -> usize {
        self.runtime.running_shards()
    }

    /// Waits until every shard has stopped (after `stop`, or a failure).
    pub fn join(self) -> Result<(), ServerError> {
        let ServerHandle {
            runtime,
            _lock,
            metrics_server,
            agent,
            side,
            ..
        } = self;
        let result = runtime.join().map_err(ServerError::Shards);
        // Every shard has flushed and stopped: now the partitions go to
        // the other brokers (the lease is revoked), not a TTL later.
        drop(agent);
        drop(side);
        drop(metrics_server);
        info!("chronik-ingest stopped");
        drop(_lock);
        result
    }
}

/// Applies retention every `interval` until the shard drains, and retries
/// the removal of deleted topics' directories.
async fn apply_retention_periodically(
    partitions: Rc<ShardPartitions>,
    drain: chronik_shard::Signal,
    interval: Duration,
) {
    loop {
        if !crate::partition::next_tick(interval, &drain).await {
            return;
        }
        partitions.apply_retention();
        // Failures are logged inside; the next round tries again.
        let _ = partitions.sweep(None).await;
    }
}

/// What a shard's cleaner cleans: its compacted topics' partitions and
/// the internal partitions it owns.
struct CompactedLogs {
    shard: usize,
    partitions: Rc<ShardPartitions>,
    groups: Rc<GroupCoordinator>,
    transactions: Rc<crate::transactions::TxnCoordinator>,
}

/// The shard's log cleaner: cleans the dirtiest due compacted partition
/// (a topic's, else an offsets or transaction-state partition), at once again after a cleaning,
/// else after `backoff`, until the shard drains.
async fn clean_compacted_partitions(
    logs: CompactedLogs,
    metrics: Rc<ShardMetrics>,
    drain: chronik_shard::Signal,
    settings: crate::partition::CleanerSettings,
    backoff: Duration,
) {
    loop {
        let mut cleaned = logs.partitions.clean_dirtiest(&settings).await;
        if cleaned.is_none() {
            cleaned = logs.groups.clean_dirtiest(logs.shard, &settings).await;
        }
        if cleaned.is_none() {
            cleaned = logs.transactions.clean_dirtiest(logs.shard, &settings).await;
        }
        if let Some(report) = cleaned {
            metrics.cleaned(report.read, report.written, report.took);
        }
        let wait = if cleaned.is_some() {
            Duration::ZERO
        } else {
            backoff
        };
        let sleep = std::pin::pin!(glommio::timer::sleep(wait));
        let drained = std::pin::pin!(drain.wait());
        if let futures::future::Either::Right(_) = futures::future::select(sleep, drained).await {
            return;
        }
    }
}

/// How often group sessions and rebalance deadlines are checked.
const GROUP_TICK: Duration = Duration::from_millis(50);

/// Drives group deadlines until the shard drains.
async fn drive_groups(groups: Rc<GroupCoordinator>, drain: chronik_shard::Signal) {
    while !drain.is_fired() {
        glommio::timer::sleep(GROUP_TICK).await;
        groups.tick().await;
    }
}
