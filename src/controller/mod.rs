//! Work that must happen in one place: topic administration, config
//! changes and producer-id allocation. The [`Controller`] lives on the
//! controller shard (shard 0), so changes apply one at a time without
//! locks; every shard reaches it through a [`ControllerHandle`], which
//! hides the hop (and can later become a cluster metadata client).

mod configs;
mod producer_ids;
mod topics;

pub(crate) use topics::{NewPartitions, NewTopic, TopicOutcome};

use crate::cluster::ClusterIdentity;
use crate::config::alter::{AlterOutcome, ConfigChange, Resource};
use crate::config::dynamic::DynamicConfigStore;
use crate::config::ServerConfig;
use crate::partition::PartitionClient;
use crate::security::acl::{AclBinding, AclFilter, CreationOutcome, DeletionOutcome};
use crate::security::credentials::{CredentialChange, UserOutcome};
use crate::security::quotas::{AlterOutcome as QuotaOutcome, Entity, QuotaOp};
use crate::storage::{run_blocking, StorageError};
use crate::topics::{validate_topic_name, CatalogStore};
use chronik_shard::LiveLimits;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use kafka_protocol::ResponseError;
use producer_ids::ProducerIds;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// The shard the controller runs on.
pub(crate) const CONTROLLER_SHARD: usize = 0;

/// What the controller may change, all of it shared by every shard.
pub(crate) struct ControllerContext {
    pub config: Arc<ServerConfig>,
    pub identity: Arc<ClusterIdentity>,
    pub catalog: Arc<CatalogStore>,
    pub dynamic: Arc<DynamicConfigStore>,
    pub security: Arc<crate::security::SecurityServices>,
    pub limits: Arc<LiveLimits>,
    pub backpressure_threshold: Arc<AtomicUsize>,
    pub shards: usize,
}

pub(crate) struct Controller {
    context: ControllerContext,
    partitions: PartitionClient,
    producer_ids: ProducerIds,
    /// Metadata changes apply one at a time: each checks the catalog and
    /// then awaits its durable write, and another change interleaved in
    /// that wait would check a catalog about to change (two creations of
    /// one topic, each with its own id).
    changes: glommio::sync::Semaphore,
}

/// A request to the controller, with where its answer goes.
pub(crate) enum ControllerOp {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
        reply: oneshot::Sender<Vec<TopicOutcome>>,
    },
    DeleteTopics {
        names: Vec<String>,
        reply: oneshot::Sender<Vec<TopicOutcome>>,
    },
    CreatePartitions {
        changes: Vec<NewPartitions>,
        validate_only: bool,
        reply: oneshot::Sender<Vec<TopicOutcome>>,
    },
    AlterConfigs {
        resource: Resource,
        changes: Vec<ConfigChange>,
        replace_all: bool,
        validate_only: bool,
        reply: oneshot::Sender<AlterOutcome>,
    },
    AllocateProducerId {
        reply: oneshot::Sender<Result<i64, StorageError>>,
    },
    AlterScramCredentials {
        changes: Vec<CredentialChange>,
        reply: oneshot::Sender<Vec<UserOutcome>>,
    },
    AlterClientQuotas {
        entries: Vec<(Entity, Vec<QuotaOp>)>,
        validate_only: bool,
        reply: oneshot::Sender<Vec<QuotaOutcome>>,
    },
    CreateAcls {
        bindings: Vec<AclBinding>,
        reply: oneshot::Sender<Vec<CreationOutcome>>,
    },
    DeleteAcls {
        filters: Vec<AclFilter>,
        reply: oneshot::Sender<Vec<DeletionOutcome>>,
    },
}

impl Controller {
    /// Blocking (start-up): loads the controller's persisted state from
    /// `store` (in cluster mode the producer-id block is the cluster's, so
    /// no two brokers hand out the same id).
    pub(crate) fn open(
        store: Arc<dyn crate::metadata::MetadataStore>,
        context: ControllerContext,
        partitions: PartitionClient,
    ) -> std::io::Result<Controller> {
        Ok(Controller {
            producer_ids: ProducerIds::with_store(store)?,
            context,
            partitions,
            changes: glommio::sync::Semaphore::new(1),
        })
    }

