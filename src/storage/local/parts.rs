//! Multipart uploads on the local backend, laid out as S3 keeps them out of sight: one folder
//! per upload under the store's temp folder, `multipart/<upload id>/`, holding `upload.json`
//! (the key and content type) and one file per part (`part-00001`). Completion concatenates
//! the parts into a temp file that is then written like any object (its upload event
//! included); abort and the sweep remove the folder.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::object_info;
use crate::storage::{ETag, PartInfo, StorageError, StorageResult};

/// Folder of the uploads, under the store's temp folder.
const UPLOADS_DIR: &str = "multipart";
const UPLOAD_FILE: &str = "upload.json";
const PART_PREFIX: &str = "part-";

#[derive(Serialize, Deserialize)]
struct Upload {
    key: String,
    /// Kept for operators looking at a stray upload; the object's type is not stored locally.
    content_type: String,
}

/// Upload ids are 32 lowercase hex digits: anything else names no folder.
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn uploads_dir(tmp_dir: &Path) -> PathBuf {
    tmp_dir.join(UPLOADS_DIR)
}

/// The folder of `key`'s upload `id`; `NotFound` unless it exists and is for that key.
pub(super) fn folder(tmp_dir: &Path, key: &str, id: &str) -> StorageResult<PathBuf> {
    let missing = || StorageError::NotFound(key.to_string());
    if !valid_id(id) {
        return Err(missing());
    }
    let dir = uploads_dir(tmp_dir).join(id);
    let text = match fs::read(dir.join(UPLOAD_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(StorageError::other(e)),
    };
    let upload: Upload = serde_json::from_slice(&text).map_err(StorageError::other)?;
    if upload.key != key {
        return Err(missing());
    }
    Ok(dir)
}

pub(super) fn create(tmp_dir: &Path, key: &str, content_type: &str) -> io::Result<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = uploads_dir(tmp_dir).join(&id);
    fs::create_dir_all(&dir)?;
    let upload = Upload { key: key.to_string(), content_type: content_type.to_string() };
    fs::write(dir.join(UPLOAD_FILE), serde_json::to_vec(&upload).map_err(io::Error::other)?)?;
    Ok(id)
}

fn part_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{PART_PREFIX}{number:05}"))
}

fn part_info(number: u32, meta: &fs::Metadata) -> PartInfo {
    let etag = ETag::new(object_info(meta).etag.unwrap_or_default());
    PartInfo { number, size: meta.len(), etag }
}

/// Copies `source` into part `number`, replacing it atomically (a rename).
pub(super) fn put(dir: &Path, number: u32, source: &Path) -> io::Result<PartInfo> {
    let staged = dir.join(format!(".{PART_PREFIX}{number:05}-{}", uuid::Uuid::new_v4().simple()));
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&staged)?;
    io::copy(&mut File::open(source)?, &mut file)?;
    // A precise mtime: a rewritten part gets a new ETag, as the store's objects do.
    file.set_modified(std::time::SystemTime::now())?;
    file.sync_all()?;
    let meta = file.metadata()?;
    fs::rename(&staged, part_path(dir, number))?;
    Ok(part_info(number, &meta))
}

pub(super) fn list(dir: &Path) -> io::Result<Vec<PartInfo>> {
    let mut parts = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(number) = name.to_str().and_then(|n| n.strip_prefix(PART_PREFIX)).and_then(|n| n.parse().ok()) else {
            continue;
        };
        parts.push(part_info(number, &entry.metadata()?));
    }
    parts.sort_by_key(|p| p.number);
    Ok(parts)
}

/// Concatenates `parts` (each still with its ETag) into `into`; `Changed` when a part was
/// replaced or is missing.
pub(super) fn assemble(dir: &Path, key: &str, parts: &[PartInfo], into: &Path) -> StorageResult<()> {
    let mut out = File::create(into).map_err(StorageError::other)?;
    for part in parts {
        let path = part_path(dir, part.number);
        let mut file = File::open(&path).map_err(|_| StorageError::Changed(key.to_string()))?;
        let meta = file.metadata().map_err(StorageError::other)?;
        if part_info(part.number, &meta) != *part {
            return Err(StorageError::Changed(key.to_string()));
        }
        io::copy(&mut file, &mut out).map_err(StorageError::other)?;
    }
    out.sync_all().map_err(StorageError::other)
}

pub(super) fn remove(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes the uploads started more than `age` ago (by their `upload.json`); how many.
pub(super) fn sweep(tmp_dir: &Path, age: Duration) -> io::Result<usize> {
    let entries = match fs::read_dir(uploads_dir(tmp_dir)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        // A folder still being made has no upload.json yet: its own time counts.
        let started =
            fs::metadata(entry.path().join(UPLOAD_FILE)).or_else(|_| entry.metadata()).and_then(|m| m.modified());
        let abandoned = started.ok().and_then(|t| t.elapsed().ok()).is_some_and(|elapsed| elapsed >= age);
        if abandoned {
            remove(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
