//! [`ObjectStore`] and [`ClientUploads`] on a local folder: the embedded backend's object store.
//!
//! An object `a/b/c.mp4` is the file `<root>/a/b/c.mp4`, so the folder has the bucket's layout.
//! Every write goes to a temp file in `<root>/.tmp/`, is fsynced, then renamed into place: a
//! reader sees the old object or the new one, never half of one, and a crash leaves at most a
//! temp file behind (swept when a day old). Objects are never modified in place, which is what
//! lets the ETag come from file metadata alone.
//!
//! Several processes (worker, API, CLI) share one folder. Every write and delete of a key commits
//! under an exclusive file lock on the key's stripe (`<root>/.tmp/locks/<n>.lock`), which makes
//! a conditional write's check-then-rename atomic across all of them.
//!
//! With an [`EventSink`], a write under the upload prefix sends the S3 `ObjectCreated:Put`
//! notification real S3 would send (encoded beside its parser, in [`crate::domain::event`]), so
//! uploads become jobs exactly as on AWS.
//!
//! File I/O runs in Tokio's blocking pool; data is streamed, never held whole in memory.
//!
//! Layout: this file holds the store and its write path; `files` the file operations under
//! it, `objects` and `uploads` the two interfaces, `parts` the client multipart uploads.
//!
//! [`ObjectStore`]: super::ObjectStore
//! [`ClientUploads`]: super::ClientUploads

use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ETag, ObjectInfo, ObjectKey, Precondition, StorageError, StorageResult};
use crate::domain::event::object_created_event;
use crate::domain::keys::KeyError;
use crate::queue::{Queue, SendOptions};

mod files;
mod objects;
mod parts;
#[cfg(test)]
mod tests;
mod uploads;

/// Folder under the root holding writes in progress; no key may start with it.
const TMP_DIR: &str = ".tmp";
/// Temp files older than this are leftovers of a crash (a live write keeps touching its file).
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);
/// The store's folder in the data folder, laid out like the bucket.
const STORAGE_DIR: &str = "storage";

/// Where object-created notifications for uploads go.
#[derive(Clone)]
pub struct EventSink {
    /// Only keys starting with this produce events (S3's notification filter).
    pub upload_prefix: String,
    pub queue: Arc<dyn Queue>,
    /// The bucket name written into events (it feeds job ids, so keep it stable).
    pub bucket: String,
}

pub struct LocalStorage {
    root: PathBuf,
    events: Option<Arc<EventSink>>,
}

/// What a write copies into the temp file.
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// An owned [`Precondition`], to move into the blocking pool.
enum Condition {
    Absent,
    Matches(ETag),
}

impl From<Precondition<'_>> for Condition {
    fn from(condition: Precondition<'_>) -> Self {
        match condition {
            Precondition::Absent => Condition::Absent,
            Precondition::Matches(etag) => Condition::Matches(ETag::new(etag)),
        }
    }
}

impl Condition {
    /// Whether the object now stored (its tag; `None` when absent) lets the write happen.
    fn holds(&self, current: Option<&str>) -> bool {
        match self {
            Condition::Absent => current.is_none(),
            Condition::Matches(etag) => current.is_some_and(|current| etag.matches(current)),
        }
    }
}

