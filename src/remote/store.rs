//! One object store (`OBJECT_STORE_URL`) and the few operations tiering
//! needs, each run on the side runtime.

use super::runtime::SideHandle;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// Segment files at most this large are uploaded with one PUT; larger
/// ones in parts of this size (S3's parts must be 5 MiB or more).
const SINGLE_PUT_BYTES: u64 = 32 << 20;

/// Why an object-store operation failed.
#[derive(Debug, Clone)]
pub(crate) struct RemoteError {
    pub kind: &'static str,
    pub message: String,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl RemoteError {
    fn from_store(e: object_store::Error) -> RemoteError {
        let kind = match &e {
            object_store::Error::NotFound { .. } => "not_found",
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                "denied"
            }
            _ => "request",
        };
        RemoteError {
            kind,
            message: e.to_string(),
        }
    }

    fn gone() -> RemoteError {
        RemoteError {
            kind: "stopped",
            message: "the object-store thread has stopped".into(),
        }
    }

    fn io(e: std::io::Error) -> RemoteError {
        RemoteError {
            kind: "local_io",
            message: e.to_string(),
        }
    }

    pub(crate) fn is_not_found(&self) -> bool {
        self.kind == "not_found"
    }
}

/// The bucket (and prefix) every tiered partition writes under.
#[derive(Clone)]
pub(crate) struct RemoteStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    side: SideHandle,
    url: Arc<str>,
}

impl fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteStore({})", self.url)
    }
}

/// The client's own retries stay short: a failed upload is retried by
/// the partition with its own backoff (and said in the log), and a read
/// should fail within a fetch's patience rather than after the client's
/// default three minutes.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(20),
        ..Default::default()
    }
}

/// Builds the store for `url`: `s3://bucket/prefix` (and S3-compatible
/// servers through AWS_ENDPOINT_URL), `gs://`, `az://` / `abfs://`, or
/// `file:///dir`, each cloud configured from its standard environment.
pub(crate) fn open_store(url: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let prefix = ObjectPath::from_url_path(parsed.path()).map_err(|e| e.to_string())?;
    let store: Arc<dyn ObjectStore> = match parsed.scheme() {
        "file" => {
            let dir = parsed
                .to_file_path()
                .map_err(|()| format!("{url:?}: not a local path"))?;
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let store =
                object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| e.to_string())?;
            return Ok((Arc::new(store), ObjectPath::default()));
        }
        "s3" | "s3a" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .with_retry(retry())
                .build()
                .map_err(|e| e.to_string())?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(retry())
                .build()
                .map_err(|e| e.to_string())?,
        ),
        "az" | "azure" | "abfs" | "abfss" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_retry(retry())
                .build()
                .map_err(|e| e.to_string())?,
        ),
        other => return Err(format!("{url:?}: unknown scheme {other:?} (s3, gs, az, file)")),
    };
    Ok((store, prefix))
}

impl RemoteStore {
    pub(crate) fn open(url: &str, side: SideHandle) -> Result<RemoteStore, String> {
        let (store, prefix) = open_store(url)?;
        Ok(RemoteStore {
            store,
            prefix,
            side,
            url: url.into(),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in key.split('/') {
            path = path.clone().join(part);
        }
        path
    }

    pub(crate) async fn put(&self, key: &str, bytes: Bytes) -> Result<(), RemoteError> {
        let (store, path) = (self.store.clone(), self.path(key));
        self.side
            .run(async move { store.put(&path, PutPayload::from(bytes)).await })
            .await
            .map_err(|_| RemoteError::gone())?
            .map(drop)
            .map_err(RemoteError::from_store)
    }

    /// Uploads a local file under `key`; returns its size.
    pub(crate) async fn put_file(&self, key: &str, file: PathBuf) -> Result<u64, RemoteError> {
        let (store, path) = (self.store.clone(), self.path(key));
        self.side
            .run(async move { upload_file(store, path, file).await })
            .await
            .map_err(|_| RemoteError::gone())?
    }

    /// The whole object; `Ok(None)` if there is none.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, RemoteError> {
        let (store, path) = (self.store.clone(), self.path(key));
        let got = self
            .side
            .run(async move {
                match store.get(&path).await {
                    Ok(found) => found.bytes().await,
                    Err(e) => Err(e),
                }
            })
            .await
            .map_err(|_| RemoteError::gone())?;
        match got {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(RemoteError::from_store(e)),
        }
    }

    pub(crate) async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, RemoteError> {
        let (store, path) = (self.store.clone(), self.path(key));
        self.side
            .run(async move { store.get_range(&path, range).await })
            .await
            .map_err(|_| RemoteError::gone())?
            .map_err(RemoteError::from_store)
    }

    /// Removes an object; one already gone is not an error.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), RemoteError> {
        let (store, path) = (self.store.clone(), self.path(key));
        match self
            .side
            .run(async move { store.delete(&path).await })
            .await
            .map_err(|_| RemoteError::gone())?
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(RemoteError::from_store(e)),
        }
    }

    /// Keys (relative to the store's prefix) under `dir`.
    pub(crate) async fn list(&self, dir: &str) -> Result<Vec<String>, RemoteError> {
        let (store, path, prefix) = (self.store.clone(), self.path(dir), self.prefix.clone());
        self.side
            .run(async move {
                let metas: Vec<_> = store.list(Some(&path)).try_collect().await?;
                Ok(metas
                    .into_iter()
                    .filter_map(|m| {
                        let full = m.location.as_ref().to_string();
                        let root = prefix.as_ref();
                        let key = if root.is_empty() {
                            full
                        } else {
                            full.strip_prefix(root)?.trim_start_matches('/').to_string()
                        };
                        Some(key)
                    })
                    .collect())
            })
            .await
            .map_err(|_| RemoteError::gone())?
            .map_err(RemoteError::from_store)
    }
}

async fn upload_file(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    file: PathBuf,
) -> Result<u64, RemoteError> {
    let size = tokio::fs::metadata(&file).await.map_err(RemoteError::io)?.len();
    if size <= SINGLE_PUT_BYTES {
        let bytes = tokio::fs::read(&file).await.map_err(RemoteError::io)?;
        store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(RemoteError::from_store)?;
        return Ok(size);
    }
    let upload = store
        .put_multipart(&path)
        .await
        .map_err(RemoteError::from_store)?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, SINGLE_PUT_BYTES as usize);
    let mut reader = tokio::fs::File::open(&file).await.map_err(RemoteError::io)?;
    let mut chunk = vec![0u8; 8 << 20];
    loop {
        use tokio::io::AsyncReadExt;
        let n = reader.read(&mut chunk).await.map_err(RemoteError::io)?;
        if n == 0 {
            break;
        }
        writer
            .wait_for_capacity(4)
            .await
            .map_err(RemoteError::from_store)?;
        writer.write(&chunk[..n]);
    }
    writer.finish().await.map_err(RemoteError::from_store)?;
    Ok(size)
}
