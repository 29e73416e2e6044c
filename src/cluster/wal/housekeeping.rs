//! Keeping the WAL small: a leader folds each partition's many small
//! pointers into one object of that partition's batches, and drops the
//! pointers below where the partition now starts (retention,
//! DeleteRecords); the controller deletes what no pointer names any more
//! (objects, and the pointers of deleted topics).

use super::restore::unfolded_since;
use super::{keys, ShardWal, WalPointer, COMMIT_CHUNK, FOLD_BYTES, FOLD_POINTERS};
use crate::cluster::etcd::{Compare, EtcdError, Op};
use crate::topics::TopicPartition;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashSet;
use std::rc::Rc;
use tracing::{info, warn};
use uuid::Uuid;

impl ShardWal {
    /// Partitions whose WAL pointers since their last fold are many or
    /// large enough to fold: (partition, first offset, end offset).
    pub(crate) fn folds_due(&self) -> Vec<(TopicPartition, i64, i64)> {
        let committed = self.committed.borrow();
        let routes = self.router.snapshot();
        let leads = |tp: &TopicPartition| {
            routes
                .cluster()
                .and_then(|c| c.leaders.get(tp))
                .is_some_and(|l| l.node == self.node)
        };
        self.unfolded
            .borrow()
            .iter()
            .filter(|(tp, u)| {
                (u.pointers >= FOLD_POINTERS || (u.pointers > 1 && u.bytes >= FOLD_BYTES)) && leads(tp)
            })
            .filter_map(|(tp, u)| {
                let end = committed.get(tp).copied()?;
                (end > u.base).then(|| (tp.clone(), u.base, end))
            })
            .collect()
    }

    /// Replaces the pointers of `[base, end)` of a partition this broker
    /// leads with one object of its batches alone (read from the local
    /// log, which holds them): etcd keeps a handful of keys per partition
    /// however long it is written, and a new leader rebuilds from a few
    /// large reads, not thousands of small ones. [`Fold::Whole`] replaces
    /// every pointer below `end` with the log as it stands from its start
    /// at `base`: for compacted internal partitions, whose whole state is
    /// small however often it is written.
    pub(crate) async fn fold(
        &self,
        tp: &TopicPartition,
        topic_id: Uuid,
        epoch: i32,
        (base, end, fold): (i64, i64, Fold),
        bytes: Bytes,
    ) -> Result<(), String> {
        let revision = self.leader_revision(tp, epoch).ok_or("no longer the leader")?;
        let before = self
            .unfolded
            .borrow()
            .get(tp)
            .copied()
            .filter(|u| fold == Fold::Whole || u.base == base)
            .ok_or("folded meanwhile")?;
        let object = format!(
            "fold/{}/{topic_id}/{}/{base:020}-{end:020}-e{epoch}",
            tp.topic, tp.partition
        );
        let length = bytes.len() as u64;
        self.store
            .put(&object, bytes)
            .await
            .map_err(|e| format!("writing {object}: {e}"))?;
        let pointer = WalPointer {
            object,
            position: 0,
            length,
            base,
            end,
            epoch,
            node: self.node,
            folded: true,
        };
        let mut ops = vec![
            Op::Put {
                key: keys::wal_pointer(tp, topic_id, base),
                value: serde_json::to_vec(&pointer).unwrap_or_default(),
                lease: 0,
            },
            Op::DeleteRange(
                keys::wal_pointer(tp, topic_id, base + 1),
                keys::wal_pointer(tp, topic_id, end),
            ),
        ];
        if fold == Fold::Whole && base > 0 {
            // etcd refuses a transaction that names a key twice: the
            // ranges around the put.
            ops.push(Op::DeleteRange(
                keys::wal_pointer(tp, topic_id, 0),
                keys::wal_pointer(tp, topic_id, base),
            ));
        }
        self.as_leader(tp, revision, ops).await?;
        if let Some(now) = self.unfolded.borrow_mut().get_mut(tp) {
            // Commits made while folding stay counted, from the new base.
            now.base = end;
            now.pointers = now.pointers.saturating_sub(before.pointers);
            now.bytes = now.bytes.saturating_sub(before.bytes);
        }
        Ok(())
    }