impl LocalStorage {
    /// Creates `root` (and its temp folder) if needed, and removes day-old temp files.
    pub fn new(root: PathBuf, events: Option<EventSink>) -> anyhow::Result<LocalStorage> {
        let tmp_dir = root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir)
            .map_err(|e| anyhow::Error::new(e).context(format!("create storage folder {}", tmp_dir.display())))?;
        files::sweep_stale_temp_files(&tmp_dir);
        Ok(LocalStorage { root, events: events.map(Arc::new) })
    }

    /// The folder holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's folder for the data folder `data_dir`.
    pub fn root_in(data_dir: &Path) -> PathBuf {
        data_dir.join(STORAGE_DIR)
    }

    /// Where the store in `data_dir` keeps `key`, for printing paths people can open.
    pub fn file_in(data_dir: &Path, key: &str) -> PathBuf {
        let mut path = Self::root_in(data_dir);
        path.extend(key.split('/').filter(|segment| !segment.is_empty()));
        path
    }

    /// The file of a key, once the key passes the checks.
    fn object_path(&self, key: &str) -> StorageResult<PathBuf> {
        Ok(join_key(&self.root, &checked(key)?))
    }

    /// The folder of writes in progress and of client multipart uploads.
    fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    async fn put(&self, key: &str, source: Source) -> StorageResult<ObjectInfo> {
        let written = self.put_checked(key, source, None).await?;
        written.ok_or_else(|| StorageError::other(anyhow::anyhow!("an unconditional write of `{key}` was refused")))
    }

    /// Writes an object if `condition` (when given) holds at commit; `None` when it did not.
    async fn put_checked(
        &self,
        key: &str,
        source: Source,
        condition: Option<Condition>,
    ) -> StorageResult<Option<ObjectInfo>> {
        let dest = self.object_path(key)?;
        let root = self.root.clone();
        let sink = self.events.clone().filter(|sink| key.starts_with(&sink.upload_prefix));
        let key = key.to_string();
        // Spawned, so a caller giving up half-way cannot leave an upload in place without its
        // event (as on S3, where the event follows a completed write whatever the client does).
        let task = tokio::spawn(async move {
            let written = {
                let key = key.clone();
                blocking(move || {
                    files::write_object(&root, &key, &dest, source, condition.as_ref())
                        .map_err(|e| io_error("write", &key, e))
                })
                .await?
            };
            let Some(info) = written else { return Ok(None) };
            if let Some(sink) = sink {
                // The write's ETag (unique per write here) is its sequencer: an uploader that
                // knows the ETag knows the job id the worker derives from this event.
                let sequencer = info.etag.clone().unwrap_or_default();
                let etag = info.etag.as_deref();
                let body = object_created_event(&sink.bucket, &key, info.size, etag, &sequencer, SystemTime::now());
                sink.queue.send(&body, SendOptions::default()).await.map_err(|e| {
                    StorageError::Other(e.context(format!(
                        "`{key}` was written but its upload event could not be sent to {}",
                        sink.queue.name()
                    )))
                })?;
            }
            Ok(Some(info))
        });
        task.await.map_err(StorageError::other)?
    }
}

/// The key checks shared with S3, plus the reserved temp folder.
fn checked(key: &str) -> StorageResult<ObjectKey> {
    let key = ObjectKey::parse(key)?;
    if key.as_str().starts_with(TMP_DIR) {
        return Err(StorageError::InvalidKey { key: key.to_string(), reason: KeyError::Reserved });
    }
    Ok(key)
}

/// `root` plus the key's segments: a checked key stays inside `root`.
fn join_key(root: &Path, key: &ObjectKey) -> PathBuf {
    let mut path = root.to_path_buf();
    path.extend(key.segments());
    path
}

async fn blocking<T, F>(f: F) -> StorageResult<T>
where
    F: FnOnce() -> StorageResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(StorageError::other)?
}

fn io_error(action: &str, key: &str, err: io::Error) -> StorageError {
    StorageError::Other(anyhow::Error::new(err).context(format!("local storage: {action} `{key}`")))
}

/// Errors meaning "no such object" (also when a path segment is a file, not a folder).
fn is_missing(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

/// A cheap content identity from metadata alone: every write is a new file with a fresh, precise
/// mtime. The inode number tells apart two same-size writes stamped alike (a coarse file-system
/// clock): the new file is created while the object it replaces still holds its inode.
pub(super) fn object_info(meta: &Metadata) -> ObjectInfo {
    let mtime_nanos = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    ObjectInfo { size: meta.len(), etag: Some(format!("{:x}-{:x}-{:x}", meta.len(), mtime_nanos, inode(meta))) }
}

#[cfg(unix)]
fn inode(meta: &Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_: &Metadata) -> u64 {
    0
}
