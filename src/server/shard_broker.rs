//! The broker as one shard sees it: the state a handler may use, all of it
//! owned by this shard or immutable and shared, and the one way to run
//! something on another shard.

use super::advertised::BrokerListener;
use super::connection;
use super::counters::BrokerCounters;
use crate::cluster::ClusterIdentity;
use crate::config::ServerConfig;
use crate::controller::Controller;
use crate::groups::GroupCoordinator;
use crate::metrics::ShardMetrics;
use crate::storage::{owner_of, ShardStorage};
use crate::topics::{CatalogStore, TopicPartition};
use chronik_shard::{Connection, ShardContext, ShardService, ShardUnreachable};
use futures::channel::oneshot;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

/// Work sent to another shard: a closure run there with that shard's broker.
pub(crate) type ShardTask = Box<dyn FnOnce(Rc<ShardBroker>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The shard that runs topic administration and producer-id allocation,
/// so those never race.
pub(crate) const CONTROLLER_SHARD: usize = 0;

pub(crate) struct ShardBroker {
    pub shard: ShardContext<ShardTask>,
    pub config: Arc<ServerConfig>,
    pub identity: Arc<ClusterIdentity>,
    /// Every listener, in configured order (`Connection::listener` indexes it).
    pub listeners: Rc<[BrokerListener]>,
    /// The SSL listener's (reloadable) TLS configuration.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    pub counters: Arc<BrokerCounters>,
    pub catalog: Arc<CatalogStore>,
    /// Configs changed at run time (broker and group configs).
    pub dynamic: Arc<crate::config::dynamic::DynamicConfigStore>,
    pub storage: Rc<ShardStorage>,
    pub groups: Rc<GroupCoordinator>,
    pub metrics: Rc<ShardMetrics>,
    pub end_offsets: super::observe::EndOffsets,
    pub backpressure: super::backpressure::Backpressure,
    /// Present on the controller shard only.
    pub controller: Option<Controller>,
}

impl ShardBroker {
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
        if shard == self.shard.id {
            return Ok(work(self.clone()).await);
        }
        let (tx, rx) = oneshot::channel();
        let task: ShardTask = Box::new(move |broker| {
            Box::pin(async move {
                let _ = tx.send(work(broker).await);
            })
        });
        self.shard.send_to(shard, task).await?;
        rx.await.map_err(|_| ShardUnreachable(shard))
    }

    /// The host and port to give the client of `request` for this broker:
    /// what the listener it came in on advertises.
    pub(crate) fn advertised_to(&self, request: &crate::handlers::Request) -> (String, u16) {
        match self.listeners.get(request.listener) {
            Some(listener) => listener.advertised.for_connection(request.local_addr),
            None => (request.local_addr.ip().to_string(), request.local_addr.port()),
        }
    }

    pub(crate) fn owner(&self, tp: &TopicPartition) -> usize {
        owner_of(tp, self.shard.count)
    }

    /// The shard that coordinates `group_id`.
    pub(crate) fn group_owner(&self, group_id: &str) -> usize {
        crate::groups::coordinator_shard(group_id, self.shard.count)
    }
}

impl ShardService for ShardBroker {
    type Message = ShardTask;

    fn serve(self: Rc<Self>, conn: Connection) -> impl Future<Output = ()> + 'static {
        connection::serve(self, conn)
    }

    fn on_start(self: &Rc<Self>) {
        glommio::spawn_local(super::observe::observe(self.clone(), self.end_offsets.clone())).detach();
    }

    fn on_message(self: Rc<Self>, task: ShardTask) -> impl Future<Output = ()> + 'static {
        task(self)
    }

    async fn stop(self: Rc<Self>) {
        self.storage.close_all();
        let fsyncs = self
            .storage
            .fsync_counter()
            .load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(shard = self.shard.id, fsyncs, "partitions closed");
    }
}
