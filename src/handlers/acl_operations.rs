//! The operations a client may perform on a resource, as Metadata,
//! DescribeCluster and DescribeGroups report them when asked
//! (`include_*_authorized_operations`): a bit field of Kafka's AclOperation
//! codes, holding each operation the resource type supports that the
//! authorizer allows this request's principal (everything, until ACLs
//! exist: what Kafka gives without an authorizer).

use super::{AclOperation, Request, Resource};
use AclOperation::*;

/// The field's value when the client did not ask.
pub(crate) const NOT_REQUESTED: i32 = i32::MIN;

const TOPIC: &[AclOperation] = &[
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    DescribeConfigs,
    AlterConfigs,
];
const CLUSTER: &[AclOperation] = &[
    Create,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    Alter,
    Describe,
];
const GROUP: &[AclOperation] = &[Read, Describe, Delete];

fn field(requested: bool, operations: &[AclOperation], allowed: impl Fn(AclOperation) -> bool) -> i32 {
    if !requested {
        return NOT_REQUESTED;
    }
    operations
        .iter()
        .filter(|op| allowed(**op))
        .fold(0, |bits, op| bits | (1 << op.code()))
}

pub(crate) fn topic(request: &Request, requested: bool, name: &str) -> i32 {
    field(requested, TOPIC, |op| request.may(op, Resource::Topic(name)))
}

pub(crate) fn cluster(request: &Request, requested: bool) -> i32 {
    field(requested, CLUSTER, |op| request.may(op, Resource::Cluster))
}

pub(crate) fn group(request: &Request, requested: bool, id: &str) -> i32 {
    field(requested, GROUP, |op| request.may(op, Resource::Group(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_operations_as_kafka_encodes_them() {
        let all = |_| true;
        assert_eq!(field(false, TOPIC, all), i32::MIN);
        // READ..ALTER_CONFIGS without CLUSTER_ACTION: Kafka's 3576.
        assert_eq!(field(true, TOPIC, all), 3576);
        assert_eq!(field(true, GROUP, all), (1 << 3) | (1 << 8) | (1 << 6));
        assert_eq!(field(true, CLUSTER, all), 8096);
        // Only what the authorizer allows is reported.
        assert_eq!(field(true, GROUP, |op| op == Describe), 1 << 8);
    }
}
