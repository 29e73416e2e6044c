//! The classic consumer-group protocol: FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, and the admin side: ListGroups,
//! DescribeGroups, DeleteGroups. Each group's state lives on the shard that
//! coordinates it; requests are sent there.

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::groups::{GroupCoordinator, JoinRequest, JoinResult, Reply, SyncResult};
use crate::server::ShardBroker;
use bytes::Bytes;
use chronik_shard::ShardUnreachable;
use futures::future::join_all;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub(crate) const FIND_COORDINATOR: Handler =
    handler!(FindCoordinatorRequest, find_coordinator, versions = 0..=6);
pub(crate) const JOIN_GROUP: Handler = handler!(JoinGroupRequest, join_group, versions = 0..=9);
pub(crate) const SYNC_GROUP: Handler = handler!(SyncGroupRequest, sync_group, versions = 0..=5);
pub(crate) const HEARTBEAT: Handler = handler!(HeartbeatRequest, heartbeat, versions = 0..=4);
pub(crate) const LEAVE_GROUP: Handler = handler!(LeaveGroupRequest, leave_group, versions = 0..=5);
pub(crate) const LIST_GROUPS: Handler = handler!(ListGroupsRequest, list_groups, versions = 0..=5);
pub(crate) const DESCRIBE_GROUPS: Handler =
    handler!(DescribeGroupsRequest, describe_groups, versions = 0..=6);
pub(crate) const DELETE_GROUPS: Handler = handler!(DeleteGroupsRequest, delete_groups, versions = 0..=2);

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The coordinator shard could not be reached (shutting down).
const UNAVAILABLE: ResponseError = ResponseError::CoordinatorNotAvailable;

