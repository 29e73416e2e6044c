//! One interface for the broker's metadata: the few named documents that
//! say what exists and how it is configured (the topic catalog, the
//! producer-id block, the dynamic configs, the cluster identity), as
//! opposed to the partition logs that hold the data.
//!
//! Today [`FileStore`] keeps each document as a file in the data directory;
//! a cluster store (etcd or a metadata quorum) will implement the same
//! trait, so the owners of those documents never learn where they live.
//! Each `put` is atomic and durable: after it returns, a crash or power loss
//! leaves the new version, and before that the old one, never a mix.

mod etcd_store;
mod file_store;

pub(crate) use etcd_store::ClusterStore;

pub(crate) use file_store::write_durable;
pub use file_store::FileStore;

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;

/// Document names, one place for all of them. The file store uses them as
/// file names, so they are also the files operators find in `STORAGE_PATH`.
pub mod documents {
    /// The topic catalog (JSON).
    pub const TOPICS: &str = "topics.json";
    /// The end of the last producer-id block handed out (a decimal number).
    pub const PRODUCER_ID_BLOCK: &str = "producer-id-block";
    /// Broker and group configs changed at run time (JSON).
    pub const DYNAMIC_CONFIGS: &str = "dynamic-configs.json";
    /// SCRAM credentials per user and mechanism: salts and derived keys,
    /// never passwords (JSON).
    pub const SCRAM_CREDENTIALS: &str = "scram-credentials.json";
    /// Client quotas per user / client id / ip (JSON).
    pub const CLIENT_QUOTAS: &str = "client-quotas.json";
    /// Kafka ACLs (JSON).
    pub const ACLS: &str = "acls.json";
    /// Cluster id and node id, in Kafka's `meta.properties` format.
    pub const CLUSTER_IDENTITY: &str = "meta.properties";
}

/// Named documents, read whole and replaced whole.
pub trait MetadataStore: Send + Sync {
    /// The document's bytes, or `None` if it was never written.
    fn get(&self, name: &str) -> io::Result<Option<Vec<u8>>>;

    /// Replaces the document atomically and durably (see the module docs).
    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()>;

    /// Where the document lives, for error messages (a path, a key).
    fn locate(&self, name: &str) -> String;

    /// Replaces the document only if it still holds `expected` (`None`:
    /// absent); `Ok(false)` if another writer changed it first. Documents
    /// only this process writes need no check: by default this is `put`.
    fn replace(&self, name: &str, expected: Option<&[u8]>, bytes: &[u8]) -> io::Result<bool> {
        let _ = expected;
        self.put(name, bytes).map(|()| true)
    }

    /// Whether other processes write these documents too (cluster mode),
    /// so a change must start from the stored version, not a cached one.
    fn shared(&self, name: &str) -> bool {
        let _ = name;
        false
    }
}

impl dyn MetadataStore + '_ {
    /// A JSON document; a damaged one is an `InvalidData` error naming it.
    pub fn get_json<T: DeserializeOwned>(&self, name: &str) -> io::Result<Option<T>> {
        let Some(bytes) = self.get(name)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| self.invalid(name, e))
    }

    /// Writes `value` as pretty JSON, so the files stay readable.
    pub fn put_json<T: Serialize>(&self, name: &str, value: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
        self.put(name, &bytes)
    }

    /// An `InvalidData` error that names the document and what is wrong.
    pub fn invalid(&self, name: &str, what: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what}", self.locate(name)),
        )
    }
}
