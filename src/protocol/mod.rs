//! Kafka's wire format as far as the broker needs its own code for it:
//! frames, request headers, response framing and error codes. Message bodies
//! come from the `kafka-protocol` crate.

pub mod frame;
pub mod header;
pub mod response;
