//! [`Storage`] on a local folder: the embedded backend's object store.
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

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use uuid::Uuid;

use super::local_parts;
use super::{
    CasOutcome, ObjectInfo, PartInfo, Pin, Precondition, PresignedRequest, Storage, StorageError, StorageResult,
    Versioned,
};
use crate::domain::event::object_created_event;
use crate::domain::keys::{KeyError, validate_key, validate_prefix};
use crate::queue::{Queue, SendOptions};

/// Folder under the root holding writes in progress; no key may start with it.
const TMP_DIR: &str = ".tmp";
/// Temp files older than this are leftovers of a crash (a live write keeps touching its file).
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);
/// Folder under the temp folder holding the commit locks.
const LOCK_DIR: &str = "locks";
/// Keys share this many locks: enough that unrelated keys rarely wait on each other.
const LOCK_STRIPES: u64 = 64;

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
    Matches(String),
}

impl From<Precondition<'_>> for Condition {
    fn from(condition: Precondition<'_>) -> Self {
        match condition {
            Precondition::Absent => Condition::Absent,
            Precondition::Matches(etag) => Condition::Matches(etag.to_string()),
        }
    }
}

impl Condition {
    /// Whether the object now stored (its tag; `None` when absent) lets the write happen.
    fn holds(&self, current: Option<&str>) -> bool {
        match self {
            Condition::Absent => current.is_none(),
            Condition::Matches(etag) => current == Some(etag.trim_matches('"')),
        }
    }
}

impl LocalStorage {
    /// Creates `root` (and its temp folder) if needed, and removes day-old temp files.
    pub fn new(root: PathBuf, events: Option<EventSink>) -> anyhow::Result<LocalStorage> {
        let tmp_dir = root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir)
            .map_err(|e| anyhow::Error::new(e).context(format!("create storage folder {}", tmp_dir.display())))?;
        sweep_stale_temp_files(&tmp_dir);
        Ok(LocalStorage { root, events: events.map(Arc::new) })
    }

    /// The folder holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a key, once the key passes the checks.
    fn object_path(&self, key: &str) -> StorageResult<PathBuf> {
        checked(key)?;
        Ok(join_key(&self.root, key))
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
                    write_object(&root, &key, &dest, source, condition.as_ref()).map_err(|e| io_error("write", &key, e))
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
fn checked(key: &str) -> StorageResult<()> {
    let refuse = |reason| StorageError::InvalidKey { key: key.to_string(), reason };
    validate_key(key).map_err(refuse)?;
    if key.starts_with(TMP_DIR) {
        // KeyError has no "reserved" variant; this is the closest.
        return Err(refuse(KeyError::Reserved));
    }
    Ok(())
}

/// `root` plus the key's segments (a checked key has no `..`, empty or absolute segment).
fn join_key(root: &Path, key: &str) -> PathBuf {
    let mut path = root.to_path_buf();
    path.extend(key.split('/').filter(|segment| !segment.is_empty()));
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

/// The ETag of the object at `path`; `None` when there is none.
fn current_etag(path: &Path) -> io::Result<Option<String>> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(object_info(&meta).etag),
        Ok(_) => Ok(None),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The commit lock of a key's stripe, held until the returned file is dropped. The stripe comes
/// from FNV-1a, which (unlike std's hasher) is the same in every build of every binary.
fn lock_key(root: &Path, key: &str) -> io::Result<File> {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let dir = root.join(TMP_DIR).join(LOCK_DIR);
    let path = dir.join(format!("{}.lock", hash % LOCK_STRIPES));
    let open = || fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path);
    let file = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&dir)?;
            open()?
        }
        other => other?,
    };
    file.lock()?;
    Ok(file)
}

