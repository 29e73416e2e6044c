//! Metadata documents as files in the data directory.

use super::MetadataStore;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Each document is the file of its name in one directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn new(dir: impl Into<PathBuf>) -> FileStore {
        FileStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl MetadataStore for FileStore {
    fn get(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.dir.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        write_durable(&self.dir.join(name), bytes)
    }

    fn locate(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// Replaces `path` atomically and durably: the bytes go to a temporary file
/// beside it, which is synced, renamed over `path`, and then the directory
/// is synced. Without that last sync the rename lives only in the page
/// cache: after a power loss the directory can still name the old file
/// (a producer-id block that reverts hands out ids again).
pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // `<name>.tmp-write` (appended, not replacing the extension) so that two
    // files of one stem, such as a segment's .index and .timeindex, never
    // share a temporary file.
    let mut tmp_name = path.file_name().map(OsString::from).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    tmp_name.push(".tmp-write");
    let tmp = path.with_file_name(tmp_name);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    // fdatasync covers the size of a new file; its other metadata does
    // not matter here.
    file.sync_data()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// fsync of a directory: makes the names in it (creations, renames,
/// removals) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_and_missing_ones_are_none() {
        let dir = std::env::temp_dir().join(format!("chronik-filestore-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let store = FileStore::new(&dir);
        assert_eq!(store.get("doc").unwrap(), None);
        store.put("doc", b"one").unwrap();
        store.put("doc", b"two").unwrap();
        assert_eq!(store.get("doc").unwrap().as_deref(), Some(&b"two"[..]));
        // Nothing but the document is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("doc")]);
        let store: &dyn MetadataStore = &store;
        store.put("bad.json", b"{").unwrap();
        let err = store.get_json::<Vec<u32>>("bad.json").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("bad.json"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
