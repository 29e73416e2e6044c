//! The operations a client may perform on a resource, as Metadata,
//! DescribeCluster and DescribeGroups report them when asked
//! (`include_*_authorized_operations`): a bit field of Kafka's AclOperation
//! codes. No authorizer exists yet, so the answer is what Kafka gives
//! without one: every operation the resource type supports.

/// The field's value when the client did not ask.
pub(crate) const NOT_REQUESTED: i32 = i32::MIN;

// Kafka's AclOperation codes.
const READ: u8 = 3;
const WRITE: u8 = 4;
const CREATE: u8 = 5;
const DELETE: u8 = 6;
const ALTER: u8 = 7;
const DESCRIBE: u8 = 8;
const CLUSTER_ACTION: u8 = 9;
const DESCRIBE_CONFIGS: u8 = 10;
const ALTER_CONFIGS: u8 = 11;
const IDEMPOTENT_WRITE: u8 = 12;

fn field(requested: bool, operations: &[u8]) -> i32 {
    if !requested {
        return NOT_REQUESTED;
    }
    operations.iter().fold(0, |bits, op| bits | (1 << op))
}

pub(crate) fn topic(requested: bool) -> i32 {
    field(
        requested,
        &[
            READ,
            WRITE,
            CREATE,
            DELETE,
            ALTER,
            DESCRIBE,
            DESCRIBE_CONFIGS,
            ALTER_CONFIGS,
        ],
    )
}

pub(crate) fn cluster(requested: bool) -> i32 {
    field(
        requested,
        &[
            CREATE,
            CLUSTER_ACTION,
            DESCRIBE_CONFIGS,
            ALTER_CONFIGS,
            IDEMPOTENT_WRITE,
            ALTER,
            DESCRIBE,
        ],
    )
}

pub(crate) fn group(requested: bool) -> i32 {
    field(requested, &[READ, DESCRIBE, DELETE])
}

#[cfg(test)]
mod tests {
    #[test]
    fn supported_operations_as_kafka_encodes_them() {
        assert_eq!(super::topic(false), i32::MIN);
        // READ..ALTER_CONFIGS without CLUSTER_ACTION: Kafka's 3576.
        assert_eq!(super::topic(true), 3576);
        assert_eq!(super::group(true), (1 << 3) | (1 << 8) | (1 << 6));
        assert_eq!(super::cluster(true), 8096);
    }
}