/// Groups and transactional ids are coordinated by this broker (by one of
/// its shards, which the request handlers reach themselves).
async fn find_coordinator(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: FindCoordinatorRequest = request.decode("FindCoordinator")?;
    let brokers = broker.brokers_for(&request);
    // Kafka asks DESCRIBE on the group (or transactional id) of each key,
    // then answers the broker leading the key's internal partition.
    let locate = |key: &str| -> Result<crate::server::BrokerAddress, (ResponseError, &'static str)> {
        let partition = match asked.key_type {
            0 => {
                request
                    .authorize(AclOperation::Describe, Resource::Group(key))
                    .map_err(|denied| (denied, "not authorized to describe the group"))?;
                crate::routing::group_partition(key)
            }
            1 => {
                request
                    .authorize(AclOperation::Describe, Resource::TransactionalId(key))
                    .map_err(|denied| (denied, "not authorized to describe the transactional id"))?;
                crate::topics::TopicPartition::new(
                    crate::routing::TRANSACTION_STATE_TOPIC,
                    crate::routing::transaction_state_partition(key) as i32,
                )
            }
            _ => return Err((ResponseError::InvalidRequest, "unknown coordinator key type")),
        };
        let (node, _) = broker
            .leader_of(&partition)
            .ok_or((UNAVAILABLE, "the coordinator is moving between brokers"))?;
        brokers
            .iter()
            .find(|b| b.node == node)
            .cloned()
            .ok_or((UNAVAILABLE, "the coordinator's broker is not registered"))
    };
    let located = |key: &str| {
        let found = locate(key);
        if let Err((error, _)) = &found {
            broker
                .metrics()
                .request_error(ApiKey::FindCoordinator as i16, &format!("{error:?}"));
        }
        found
    };
    let response = if request.version >= 4 {
        let coordinators = asked
            .coordinator_keys
            .iter()
            .map(|key| {
                let answer = Coordinator::default().with_key(key.clone());
                match located(key) {
                    Ok(b) => answer
                        .with_node_id(BrokerId(b.node))
                        .with_host(text(b.host))
                        .with_port(i32::from(b.port)),
                    Err((error, message)) => answer
                        .with_node_id(BrokerId(-1))
                        .with_host(text(""))
                        .with_port(-1)
                        .with_error_code(error.code())
                        .with_error_message(Some(text(message))),
                }
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        match located(&asked.key) {
            Ok(b) => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(b.node))
                .with_host(text(b.host))
                .with_port(i32::from(b.port)),
            Err((error, message)) => FindCoordinatorResponse::default()
                .with_error_code(error.code())
                .with_error_message(if request.version >= 1 {
                    Some(text(message))
                } else {
                    None
                })
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        }
    };
    request.respond(&response)
}

async fn join_group(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: JoinGroupRequest = request.decode("JoinGroup")?;
    let version = request.version;
    let session_timeout = Duration::from_millis(asked.session_timeout_ms.max(0) as u64);
    let join = JoinRequest {
        member_id: asked.member_id.to_string(),
        instance_id: asked.group_instance_id.map(|i| i.to_string()),
        client_id: request
            .header
            .client_id
            .as_deref()
            .unwrap_or_default()
            .to_string(),
        client_host: format!("/{}", request.peer.ip()),
        session_timeout,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout: if version >= 1 {
            Duration::from_millis(asked.rebalance_timeout_ms.max(0) as u64)
        } else {
            session_timeout
        },
        protocol_type: asked.protocol_type.to_string(),
        protocols: asked
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        requires_known_member_id: version >= 4,
    };
    let group_id = asked.group_id.to_string();
    let member_id = join.member_id.clone();
    // No client waits for a JoinGroup longer than its own rebalance timeout
    // (librdkafka adds 3 s, the Java client 5 s), so the connection's
    // safety net starts then even if other members hold the group longer.
    let own = Some(join.rebalance_timeout);
    let authorized = request.authorize(AclOperation::Read, Resource::Group(&group_id));
    let reply = async {
        match authorized {
            Ok(()) => {
                group_reply(&broker, &request, group_id, own, |groups, id| {
                    groups.join(id, join)
                })
                .await
            }
            // Kafka answers with no member id and no generation.
            Err(denied) => Ok(Some(JoinResult {
                error: denied.code(),
                generation: -1,
                ..Default::default()
            })),
        }
    };
    let result = match reply.await {
        Ok(Some(result)) => result,
        Ok(None) => JoinResult {
            error: ResponseError::UnknownMemberId.code(),
            generation: -1,
            member_id,
            ..Default::default()
        },
        Err(_) => JoinResult {
            error: UNAVAILABLE.code(),
            generation: -1,
            ..Default::default()
        },
    };
    let members = result
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let member = JoinGroupResponseMember::default()
                .with_member_id(text(id))
                .with_metadata(metadata);
            if version >= 5 {
                member.with_group_instance_id(instance.map(text))
            } else {
                member
            }
        })
        .collect();
    // Before v7 the protocol name is a plain (non-null) string.
    let protocol_name = match (version >= 7, result.protocol_name) {
        (true, name) => name.map(text),
        (false, name) => Some(text(name.unwrap_or_default())),
    };
    let response = JoinGroupResponse::default()
        .with_error_code(result.error)
        .with_generation_id(result.generation)
        .with_protocol_type(if version >= 7 {
            result.protocol_type.map(text)
        } else {
            None
        })
        .with_protocol_name(protocol_name)
        .with_leader(text(result.leader))
        .with_skip_assignment(version >= 9 && result.skip_assignment)
        .with_member_id(text(result.member_id))
        .with_members(members);
    request.respond(&response)
}

async fn sync_group(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: SyncGroupRequest = request.decode("SyncGroup")?;
    let version = request.version;
    let group_id = asked.group_id.to_string();
    let member_id = asked.member_id.to_string();
    let instance_id = asked.group_instance_id.map(|i| i.to_string());
    let assignments: Vec<(String, Bytes)> = asked
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let (asked_type, asked_name) = (
        asked.protocol_type.map(|t| t.to_string()),
        asked.protocol_name.map(|n| n.to_string()),
    );
    let generation = asked.generation_id;
    let authorized = request.authorize(AclOperation::Read, Resource::Group(&group_id));
    let reply = async {
        match authorized {
            Ok(()) => {
                group_reply(&broker, &request, group_id, None, move |groups, id| {
                    groups.sync(id, &member_id, instance_id.as_deref(), generation, assignments)
                })
                .await
            }
            Err(denied) => Ok(Some(SyncResult {
                error: denied.code(),
                ..Default::default()
            })),
        }
    };
    let result = match reply.await {
        Ok(Some(result)) => result,
        Ok(None) => SyncResult {
            error: ResponseError::RebalanceInProgress.code(),
            ..Default::default()
        },
        Err(_) => SyncResult {
            error: UNAVAILABLE.code(),
            ..Default::default()
        },
    };
    // v5+: the client says which protocol it synced for; it must match.
    let mismatch = result.error == 0
        && ((asked_type.is_some() && asked_type != result.protocol_type)
            || (asked_name.is_some() && asked_name != result.protocol_name));
    let mut response = if mismatch {
        SyncGroupResponse::default().with_error_code(ResponseError::InconsistentGroupProtocol.code())
    } else {
        SyncGroupResponse::default()
            .with_error_code(result.error)
            .with_assignment(result.assignment)
    };
    if version >= 5 {
        response = response
            .with_protocol_type(result.protocol_type.map(text))
            .with_protocol_name(result.protocol_name.map(text));
    }
    request.respond(&response)
}