    pub(crate) fn context(&self) -> &ControllerContext {
        &self.context
    }

    pub(crate) async fn serve(self: Rc<Self>, op: ControllerOp) {
        if let ControllerOp::AllocateProducerId { reply } = op {
            let _ = reply.send(self.producer_ids.allocate().await);
            return;
        }
        // Closed only if the semaphore is dropped, which it is not while
        // `self` lives; the op is refused (its reply dropped) if it were.
        let Ok(_turn) = self.changes.acquire_permit(1).await else {
            return;
        };
        match op {
            ControllerOp::CreateTopics {
                topics,
                validate_only,
                reply,
            } => {
                let _ = reply.send(self.create_topics(topics, validate_only).await);
            }
            ControllerOp::DeleteTopics { names, reply } => {
                let _ = reply.send(self.delete_topics(names).await);
            }
            ControllerOp::CreatePartitions {
                changes,
                validate_only,
                reply,
            } => {
                let _ = reply.send(self.create_partitions(changes, validate_only).await);
            }
            ControllerOp::AlterConfigs {
                resource,
                changes,
                replace_all,
                validate_only,
                reply,
            } => {
                let outcome =
                    configs::alter_configs(&self, resource, changes, replace_all, validate_only).await;
                let _ = reply.send(outcome);
            }
            ControllerOp::AlterScramCredentials { changes, reply } => {
                let store = self.context.security.credentials.clone();
                let outcomes = run_blocking("persisting SCRAM credentials", move || Ok(store.alter(changes)))
                    .await
                    .unwrap_or_else(|e| {
                        vec![(
                            String::new(),
                            Some((ResponseError::KafkaStorageError, e.to_string())),
                        )]
                    });
                let _ = reply.send(outcomes);
            }
            ControllerOp::AlterClientQuotas {
                entries,
                validate_only,
                reply,
            } => {
                let quotas = self.context.security.quotas.clone();
                let count = entries.len();
                let outcomes = persist("persisting client quotas", count, move || {
                    quotas.alter(entries, validate_only)
                });
                let _ = reply.send(outcomes.await);
            }
            ControllerOp::CreateAcls { bindings, reply } => {
                let acls = self.context.security.acls.clone();
                let count = bindings.len();
                let outcomes = persist("persisting ACLs", count, move || acls.create(bindings));
                let _ = reply.send(outcomes.await);
            }
            ControllerOp::DeleteAcls { filters, reply } => {
                let acls = self.context.security.acls.clone();
                let count = filters.len();
                let outcomes = persist("persisting ACLs", count, move || acls.delete(filters));
                let _ = reply.send(outcomes.await);
            }
            ControllerOp::AllocateProducerId { .. } => {}
        }
    }
}

/// A change of a security store (ACLs, quotas), which writes its document
/// durably: run on the blocking pool. Should the pool itself fail, each of
/// the `count` items is answered KAFKA_STORAGE_ERROR.
async fn persist<T: Clone + Send + 'static>(
    what: &'static str,
    count: usize,
    change: impl FnOnce() -> Vec<Result<T, (ResponseError, String)>> + Send + 'static,
) -> Vec<Result<T, (ResponseError, String)>> {
    run_blocking(what, move || Ok(change()))
        .await
        .unwrap_or_else(|e| vec![Err((ResponseError::KafkaStorageError, e.to_string())); count])
}

/// Sends an op to the controller shard; `Err` if it cannot be reached.
pub(crate) type SendToController = Rc<dyn Fn(ControllerOp) -> LocalBoxFuture<'static, Result<(), String>>>;

/// The controller as every shard sees it.
#[derive(Clone)]
pub(crate) struct ControllerHandle {
    /// Present on the controller shard: calls go straight to it.
    local: Option<Rc<Controller>>,
    send: SendToController,
    catalog: Arc<CatalogStore>,
}

impl ControllerHandle {
    pub(crate) fn new(
        local: Option<Rc<Controller>>,
        send: SendToController,
        catalog: Arc<CatalogStore>,
    ) -> Self {
        ControllerHandle { local, send, catalog }
    }

