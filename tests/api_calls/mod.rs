//! One meaningful request per (api, version), checked field by field where
//! the answer is known. Used to prove every advertised version works;
//! its request builders serve other wire tests too.
#![allow(dead_code)]

use crate::common::RawClient;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// Creates `topic` (1 partition) if needed and returns its id.
pub fn ensure_topic(client: &mut RawClient, topic: &str) -> Uuid {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic)))
        ]))
        .with_allow_auto_topic_creation(true);
    let response = client.call(12, &request);
    assert_eq!(response.topics[0].error_code, 0);
    response.topics[0].topic_id
}

pub fn exercise(client: &mut RawClient, key: ApiKey, v: i16) {
    let topic = "api-calls";
    match key {
        ApiKey::ApiVersions => {
            assert_eq!(client.call(v, &ApiVersionsRequest::default()).error_code, 0);
        }
        ApiKey::Metadata => {
            let id = ensure_topic(client, topic);
            let response = client.call(v, &MetadataRequest::default().with_topics(None));
            assert_eq!(response.brokers.len(), 1, "Metadata v{v}");
            let t = response
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| &*n.0 == topic))
                .expect("topic listed");
            assert_eq!(t.partitions.len(), 1);
            if v >= 10 {
                assert_eq!(t.topic_id, id);
            }
        }
        ApiKey::Produce => {
            let id = ensure_topic(client, topic);
            let batch = chronik_ingest::log::batch::build_batch(0, 1000, &[(b"k", b"v")]);
            let data = TopicProduceData::default().with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.into()))]);
            let data = if v >= 13 {
                data.with_topic_id(id)
            } else {
                data.with_name(name(topic))
            };
            let response = client.call(
                v,
                &ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(5000)
                    .with_topic_data(vec![data]),
            );
            let p = &response.responses[0].partition_responses[0];
            assert_eq!(p.error_code, 0, "Produce v{v}");
            assert!(p.base_offset >= 0);
        }
        ApiKey::Fetch => {
            let id = ensure_topic(client, topic);
            let batch = chronik_ingest::log::batch::build_batch(0, 1000, &[(b"k", b"fetch-me")]);
            let produce = TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.into()))]);
            client.call(
                9,
                &ProduceRequest::default()
                    .with_acks(1)
                    .with_timeout_ms(5000)
                    .with_topic_data(vec![produce]),
            );
            let wanted = FetchTopic::default().with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)]);
            let wanted = if v >= 13 {
                wanted.with_topic_id(id)
            } else {
                wanted.with_topic(name(topic))
            };
            let request = FetchRequest::default()
                .with_max_wait_ms(100)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![wanted]);
            let response = client.call(v, &request);
            let p = &response.responses[0].partitions[0];
            assert_eq!(p.error_code, 0, "Fetch v{v}");
            assert!(
                p.records.as_ref().is_some_and(|r| !r.is_empty()),
                "Fetch v{v} returned no records"
            );
            assert!(p.high_watermark > 0);
        }
        ApiKey::ListOffsets => {
            ensure_topic(client, topic);
            for timestamp in [-2, -1, -3, 0] {
                let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(timestamp)])]);
                let response = client.call(v, &request);
                assert_eq!(
                    response.topics[0].partitions[0].error_code, 0,
                    "ListOffsets v{v} ts {timestamp}"
                );
            }
        }
        ApiKey::OffsetForLeaderEpoch => {
            ensure_topic(client, topic);
            let request =
                OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default()
                    .with_topic(name(topic))
                    .with_partitions(vec![OffsetForLeaderPartition::default()
                        .with_leader_epoch(0)
                        .with_current_leader_epoch(0)])]);
            let response = client.call(v, &request);
            let p = &response.topics[0].partitions[0];
            assert_eq!(
                (p.error_code, p.leader_epoch),
                (0, 0),
                "OffsetForLeaderEpoch v{v}"
            );
            assert!(p.end_offset >= 0);
        }
        ApiKey::InitProducerId => {
            let response = client.call(v, &InitProducerIdRequest::default().with_transactional_id(None));
            assert_eq!(response.error_code, 0, "InitProducerId v{v}");
            assert!(response.producer_id.0 >= 0);
        }
        ApiKey::CreateTopics => {
            let created = format!("created-v{v}");
            let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(name(&created))
                .with_num_partitions(2)
                .with_replication_factor(1)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("60000")))])]);
            let response = client.call(v, &request);
            assert_eq!(response.topics[0].error_code, 0, "CreateTopics v{v}");
            let again = client.call(v, &request);
            assert_eq!(again.topics[0].error_code, 36, "TOPIC_ALREADY_EXISTS at v{v}");
        }
        ApiKey::DeleteTopics => {
            let doomed = format!("doomed-v{v}");
            let id = ensure_topic(client, &doomed);
            let request = if v >= 6 {
                DeleteTopicsRequest::default()
                    .with_topics(vec![DeleteTopicState::default().with_topic_id(id)])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![name(&doomed)])
            };
            let response = client.call(v, &request);
            assert_eq!(response.responses[0].error_code, 0, "DeleteTopics v{v}");
        }
        ApiKey::CreatePartitions => {
            let grown = format!("grown-v{v}");
            ensure_topic(client, &grown);
            let request =
                CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(name(&grown))
                    .with_count(3)]);
            let response = client.call(v, &request);
            assert_eq!(response.results[0].error_code, 0, "CreatePartitions v{v}");
        }
        ApiKey::DeleteRecords => {
            ensure_topic(client, topic);
            let request = DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![DeleteRecordsPartition::default().with_offset(0)])]);
            let response = client.call(v, &request);
            assert_eq!(
                response.topics[0].partitions[0].error_code, 0,
                "DeleteRecords v{v}"
            );
        }
        ApiKey::DescribeConfigs => {
            ensure_topic(client, topic);
            let request = DescribeConfigsRequest::default()
                .with_include_synonyms(v >= 1)
                .with_include_documentation(v >= 3)
                .with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s(topic)),
                    DescribeConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(s("0")),
                    DescribeConfigsResource::default()
                        .with_resource_type(32)
                        .with_resource_name(s("some-group")),
                ]);
            let response = client.call(v, &request);
            assert!(
                response
                    .results
                    .iter()
                    .all(|r| r.error_code == 0 && !r.configs.is_empty()),
                "DescribeConfigs v{v}"
            );
            let retention = response.results[0]
                .configs
                .iter()
                .find(|c| &*c.name == "retention.ms")
                .expect("retention.ms described");
            if v >= 1 {
                assert!(!retention.synonyms.is_empty(), "DescribeConfigs v{v} synonyms");
            }
            if v >= 3 {
                assert_eq!(retention.config_type, 5, "retention.ms is a LONG");
                assert!(retention.documentation.as_deref().is_some_and(|d| !d.is_empty()));
            }
        }
        ApiKey::AlterConfigs => {
            ensure_topic(client, topic);
            let request = AlterConfigsRequest::default().with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(topic))
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("7200000")))]),
            ]);
            let response = client.call(v, &request);
            assert_eq!(response.responses[0].error_code, 0, "AlterConfigs v{v}");
        }
        ApiKey::IncrementalAlterConfigs => {
            ensure_topic(client, topic);
            let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(topic))
                    .with_configs(vec![AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_config_operation(0)
                        .with_value(Some(s("3600000")))]),
            ]);
            let response = client.call(v, &request);
            assert_eq!(
                response.responses[0].error_code, 0,
                "IncrementalAlterConfigs v{v}"
            );
        }
        ApiKey::DescribeCluster => {
            let response = client.call(v, &DescribeClusterRequest::default().with_endpoint_type(1));
            assert_eq!(response.error_code, 0, "DescribeCluster v{v}");
            assert_eq!(response.brokers.len(), 1);
        }
        ApiKey::FindCoordinator => {
            let request = if v >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("some-group")])
            } else {
                FindCoordinatorRequest::default().with_key(s("some-group"))
            };
            let response = client.call(v, &request);
            if v >= 4 {
                assert_eq!(response.coordinators[0].error_code, 0, "FindCoordinator v{v}");
                assert_eq!(response.coordinators[0].node_id.0, 0);
            } else {
                assert_eq!(
                    (response.error_code, response.node_id.0),
                    (0, 0),
                    "FindCoordinator v{v}"
                );
            }
        }
        ApiKey::JoinGroup => {
            let (member, generation) = join_group(client, &format!("join-v{v}"), v);
            assert!(!member.is_empty() && generation == 1, "JoinGroup v{v}");
        }
        ApiKey::SyncGroup => {
            let group = format!("sync-v{v}");
            let (member, generation) = join_group(client, &group, 5);
            let mut request = SyncGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_generation_id(generation)
                .with_member_id(s(&member))
                .with_assignments(vec![SyncGroupRequestAssignment::default()
                    .with_member_id(s(&member))
                    .with_assignment(bytes::Bytes::from_static(b"assignment"))]);
            if v >= 5 {
                request = request
                    .with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s("range")));
            }
            let response = client.call(v, &request);
            assert_eq!(response.error_code, 0, "SyncGroup v{v}");
            assert_eq!(&response.assignment[..], b"assignment");
        }
        ApiKey::Heartbeat => {
            let group = format!("heartbeat-v{v}");
            let (member, generation) = join_group(client, &group, 5);
            let request = HeartbeatRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_generation_id(generation)
                .with_member_id(s(&member));
            // Not yet synced: CompletingRebalance still answers NONE.
            assert_eq!(client.call(v, &request).error_code, 0, "Heartbeat v{v}");
        }
        ApiKey::LeaveGroup => {
            let group = format!("leave-v{v}");
            let (member, _) = join_group(client, &group, 5);
            let request = LeaveGroupRequest::default().with_group_id(GroupId(s(&group)));
            let request = if v >= 3 {
                request.with_members(vec![MemberIdentity::default().with_member_id(s(&member))])
            } else {
                request.with_member_id(s(&member))
            };
            let response = client.call(v, &request);
            assert_eq!(response.error_code, 0, "LeaveGroup v{v}");
            if v >= 3 {
                assert_eq!(response.members[0].error_code, 0);
            }
        }
        ApiKey::OffsetCommit => {
            ensure_topic(client, topic);
            let response = client.call(v, &simple_commit(&format!("commit-v{v}"), topic, 3));
            assert_eq!(
                response.topics[0].partitions[0].error_code, 0,
                "OffsetCommit v{v}"
            );
        }
        ApiKey::OffsetFetch => {
            ensure_topic(client, topic);
            let group = format!("fetch-v{v}");
            client.call(8, &simple_commit(&group, topic, 7));
            let committed = if v >= 8 {
                let request =
                    OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(s(&group)))
                        .with_topics(None)]);
                client.call(v, &request).groups[0].topics[0].partitions[0].committed_offset
            } else {
                let request = OffsetFetchRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(name(topic))
                        .with_partition_indexes(vec![0])]));
                client.call(v, &request).topics[0].partitions[0].committed_offset
            };
            assert_eq!(committed, 7, "OffsetFetch v{v}");
        }
        ApiKey::OffsetDelete => {
            ensure_topic(client, topic);
            let group = format!("offset-delete-v{v}");
            client.call(8, &simple_commit(&group, topic, 1));
            let request = OffsetDeleteRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_topics(vec![OffsetDeleteRequestTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0)
                    ])]);
            let response = client.call(v, &request);
            assert_eq!(response.error_code, 0, "OffsetDelete v{v}");
            assert_eq!(response.topics[0].partitions[0].error_code, 0);
        }
        ApiKey::ListGroups => {
            ensure_topic(client, topic);
            client.call(8, &simple_commit("listed", topic, 1));
            let response = client.call(v, &ListGroupsRequest::default());
            assert!(
                response.groups.iter().any(|g| g.group_id.as_str() == "listed"),
                "ListGroups v{v}"
            );
        }
        ApiKey::DescribeGroups => {
            let group = format!("describe-v{v}");
            join_group(client, &group, 5);
            let response = client.call(
                v,
                &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(&group))]),
            );
            assert_eq!(response.groups[0].error_code, 0, "DescribeGroups v{v}");
            assert_eq!(response.groups[0].members.len(), 1);
        }
        ApiKey::DeleteGroups => {
            ensure_topic(client, topic);
            let group = format!("delete-group-v{v}");
            client.call(8, &simple_commit(&group, topic, 1));
            let response = client.call(
                v,
                &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&group))]),
            );
            assert_eq!(response.results[0].error_code, 0, "DeleteGroups v{v}");
        }
        ApiKey::SaslHandshake => {
            // On a listener without SASL, as Kafka: ILLEGAL_SASL_STATE and
            // no mechanisms, the connection kept.
            let response = client.call(v, &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")));
            assert_eq!(response.error_code, 34, "SaslHandshake v{v}");
            assert!(response.mechanisms.is_empty());
        }
        ApiKey::SaslAuthenticate => {
            let response = client.call(v, &SaslAuthenticateRequest::default());
            assert_eq!(response.error_code, 34, "SaslAuthenticate v{v}");
            assert!(response.error_message.is_some());
        }
        ApiKey::AlterUserScramCredentials => {
            use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
            let upsert = ScramCredentialUpsertion::default()
                .with_name(s("api-user"))
                .with_mechanism(2)
                .with_iterations(4096)
                .with_salt(bytes::Bytes::from_static(b"salt"))
                .with_salted_password(bytes::Bytes::from(vec![1u8; 64]));
            let response = client.call(
                v,
                &AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsert]),
            );
            assert_eq!(response.results.len(), 1);
            assert_eq!(response.results[0].user.as_str(), "api-user");
            assert_eq!(
                response.results[0].error_code, 0,
                "AlterUserScramCredentials v{v}"
            );
        }
        ApiKey::DescribeUserScramCredentials => {
            use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
            let response = client.call(
                v,
                &DescribeUserScramCredentialsRequest::default()
                    .with_users(Some(vec![UserName::default().with_name(s("nobody"))])),
            );
            assert_eq!(response.error_code, 0);
            assert_eq!(
                response.results[0].error_code, 91,
                "DescribeUserScramCredentials v{v}"
            );
        }
        // The broker under test runs without an authorizer: Kafka's answer
        // is SECURITY_DISABLED (scripts/interop/acl.py covers AUTHORIZER=acl).
        ApiKey::CreateAcls => {
            use kafka_protocol::messages::create_acls_request::AclCreation;
            let creation = AclCreation::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_resource_pattern_type(3)
                .with_principal(s("User:alice"))
                .with_host(s("*"))
                .with_operation(3)
                .with_permission_type(3);
            let response = client.call(v, &CreateAclsRequest::default().with_creations(vec![creation]));
            assert_eq!(response.results[0].error_code, 54, "CreateAcls v{v}");
        }
        ApiKey::DescribeAcls => {
            let request = DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1);
            let response = client.call(v, &request);
            assert_eq!(response.error_code, 54, "DescribeAcls v{v}");
        }
        ApiKey::DeleteAcls => {
            use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
            let filter = DeleteAclsFilter::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1);
            let response = client.call(v, &DeleteAclsRequest::default().with_filters(vec![filter]));
            assert_eq!(response.filter_results[0].error_code, 54, "DeleteAcls v{v}");
        }
        ApiKey::AlterClientQuotas => {
            use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
            let entry = EntryData::default()
                .with_entity(vec![EntityData::default()
                    .with_entity_type(s("client-id"))
                    .with_entity_name(Some(s("api-calls-quota")))])
                .with_ops(vec![OpData::default()
                    .with_key(s("producer_byte_rate"))
                    .with_value(1e9)]);
            let response = client.call(v, &AlterClientQuotasRequest::default().with_entries(vec![entry]));
            assert_eq!(response.entries[0].error_code, 0, "AlterClientQuotas v{v}");
        }
        ApiKey::DescribeClientQuotas => {
            use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
            let component = ComponentData::default()
                .with_entity_type(s("client-id"))
                .with_match_type(0)
                .with_match(Some(s("api-calls-quota")));
            let response = client.call(
                v,
                &DescribeClientQuotasRequest::default().with_components(vec![component]),
            );
            assert_eq!(response.error_code, 0, "DescribeClientQuotas v{v}");
            let entries = response.entries.unwrap_or_default();
            assert_eq!(entries.len(), 1, "DescribeClientQuotas v{v}");
            assert_eq!(entries[0].values[0].value, 1e9);
        }
        ApiKey::AddPartitionsToTxn if v < 4 => {
            let (pid, epoch) = init_transactions(client, &format!("api-add-v{v}"));
            let response = client.call(v, &add_partitions(&format!("api-add-v{v}"), pid, epoch, topic));
            let code = response.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code;
            assert_eq!(code, 0, "AddPartitionsToTxn v{v}");
        }
        ApiKey::AddPartitionsToTxn => {
            // The broker form: one transaction adds, then a leader's
            // verify_only finds the partition in it and not in another's.
            let (added, other) = (format!("api-add-v{v}"), format!("api-verify-v{v}"));
            let (pid, epoch) = init_transactions(client, &added);
            let (other_pid, other_epoch) = init_transactions(client, &other);
            let code = |response: AddPartitionsToTxnResponse, i: usize| {
                assert_eq!(response.error_code, 0, "AddPartitionsToTxn v{v}");
                response.results_by_transaction[i].topic_results[0].results_by_partition[0]
                    .partition_error_code
            };
            let add = batched_add_partitions(&[(&added, pid, epoch, false)], topic);
            assert_eq!(code(client.call(v, &add), 0), 0, "AddPartitionsToTxn v{v}");
            let verify = batched_add_partitions(
                &[(&added, pid, epoch, true), (&other, other_pid, other_epoch, true)],
                topic,
            );
            let response = client.call(v, &verify);
            assert_eq!(code(response.clone(), 0), 0, "AddPartitionsToTxn v{v} verified");
            assert_eq!(
                code(response, 1),
                120,
                "AddPartitionsToTxn v{v}: TRANSACTION_ABORTABLE"
            );
        }
        ApiKey::EndTxn => {
            let id = format!("api-end-v{v}");
            let (pid, epoch) = init_transactions(client, &id);
            client.call(0, &add_partitions(&id, pid, epoch, topic));
            let end = EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s(&id)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_committed(true);
            assert_eq!(client.call(v, &end).error_code, 0, "EndTxn v{v}");
            // A retry is answered CONCURRENT_TRANSACTIONS while the markers
            // are written, then 0 (the client may not have seen the first
            // answer), as Kafka answers it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let code = client.call(v, &end).error_code;
                if code == 0 {
                    break;
                }
                assert_eq!(code, 51, "EndTxn v{v} retried");
                assert!(
                    std::time::Instant::now() < deadline,
                    "EndTxn v{v}: markers not written in 10 s"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        ApiKey::WriteTxnMarkers => {
            use kafka_protocol::messages::write_txn_markers_request::{
                WritableTxnMarker, WritableTxnMarkerTopic,
            };
            let id = format!("api-markers-v{v}");
            let (pid, epoch) = init_transactions(client, &id);
            client.call(0, &add_partitions(&id, pid, epoch, topic));
            let marker = |name: &str| {
                WritableTxnMarker::default()
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_transaction_result(false)
                    .with_topics(vec![WritableTxnMarkerTopic::default()
                        .with_name(self::name(name))
                        .with_partition_indexes(vec![0])])
            };
            let request = WriteTxnMarkersRequest::default()
                .with_markers(vec![marker(topic), marker("api-no-such-topic")]);
            let response = client.call(v, &request);
            let code = |i: usize| response.markers[i].topics[0].partitions[0].error_code;
            assert_eq!((code(0), code(1)), (0, 3), "WriteTxnMarkers v{v}");
        }
        ApiKey::AddOffsetsToTxn => {
            let id = format!("api-offsets-v{v}");
            let (pid, epoch) = init_transactions(client, &id);
            let add = AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s(&id)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_group_id(GroupId(s("api-txn-group")));
            assert_eq!(client.call(v, &add).error_code, 0, "AddOffsetsToTxn v{v}");
        }
        ApiKey::TxnOffsetCommit => {
            use kafka_protocol::messages::txn_offset_commit_request::{
                TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
            };
            ensure_topic(client, topic);
            let id = format!("api-txn-commit-v{v}");
            let (pid, epoch) = init_transactions(client, &id);
            let add = AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s(&id)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_group_id(GroupId(s("api-txn-group")));
            assert_eq!(client.call(0, &add).error_code, 0);
            let commit = TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s(&id)))
                .with_group_id(GroupId(s("api-txn-group")))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)])]);
            let response = client.call(v, &commit);
            assert_eq!(
                response.topics[0].partitions[0].error_code, 0,
                "TxnOffsetCommit v{v}"
            );
        }
        ApiKey::DescribeTransactions => {
            let id = "api-describe-txn";
            let (pid, epoch) = init_transactions(client, id);
            client.call(0, &add_partitions(id, pid, epoch, topic));
            let response = client.call(
                v,
                &DescribeTransactionsRequest::default().with_transactional_ids(vec![
                    TransactionalId(s(id)),
                    TransactionalId(s("api-no-such-txn")),
                ]),
            );
            let found = &response.transaction_states[0];
            assert_eq!(found.error_code, 0, "DescribeTransactions v{v}");
            assert_eq!(found.transaction_state.as_str(), "Ongoing");
            assert_eq!((found.producer_id.0, found.producer_epoch), (pid, epoch));
            assert_eq!(found.topics[0].partitions, vec![0]);
            assert_eq!(
                response.transaction_states[1].error_code, 105,
                "TRANSACTIONAL_ID_NOT_FOUND"
            );
        }
        ApiKey::ListTransactions => {
            let id = format!("api-list-txn-v{v}");
            init_transactions(client, &id);
            let all = client.call(v, &ListTransactionsRequest::default());
            assert_eq!(all.error_code, 0, "ListTransactions v{v}");
            assert!(all
                .transaction_states
                .iter()
                .any(|t| t.transactional_id.as_str() == id));
            let filtered = client.call(
                v,
                &ListTransactionsRequest::default().with_state_filters(vec![s("Ongoing"), s("Bogus")]),
            );
            assert!(filtered
                .transaction_states
                .iter()
                .all(|t| t.transaction_state.as_str() == "Ongoing"));
            assert_eq!(filtered.unknown_state_filters, vec![s("Bogus")]);
        }
        ApiKey::DescribeProducers => {
            use kafka_protocol::messages::describe_producers_request::TopicRequest;
            ensure_topic(client, topic);
            // An idempotent producer's batch puts a producer in the state.
            let init = client.call(4, &InitProducerIdRequest::default().with_transactional_id(None));
            let pid = init.producer_id.0;
            let batch = chronik_ingest::log::batch::build_idempotent_batch(0, 0, pid, 0, 0, &[(b"k", b"v")]);
            let produce = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name(topic))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(bytes::Bytes::from(batch)))])]);
            assert_eq!(
                client.call(9, &produce).responses[0].partition_responses[0].error_code,
                0
            );
            let response = client.call(
                v,
                &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                    .with_name(name(topic))
                    .with_partition_indexes(vec![0])]),
            );
            let partition = &response.topics[0].partitions[0];
            assert_eq!(partition.error_code, 0, "DescribeProducers v{v}");
            let producer = partition.active_producers.iter().find(|p| p.producer_id.0 == pid);
            assert!(producer.is_some_and(|p| p.last_sequence == 0 && p.current_txn_start_offset == -1));
        }
        other => panic!("api {other:?} is advertised but this test cannot exercise it: add it here"),
    }
}

