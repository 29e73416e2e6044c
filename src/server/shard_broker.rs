//! The broker as one shard sees it: services with private state, each
//! owned by this shard or immutable and shared. Handlers reach partitions
//! through the partition client (which asks the router where they live),
//! the controller through its handle, and groups through their
//! coordinator shard.

use super::advertised::BrokerListener;
use super::counters::BrokerCounters;
use crate::cluster::ClusterIdentity;
use crate::config::dynamic::DynamicConfigStore;
use crate::config::ServerConfig;
use crate::controller::{ControllerHandle, ControllerOp};
use crate::groups::GroupCoordinator;
use crate::metrics::ShardMetrics;
use crate::partition::{PartitionClient, PartitionOp, ShardPartitions};
use crate::routing::Route;
use crate::topics::CatalogStore;
use chronik_shard::{ShardContext, ShardUnreachable};
use futures::channel::oneshot;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

/// Work sent to another shard as a closure run there with that shard's
/// broker: what has no typed operation yet (group coordination).
pub(crate) type ShardTask = Box<dyn FnOnce(Rc<ShardBroker>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// What shards send each other.
pub(crate) enum ShardMessage {
    Partition(PartitionOp),
    Controller(ControllerOp),
    Run(ShardTask),
}

/// Connection-level services: listeners, TLS, counters, backpressure.
pub(crate) struct NetServices {
    /// Every listener, in configured order (`Connection::listener` indexes it).
    pub listeners: Rc<[BrokerListener]>,
    /// The SSL listener's (reloadable) TLS configuration.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    pub counters: Arc<BrokerCounters>,
    /// What new connections' requests are authorized by.
    pub authorizer: Rc<dyn super::authorize::Authorizer>,
    /// Failed authentications per address: (first in the minute, count).
    pub auth_failures:
        std::cell::RefCell<std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u32)>>,
    pub backpressure: super::backpressure::Backpressure,
}

/// Everything a shard's broker is made of (see `IngestServer::start`).
pub(crate) struct ShardParts {
    pub shard: ShardContext<ShardMessage>,
    pub config: Arc<ServerConfig>,
    pub identity: Arc<ClusterIdentity>,
    pub catalog: Arc<CatalogStore>,
    pub dynamic: Arc<DynamicConfigStore>,
    pub security: Arc<crate::security::SecurityServices>,
    pub partitions: PartitionClient,
    pub local_partitions: Rc<ShardPartitions>,
    pub groups: Rc<GroupCoordinator>,
    pub transactions: Rc<crate::transactions::TxnCoordinator>,
    pub controller: ControllerHandle,
    pub metrics: Rc<ShardMetrics>,
    pub net: NetServices,
    pub end_offsets: super::observe::EndOffsets,
}

/// A broker as clients are told to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerAddress {
    pub node: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

pub(crate) struct ShardBroker {
    parts: ShardParts,
}

impl ShardBroker {
    pub(crate) fn new(parts: ShardParts) -> ShardBroker {
        ShardBroker { parts }
    }

    pub(crate) fn shard(&self) -> &ShardContext<ShardMessage> {
        &self.parts.shard
    }
    pub(crate) fn config(&self) -> &Arc<ServerConfig> {
        &self.parts.config
    }
    pub(crate) fn identity(&self) -> &ClusterIdentity {
        &self.parts.identity
    }
    pub(crate) fn catalog(&self) -> &Arc<CatalogStore> {
        &self.parts.catalog
    }
    pub(crate) fn dynamic(&self) -> &DynamicConfigStore {
        &self.parts.dynamic
    }
    pub(crate) fn security(&self) -> &crate::security::SecurityServices {
        &self.parts.security
    }
    pub(crate) fn partitions(&self) -> &PartitionClient {
        &self.parts.partitions
    }
    pub(crate) fn local_partitions(&self) -> &Rc<ShardPartitions> {
        &self.parts.local_partitions
    }
    pub(crate) fn groups(&self) -> &Rc<GroupCoordinator> {
        &self.parts.groups
    }
    pub(crate) fn transactions(&self) -> &Rc<crate::transactions::TxnCoordinator> {
        &self.parts.transactions
    }
    pub(crate) fn controller(&self) -> &ControllerHandle {
        &self.parts.controller
    }
    pub(crate) fn metrics(&self) -> &Rc<ShardMetrics> {
        &self.parts.metrics
    }
    pub(crate) fn net(&self) -> &NetServices {
        &self.parts.net
    }
    pub(crate) fn end_offsets(&self) -> &super::observe::EndOffsets {
        &self.parts.end_offsets
    }

