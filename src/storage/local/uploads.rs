//! Client transfers on the local backend: no URLs of its own (the API serves uploads and
//! downloads itself), and multipart uploads kept as [`super::parts`] lays them out.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use super::files::open_object;
use super::{LocalStorage, Source, blocking, checked, io_error, parts};
use crate::storage::{ClientUploads, Download, ObjectInfo, PartInfo, PresignedRequest, StorageError, StorageResult};

#[async_trait]
impl ClientUploads for LocalStorage {
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

    async fn open_download(&self, key: &str) -> StorageResult<Option<Download>> {
        let path = self.object_path(key)?;
        let key = key.to_string();
        let opened = blocking(move || open_object(&path).map_err(|e| io_error("open", &key, e))).await?;
        Ok(opened.map(|(file, meta)| Download { size: meta.len(), body: Box::new(tokio::fs::File::from_std(file)) }))
    }

    async fn create_multipart(&self, key: &str, content_type: &str) -> StorageResult<String> {
        checked(key)?;
        let (tmp_dir, key, content_type) = (self.tmp_dir(), key.to_string(), content_type.to_string());
        blocking(move || parts::create(&tmp_dir, &key, &content_type).map_err(|e| io_error("create upload", &key, e)))
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
            (self.tmp_dir(), key.to_string(), upload_id.to_string(), path.to_path_buf());
        blocking(move || {
            let dir = parts::folder(&tmp_dir, &key, &upload_id)?;
            parts::put(&dir, number, &path).map_err(|e| io_error("store part", &key, e))
        })
        .await
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> StorageResult<Vec<PartInfo>> {
        checked(key)?;
        let (tmp_dir, key, upload_id) = (self.tmp_dir(), key.to_string(), upload_id.to_string());
        blocking(move || {
            let dir = parts::folder(&tmp_dir, &key, &upload_id)?;
            parts::list(&dir).map_err(|e| io_error("list parts", &key, e))
        })
        .await
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[PartInfo]) -> StorageResult<ObjectInfo> {
        checked(key)?;
        let tmp_dir = self.tmp_dir();
        let assembled = tmp_dir.join(format!("assembled-{}", uuid::Uuid::new_v4().simple()));
        let dir = {
            let (tmp_dir, key, upload_id, parts, assembled) =
                (tmp_dir.clone(), key.to_string(), upload_id.to_string(), parts.to_vec(), assembled.clone());
            blocking(move || {
                let dir = parts::folder(&tmp_dir, &key, &upload_id)?;
                parts::assemble(&dir, &key, &parts, &assembled)?;
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
        blocking(move || parts::remove(&dir).map_err(|e| io_error("remove parts", &key, e))).await?;
        Ok(info)
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StorageResult<()> {
        checked(key)?;
        let (tmp_dir, key, upload_id) = (self.tmp_dir(), key.to_string(), upload_id.to_string());
        blocking(move || match parts::folder(&tmp_dir, &key, &upload_id) {
            Ok(dir) => parts::remove(&dir).map_err(|e| io_error("abort upload", &key, e)),
            Err(StorageError::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        })
        .await
    }

    async fn sweep_multipart(&self, age: Duration) -> StorageResult<usize> {
        let tmp_dir = self.tmp_dir();
        blocking(move || parts::sweep(&tmp_dir, age).map_err(|e| io_error("sweep uploads", "multipart", e))).await
    }
}