/// InitProducerId for transactional id `id`: (producer id, epoch).
pub fn init_transactions(client: &mut RawClient, id: &str) -> (i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s(id))))
        .with_transaction_timeout_ms(60_000);
    let response = client.call(3, &request);
    assert_eq!(response.error_code, 0, "InitProducerId for {id}");
    (response.producer_id.0, response.producer_epoch)
}

/// AddPartitionsToTxn v0-3: partition 0 of `topic` joins `id`'s transaction.
pub fn add_partitions(id: &str, pid: i64, epoch: i16, topic: &str) -> AddPartitionsToTxnRequest {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(id)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![0])])
}

/// AddPartitionsToTxn v4+: partition 0 of `topic` for each (transactional
/// id, producer id, epoch, verify only).
pub fn batched_add_partitions(
    transactions: &[(&str, i64, i16, bool)],
    topic: &str,
) -> AddPartitionsToTxnRequest {
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    AddPartitionsToTxnRequest::default().with_transactions(
        transactions
            .iter()
            .map(|(id, pid, epoch, verify_only)| {
                AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(TransactionalId(s(id)))
                    .with_producer_id(ProducerId(*pid))
                    .with_producer_epoch(*epoch)
                    .with_verify_only(*verify_only)
                    .with_topics(vec![AddPartitionsToTxnTopic::default()
                        .with_name(name(topic))
                        .with_partitions(vec![0])])
            })
            .collect(),
    )
}

/// Joins `group` alone (with the MEMBER_ID_REQUIRED round trip from v4);
/// returns the member id and generation. The broker under test runs with
/// no initial rebalance delay.
pub fn join_group(client: &mut RawClient, group: &str, v: i16) -> (String, i32) {
    let request = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(s("range"))])
    };
    let mut response = client.call(v, &request(""));
    if v >= 4 {
        assert_eq!(response.error_code, 79, "MEMBER_ID_REQUIRED at JoinGroup v{v}");
        response = client.call(v, &request(&response.member_id.to_string()));
    }
    assert_eq!(response.error_code, 0, "JoinGroup v{v}");
    (response.member_id.to_string(), response.generation_id)
}

/// A commit with generation -1 and no member: a group used only to store
/// offsets.
pub fn simple_commit(group: &str, topic: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![
                OffsetCommitRequestPartition::default().with_committed_offset(offset)
            ])])
}