    /// Runs `work` on `shard` (directly if that is this shard) and returns
    /// its result. `work` and its result cross threads, so they are `Send`;
    /// the future it makes runs on the target shard and need not be.
    pub(crate) async fn on_shard<T, F, Fut>(
        self: &Rc<Self>,
        shard: usize,
        work: F,
    ) -> Result<T, ShardUnreachable>
    where
        T: Send + 'static,
        F: FnOnce(Rc<ShardBroker>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if shard == self.parts.shard.id {
            return Ok(work(self.clone()).await);
        }
        let (tx, rx) = oneshot::channel();
        let task: ShardTask = Box::new(move |broker| {
            Box::pin(async move {
                let _ = tx.send(work(broker).await);
            })
        });
        self.parts.shard.send_to(shard, ShardMessage::Run(task)).await?;
        rx.await.map_err(|_| ShardUnreachable(shard))
    }

    /// [`ShardBroker::on_shard`] on a group's coordinator shard (see
    /// [`ShardBroker::group_owner`]); `Err` when this broker does not
    /// coordinate the group, which handlers answer as for an unreachable
    /// coordinator.
    pub(crate) async fn on_coordinator<T, F, Fut>(
        self: &Rc<Self>,
        owner: Option<usize>,
        work: F,
    ) -> Result<T, ShardUnreachable>
    where
        T: Send + 'static,
        F: FnOnce(Rc<ShardBroker>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        match owner {
            Some(shard) => self.on_shard(shard, work).await,
            None => Err(ShardUnreachable(usize::MAX)),
        }
    }

    /// The host and port to give the client of `request` for this broker:
    /// what the listener it came in on advertises.
    pub(crate) fn advertised_to(&self, request: &crate::handlers::Request) -> (String, u16) {
        match self.parts.net.listeners.get(request.listener) {
            Some(listener) => listener.advertised.for_connection(request.local_addr),
            None => (request.local_addr.ip().to_string(), request.local_addr.port()),
        }
    }

    /// The brokers a client of `request` is told about, at the addresses
    /// of the listener it came in on: this broker alone, or in cluster
    /// mode every live one.
    pub(crate) fn brokers_for(&self, request: &crate::handlers::Request) -> Vec<BrokerAddress> {
        let routes = self.parts.partitions.router().snapshot();
        let Some(cluster) = routes.cluster() else {
            let (host, port) = self.advertised_to(request);
            return vec![BrokerAddress {
                node: self.parts.identity.node_id,
                host,
                port,
                rack: None,
            }];
        };
        let listener = self
            .parts
            .net
            .listeners
            .get(request.listener)
            .map(|l| l.name.to_string())
            .unwrap_or_default();
        cluster
            .brokers
            .iter()
            .filter_map(|b| {
                let (host, port) = b.on(&listener)?;
                Some(BrokerAddress {
                    node: b.node,
                    host: host.to_string(),
                    port,
                    rack: b.rack.clone(),
                })
            })
            .collect()
    }

    /// The controller's id: this broker, or in cluster mode the one etcd
    /// elected (-1 while there is none).
    pub(crate) fn controller_id(&self) -> i32 {
        match self.parts.partitions.router().snapshot().cluster() {
            Some(cluster) => cluster.controller,
            None => self.parts.identity.node_id,
        }
    }

    /// Who leads `tp` and at what epoch, as clients are told; `None` while
    /// nobody does.
    pub(crate) fn leader_of(&self, tp: &crate::topics::TopicPartition) -> Option<(i32, i32)> {
        match self.parts.partitions.router().route(tp) {
            Route::Local { leader_epoch, .. } => Some((self.parts.identity.node_id, leader_epoch)),
            Route::Remote { broker, leader_epoch } => Some((broker, leader_epoch)),
            Route::NotLeader => None,
        }
    }

    /// The shard that coordinates `transactional_id` (its transaction-state
    /// partition's owner), or `None` if this broker does not.
    pub(crate) fn transaction_owner(&self, transactional_id: &str) -> Option<usize> {
        match self
            .parts
            .partitions
            .router()
            .transaction_coordinator(transactional_id)
        {
            Route::Local { shard, .. } => Some(shard),
            _ => None,
        }
    }

    /// The shard that coordinates `group_id` (its offsets partition's
    /// owner), or `None` if this broker does not coordinate it.
    pub(crate) fn group_owner(&self, group_id: &str) -> Option<usize> {
        match self.parts.partitions.router().group_coordinator(group_id) {
            Route::Local { shard, .. } => Some(shard),
            _ => None,
        }
    }
}
