//! The membership agent: keeps this broker's etcd lease alive, registers
//! it, takes the partitions it should lead and gives up the ones it should
//! not, and publishes what it learnt to the shards' routing table.
//!
//! It runs on the side tokio runtime (never on a shard), one round every
//! quarter lease. Leadership is a key per partition held under the
//! leader's lease, written together with the partition's epoch key in one
//! etcd transaction: when a leader dies its keys vanish with its lease,
//! and whoever leads next bumps the epoch. No consensus of our own: every
//! race between brokers is settled by etcd's compares.

use super::assignment::desired_leaders;
use super::etcd::{Compare, Etcd, EtcdError, KeyValue, Op};
use super::keys;
use crate::metrics::{Metrics, NodeLabel};
use crate::remote::SideHandle;
use crate::routing::{
    BrokerEndpoints, ClusterRoutes, Leader, PartitionRouter, OFFSETS_PARTITIONS, OFFSETS_TOPIC,
    TRANSACTION_STATE_PARTITIONS, TRANSACTION_STATE_TOPIC,
};
use crate::topics::{CatalogStore, TopicPartition};
use futures::channel::oneshot;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// What this broker tells the cluster about itself.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSettings {
    pub node: i32,
    pub lease_ttl: Duration,
    pub rack: Option<String>,
    /// (listener name, advertised host, port).
    pub listeners: Vec<(String, String, u16)>,
}

/// A broker's registration, as stored under `keys::broker`.
#[derive(Debug, Serialize, Deserialize)]
struct Registration {
    node: i32,
    rack: Option<String>,
    listeners: Vec<(String, String, u16)>,
}

/// A partition's leadership, as stored under `keys::leader`.
#[derive(Debug, Serialize, Deserialize)]
struct LeaderRecord {
    node: i32,
    epoch: i32,
}

/// The running agent; `stop` hands leadership over.
pub(crate) struct ClusterAgent {
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<futures::future::BoxFuture<'static, ()>>,
}

impl ClusterAgent {
    /// The cluster's id: the one etcd holds, or `proposed` if this is the
    /// first broker. Blocking; at start, before the shards run.
    pub(crate) fn cluster_id(etcd: &Etcd, side: &SideHandle, proposed: &str) -> Result<String, String> {
        let (etcd, proposed) = (etcd.clone(), proposed.to_string());
        let work = async move {
            etcd.txn(
                &[Compare::Absent(keys::CLUSTER_ID.into())],
                &[Op::Put {
                    key: keys::CLUSTER_ID.into(),
                    value: proposed.into_bytes(),
                    lease: 0,
                }],
            )
            .await?;
            etcd.get(keys::CLUSTER_ID).await
        };
        let stored = futures::executor::block_on(side.run(work))
            .map_err(|_| "the etcd client thread stopped".to_string())?
            .map_err(|e| e.to_string())?;
        stored
            .and_then(|kv| String::from_utf8(kv.value).ok())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| format!("etcd key {} holds no cluster id", keys::CLUSTER_ID))
    }

    /// `lease_held` says whether this broker holds a valid lease (the
    /// metrics server's `/ready` answers 503 while it does not).
    pub(crate) fn start(
        etcd: Etcd,
        side: &SideHandle,
        settings: ClusterSettings,
        (router, catalog): (Arc<PartitionRouter>, Arc<CatalogStore>),
        metrics: &Metrics,
        lease_held: Arc<AtomicBool>,
    ) -> ClusterAgent {
        let label = NodeLabel {
            node: settings.node.to_string(),
        };
        let families = &metrics.cluster;
        let agent_metrics = AgentMetrics {
            partitions_led: families.partitions_led.get_or_create_owned(&label),
            lease_renew: families.lease_renew_duration.get_or_create_owned(&label),
            etcd_unreachable: families.etcd_unreachable.get_or_create_owned(&label),
            failovers: families.failovers.get_or_create_owned(&label),
            lease_held,
        };
        let (stop, stopping) = oneshot::channel();
        let (joined, has_joined) = std::sync::mpsc::sync_channel(1);
        let agent = Agent {
            metrics: agent_metrics,
            joined: Some(joined),
            etcd,
            settings,
            router,
            catalog,
            lease: None,
            renewed: None,
            catalog_revision: 0,
            last_complaint: None,
            led: 0,
            handing_over: HashMap::new(),
            etcd_unreachable_at: None,
            last_routes: None,
        };
        let stopped = side.run(agent.run(stopping));
        // Clients told about this broker find it in Metadata from the
        // start: the first round (registration, the first partitions)
        // runs before the broker says it started, unless etcd is slow.
        let _ = has_joined.recv_timeout(FIRST_ROUND_PATIENCE);
        ClusterAgent {
            stop: Some(stop),
            stopped: Some(Box::pin(async move {
                let _ = stopped.await;
            })),
        }
    }

    /// Stops leading (the lease is revoked, so other brokers take the
    /// partitions at once instead of after the lease's TTL) and waits for
    /// that, bounded by etcd's call timeout.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            futures::executor::block_on(stopped);
        }
    }
}