    /// Applies `ops` in one etcd transaction, if this broker's leadership
    /// of `tp` (its leader key at `revision`) still holds.
    async fn as_leader(&self, tp: &TopicPartition, revision: i64, ops: Vec<Op>) -> Result<(), String> {
        let compares = [Compare::ModRevision(keys::leader(tp), revision)];
        let etcd = self.etcd.clone();
        let (done, _) = self
            .side
            .run(async move { etcd.txn(&compares, &ops).await })
            .await
            .map_err(|_| "the etcd client thread stopped".to_string())?
            .map_err(|e| e.to_string())?;
        match done {
            true => Ok(()),
            false => Err("no longer the leader".into()),
        }
    }

    /// Drops the pointers of a partition this broker leads that lie
    /// wholly below `log_start`, and records where its WAL now starts, in
    /// one transaction guarded by the leadership: etcd then holds only
    /// what a reader can still read, and a new leader rebuilds from there.
    /// `Ok(false)`: nothing to do.
    pub(crate) async fn trim(
        &self,
        tp: &TopicPartition,
        topic_id: Uuid,
        epoch: i32,
        log_start: i64,
    ) -> Result<bool, String> {
        // Never above what is committed: a new leader rebuilds from here.
        let committed = self.committed.borrow().get(tp).copied().unwrap_or(0);
        let log_start = log_start.min(committed);
        if self.trimmed.borrow().get(tp).is_some_and(|t| *t >= log_start) {
            return Ok(false);
        }
        let revision = self.leader_revision(tp, epoch).ok_or("no longer the leader")?;
        let etcd = self.etcd.clone();
        let prefix = keys::wal_pointers(tp, topic_id);
        let (kvs, _) = self
            .side
            .run(async move { etcd.range_prefix(&prefix).await })
            .await
            .map_err(|_| "the etcd client thread stopped".to_string())?
            .map_err(|e| e.to_string())?;
        let mut pointers: Vec<(String, WalPointer)> = kvs
            .into_iter()
            .filter_map(|kv| Some((kv.key, serde_json::from_slice(&kv.value).ok()?)))
            .collect();
        pointers.sort_by_key(|(_, p)| p.base);
        let below = pointers.iter().filter(|(_, p)| p.end <= log_start).count();
        // A transaction takes so many operations: a long way behind is
        // caught up over several rounds, each recording where it got to.
        let gone = &pointers[..below.min(COMMIT_CHUNK)];
        let start = match gone.last() {
            Some((_, last)) if below > gone.len() => last.end,
            _ => log_start,
        };
        let mut ops: Vec<Op> = gone.iter().map(|(key, _)| Op::Delete(key.clone())).collect();
        ops.push(Op::Put {
            key: keys::wal_start(tp, topic_id),
            value: start.to_string().into_bytes(),
            lease: 0,
        });
        self.as_leader(tp, revision, ops).await?;
        self.trimmed.borrow_mut().insert(tp.clone(), start);
        let left: Vec<WalPointer> = pointers
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| p.end > start)
            .collect();
        let fresh = unfolded_since(&left, start);
        if let Some(now) = self.unfolded.borrow_mut().get_mut(tp) {
            if now.base < fresh.base {
                *now = fresh;
            }
        }
        Ok(true)
    }

    /// The controller's sweep over the whole WAL: the pointers of topics
    /// that no longer exist go, with whatever tiering left of them in the
    /// bucket (a topic id missing from etcd's catalog, read after the
    /// pointers, in two sweeps running), then every WAL or fold object no
    /// pointer names and older than the garbage grace (a flight never
    /// commits an object that old, see `commit_in_order`).
    pub(crate) async fn sweep(&self, suspects: &mut HashSet<(String, Uuid)>) -> Result<SweepReport, String> {
        // In this order: an object listed first and named by a pointer
        // committed before the pointers are read is seen as named; one
        // written later is not listed. A topic whose pointers are read
        // existed before they were, so the catalog read after has it
        // unless it was deleted.
        let mut objects = Vec::new();
        for dir in ["wal/", "fold/"] {
            objects.extend(self.store.list_modified(dir).await.map_err(|e| e.to_string())?);
        }
        let etcd = self.etcd.clone();
        let (kvs, catalog) = self
            .side
            .run(async move {
                let (kvs, _) = etcd.range_prefix(keys::WAL).await?;
                let catalog = etcd
                    .get(&keys::document(crate::metadata::documents::TOPICS))
                    .await?;
                Ok::<_, EtcdError>((kvs, catalog))
            })
            .await
            .map_err(|_| "the etcd client thread stopped".to_string())?
            .map_err(|e| e.to_string())?;
        // Internal partitions (the groups' offsets) have the nil id and no
        // catalog entry.
        let mut known = topic_ids(catalog.as_ref().map(|kv| kv.value.as_slice()))?;
        known.insert(Uuid::nil());
        let missing: HashSet<(String, Uuid)> = kvs
            .iter()
            .filter_map(|kv| keys::wal_topic_of(&kv.key))
            .filter(|(_, id)| !known.contains(id))
            .collect();
        let deleted: HashSet<(String, Uuid)> = missing.intersection(suspects).cloned().collect();
        let mut report = SweepReport::default();
        for (topic, id) in &deleted {
            // First what tiering put in the bucket for it, whichever leader
            // wrote it (a deposed one's segments and manifests included):
            // its pointers are how the next sweep finds it again if this
            // fails.
            let mut objects = self
                .store
                .list(&crate::remote::topic_dir(*id))
                .await
                .map_err(|e| e.to_string())?;
            objects.push(crate::remote::catalog_key(*id));
            let deletes = objects.iter().map(|key| self.store.delete(key));
            let results: Vec<_> = futures::stream::iter(deletes)
                .buffer_unordered(SWEEP_DELETES)
                .collect()
                .await;
            if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
                return Err(format!("deleting the objects of deleted topic {topic}: {e}"));
            }
            let ops = [
                Op::DeletePrefix(keys::wal_topic(keys::WAL, topic, *id)),
                Op::DeletePrefix(keys::wal_topic(keys::WAL_STARTS, topic, *id)),
            ];
            let etcd = self.etcd.clone();
            self.side
                .run(async move { etcd.txn(&[], &ops).await })
                .await
                .map_err(|_| "the etcd client thread stopped".to_string())?
                .map_err(|e| e.to_string())?;
            report.deleted_topics += 1;
        }
        *suspects = missing.difference(&deleted).cloned().collect();
        let referenced: HashSet<String> = kvs
            .iter()
            .filter(|kv| keys::wal_topic_of(&kv.key).is_none_or(|t| !deleted.contains(&t)))
            .filter_map(|kv| serde_json::from_slice::<WalPointer>(&kv.value).ok())
            .map(|p| p.object)
            .collect();
        let now = crate::log::partition_log::now_ms();
        let grace = self.settings.garbage_grace.as_millis() as i64;
        let garbage: Vec<String> = objects
            .into_iter()
            .filter(|(key, written)| now - written > grace && !referenced.contains(key))
            .map(|(key, _)| key)
            .collect();
        let deletes = garbage.iter().map(|key| self.store.delete(key));
        let results: Vec<_> = futures::stream::iter(deletes)
            .buffer_unordered(SWEEP_DELETES)
            .collect()
            .await;
        report.deleted_objects = results.iter().filter(|r| r.is_ok()).count();
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            warn!(error = %e, "some unreferenced WAL objects could not be deleted; the next sweep tries again");
        }
        Ok(report)
    }

    /// Runs [`ShardWal::sweep`] while this broker is the controller.
    pub(crate) async fn sweep_periodically(self: Rc<Self>, drain: chronik_shard::Signal) {
        let interval = self.settings.sweep_interval();
        let mut suspects = HashSet::new();
        loop {
            if !crate::partition::next_tick(interval, &drain).await {
                return;
            }
            let controller = self.router.snapshot().cluster().map(|c| c.controller);
            if controller != Some(self.node) {
                suspects.clear();
                continue;
            }
            match self.sweep(&mut suspects).await {
                Ok(report) if report != SweepReport::default() => {
                    info!(
                        topics = report.deleted_topics,
                        objects = report.deleted_objects,
                        "swept the WAL"
                    );
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cannot sweep the WAL; trying again later"),
            }
        }
    }
}

/// The topic ids of the catalog document as etcd holds it (none yet: no
/// topic).
fn topic_ids(document: Option<&[u8]>) -> Result<HashSet<Uuid>, String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        id: Uuid,
    }
    #[derive(serde::Deserialize)]
    struct Catalog {
        topics: Vec<Entry>,
    }
    let Some(bytes) = document else {
        return Ok(HashSet::new());
    };
    let catalog: Catalog =
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable topic catalog in etcd: {e}"))?;
    Ok(catalog.topics.into_iter().map(|t| t.id).collect())
}

/// What a fold replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fold {
    /// The pointers since the last fold.
    Since,
    /// Every pointer below the fold's end.
    Whole,
}

/// What a sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SweepReport {
    pub deleted_topics: usize,
    pub deleted_objects: usize,
}

/// Object deletions a sweep has in flight.
const SWEEP_DELETES: usize = 16;
