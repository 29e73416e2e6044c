//! What makes this broker the same broker across restarts: its data
//! directory (held by one process at a time) and its cluster id; and, in
//! cluster mode (ETCD_ENDPOINTS), its membership of a cluster whose
//! leadership and shared metadata live in etcd.

mod agent;
mod assignment;
pub(crate) mod etcd;
pub(crate) mod keys;
mod wal;

pub(crate) use agent::{ClusterAgent, ClusterSettings};
pub(crate) use wal::{Fold, ShardWal, WalSettings};

use crate::metadata::{documents, FileStore, MetadataStore};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The identity persisted in `meta.properties`, as Kafka's KRaft brokers
/// keep it, so operators find the cluster id where they expect it.
#[derive(Debug, Clone)]
pub struct ClusterIdentity {
    pub cluster_id: String,
    pub node_id: i32,
}

const LOCK_FILE: &str = ".lock";

/// Holds the data directory's lock for as long as it lives.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Creates the directory if needed and takes its lock. A second broker
    /// on the same directory is refused: with SO_REUSEPORT it would
    /// otherwise quietly share the port and corrupt the logs.
    pub fn acquire(dir: &Path) -> io::Result<DataDirLock> {
        fs::create_dir_all(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another chronik-ingest process (pid {})",
                        dir.display(),
                        holder.trim()
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ClusterIdentity {
    /// Reads `meta.properties` from the data directory, or creates it with
    /// a new cluster id.
    pub fn load_or_create(dir: &Path) -> io::Result<ClusterIdentity> {
        Self::load_or_create_in(&FileStore::new(dir))
    }

    /// Reads the identity from `store`, or creates it with a new cluster id
    /// (written atomically and durably, so a crash never leaves a
    /// half-written identity).
    pub fn load_or_create_in(store: &dyn MetadataStore) -> io::Result<ClusterIdentity> {
        let name = documents::CLUSTER_IDENTITY;
        if let Some(bytes) = store.get(name)? {
            return std::str::from_utf8(&bytes)
                .ok()
                .and_then(parse)
                .ok_or_else(|| store.invalid(name, "lacks cluster.id or node.id"));
        }
        let identity = ClusterIdentity {
            cluster_id: new_cluster_id(),
            node_id: 0,
        };
        store.put(name, properties(&identity).as_bytes())?;
        Ok(identity)
    }
}

impl ClusterIdentity {
    /// Writes this identity (cluster mode: the cluster's id and NODE_ID).
    pub fn store(&self, store: &dyn MetadataStore) -> io::Result<()> {
        store.put(documents::CLUSTER_IDENTITY, properties(self).as_bytes())
    }
}

fn properties(identity: &ClusterIdentity) -> String {
    format!(
        "# written by chronik-ingest\nversion=1\ncluster.id={}\nnode.id={}\n",
        identity.cluster_id, identity.node_id
    )
}

fn parse(text: &str) -> Option<ClusterIdentity> {
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    Some(ClusterIdentity {
        cluster_id: value("cluster.id").filter(|v| !v.is_empty())?,
        node_id: value("node.id")?.parse().ok()?,
    })
}

/// Kafka's format: a random UUID as 22 characters of unpadded URL-safe
/// base64.
fn new_cluster_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chronik-cluster-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn cluster_id_is_created_once_and_kept() {
        let dir = scratch("id");
        let _lock = DataDirLock::acquire(&dir).unwrap();
        let first = ClusterIdentity::load_or_create(&dir).unwrap();
        assert_eq!(first.cluster_id.len(), 22);
        let again = ClusterIdentity::load_or_create(&dir).unwrap();
        assert_eq!(first.cluster_id, again.cluster_id);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn second_holder_of_a_data_dir_is_refused() {
        let dir = scratch("lock");
        let held = DataDirLock::acquire(&dir).unwrap();
        let err = DataDirLock::acquire(&dir).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(held);
        DataDirLock::acquire(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