/// Runs `call` on the group's shard. An answer that must wait for the
/// group (a JoinGroup during a rebalance, a follower's SyncGroup) is
/// awaited here, after telling the connection the group's deadline for it:
/// Kafka holds these as long as the rebalance takes, with no request
/// timeout of its own; `own_bound` caps that at what the client waits.
/// `Ok(None)`: the group dropped the waiter.
async fn group_reply<T, F>(
    broker: &Rc<ShardBroker>,
    request: &Request,
    group_id: String,
    own_bound: Option<Duration>,
    call: F,
) -> Result<Option<T>, ShardUnreachable>
where
    T: Send + 'static,
    F: FnOnce(&GroupCoordinator, &str) -> Reply<T> + Send + 'static,
{
    let owner = broker.group_owner(&group_id);
    let reply = broker
        .on_coordinator(owner, move |b| async move {
            match call(b.groups(), &group_id) {
                Reply::Now(result) => Ok(result),
                Reply::Later(rx) => Err((b.groups().answer_deadline(&group_id), rx)),
            }
        })
        .await?;
    match reply {
        Ok(result) => Ok(Some(result)),
        Err((deadline, rx)) => {
            let own = own_bound.map(|bound| Instant::now() + bound);
            if let Some(until) = deadline.into_iter().chain(own).min() {
                request.wait.until(until);
            }
            Ok(rx.await.ok())
        }
    }
}

async fn heartbeat(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: HeartbeatRequest = request.decode("Heartbeat")?;
    let group_id = asked.group_id.to_string();
    if let Err(denied) = request.authorize(AclOperation::Read, Resource::Group(&group_id)) {
        return request.respond(&HeartbeatResponse::default().with_error_code(denied.code()));
    }
    let owner = broker.group_owner(&group_id);
    let member_id = asked.member_id.to_string();
    let instance_id = asked.group_instance_id.map(|i| i.to_string());
    let code = broker
        .on_coordinator(owner, move |b| async move {
            b.groups()
                .heartbeat(&group_id, &member_id, instance_id.as_deref(), asked.generation_id)
        })
        .await
        .unwrap_or(UNAVAILABLE.code());
    request.respond(&HeartbeatResponse::default().with_error_code(code))
}

async fn leave_group(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: LeaveGroupRequest = request.decode("LeaveGroup")?;
    let version = request.version;
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        asked
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(asked.member_id.to_string(), None)]
    };
    let group_id = asked.group_id.to_string();
    let owner = broker.group_owner(&group_id);
    let who = leaving.clone();
    let result = match request.authorize(AclOperation::Read, Resource::Group(&group_id)) {
        Ok(()) => broker
            .on_coordinator(owner, move |b| async move { b.groups().leave(&group_id, &who) })
            .await
            .unwrap_or(Err(UNAVAILABLE.code())),
        Err(denied) => Err(denied.code()),
    };
    let response = match (result, version >= 3) {
        (Err(code), _) => LeaveGroupResponse::default().with_error_code(code),
        (Ok(codes), false) => {
            LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0))
        }
        (Ok(codes), true) => LeaveGroupResponse::default().with_members(
            leaving
                .into_iter()
                .zip(codes)
                .map(|((id, instance), code)| {
                    MemberResponse::default()
                        .with_member_id(text(id))
                        .with_group_instance_id(instance.map(text))
                        .with_error_code(code)
                })
                .collect(),
        ),
    };
    request.respond(&response)
}

