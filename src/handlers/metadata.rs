//! Metadata: the brokers (this one, or in cluster mode every live one) at
//! their advertised addresses, the cluster id, the controller, and the
//! topics asked for (auto-created if allowed) with each partition's leader.

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::metrics::ShardMetrics;
use crate::server::ShardBroker;
use crate::topics::{validate_topic_name, TopicEntry};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::rc::Rc;

pub(crate) const HANDLER: Handler = handler!(MetadataRequest, handle, versions = 0..=13);

async fn handle(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: MetadataRequest = request.decode("Metadata")?;
    // v0: an empty list means all topics; v1+: null means all.
    let wanted = asked
        .topics
        .filter(|t| request.version == 0 && !t.is_empty() || request.version > 0);
    if let Some(topics) = &wanted {
        // v4+ lets the client say no; before v4 the broker setting decides.
        let allowed = request.version < 4 || asked.allow_auto_topic_creation;
        if broker.config().auto_create_topics && allowed {
            // Kafka creates only what the principal may create (CREATE on
            // the cluster, or on the topic); existing names are no-ops.
            let may_create = |name: &str| {
                request.may(AclOperation::Create, Resource::Cluster)
                    || request.may(AclOperation::Create, Resource::Topic(name))
            };
            let names: Vec<String> = topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
                .filter(|n| may_create(n))
                .collect();
            broker.controller().ensure_topics(names.clone()).await;
            await_leaders(&broker, &names).await;
        }
    }
    let catalog = broker.catalog().snapshot();
    let with_operations = asked.include_topic_authorized_operations;
    let describe_topic = |t: &TopicEntry| {
        describe_topic(&broker, t).with_topic_authorized_operations(super::acl_operations::topic(
            &request,
            with_operations,
            &t.name,
        ))
    };
    let topics = match wanted {
        // All topics: those the principal may describe, the rest left out
        // without a word, as Kafka does.
        None => catalog
            .topics()
            .filter(|t| request.may(AclOperation::Describe, Resource::Topic(&t.name)))
            .map(|t| describe_topic(t))
            .collect(),
        Some(topics) => topics
            .into_iter()
            .map(|asked| {
                let found = match &asked.name {
                    Some(name) => catalog.get(name),
                    None => catalog.by_id(&asked.topic_id),
                };
                // Checked before existence, so a principal that may not
                // describe a topic cannot learn whether it exists.
                let name = asked.name.as_deref().map(|n| &**n).or(found.map(|t| &*t.name));
                if let Some(Err(denied)) =
                    name.map(|n| request.authorize(AclOperation::Describe, Resource::Topic(n)))
                {
                    return refused_topic(asked, denied);
                }
                found.map_or_else(|| missing_topic(&broker, asked), |t| describe_topic(t))
            })
            .collect(),
    };
    let brokers = broker
        .brokers_for(&request)
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node))
                .with_host(StrBytes::from_string(b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();
    let response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.identity().cluster_id.clone())))
        .with_controller_id(BrokerId(broker.controller_id()))
        .with_cluster_authorized_operations(super::acl_operations::cluster(
            &request,
            asked.include_cluster_authorized_operations,
        ))
        .with_topics(topics);
    request.respond(&response)
}

/// Cluster mode: a topic just created gets its leaders from the
/// membership agent a moment later; the client that made it is answered
/// with them (waiting at most `LEADER_PATIENCE`), not with
/// LEADER_NOT_AVAILABLE, after which librdkafka waits up to a second
/// before it asks again.
async fn await_leaders(broker: &ShardBroker, names: &[String]) {
    const LEADER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);
    const POLL: std::time::Duration = std::time::Duration::from_millis(10);
    if broker.partitions().router().snapshot().cluster().is_none() {
        return;
    }
    let deadline = std::time::Instant::now() + LEADER_PATIENCE;
    let leaderless = || {
        let catalog = broker.catalog().snapshot();
        names.iter().filter_map(|name| catalog.get(name)).any(|topic| {
            (0..topic.partitions).any(|p| {
                broker
                    .leader_of(&crate::topics::TopicPartition::new(&topic.name, p))
                    .is_none()
            })
        })
    };
    while leaderless() && std::time::Instant::now() < deadline {
        glommio::timer::sleep(POLL).await;
    }
}

/// Each partition's leader and epoch (on one broker: this one, epoch 0).
/// The leader is the only replica and the ISR: in cluster mode a
/// partition's durability is object storage's, not other brokers' copies.
/// A partition nobody leads yet (between leaders) answers
/// LEADER_NOT_AVAILABLE, which clients retry.
fn describe_topic(broker: &ShardBroker, topic: &TopicEntry) -> MetadataResponseTopic {
    let partitions = (0..topic.partitions)
        .map(|p| {
            let answer = MetadataResponsePartition::default().with_partition_index(p);
            match broker.leader_of(&crate::topics::TopicPartition::new(&topic.name, p)) {
                Some((node, epoch)) => answer
                    .with_leader_id(BrokerId(node))
                    .with_leader_epoch(epoch)
                    .with_replica_nodes(vec![BrokerId(node)])
                    .with_isr_nodes(vec![BrokerId(node)]),
                None => answer
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(-1),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_partitions(partitions)
}

/// A topic asked for that does not exist: INVALID_TOPIC_EXCEPTION for a
/// name Kafka refuses (never created, and not retriable, so clients stop
/// waiting for it), else UNKNOWN_TOPIC_OR_PARTITION / UNKNOWN_TOPIC_ID.
/// Counted like errors of other APIs.
fn missing_topic(broker: &ShardBroker, topic: MetadataRequestTopic) -> MetadataResponseTopic {
    let error = match &topic.name {
        Some(name) if validate_topic_name(name).is_err() => ResponseError::InvalidTopicException,
        Some(_) => ResponseError::UnknownTopicOrPartition,
        None => ResponseError::UnknownTopicId,
    };
    broker
        .metrics()
        .request_error(ApiKey::Metadata as i16, &ShardMetrics::error_name(error.code()));
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(topic.name)
        .with_topic_id(topic.topic_id)
}

/// A topic the principal may not describe: TOPIC_AUTHORIZATION_FAILED,
/// named as asked (a topic asked for by id keeps its name hidden).
fn refused_topic(topic: MetadataRequestTopic, denied: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(denied.code())
        .with_name(topic.name)
        .with_topic_id(topic.topic_id)
}
