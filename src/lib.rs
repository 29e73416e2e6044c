//! Chronik Ingest: a Kafka-wire-compatible broker built thread-per-core on
//! `chronik-shard`. This crate says what a Kafka request means; the shard
//! crate runs the executors and sockets.

pub mod cluster;
pub mod config;
mod controller;
mod groups;
mod handlers;
pub mod log;
mod malloc_tuning;
pub mod metadata;
pub mod metrics;
mod partition;
pub mod protocol;
mod remote;
mod routing;
mod security;
pub mod server;
mod storage;
mod tls;
pub mod topics;
mod transactions;

pub use config::{
    AdvertisedListener, ConfigError, ConnectionPoolConfig, ListenerConfig, LogFormat, SecurityProtocol,
    ServerConfig, TlsConfig, TlsVersion,
};
pub use malloc_tuning::tune_malloc_for_large_buffers;
pub use server::{IngestServer, ServerError, ServerHandle, ShardSnapshot, Stopper, TlsReloader};

/// (api key, min version, max version) of every API this build answers:
/// the ApiVersions table (tools, fuzzing).
pub fn supported_apis() -> Vec<(i16, i16, i16)> {
    handlers::HANDLERS
        .iter()
        .map(|h| (h.api_key, h.versions.min, h.versions.max))
        .collect()
}