impl Drop for ClusterAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long a partition handed over takes no writes before it is let go:
/// many WAL flush intervals, so what it accepted is committed first.
const HANDOVER_DRAIN: Duration = Duration::from_millis(300);
/// While etcd is unreachable, how old the agent's last failed attempt may
/// be for this broker to go on leading: one etcd call's timeout and two
/// rounds.
const OUTAGE_GRACE: Duration = Duration::from_secs(5);

/// How often the agent looks at the local catalog between rounds.
const CATALOG_POLL: Duration = Duration::from_millis(20);

/// How long start-up waits for the agent's first round.
const FIRST_ROUND_PATIENCE: Duration = Duration::from_secs(5);

/// The agent's series, and the flag `/ready` reads.
struct AgentMetrics {
    partitions_led: Gauge,
    lease_renew: Histogram,
    etcd_unreachable: Gauge,
    failovers: Counter,
    lease_held: Arc<AtomicBool>,
}

struct Agent {
    metrics: AgentMetrics,
    /// Told after the first round that registered this broker.
    joined: Option<std::sync::mpsc::SyncSender<()>>,
    etcd: Etcd,
    settings: ClusterSettings,
    router: Arc<PartitionRouter>,
    catalog: Arc<CatalogStore>,
    lease: Option<i64>,
    /// When the last successful renewal (or the grant) was sent: etcd
    /// counts the TTL from when it saw it, which is no earlier.
    renewed: Option<Instant>,
    catalog_revision: i64,
    last_complaint: Option<Instant>,
    /// Partitions led after the last round, for the log.
    led: usize,
    /// Partitions being handed to the broker that should lead them, and
    /// since when.
    handing_over: HashMap<TopicPartition, Instant>,
    /// When the last round found etcd unreachable (`None`: it answered).
    etcd_unreachable_at: Option<Instant>,
    last_routes: Option<ClusterRoutes>,
}

/// What one range over the cluster's keys showed.
#[derive(Default)]
struct View {
    brokers: BTreeMap<i32, BrokerEndpoints>,
    leaders: HashMap<TopicPartition, (Leader, i64)>,
    epochs: HashMap<TopicPartition, (i32, i64)>,
    controller: Option<i32>,
    topics_document: Option<KeyValue>,
}

impl Agent {
    fn ttl(&self) -> Duration {
        self.settings.lease_ttl
    }

