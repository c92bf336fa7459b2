//! The file operations under the local store: atomic writes under a key's commit lock,
//! reads, deletes that prune empty folders, listing, and the temp-file sweep.

use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use uuid::Uuid;

use super::{Condition, STALE_TEMP_AGE, Source, TMP_DIR, checked, is_missing, object_info};
use crate::domain::keys::validate_prefix;
use crate::storage::ObjectInfo;

/// Folder under the temp folder holding the commit locks.
const LOCK_DIR: &str = "locks";
/// Keys share this many locks: enough that unrelated keys rarely wait on each other.
const LOCK_STRIPES: u64 = 64;

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
pub(super) fn write_object(
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
pub(super) fn open_object(path: &Path) -> io::Result<Option<(File, Metadata)>> {
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
pub(super) fn copy_to_file(object: &mut File, path: &Path) -> io::Result<u64> {
    let mut file = File::create(path)?;
    io::copy(object, &mut file)
}

pub(super) fn delete_object(root: &Path, key: &str, path: &Path) -> io::Result<()> {
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

pub(super) fn list_keys(root: &Path, prefix: &str) -> io::Result<Vec<String>> {
    // Start at the deepest folder the prefix names, when it is a safe one (never joins `..`).
    let folder = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
    let folder = if validate_prefix(folder).is_ok() { folder } else { "" };
    let mut start = root.to_path_buf();
    start.extend(folder.split('/').filter(|segment| !segment.is_empty()));
    let mut stack = vec![(start, folder.to_string())];
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

pub(super) fn sweep_stale_temp_files(tmp_dir: &Path) {
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
