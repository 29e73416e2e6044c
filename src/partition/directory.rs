//! A partition directory's identity: Kafka's `partition.metadata` file
//! names the topic id the directory belongs to, so a directory left behind
//! by a deleted topic is never mistaken for a new topic of the same name.
//! Everything here is blocking (run on the blocking pool, or at start-up).

use crate::topics::TopicPartition;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use uuid::Uuid;

const PARTITION_METADATA: &str = "partition.metadata";

/// The topic id a directory says it belongs to (`None`: no file, a
/// directory from before topic ids were recorded).
pub(crate) fn topic_id_of(dir: &Path) -> io::Result<Option<Uuid>> {
    match fs::read_to_string(dir.join(PARTITION_METADATA)) {
        Ok(text) => Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("topic_id:"))
            .and_then(|id| Uuid::parse_str(id.trim()).ok())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes `dir` the directory of topic `topic_id`: one left by an earlier
/// topic of the same name is removed first. Returns whether it was.
pub(crate) fn claim(dir: &Path, topic_id: Uuid) -> io::Result<bool> {
    let stale = match topic_id_of(dir)? {
        Some(id) => id != topic_id,
        None => false,
    };
    if stale {
        fs::remove_dir_all(dir)?;
    }
    if topic_id_of(dir)?.is_none() {
        fs::create_dir_all(dir)?;
        let text = format!("version: 0\ntopic_id: {topic_id}\n");
        crate::log::index::write_file(&dir.join(PARTITION_METADATA), text.as_bytes())?;
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(stale)
}

/// Every partition directory under `root`: (its partition, its path).
pub(crate) fn partition_dirs(root: &Path) -> io::Result<Vec<(TopicPartition, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(root)?.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((topic, partition)) = name.rsplit_once('-') else {
            continue;
        };
        let (Ok(partition), Ok(())) = (
            partition.parse::<i32>(),
            crate::topics::validate_topic_name(topic),
        ) else {
            continue;
        };
        found.push((TopicPartition::new(topic, partition), entry.path()));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_of_an_earlier_topic_is_cleared_when_claimed() {
        let root = std::env::temp_dir().join(format!("chronik-claim-{}", std::process::id()));
        let dir = root.join("t-0");
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(!claim(&dir, old).unwrap());
        fs::write(dir.join("00000000000000000000.log"), b"old data").unwrap();
        assert!(!claim(&dir, old).unwrap(), "same topic keeps its data");
        assert!(dir.join("00000000000000000000.log").exists());
        assert!(claim(&dir, new).unwrap());
        assert!(!dir.join("00000000000000000000.log").exists());
        assert_eq!(topic_id_of(&dir).unwrap(), Some(new));
        assert_eq!(partition_dirs(&root).unwrap().len(), 1);
        fs::remove_dir_all(&root).unwrap();
    }
}