    async fn run(mut self, mut stopping: oneshot::Receiver<()>) {
        let tick = (self.ttl() / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            // Taken before the round reads the catalog: a topic created
            // while it runs starts the next one at once.
            let version = self.catalog.snapshot().version;
            match self.round().await {
                Ok(()) => {
                    self.etcd_unreachable_at = None;
                    self.metrics.etcd_unreachable.set(0);
                }
                Err(e) => {
                    self.complain(&e);
                    if matches!(e, EtcdError::Unreachable(_)) {
                        self.still_unreachable();
                    }
                }
            }
            // The next round a tick from now, or as soon as this broker's
            // catalog changes: a topic created here gets its leaders now,
            // not up to a tick later.
            let next = tokio::time::Instant::now() + tick;
            let mut stop = false;
            while tokio::time::Instant::now() < next && self.catalog.snapshot().version == version {
                tokio::select! {
                    _ = &mut stopping => { stop = true; break }
                    _ = tokio::time::sleep(CATALOG_POLL.min(tick)) => {}
                }
            }
            if stop {
                break;
            }
        }
        self.publish(View::default(), false);
        if let Some(lease) = self.lease.take() {
            match self.etcd.revoke(lease).await {
                Ok(()) => info!(
                    node = self.settings.node,
                    "left the cluster: lease revoked, partitions handed over"
                ),
                Err(e) => {
                    warn!(error = %e, "could not revoke the lease; other brokers take the partitions when it expires")
                }
            }
        }
    }

