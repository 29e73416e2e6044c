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

    /// What the bucket held was not what it should be.
    pub(crate) fn unreadable(message: String) -> RemoteError {
        RemoteError {
            kind: "unreadable",
            message,
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
        // "dir/" names the same place as "dir": an empty part would be a
        // path no object has.
        for part in key.split('/').filter(|part| !part.is_empty()) {
            path = path.clone().join(part);
        }
        path
    }

    /// One object of `pieces`, in order, sent without joining them.
    pub(crate) async fn put_pieces(&self, key: &str, pieces: Vec<Bytes>) -> Result<(), RemoteError> {
        let (store, path) = (self.store.clone(), self.path(key));
        self.side
            .run(async move { store.put(&path, pieces.into_iter().collect::<PutPayload>()).await })
            .await
            .map_err(|_| RemoteError::gone())?
            .map(drop)
            .map_err(RemoteError::from_store)
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
        self.upload(key, UploadBody::File(file)).await
    }

    /// Uploads `body` under `key`; returns its size.
    pub(crate) async fn upload(&self, key: &str, body: UploadBody) -> Result<u64, RemoteError> {
        let (store, path) = (self.store.clone(), self.path(key));
        self.side
            .run(async move { upload(store, path, body).await })
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
        Ok(self
            .list_modified(dir)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// Keys under `dir`, each with when it was last written (ms since the
    /// Unix epoch, by the store's clock).
    pub(crate) async fn list_modified(&self, dir: &str) -> Result<Vec<(String, i64)>, RemoteError> {
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
                        Some((key, m.last_modified.timestamp_millis()))
                    })
                    .collect())
            })
            .await
            .map_err(|_| RemoteError::gone())?
            .map_err(RemoteError::from_store)
    }
}

/// What an upload sends.
pub(crate) enum UploadBody {
    /// A local file, read as it is sent.
    File(PathBuf),
    /// Bytes already in memory, in order.
    Memory(Vec<Bytes>),
}

/// Uploads `body` under `path`: one PUT up to [`SINGLE_PUT_BYTES`], parts
/// of exactly that size past it (some S3-compatible stores refuse parts of
/// unequal size), the next part read while the last is sent (two parts in
/// memory at most).
async fn upload(store: Arc<dyn ObjectStore>, path: ObjectPath, body: UploadBody) -> Result<u64, RemoteError> {
    let source = match body {
        UploadBody::File(file) => Source::File(Arc::new(
            tokio::task::spawn_blocking(move || FileSource::open(&file))
                .await
                .map_err(|e| RemoteError::io(std::io::Error::other(e)))?
                .map_err(RemoteError::io)?,
        )),
        UploadBody::Memory(pieces) => Source::Memory(pieces),
    };
    let size = source.size();
    if size <= SINGLE_PUT_BYTES {
        let bytes = source.read(0, size).await?;
        store
            .put(&path, PutPayload::from_iter(bytes))
            .await
            .map_err(RemoteError::from_store)?;
        return Ok(size);
    }
    let mut upload = store
        .put_multipart(&path)
        .await
        .map_err(RemoteError::from_store)?;
    let mut sending: Option<object_store::UploadPart> = None;
    let mut at = 0;
    let sent = async {
        while at < size {
            let len = (size - at).min(SINGLE_PUT_BYTES);
            let (read, sent) = futures::join!(source.read(at, at + len), async {
                match sending.take() {
                    Some(part) => part.await,
                    None => Ok(()),
                }
            });
            sent.map_err(RemoteError::from_store)?;
            sending = Some(upload.put_part(PutPayload::from_iter(read?)));
            at += len;
        }
        if let Some(part) = sending.take() {
            part.await.map_err(RemoteError::from_store)?;
        }
        upload.complete().await.map_err(RemoteError::from_store)
    }
    .await;
    if let Err(e) = sent {
        let _ = upload.abort().await;
        return Err(e);
    }
    Ok(size)
}

enum Source {
    File(Arc<FileSource>),
    Memory(Vec<Bytes>),
}

impl Source {
    fn size(&self) -> u64 {
        match self {
            Source::File(file) => file.size,
            Source::Memory(pieces) => pieces.iter().map(|p| p.len() as u64).sum(),
        }
    }

    async fn read(&self, from: u64, to: u64) -> Result<Vec<Bytes>, RemoteError> {
        match self {
            Source::File(file) => file.read(from, to).await,
            Source::Memory(pieces) => Ok(slice_pieces(pieces, from, to)),
        }
    }
}

/// Bytes `from..to` of the concatenation of `pieces`, as slices of them.
fn slice_pieces(pieces: &[Bytes], from: u64, to: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for piece in pieces {
        let (start, end) = (at, at + piece.len() as u64);
        at = end;
        if end <= from {
            continue;
        }
        if start >= to {
            break;
        }
        let (a, b) = (
            from.saturating_sub(start) as usize,
            (to.min(end) - start) as usize,
        );
        out.push(piece.slice(a..b));
    }
    out
}

/// A local file being uploaded, opened once. Read with O_DIRECT where the
/// file system takes it: segment files were written that way, so the page
/// cache does not hold them, and a buffered read would fill it with pages
/// the kernel must allocate, copy into and later reclaim, on the cores
/// that produce.
struct FileSource {
    file: std::fs::File,
    size: u64,
    /// O_DIRECT was refused (tmpfs, some network file systems).
    buffered: bool,
}

impl FileSource {
    fn open(path: &std::path::Path) -> std::io::Result<FileSource> {
        use std::os::unix::fs::OpenOptionsExt;
        let (file, buffered) = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => (file, false),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (std::fs::File::open(path)?, true),
            Err(e) => return Err(e),
        };
        let size = file.metadata()?.len();
        Ok(FileSource { file, size, buffered })
    }

    /// Bytes `from..to` (`from` a multiple of the part size), read on the
    /// blocking pool.
    async fn read(self: &Arc<Self>, from: u64, to: u64) -> Result<Vec<Bytes>, RemoteError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_blocking(from, to))
            .await
            .map_err(|e| RemoteError::io(std::io::Error::other(e)))?
            .map_err(RemoteError::io)
    }

    fn read_blocking(&self, from: u64, to: u64) -> std::io::Result<Vec<Bytes>> {
        if !self.buffered {
            match crate::storage::read_direct_chunks(&self.file, from, to) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                read => return read,
            }
        }
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0u8; (to - from) as usize];
        self.file.read_exact_at(&mut bytes, from)?;
        Ok(vec![Bytes::from(bytes)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_pieces_are_their_slices_end_to_end() {
        let pieces: Vec<Bytes> = [3usize, 5, 1, 7]
            .iter()
            .scan(0u8, |next, &len| {
                let piece: Vec<u8> = (0..len)
                    .map(|_| {
                        *next += 1;
                        *next
                    })
                    .collect();
                Some(Bytes::from(piece))
            })
            .collect();
        let whole: Vec<u8> = (1..=16).collect();
        for (from, to) in [(0, 16), (0, 3), (2, 9), (8, 9), (9, 16), (4, 4)] {
            let got: Vec<u8> = slice_pieces(&pieces, from, to).concat();
            assert_eq!(got, whole[from as usize..to as usize], "{from}..{to}");
        }
    }
}