async fn list_groups(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: ListGroupsRequest = request.decode("ListGroups")?;
    let version = request.version;
    let states: Vec<String> = asked
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let classic_wanted = asked.types_filter.is_empty()
        || asked
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case("classic"));
    let per_shard =
        (0..broker.shard().count).map(|shard| broker.on_shard(shard, |b| async move { b.groups().list() }));
    // DESCRIBE on the cluster lists every group; otherwise only those the
    // principal may describe, the rest left out without a word (Kafka).
    let all_visible = request.may(AclOperation::Describe, Resource::Cluster);
    let visible = |id: &str| all_visible || request.may(AclOperation::Describe, Resource::Group(id));
    let mut groups: Vec<ListedGroup> = Vec::new();
    for listed in join_all(per_shard).await.into_iter().flatten() {
        for (id, protocol_type, state) in listed {
            if !classic_wanted || (!states.is_empty() && !states.contains(&state.to_ascii_lowercase())) {
                continue;
            }
            if !visible(&id) {
                continue;
            }
            let mut group = ListedGroup::default()
                .with_group_id(GroupId(text(id)))
                .with_protocol_type(text(protocol_type));
            if version >= 4 {
                group = group.with_group_state(text(state));
            }
            if version >= 5 {
                group = group.with_group_type(text("classic"));
            }
            groups.push(group);
        }
    }
    request.respond(&ListGroupsResponse::default().with_groups(groups))
}

async fn describe_groups(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: DescribeGroupsRequest = request.decode("DescribeGroups")?;
    let version = request.version;
    let with_operations = asked.include_authorized_operations;
    let request = &request;
    let described = asked.groups.into_iter().map(|group_id| {
        let broker = broker.clone();
        async move {
            let id = group_id.to_string();
            if let Err(denied) = request.authorize(AclOperation::Describe, Resource::Group(&id)) {
                return DescribedGroup::default()
                    .with_group_id(group_id)
                    .with_error_code(denied.code())
                    .with_authorized_operations(super::acl_operations::NOT_REQUESTED);
            }
            let operations = super::acl_operations::group(request, with_operations, &id);
            let owner = broker.group_owner(&id);
            let found = broker
                .on_coordinator(owner, move |b| async move { b.groups().describe(&id) })
                .await;
            let group = DescribedGroup::default()
                .with_group_id(group_id)
                .with_authorized_operations(operations);
            match found {
                Ok(Some(d)) => group
                    .with_group_state(text(d.state))
                    .with_protocol_type(text(d.protocol_type))
                    .with_protocol_data(text(d.protocol))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                let member = DescribedGroupMember::default()
                                    .with_member_id(text(m.member_id))
                                    .with_client_id(text(m.client_id))
                                    .with_client_host(text(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment);
                                if version >= 4 {
                                    member.with_group_instance_id(m.instance_id.map(text))
                                } else {
                                    member
                                }
                            })
                            .collect(),
                    ),
                // Kafka: an unknown group is "Dead"; v6+ also says why.
                Ok(None) if version >= 6 => group
                    .with_group_state(text("Dead"))
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(text("group not found"))),
                Ok(None) => group.with_group_state(text("Dead")),
                Err(_) => group.with_error_code(UNAVAILABLE.code()),
            }
        }
    });
    request.respond(&DescribeGroupsResponse::default().with_groups(join_all(described).await))
}

async fn delete_groups(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: DeleteGroupsRequest = request.decode("DeleteGroups")?;
    let request = &request;
    let results = asked.groups_names.into_iter().map(|group_id| {
        let broker = broker.clone();
        async move {
            let id = group_id.to_string();
            let owner = broker.group_owner(&id);
            let code = match request.authorize(AclOperation::Delete, Resource::Group(&id)) {
                Ok(()) => broker
                    .on_coordinator(owner, move |b| async move { b.groups().delete_group(&id).await })
                    .await
                    .unwrap_or(UNAVAILABLE.code()),
                Err(denied) => denied.code(),
            };
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(code)
        }
    });
    request.respond(&DeleteGroupsResponse::default().with_results(join_all(results).await))
}
