//! The broker as one shard sees it: the state a handler may use, all of it
//! owned by this shard or immutable and shared.

use super::advertised::Advertised;
use super::connection;
use super::counters::BrokerCounters;
use crate::cluster::ClusterIdentity;
use crate::config::ServerConfig;
use chronik_shard::{Connection, ShardContext, ShardService};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

pub(crate) struct ShardBroker {
    pub shard: ShardContext,
    pub config: Arc<ServerConfig>,
    pub identity: Arc<ClusterIdentity>,
    pub advertised: Advertised,
    pub counters: Arc<BrokerCounters>,
}

impl ShardService for ShardBroker {
    fn serve(self: Rc<Self>, conn: Connection) -> impl Future<Output = ()> + 'static {
        connection::serve(self, conn)
    }
}
