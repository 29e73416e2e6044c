//! Kafka error codes the broker answers with (Apache Kafka's `Errors` enum).

pub const NONE: i16 = 0;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