/// Writes an object unless `condition` fails at commit (then `None`, and nothing changed). The
/// data goes to a temp file first, outside the lock: only the check and the rename hold it.
fn write_object(
    root: &Path,
    key: &str,
    dest: &Path,
    source: Source,
    condition: Option<&Condition>,
) -> io::Result<Option<ObjectInfo>> {
    let tmp_dir = root.join(TMP_DIR);
    fs::create_dir_all(&tmp_dir)?;
    let tmp = tmp_dir.join(format!("{}.part", Uuid::new_v4()));
    let result = fill(&tmp, source).and_then(|info| {
        let _lock = lock_key(root, key)?;
        if let Some(condition) = condition
            && !condition.holds(current_etag(dest)?.as_deref())
        {
            return Ok(None);
        }
        place(&tmp, dest)?;
        Ok(Some(info))
    });
    if !matches!(result, Ok(Some(_)))
        && let Err(e) = fs::remove_file(&tmp)
        && !is_missing(&e)
    {
        tracing::warn!(path = %tmp.display(), error = %e, "Removing a failed write's temp file failed.");
    }
    result
}

/// Fills and syncs the temp file; returns the object's info, fixed from here on.
fn fill(tmp: &Path, source: Source) -> io::Result<ObjectInfo> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(tmp)?;
    match source {
        // Streams (copy_file_range on Linux): the file is never read into memory.
        Source::File(path) => {
            io::copy(&mut File::open(path)?, &mut file)?;
        }
        Source::Bytes(bytes) => file.write_all(&bytes)?,
    }
    // A precise mtime makes the ETag change on every rewrite, even where the file system stamps
    // writes with a coarse clock (Linux ticks every few milliseconds).
    file.set_modified(SystemTime::now())?;
    file.sync_all()?;
    // Taken from the temp file: after the rename, a concurrent writer may already replace it.
    // The rename keeps the inode and mtime, hence the ETag.
    let meta = file.metadata()?;
    Ok(object_info(&meta))
}

/// Renames the temp file into place, creating the parent folders.
fn place(tmp: &Path, dest: &Path) -> io::Result<()> {
    let parent = dest.parent();
    let mut attempt = 0;
    loop {
        let result = parent.map_or(Ok(()), fs::create_dir_all).and_then(|()| fs::rename(tmp, dest));
        match result {
            Ok(()) => break,
            // A concurrent delete may prune a folder we just created while it is still empty.
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 5 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
    if let Some(parent) = parent {
        sync_dir(parent);
    }
    Ok(())
}

/// Makes a rename durable across a power loss; best effort (it is already atomic).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(path = %dir.display(), error = %e, "Syncing a folder failed.");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Opens an object for reading; `None` when there is no such file.
fn open_object(path: &Path) -> io::Result<Option<(File, Metadata)>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    // Metadata of the open file matches what is read, even if the key is rewritten meanwhile.
    let meta = file.metadata()?;
    Ok(meta.is_file().then_some((file, meta)))
}

/// Streams an open object into `path`, replacing it. Not synced: downloads land in scratch
/// space, which a crash discards anyway, and an fsync of a large source costs real time.
fn copy_to_file(object: &mut File, path: &Path) -> io::Result<u64> {
    let mut file = File::create(path)?;
    io::copy(object, &mut file)
}

fn delete_object(root: &Path, key: &str, path: &Path) -> io::Result<()> {
    // Under the key's lock, so a conditional write never commits over a delete it did not see.
    let lock = lock_key(root, key)?;
    let removed = fs::remove_file(path);
    drop(lock);
    match removed {
        Ok(()) => {}
        Err(e) if is_missing(&e) => return Ok(()),
        // A folder is not an object: nothing to delete, as on S3.
        Err(_) if path.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    // Prune now-empty folders up to the root; the first non-empty (or vanished) one stops it.
    let mut dir = path.parent();
    while let Some(current) = dir {
        if current == root || !current.starts_with(root) || fs::remove_dir(current).is_err() {
            break;
        }
        dir = current.parent();
    }
    Ok(())
}

fn list_keys(root: &Path, prefix: &str) -> io::Result<Vec<String>> {
    // Start at the deepest folder the prefix names, when it is a safe one (never joins `..`).
    let folder = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
    let folder = if validate_prefix(folder).is_ok() { folder } else { "" };
    let mut stack = vec![(join_key(root, folder), folder.to_string())];
    let mut keys = Vec::new();
    while let Some((dir, rel)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            // A name that is not UTF-8 cannot be a key.
            let Ok(name) = entry.file_name().into_string() else { continue };
            let key = format!("{rel}{name}");
            if key.starts_with(TMP_DIR) {
                continue;
            }
            let Ok(file_type) = entry.file_type() else { continue };
            if file_type.is_dir() {
                let sub = format!("{key}/");
                if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                    stack.push((entry.path(), sub));
                }
            } else if key.starts_with(prefix)
                && (file_type.is_file() || fs::metadata(entry.path()).is_ok_and(|m| m.is_file()))
                // Files dropped in by hand with names no key may have would be refused by every
                // other call: leave them out.
                && checked(&key).is_ok()
            {
                keys.push(key);
            }
        }
    }
    keys.sort();
    Ok(keys)
}

