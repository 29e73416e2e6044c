//! Chronik Ingest: a Kafka-wire-compatible broker built thread-per-core on
//! `chronik-shard`. This crate says what a Kafka request means; the shard
//! crate runs the executors and sockets.

pub mod cluster;
pub mod config;
mod controller;
mod groups;
mod handlers;
pub mod log;
pub mod metrics;
pub mod protocol;
pub mod server;
mod storage;
pub mod topics;

pub use config::{ConfigError, ConnectionPoolConfig, LogFormat, ServerConfig, TlsConfig};
pub use server::{IngestServer, ServerError, ServerHandle, ShardSnapshot, Stopper};
