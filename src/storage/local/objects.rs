//! The local store's objects.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use async_trait::async_trait;

use super::files::{copy_to_file, delete_object, list_keys, open_object};
use super::{LocalStorage, Source, blocking, io_error, is_missing, object_info};
use crate::storage::{
    CasOutcome, ETag, ObjectInfo, ObjectStore, Pin, Precondition, StorageError, StorageResult, Versioned,
};

#[async_trait]
impl ObjectStore for LocalStorage {
    async fn put_file(&self, key: &str, path: &Path, _content_type: &str) -> StorageResult<ObjectInfo> {
        self.put(key, Source::File(path.to_path_buf())).await
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>, _content_type: &str) -> StorageResult<()> {
        self.put(key, Source::Bytes(bytes)).await.map(|_| ())
    }

    /// Objects have no versions here: the pin's version id is ignored, its ETag checked.
    async fn get_pinned_to_file(&self, key: &str, path: &Path, pin: &Pin) -> StorageResult<ObjectInfo> {
        let source = self.object_path(key)?;
        let (key, path, expected) = (key.to_string(), path.to_path_buf(), pin.etag.as_deref().map(ETag::new));
        blocking(move || {
            let Some((mut object, meta)) = open_object(&source).map_err(|e| io_error("read", &key, e))? else {
                return Err(if expected.is_some() { StorageError::Changed(key) } else { StorageError::NotFound(key) });
            };
            let info = object_info(&meta);
            if let Some(expected) = expected
                && !info.etag.as_deref().is_some_and(|etag| expected.matches(etag))
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

    /// A streamed copy into a new file (copy_file_range on Linux), written like any object.
    async fn copy(&self, from: &str, to: &str) -> StorageResult<ObjectInfo> {
        let source = self.object_path(from)?;
        if self.head(from).await?.is_none() {
            return Err(StorageError::NotFound(from.to_string()));
        }
        self.put(to, Source::File(source)).await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let path = self.object_path(key)?;
        let (root, key) = (self.root.clone(), key.to_string());
        blocking(move || delete_object(&root, &key, &path).map_err(|e| io_error("delete", &key, e))).await
    }
}