    /// The controller itself, on the controller shard (to serve ops sent
    /// from other shards).
    pub(crate) fn local(&self) -> Option<&Rc<Controller>> {
        self.local.as_ref()
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> ControllerOp) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        let op = make(tx);
        match &self.local {
            Some(controller) => controller.clone().serve(op).await,
            None => (self.send)(op).await?,
        }
        rx.await
            .map_err(|_| "the controller dropped the request".to_string())
    }

    pub(crate) async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        self.call(|reply| ControllerOp::CreateTopics {
            topics,
            validate_only,
            reply,
        })
        .await
        .unwrap_or_else(|e| TopicOutcome::all_failed(&names, &e))
    }

    pub(crate) async fn delete_topics(&self, names: Vec<String>) -> Vec<TopicOutcome> {
        let asked = names.clone();
        self.call(|reply| ControllerOp::DeleteTopics { names, reply })
            .await
            .unwrap_or_else(|e| TopicOutcome::all_failed(&asked, &e))
    }

    pub(crate) async fn create_partitions(
        &self,
        changes: Vec<NewPartitions>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let names: Vec<String> = changes.iter().map(|c| c.0.clone()).collect();
        self.call(|reply| ControllerOp::CreatePartitions {
            changes,
            validate_only,
            reply,
        })
        .await
        .unwrap_or_else(|e| TopicOutcome::all_failed(&names, &e))
    }

    pub(crate) async fn alter_configs(
        &self,
        resource: Resource,
        changes: Vec<ConfigChange>,
        replace_all: bool,
        validate_only: bool,
    ) -> AlterOutcome {
        self.call(|reply| ControllerOp::AlterConfigs {
            resource,
            changes,
            replace_all,
            validate_only,
            reply,
        })
        .await
        .unwrap_or_else(|e| AlterOutcome::failed(ResponseError::KafkaStorageError, e))
    }

    /// Applies AlterUserScramCredentials changes (one outcome per user).
    pub(crate) async fn alter_scram_credentials(
        &self,
        changes: Vec<CredentialChange>,
    ) -> Result<Vec<UserOutcome>, String> {
        self.call(|reply| ControllerOp::AlterScramCredentials { changes, reply })
            .await
    }

    /// AlterClientQuotas: one outcome per entry, in order.
    pub(crate) async fn alter_client_quotas(
        &self,
        entries: Vec<(Entity, Vec<QuotaOp>)>,
        validate_only: bool,
    ) -> Result<Vec<QuotaOutcome>, String> {
        self.call(|reply| ControllerOp::AlterClientQuotas {
            entries,
            validate_only,
            reply,
        })
        .await
    }

    /// CreateAcls: one outcome per binding, in order.
    pub(crate) async fn create_acls(
        &self,
        bindings: Vec<AclBinding>,
    ) -> Result<Vec<CreationOutcome>, String> {
        self.call(|reply| ControllerOp::CreateAcls { bindings, reply })
            .await
    }

    /// DeleteAcls: per filter, the bindings it removed.
    pub(crate) async fn delete_acls(&self, filters: Vec<AclFilter>) -> Result<Vec<DeletionOutcome>, String> {
        self.call(|reply| ControllerOp::DeleteAcls { filters, reply })
            .await
    }

    pub(crate) async fn allocate_producer_id(&self) -> Result<i64, StorageError> {
        self.call(|reply| ControllerOp::AllocateProducerId { reply })
            .await
            .map_err(StorageError::Unreachable)?
    }

    /// Makes sure `names` exist, creating missing ones with the defaults
    /// (auto-creation on Metadata and Produce).
    pub(crate) async fn ensure_topics(&self, names: Vec<String>) {
        let catalog = self.catalog.snapshot();
        let missing: Vec<NewTopic> = names
            .into_iter()
            .filter(|n| catalog.get(n).is_none() && validate_topic_name(n).is_ok())
            .map(|name| NewTopic {
                name,
                partitions: -1,
                replication_factor: -1,
                configs: BTreeMap::new(),
                assignments: Vec::new(),
            })
            .collect();
        if !missing.is_empty() {
            self.create_topics(missing, false).await;
        }
    }
}
