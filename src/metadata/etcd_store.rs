//! Cluster mode's metadata store: the documents every broker must agree on
//! (the topic catalog, the producer-id block) live in etcd; the rest stay
//! files of this broker's data directory.

use super::{documents, FileStore, MetadataStore};
use crate::cluster::etcd::{Compare, Etcd, Op};
use crate::cluster::keys;
use crate::remote::SideHandle;
use std::future::Future;
use std::io;

/// Documents kept in etcd in cluster mode.
const SHARED: &[&str] = &[documents::TOPICS, documents::PRODUCER_ID_BLOCK];

pub(crate) struct ClusterStore {
    local: FileStore,
    etcd: Etcd,
    side: SideHandle,
}

impl ClusterStore {
    pub(crate) fn new(local: FileStore, etcd: Etcd, side: SideHandle) -> ClusterStore {
        ClusterStore { local, etcd, side }
    }

    /// Waits for etcd work done on the side runtime. Called from the
    /// blocking pool and at start, never from a shard; never from the side
    /// thread itself, where it would wait for itself.
    fn wait<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, crate::cluster::etcd::EtcdError>> + Send + 'static,
    ) -> io::Result<T> {
        if std::thread::current().name() == Some(crate::remote::SIDE_THREAD_NAME) {
            return Err(io::Error::other("etcd document read on the side thread"));
        }
        futures::executor::block_on(self.side.run(work))
            .map_err(|_| io::Error::other("the etcd client thread stopped"))?
            .map_err(io::Error::other)
    }
}

impl MetadataStore for ClusterStore {
    fn get(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        if !self.shared(name) {
            return self.local.get(name);
        }
        let (etcd, key) = (self.etcd.clone(), keys::document(name));
        Ok(self.wait(async move { etcd.get(&key).await })?.map(|kv| kv.value))
    }

    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if !self.shared(name) {
            return self.local.put(name, bytes);
        }
        let (etcd, key, value) = (self.etcd.clone(), keys::document(name), bytes.to_vec());
        self.wait(async move { etcd.txn(&[], &[Op::Put { key, value, lease: 0 }]).await })
            .map(|_| ())
    }

    fn replace(&self, name: &str, expected: Option<&[u8]>, bytes: &[u8]) -> io::Result<bool> {
        if !self.shared(name) {
            return self.local.replace(name, expected, bytes);
        }
        let key = keys::document(name);
        let compare = match expected {
            Some(old) => Compare::Value(key.clone(), old.to_vec()),
            None => Compare::Absent(key.clone()),
        };
        let (etcd, value) = (self.etcd.clone(), bytes.to_vec());
        self.wait(async move { etcd.txn(&[compare], &[Op::Put { key, value, lease: 0 }]).await })
            .map(|(done, _)| done)
    }

    fn shared(&self, name: &str) -> bool {
        SHARED.contains(&name)
    }

    fn locate(&self, name: &str) -> String {
        if self.shared(name) {
            format!("etcd key {}", keys::document(name))
        } else {
            self.local.locate(name)
        }
    }
}
