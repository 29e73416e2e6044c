//! How a handler reaches a partition, wherever it lives: the router says
//! where, and the work goes there as a typed [`PartitionOp`] (to this
//! shard's own partitions directly, to another shard over the mesh, and
//! later to another broker).

use super::ops::{Appended, PartitionOp, ReadAnswer, ReadSpec};
use super::ShardPartitions;
use crate::log::batch::BatchHeader;
use crate::routing::{PartitionRouter, Route};
use crate::storage::StorageError;
use crate::topics::TopicPartition;
use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use uuid::Uuid;

/// Sends an operation to another shard's partitions; `Err` if that shard
/// cannot be reached (the operation, and its reply channel, are dropped).
pub(crate) type SendToShard = Rc<dyn Fn(usize, PartitionOp) -> LocalBoxFuture<'static, Result<(), String>>>;

#[derive(Clone)]
pub(crate) struct PartitionClient {
    shard: usize,
    router: Arc<PartitionRouter>,
    local: Rc<ShardPartitions>,
    send: SendToShard,
}

fn unreachable(e: String) -> StorageError {
    StorageError::Unreachable(e)
}

impl PartitionClient {
    pub(crate) fn new(
        shard: usize,
        router: Arc<PartitionRouter>,
        local: Rc<ShardPartitions>,
        send: SendToShard,
    ) -> PartitionClient {
        PartitionClient {
            shard,
            router,
            local,
            send,
        }
    }

    pub(crate) fn router(&self) -> &PartitionRouter {
        &self.router
    }

    /// The shard to send `tp`'s work to, or why there is none here.
    fn owner(&self, tp: &TopicPartition) -> Result<usize, StorageError> {
        match self.router.route(tp) {
            Route::Local { shard, .. } => Ok(shard),
            Route::Remote { .. } | Route::NotLeader => Err(StorageError::NotLeader),
        }
    }

    /// Sends the op `make` builds to `shard` and awaits its reply; ops for
    /// this shard run here.
    async fn call<T>(
        &self,
        shard: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> PartitionOp,
    ) -> Result<T, StorageError> {
        let (tx, rx) = oneshot::channel();
        let op = make(tx);
        if shard == self.shard {
            self.local.clone().serve(op).await;
        } else {
            (self.send)(shard, op).await.map_err(unreachable)?;
        }
        rx.await
            .map_err(|_| StorageError::Unreachable(format!("shard {shard} dropped the request")))
    }

    pub(crate) async fn append(
        &self,
        tp: TopicPartition,
        batch: Bytes,
        header: BatchHeader,
        acks: i16,
    ) -> Result<Appended, StorageError> {
        let shard = self.owner(&tp)?;
        if shard == self.shard {
            return self.local.append(&tp, batch, header, acks).await;
        }
        self.call(shard, |reply| PartitionOp::Append {
            tp,
            batch,
            header,
            acks,
            reply,
        })
        .await?
    }

    /// Reads every part (each owner's share in one op); answers in order.
    pub(crate) async fn read(&self, parts: Vec<ReadSpec>) -> Vec<Result<ReadAnswer, StorageError>> {
        let count = parts.len();
        let mut by_owner: BTreeMap<usize, (Vec<usize>, Vec<ReadSpec>)> = BTreeMap::new();
        let mut results: Vec<Result<ReadAnswer, StorageError>> =
            (0..count).map(|_| Err(StorageError::NotLeader)).collect();
        for (i, spec) in parts.into_iter().enumerate() {
            match self.owner(&spec.tp) {
                Ok(shard) => {
                    let entry = by_owner.entry(shard).or_default();
                    entry.0.push(i);
                    entry.1.push(spec);
                }
                Err(e) => results[i] = Err(e),
            }
        }
        let reads = by_owner.into_iter().map(|(shard, (indexes, specs))| async move {
            let answers = if shard == self.shard {
                Ok(self.local.read(specs).await)
            } else {
                self.call(shard, |reply| PartitionOp::Read { parts: specs, reply })
                    .await
            };
            (indexes, answers)
        });
        for (indexes, answers) in futures::future::join_all(reads).await {
            match answers {
                Ok(answers) => {
                    for (i, answer) in indexes.into_iter().zip(answers) {
                        results[i] = answer;
                    }
                }
                Err(e) => {
                    for i in indexes {
                        results[i] = Err(e.clone());
                    }
                }
            }
        }
        results
    }

    /// A watch on every owner of `parts`; each resolves when one of its
    /// partitions' high watermark passes the offset given.
    pub(crate) async fn watch(&self, parts: Vec<(TopicPartition, i64)>) -> Vec<oneshot::Receiver<()>> {
        let mut by_owner: BTreeMap<usize, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        for (tp, offset) in parts {
            if let Ok(shard) = self.owner(&tp) {
                by_owner.entry(shard).or_default().push((tp, offset));
            }
        }
        let watches = by_owner.into_iter().map(|(shard, parts)| async move {
            if shard == self.shard {
                Ok(self.local.watch(&parts).await)
            } else {
                self.call(shard, |reply| PartitionOp::Watch { parts, reply })
                    .await
            }
        });
        futures::future::join_all(watches)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect()
    }

    pub(crate) async fn list_offset(
        &self,
        tp: TopicPartition,
        timestamp: i64,
        read_committed: bool,
        current_leader_epoch: i32,
    ) -> Result<(i64, i64), StorageError> {
        let shard = self.owner(&tp)?;
        self.call(shard, |reply| PartitionOp::ListOffset {
            tp,
            timestamp,
            read_committed,
            current_leader_epoch,
            reply,
        })
        .await?
    }

    pub(crate) async fn epoch_end(
        &self,
        tp: TopicPartition,
        epoch: i32,
        current_leader_epoch: i32,
    ) -> Result<(i32, i64), StorageError> {
        let shard = self.owner(&tp)?;
        self.call(shard, |reply| PartitionOp::EpochEnd {
            tp,
            epoch,
            current_leader_epoch,
            reply,
        })
        .await?
    }

    pub(crate) async fn delete_records(&self, tp: TopicPartition, offset: i64) -> Result<i64, StorageError> {
        let shard = self.owner(&tp)?;
        self.call(shard, |reply| PartitionOp::DeleteRecords { tp, offset, reply })
            .await?
    }

    /// Every shard drops its partitions of a deleted topic; the errors of
    /// those that failed (they retry in their periodic sweep).
    pub(crate) async fn drop_topic(&self, name: &str, topic_id: Uuid, shards: usize) -> Vec<StorageError> {
        let drops = (0..shards).map(|shard| {
            let name = name.to_string();
            async move {
                self.call(shard, |reply| PartitionOp::DropTopic {
                    name,
                    topic_id,
                    reply,
                })
                .await
                .and_then(|r| r)
            }
        });
        futures::future::join_all(drops)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect()
    }
}
