//! The broker as a shard service: connections served, messages from
//! other shards dispatched, the shard's background work started and its
//! partitions closed at stop.

use super::connection;
use super::shard_broker::{ShardBroker, ShardMessage};
use chronik_shard::{Connection, ShardService};
use std::future::Future;
use std::rc::Rc;

impl ShardService for ShardBroker {
    type Message = ShardMessage;

    fn serve(self: Rc<Self>, conn: Connection) -> impl Future<Output = ()> + 'static {
        connection::serve(self, conn)
    }

    fn on_start(self: &Rc<Self>) {
        glommio::spawn_local(super::observe::observe(self.clone(), self.end_offsets().clone())).detach();
        glommio::spawn_local(self.transactions().clone().run(self.clone())).detach();
    }

    async fn on_message(self: Rc<Self>, message: ShardMessage) {
        match message {
            ShardMessage::Partition(op) => self.local_partitions().clone().serve(op).await,
            ShardMessage::Controller(op) => match self.controller().local() {
                Some(controller) => controller.clone().serve(op).await,
                // Dropping the op drops its reply channel: the sender
                // learns the controller is not here.
                None => tracing::error!(
                    shard = self.shard().id,
                    "controller op sent to a shard without the controller"
                ),
            },
            ShardMessage::Run(task) => task(self).await,
        }
    }

    async fn stop(self: Rc<Self>) {
        self.local_partitions().close_all().await;
        let fsyncs = self
            .local_partitions()
            .fsync_counter()
            .load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(shard = self.shard().id, fsyncs, "partitions closed");
    }
}