fn sweep_stale_temp_files(tmp_dir: &Path) {
    let Ok(entries) = fs::read_dir(tmp_dir) else { return };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .ok()
            .filter(Metadata::is_file)
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if stale && let Err(e) = fs::remove_file(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "Removing a stale temp file failed.");
        }
    }
}

#[async_trait]
impl Storage for LocalStorage {
    async fn put_file(&self, key: &str, path: &Path, _content_type: &str) -> StorageResult<ObjectInfo> {
        self.put(key, Source::File(path.to_path_buf())).await
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>, _content_type: &str) -> StorageResult<()> {
        self.put(key, Source::Bytes(bytes)).await.map(|_| ())
    }

    /// Objects have no versions here: the pin's version id is ignored, its ETag checked.
    async fn get_pinned_to_file(&self, key: &str, path: &Path, pin: &Pin) -> StorageResult<ObjectInfo> {
        let source = self.object_path(key)?;
        let (key, path, expected) = (key.to_string(), path.to_path_buf(), pin.etag.clone());
        blocking(move || {
            let Some((mut object, meta)) = open_object(&source).map_err(|e| io_error("read", &key, e))? else {
                return Err(if expected.is_some() { StorageError::Changed(key) } else { StorageError::NotFound(key) });
            };
            let info = object_info(&meta);
            if let Some(expected) = expected
                && info.etag.as_deref() != Some(expected.trim_matches('"'))
            {
                return Err(StorageError::Changed(key));
            }
            let size = copy_to_file(&mut object, &path).map_err(|e| io_error("copy out", &key, e))?;
            Ok(ObjectInfo { size, ..info })
        })
        .await
    }