    /// Once a minute at most: etcd down is said, not shouted.
    fn complain(&mut self, error: &EtcdError) {
        let now = Instant::now();
        if self
            .last_complaint
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60))
        {
            warn!(error = %error, "cluster agent: etcd call failed; retrying every round");
            self.last_complaint = Some(now);
        }
    }

    fn lease_valid_until(&self) -> Option<Instant> {
        self.renewed.map(|at| at + self.ttl())
    }

    /// etcd cannot be reached: nobody can take this broker's partitions
    /// meanwhile (that needs etcd too, and etcd gives every lease a fresh
    /// TTL when it comes back), so it goes on leading them, for acks=1 and
    /// reads; acks=all waits for etcd. Said again every round, so a broker
    /// paused and resumed (whose last word is old) is not trusted.
    fn still_unreachable(&mut self) {
        self.etcd_unreachable_at = Some(Instant::now());
        self.metrics.etcd_unreachable.set(1);
        if let Some(mut routes) = self.last_routes.clone() {
            routes.etcd_unreachable_at = self.etcd_unreachable_at;
            self.router.publish(routes);
        }
    }

    async fn round(&mut self) -> Result<(), EtcdError> {
        self.keep_lease().await?;
        let Some(lease) = self.lease else {
            return Ok(());
        };
        let mut view = self.read_view().await?;
        if let Some(document) = &view.topics_document {
            if document.mod_revision != self.catalog_revision {
                match self.catalog.adopt(&document.value) {
                    Ok(()) => self.catalog_revision = document.mod_revision,
                    Err(e) => warn!(error = %e, "cannot take the cluster's topic catalog"),
                }
            }
        }
        if view.controller.is_none() {
            let (won, _) = self
                .etcd
                .txn(
                    &[Compare::Absent(keys::CONTROLLER.into())],
                    &[Op::Put {
                        key: keys::CONTROLLER.into(),
                        value: self.settings.node.to_string().into_bytes(),
                        lease,
                    }],
                )
                .await?;
            if won {
                info!(node = self.settings.node, "elected controller");
                view.controller = Some(self.settings.node);
            }
        }
        self.balance(&mut view, lease).await?;
        self.publish(view, true);
        if let Some(joined) = self.joined.take() {
            let _ = joined.try_send(());
        }
        Ok(())
    }

    /// Grants and registers, or renews. Leadership past the lease's end
    /// is refused by the routing table itself (see `ClusterRoutes`); here
    /// it is dropped once etcd says the lease is gone.
    async fn keep_lease(&mut self) -> Result<(), EtcdError> {
        let now = Instant::now();
        match self.lease {
            Some(lease) => {
                let renewed = self.renewed.unwrap_or(now);
                if now.duration_since(renewed) >= self.ttl() / 3 {
                    let sent = Instant::now();
                    let alive = self.etcd.keep_alive(lease).await?;
                    self.metrics.lease_renew.observe(sent.elapsed().as_secs_f64());
                    if alive {
                        self.renewed = Some(sent);
                    } else {
                        warn!(
                            node = self.settings.node,
                            "etcd no longer has this broker's lease: leading nothing until registered again"
                        );
                        self.lease = None;
                        self.renewed = None;
                        self.handing_over.clear();
                        self.publish(View::default(), false);
                    }
                }
            }
            None => {
                let sent = Instant::now();
                let ttl_secs = self.ttl().as_millis().div_ceil(1000) as i64;
                let lease = self.etcd.grant(ttl_secs).await?;
                let registration = Registration {
                    node: self.settings.node,
                    rack: self.settings.rack.clone(),
                    listeners: self.settings.listeners.clone(),
                };
                let key = keys::broker(self.settings.node);
                let value = serde_json::to_vec(&registration).unwrap_or_default();
                let (registered, _) = self
                    .etcd
                    .txn(&[Compare::Absent(key.clone())], &[Op::Put { key, value, lease }])
                    .await?;
                if registered {
                    info!(node = self.settings.node, lease, "registered in the cluster");
                    self.lease = Some(lease);
                    self.renewed = Some(sent);
                } else {
                    let _ = self.etcd.revoke(lease).await;
                    warn!(
                        node = self.settings.node,
                        "node id already registered (another broker with this NODE_ID, or this one's previous run until its lease expires); retrying"
                    );
                }
            }
        }
        Ok(())
    }

    async fn read_view(&self) -> Result<View, EtcdError> {
        let (all, _) = self.etcd.range_prefix(keys::ROOT).await?;
        let mut view = View::default();
        for kv in all {
            if let Some(node) = kv.key.strip_prefix(keys::BROKERS) {
                let parsed = serde_json::from_slice::<Registration>(&kv.value);
                if let (Ok(_), Ok(registration)) = (node.parse::<i32>(), parsed) {
                    view.brokers.insert(
                        registration.node,
                        BrokerEndpoints {
                            node: registration.node,
                            rack: registration.rack,
                            listeners: registration.listeners,
                        },
                    );
                }
            } else if let Some(tp) = keys::partition_of(&kv.key, keys::LEADERS) {
                if let Ok(record) = serde_json::from_slice::<LeaderRecord>(&kv.value) {
                    let leader = Leader {
                        node: record.node,
                        epoch: record.epoch,
                        revision: kv.mod_revision,
                    };
                    view.leaders.insert(tp, (leader, kv.lease));
                }
            } else if let Some(tp) = keys::partition_of(&kv.key, keys::EPOCHS) {
                let epoch = std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                view.epochs.insert(tp, (epoch, kv.mod_revision));
            } else if kv.key == keys::CONTROLLER {
                view.controller = std::str::from_utf8(&kv.value).ok().and_then(|t| t.parse().ok());
            } else if kv.key == keys::document(crate::metadata::documents::TOPICS) {
                view.topics_document = Some(kv);
            }
        }
        Ok(view)
    }

    /// Every partition the cluster has: the catalog's topics and the two
    /// internal topics whose leaders coordinate groups and transactions.
    fn partitions(&self) -> Vec<TopicPartition> {
        let catalog = self.catalog.snapshot();
        let mut all: Vec<TopicPartition> = catalog
            .topics()
            .flat_map(|t| (0..t.partitions).map(move |p| TopicPartition::new(&t.name, p)))
            .collect();
        all.extend((0..OFFSETS_PARTITIONS as i32).map(|p| TopicPartition::new(OFFSETS_TOPIC, p)));
        all.extend(
            (0..TRANSACTION_STATE_PARTITIONS as i32).map(|p| TopicPartition::new(TRANSACTION_STATE_TOPIC, p)),
        );
        all
    }

    /// Takes the partitions this broker should lead and nobody does, and
    /// gives up those another live broker should lead (it takes them next
    /// round) or whose topic is gone.
    async fn balance(&mut self, view: &mut View, lease: i64) -> Result<(), EtcdError> {
        let me = self.settings.node;
        let live: Vec<i32> = view.brokers.keys().copied().collect();
        let partitions = self.partitions();
        let current: HashMap<TopicPartition, i32> = view
            .leaders
            .iter()
            .map(|(tp, (leader, _))| (tp.clone(), leader.node))
            .collect();
        let desired = desired_leaders(&partitions, &current, &live);
        let mine_elsewhere: Vec<TopicPartition> = view
            .leaders
            .iter()
            .filter(|(tp, (leader, _))| leader.node == me && desired.get(*tp) != Some(&me))
            .map(|(tp, _)| tp.clone())
            .collect();
        // A partition handed over stops taking writes first (it is left
        // out of what is published) and is let go a round later: the
        // shard's WAL has flushed and committed what it had accepted by
        // then, so those writes are answered, not failed.
        let now = Instant::now();
        self.handing_over.retain(|tp, _| mine_elsewhere.contains(tp));
        for tp in mine_elsewhere {
            let since = *self.handing_over.entry(tp.clone()).or_insert(now);
            if now.duration_since(since) < HANDOVER_DRAIN {
                continue;
            }
            let key = keys::leader(&tp);
            self.etcd
                .txn(&[Compare::Lease(key.clone(), lease)], &[Op::Delete(key)])
                .await?;
            self.handing_over.remove(&tp);
            view.leaders.remove(&tp);
        }
        for tp in &partitions {
            if view.leaders.contains_key(tp) || desired.get(tp) != Some(&me) {
                continue;
            }
            let (last_epoch, epoch_revision) = view.epochs.get(tp).copied().unwrap_or((-1, 0));
            let epoch = last_epoch + 1;
            let epoch_key = keys::epoch(tp);
            let epoch_unchanged = if epoch_revision == 0 {
                Compare::Absent(epoch_key.clone())
            } else {
                Compare::ModRevision(epoch_key.clone(), epoch_revision)
            };
            let record = serde_json::to_vec(&LeaderRecord { node: me, epoch }).unwrap_or_default();
            let (took, revision) = self
                .etcd
                .txn(
                    &[Compare::Absent(keys::leader(tp)), epoch_unchanged],
                    &[
                        Op::Put {
                            key: keys::leader(tp),
                            value: record,
                            lease,
                        },
                        Op::Put {
                            key: epoch_key,
                            value: epoch.to_string().into_bytes(),
                            lease: 0,
                        },
                    ],
                )
                .await?;
            if took {
                if last_epoch >= 0 {
                    self.metrics.failovers.inc();
                }
                let leader = Leader {
                    node: me,
                    epoch,
                    revision,
                };
                view.leaders.insert(tp.clone(), (leader, lease));
            }
        }
        Ok(())
    }

    /// Hands the shards the new view. `leading`: false drops every
    /// partition this broker led (lease lost or leaving).
    fn publish(&mut self, view: View, leading: bool) {
        let me = self.settings.node;
        let leaders: HashMap<TopicPartition, Leader> = view
            .leaders
            .into_iter()
            .filter(|(tp, (leader, _))| leader.node != me || (leading && !self.handing_over.contains_key(tp)))
            .map(|(tp, (leader, _))| (tp, leader))
            .collect();
        let led = leaders.values().filter(|l| l.node == me).count();
        self.metrics.partitions_led.set(led as i64);
        self.metrics
            .lease_held
            .store(leading && self.lease.is_some(), Ordering::Release);
        if led != self.led {
            info!(
                node = me,
                partitions = led,
                brokers = view.brokers.len(),
                "partitions led changed"
            );
            self.led = led;
        }
        let until = if leading {
            self.lease_valid_until().unwrap_or_else(Instant::now)
        } else {
            Instant::now()
        };
        let routes = ClusterRoutes {
            node: me,
            controller: view.controller.unwrap_or(-1),
            brokers: view.brokers.into_values().collect(),
            leaders,
            lease_valid_until: until,
            etcd_unreachable_at: None,
            outage_grace: OUTAGE_GRACE,
        };
        self.last_routes = Some(routes.clone());
        self.router.publish(routes);
    }
}