    async fn get_versioned(&self, key: &str) -> StorageResult<Option<Versioned>> {
        let source = self.object_path(key)?;
        let key = key.to_string();
        blocking(move || {
            let read = || -> io::Result<Option<Versioned>> {
                let Some((mut object, meta)) = open_object(&source)? else { return Ok(None) };
                let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
                object.read_to_end(&mut bytes)?;
                // The tag of the file read, even if the key was replaced meanwhile.
                Ok(object_info(&meta).etag.map(|etag| Versioned { bytes, etag }))
            };
            read().map_err(|e| io_error("read", &key, e))
        })
        .await
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        _content_type: &str,
        condition: Precondition<'_>,
    ) -> StorageResult<CasOutcome> {
        let written = self.put_checked(key, Source::Bytes(bytes), Some(condition.into())).await?;
        Ok(match written.and_then(|info| info.etag) {
            Some(etag) => CasOutcome::Written { etag },
            None => CasOutcome::Conflict,
        })
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectInfo>> {
        let path = self.object_path(key)?;
        let key = key.to_string();
        blocking(move || match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(object_info(&meta))),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(io_error("head", &key, e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<String>> {
        let (root, prefix) = (self.root.clone(), prefix.to_string());
        blocking(move || list_keys(&root, &prefix).map_err(|e| io_error("list", &prefix, e))).await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let path = self.object_path(key)?;
        let (root, key) = (self.root.clone(), key.to_string());
        blocking(move || delete_object(&root, &key, &path).map_err(|e| io_error("delete", &key, e))).await
    }

    /// Files on disk have no URLs of their own: the API serves uploads and downloads itself.
    async fn presign_put(
        &self,
        key: &str,
        _: &str,
        _: Option<u64>,
        _: Duration,
    ) -> StorageResult<Option<PresignedRequest>> {
        checked(key)?;
        Ok(None)
    }

    async fn presign_get(&self, key: &str, _: Duration) -> StorageResult<Option<String>> {
        checked(key)?;
        Ok(None)
    }

    async fn create_multipart(&self, key: &str, content_type: &str) -> StorageResult<String> {
        checked(key)?;
        let (tmp_dir, key, content_type) = (self.root.join(TMP_DIR), key.to_string(), content_type.to_string());
        blocking(move || {
            local_parts::create(&tmp_dir, &key, &content_type).map_err(|e| io_error("create upload", &key, e))
        })
        .await
    }

    /// The API receives the parts itself (see [`Self::put_part`]).
    async fn presign_part(
        &self,
        key: &str,
        _: &str,
        _: u32,
        _: u64,
        _: Duration,
    ) -> StorageResult<Option<PresignedRequest>> {
        checked(key)?;
        Ok(None)
    }

    async fn put_part(&self, key: &str, upload_id: &str, number: u32, path: &Path) -> StorageResult<PartInfo> {
        checked(key)?;
        let (tmp_dir, key, upload_id, path) =
            (self.root.join(TMP_DIR), key.to_string(), upload_id.to_string(), path.to_path_buf());
        blocking(move || {
            let dir = local_parts::folder(&tmp_dir, &key, &upload_id)?;
            local_parts::put(&dir, number, &path).map_err(|e| io_error("store part", &key, e))
        })
        .await
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> StorageResult<Vec<PartInfo>> {
        checked(key)?;
        let (tmp_dir, key, upload_id) = (self.root.join(TMP_DIR), key.to_string(), upload_id.to_string());
        blocking(move || {
            let dir = local_parts::folder(&tmp_dir, &key, &upload_id)?;
            local_parts::list(&dir).map_err(|e| io_error("list parts", &key, e))
        })
        .await
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[PartInfo]) -> StorageResult<ObjectInfo> {
        checked(key)?;
        let tmp_dir = self.root.join(TMP_DIR);
        let assembled = tmp_dir.join(format!("assembled-{}", uuid::Uuid::new_v4().simple()));
        let dir = {
            let (tmp_dir, key, upload_id, parts, assembled) =
                (tmp_dir.clone(), key.to_string(), upload_id.to_string(), parts.to_vec(), assembled.clone());
            blocking(move || {
                let dir = local_parts::folder(&tmp_dir, &key, &upload_id)?;
                local_parts::assemble(&dir, &key, &parts, &assembled)?;
                Ok(dir)
            })
            .await
        };
        let dir = match dir {
            Ok(dir) => dir,
            Err(err) => {
                let _ = std::fs::remove_file(&assembled);
                return Err(err);
            }
        };
        let written = self.put(key, Source::File(assembled.clone())).await;
        let _ = std::fs::remove_file(&assembled);
        let info = written?;
        // The object and its event are out: the parts are no longer needed.
        let key = key.to_string();
        blocking(move || local_parts::remove(&dir).map_err(|e| io_error("remove parts", &key, e))).await?;
        Ok(info)
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StorageResult<()> {
        checked(key)?;
        let (tmp_dir, key, upload_id) = (self.root.join(TMP_DIR), key.to_string(), upload_id.to_string());
        blocking(move || match local_parts::folder(&tmp_dir, &key, &upload_id) {
            Ok(dir) => local_parts::remove(&dir).map_err(|e| io_error("abort upload", &key, e)),
            Err(StorageError::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        })
        .await
    }

    async fn sweep_multipart(&self, age: Duration) -> StorageResult<usize> {
        let tmp_dir = self.root.join(TMP_DIR);
        blocking(move || local_parts::sweep(&tmp_dir, age).map_err(|e| io_error("sweep uploads", "multipart", e))).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use serde_json::Value;

    use super::*;
    use crate::domain::event::{EventContext, decode_event_key, parse_ready_message};
    use crate::domain::keys::KeyLayout;
    use crate::domain::preset::Preset;
    use crate::queue::local::LocalQueue;
    use crate::queue::{QueueCounts, Received};

    fn store(dir: &tempfile::TempDir) -> LocalStorage {
        LocalStorage::new(dir.path().join("objects"), None).unwrap()
    }

    fn with_events(dir: &tempfile::TempDir) -> (LocalStorage, Arc<LocalQueue>) {
        let queue = Arc::new(LocalQueue::open(&dir.path().join("queues.db"), "ready").unwrap());
        let sink = EventSink { upload_prefix: "uploads/".into(), queue: queue.clone(), bucket: "media".into() };
        (LocalStorage::new(dir.path().join("objects"), Some(sink)).unwrap(), queue)
    }

    async fn drain(queue: &LocalQueue) -> Vec<Received> {
        queue.receive(10, StdDuration::ZERO, StdDuration::from_secs(60)).await.unwrap()
    }

    #[tokio::test]
    async fn bytes_and_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.put_bytes("jobs/a.json", b"{\"a\":1}".to_vec(), "application/json").await.unwrap();
        assert_eq!(s.get_bytes("jobs/a.json").await.unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
        assert!(s.root().join("jobs").join("a.json").is_file(), "same layout as the bucket");

        let src = dir.path().join("src.bin");
        fs::write(&src, b"media bytes").unwrap();
        let put = s.put_file("outputs/x/out.mp4", &src, "video/mp4").await.unwrap();
        assert_eq!(put.size, 11);
        let dst = dir.path().join("dst.bin");
        let got = s.get_to_file("outputs/x/out.mp4", &dst).await.unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"media bytes");
        assert_eq!(got, put);
        assert_eq!(s.head("outputs/x/out.mp4").await.unwrap(), Some(put));

        // An empty object is still an object.
        s.put_bytes("jobs/empty", Vec::new(), "text/plain").await.unwrap();
        assert_eq!(s.get_bytes("jobs/empty").await.unwrap(), Some(Vec::new()));
        assert_eq!(s.head("jobs/empty").await.unwrap().map(|i| i.size), Some(0));
    }

    #[tokio::test]
    async fn a_large_file_round_trips_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let mut data = vec![0u8; 20 << 20];
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for b in &mut data {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        let src = dir.path().join("big.mov");
        fs::write(&src, &data).unwrap();
        let put = s.put_file("uploads/big.mov", &src, "video/quicktime").await.unwrap();
        assert_eq!(put.size, 20 << 20);
        let dst = dir.path().join("back.mov");
        let got = s.get_to_file("uploads/big.mov", &dst).await.unwrap();
        assert_eq!(got, put);
        assert!(fs::read(&dst).unwrap() == data, "content differs");
        let temp_files = fs::read_dir(s.root().join(TMP_DIR)).unwrap().filter(|e| e.as_ref().unwrap().path().is_file());
        assert_eq!(temp_files.count(), 0, "no temp file left");
    }

    #[tokio::test]
    async fn missing_objects() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let dst = dir.path().join("out");
        assert!(
            matches!(s.get_to_file("uploads/none.mp4", &dst).await, Err(StorageError::NotFound(k)) if k == "uploads/none.mp4")
        );
        assert!(!dst.exists());
        assert_eq!(s.get_bytes("uploads/none.mp4").await.unwrap(), None);
        assert_eq!(s.head("uploads/none.mp4").await.unwrap(), None);
        s.delete("uploads/none.mp4").await.unwrap();
        assert!(s.list("").await.unwrap().is_empty());

        // A folder is not an object, nor is a path through a file.
        s.put_bytes("uploads/dir/file", b"x".to_vec(), "").await.unwrap();
        assert_eq!(s.head("uploads/dir").await.unwrap(), None);
        assert_eq!(s.get_bytes("uploads/dir").await.unwrap(), None);
        assert!(matches!(s.get_to_file("uploads/dir", &dst).await, Err(StorageError::NotFound(_))));
        s.delete("uploads/dir").await.unwrap();
        assert_eq!(s.head("uploads/dir/file/deeper").await.unwrap(), None);
        assert_eq!(s.get_bytes("uploads/dir/file/deeper").await.unwrap(), None);
        assert_eq!(s.list("").await.unwrap(), ["uploads/dir/file"]);
    }

    fn invalid<T>(result: StorageResult<T>) -> bool {
        matches!(result, Err(StorageError::InvalidKey { .. }))
    }

    #[tokio::test]
    async fn hostile_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        for key in ["../x", "/etc/passwd", "a\\b", "a\0b", "uploads//x", "", "uploads/./x", ".tmp/x", ".tmpx", ".tmp"] {
            assert!(invalid(s.put_bytes(key, b"x".to_vec(), "").await), "put_bytes {key:?}");
            assert!(invalid(s.put_file(key, &file, "").await), "put_file {key:?}");
            assert!(invalid(s.get_to_file(key, &dir.path().join("out")).await), "get_to_file {key:?}");
            assert!(invalid(s.get_bytes(key).await), "get_bytes {key:?}");
            assert!(invalid(s.head(key).await), "head {key:?}");
            assert!(invalid(s.delete(key).await), "delete {key:?}");
        }
        assert!(!dir.path().join("x").exists());
        // Dots inside a name, or a `.tmp` below the root level, are fine.
        s.put_bytes("uploads/.tmp/clip..v2.mp4", b"x".to_vec(), "").await.unwrap();
        assert_eq!(s.list("").await.unwrap(), ["uploads/.tmp/clip..v2.mp4"]);
    }

    #[tokio::test]
    async fn listing_is_by_prefix_sorted_and_skips_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        for key in ["uploads/b.mp4", "uploads/a/2.mp4", "uploads/a.mp4", "uploads/a/1.mp4", "outputs/a/m.json", "top"] {
            s.put_bytes(key, key.as_bytes().to_vec(), "").await.unwrap();
        }
        fs::write(s.root().join(TMP_DIR).join("leftover.part"), b"half").unwrap();

        let all = ["outputs/a/m.json", "top", "uploads/a.mp4", "uploads/a/1.mp4", "uploads/a/2.mp4", "uploads/b.mp4"];
        assert_eq!(s.list("").await.unwrap(), all);
        assert_eq!(s.list("uploads/").await.unwrap(), &all[2..]);
        assert_eq!(s.list("uploads/a").await.unwrap(), &all[2..5]);
        assert_eq!(s.list("uploads/a/").await.unwrap(), &all[3..5]);
        assert_eq!(s.list("uploads/a/1").await.unwrap(), ["uploads/a/1.mp4"]);
        assert!(s.list("nothing/").await.unwrap().is_empty());
        assert!(s.list("../").await.unwrap().is_empty());
        assert!(s.list(".tmp/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn delete_removes_empty_folders_up_to_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.put_bytes("outputs/a/b/c.mp4", b"1".to_vec(), "").await.unwrap();
        s.put_bytes("outputs/keep.mp4", b"2".to_vec(), "").await.unwrap();
        s.delete("outputs/a/b/c.mp4").await.unwrap();
        assert!(!s.root().join("outputs").join("a").exists());
        assert!(s.root().join("outputs").is_dir());
        s.delete("outputs/keep.mp4").await.unwrap();
        assert!(!s.root().join("outputs").exists());
        assert!(s.root().is_dir());
        assert!(s.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_etag_changes_on_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let src = dir.path().join("src");
        fs::write(&src, b"same size").unwrap();
        let first = s.put_file("uploads/a.mp4", &src, "").await.unwrap();
        assert_eq!(s.head("uploads/a.mp4").await.unwrap(), Some(first.clone()));
        assert_eq!(s.head("uploads/a.mp4").await.unwrap(), Some(first.clone()), "stable");
        let second = s.put_file("uploads/a.mp4", &src, "").await.unwrap();
        assert_ne!(second.etag, first.etag);
        s.put_bytes("uploads/a.mp4", b"same size".to_vec(), "").await.unwrap();
        let third = s.head("uploads/a.mp4").await.unwrap().unwrap();
        assert_ne!(third.etag, second.etag);
        assert_eq!(s.get_to_file("uploads/a.mp4", &dir.path().join("o")).await.unwrap(), third);
    }

    #[test]
    fn same_size_files_stamped_alike_have_different_etags() {
        let dir = tempfile::tempdir().unwrap();
        let stamp = SystemTime::now();
        let tags: Vec<_> = ["a", "b"]
            .iter()
            .map(|name| {
                let path = dir.path().join(name);
                fs::write(&path, b"same").unwrap();
                let file = File::options().write(true).open(&path).unwrap();
                file.set_modified(stamp).unwrap();
                object_info(&file.metadata().unwrap()).etag
            })
            .collect();
        assert_ne!(tags[0], tags[1]);
    }

    /// Two stores on one folder stand for two processes: each opens the lock files itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conditional_writes_are_atomic_across_stores_on_one_folder() {
        let dir = tempfile::tempdir().unwrap();
        let stores = [Arc::new(store(&dir)), Arc::new(store(&dir))];
        let key = "jobs/n";
        assert!(matches!(
            stores[0].put_if(key, b"0".to_vec(), "", Precondition::Absent).await.unwrap(),
            CasOutcome::Written { .. }
        ));
        assert_eq!(stores[1].put_if(key, b"0".to_vec(), "", Precondition::Absent).await.unwrap(), CasOutcome::Conflict);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = stores[i % 2].clone();
                tokio::spawn(async move {
                    for _ in 0..25 {
                        loop {
                            let current = s.get_versioned(key).await.unwrap().unwrap();
                            let n: u32 = String::from_utf8(current.bytes).unwrap().parse().unwrap();
                            let next = (n + 1).to_string().into_bytes();
                            let outcome = s.put_if(key, next, "", Precondition::Matches(&current.etag)).await.unwrap();
                            if outcome != CasOutcome::Conflict {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(stores[0].get_bytes(key).await.unwrap().as_deref(), Some(&b"200"[..]));
        // Only committed writes leave anything: no temp file survives a lost race.
        let temp_files =
            fs::read_dir(stores[0].root().join(TMP_DIR)).unwrap().filter(|e| e.as_ref().unwrap().path().is_file());
        assert_eq!(temp_files.count(), 0);
    }

    #[tokio::test]
    async fn pinned_reads_check_the_etag_of_the_file_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let out = dir.path().join("out");
        let pin = |etag: &str| Pin { etag: Some(etag.to_string()), version_id: None };
        let missing = s.get_pinned_to_file("uploads/a", &out, &pin("x")).await;
        assert!(matches!(missing, Err(StorageError::Changed(_))), "{missing:?}");
        s.put_bytes("uploads/a", b"one".to_vec(), "").await.unwrap();
        let read = s.get_versioned("uploads/a").await.unwrap().unwrap();
        let got = s.get_pinned_to_file("uploads/a", &out, &pin(&read.etag)).await.unwrap();
        assert_eq!(got.etag.as_deref(), Some(read.etag.as_str()));
        // Quoted, as S3 sends it, is the same tag.
        s.get_pinned_to_file("uploads/a", &out, &pin(&format!("\"{}\"", read.etag))).await.unwrap();
        let other = s.get_pinned_to_file("uploads/a", &out, &pin("1-2-3")).await;
        assert!(matches!(other, Err(StorageError::Changed(_))), "{other:?}");
        // A version id alone pins nothing here.
        let by_version = Pin { etag: None, version_id: Some("v".into()) };
        assert_eq!(s.get_pinned_to_file("uploads/a", &out, &by_version).await.unwrap(), got);
    }

    #[tokio::test]
    async fn an_upload_sends_one_s3_event() {
        let dir = tempfile::tempdir().unwrap();
        let (s, queue) = with_events(&dir);
        let key = "uploads/2024/cat video+1 ünïcødé 日本.mov";
        let src = dir.path().join("clip.mov");
        fs::write(&src, b"0123456789").unwrap();
        let info = s.put_file(key, &src, "video/quicktime").await.unwrap();

        let got = drain(&queue).await;
        assert_eq!(got.len(), 1, "exactly one event");
        let event: Value = serde_json::from_str(&got[0].body).unwrap();
        let record = &event["Records"][0];
        assert_eq!(event["Records"].as_array().map(Vec::len), Some(1));
        assert_eq!(record["eventVersion"], "2.1");
        assert_eq!(record["eventSource"], "aws:s3");
        assert_eq!(record["awsRegion"], "local");
        assert_eq!(record["eventName"], "ObjectCreated:Put");
        assert!(chrono::DateTime::parse_from_rfc3339(record["eventTime"].as_str().unwrap()).is_ok());
        assert_eq!(record["s3"]["s3SchemaVersion"], "1.0");
        assert_eq!(record["s3"]["bucket"]["name"], "media");
        let object = &record["s3"]["object"];
        let raw_key = object["key"].as_str().unwrap();
        assert_eq!(raw_key, "uploads/2024/cat+video%2B1+%C3%BCn%C3%AFc%C3%B8d%C3%A9+%E6%97%A5%E6%9C%AC.mov");
        assert_eq!(decode_event_key(raw_key).as_deref(), Some(key));
        assert_eq!(object["size"], 10);
        assert_eq!(object["eTag"].as_str(), info.etag.as_deref());
        // The write's ETag names the write, so whoever wrote it can derive the job id.
        assert_eq!(object["sequencer"].as_str(), info.etag.as_deref());

        // The worker's own parser turns it into a job for this key.
        let layout = KeyLayout::new("uploads/", "outputs/").unwrap();
        let ctx = EventContext { layout: &layout, default_presets: &[Preset::Mp4H264] };
        let parsed = parse_ready_message(&got[0].body, &ctx).unwrap();
        assert_eq!(parsed.jobs.len(), 1);
        assert_eq!(parsed.jobs[0].job.source_key, key);

        // put_bytes under the prefix sends one too; writes elsewhere send none.
        s.put_bytes("uploads/b.mp4", b"x".to_vec(), "").await.unwrap();
        assert_eq!(drain(&queue).await.len(), 1);
        // So does a conditional write, when it takes effect.
        assert_eq!(
            s.put_if("uploads/b.mp4", b"y".to_vec(), "", Precondition::Absent).await.unwrap(),
            CasOutcome::Conflict
        );
        assert!(drain(&queue).await.is_empty(), "a write that did not happen sent an event");
        s.put_if("uploads/c.mp4", b"y".to_vec(), "", Precondition::Absent).await.unwrap();
        assert_eq!(drain(&queue).await.len(), 1);
        s.put_bytes("outputs/2024/cat/manifest.json", b"{}".to_vec(), "").await.unwrap();
        s.put_file("jobs/j.json", &src, "").await.unwrap();
        s.put_bytes("uploadsx/not-under.mp4", b"x".to_vec(), "").await.unwrap();
        assert!(drain(&queue).await.is_empty());
        assert_eq!(queue.counts().await.unwrap(), QueueCounts { visible: 0, in_flight: 3, delayed: 0 });
    }

    struct BrokenQueue;

    #[async_trait]
    impl Queue for BrokenQueue {
        async fn send(&self, _: &str, _: SendOptions) -> anyhow::Result<()> {
            anyhow::bail!("queue down")
        }
        async fn receive(&self, _: usize, _: StdDuration, _: StdDuration) -> anyhow::Result<Vec<Received>> {
            anyhow::bail!("queue down")
        }
        async fn delete(&self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("queue down")
        }
        async fn change_visibility(&self, _: &str, _: StdDuration) -> anyhow::Result<()> {
            anyhow::bail!("queue down")
        }
        async fn counts(&self) -> anyhow::Result<QueueCounts> {
            anyhow::bail!("queue down")
        }
        fn name(&self) -> &str {
            "broken"
        }
    }

    #[tokio::test]
    async fn an_unsent_event_fails_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let sink = EventSink { upload_prefix: "uploads/".into(), queue: Arc::new(BrokenQueue), bucket: "m".into() };
        let s = LocalStorage::new(dir.path().join("objects"), Some(sink)).unwrap();
        let err = s.put_bytes("uploads/a.mp4", b"x".to_vec(), "").await.unwrap_err();
        assert!(matches!(err, StorageError::Other(_)));
        assert!(format!("{err:#}").contains("queue down"), "{err:#}");
        // Writes outside the prefix do not need the queue.
        s.put_bytes("outputs/a.mp4", b"x".to_vec(), "").await.unwrap();
    }
}
