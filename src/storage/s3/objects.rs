//! The objects on S3.

use std::path::Path;

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use tokio::io::AsyncWriteExt;

use super::{S3Storage, checked, copy_config, copy_source, get_error, sdk_error, status, transfer_config};
use crate::storage::etag::unquoted;
use crate::storage::{
    CasOutcome, ETag, ObjectInfo, ObjectStore, Pin, Precondition, StorageError, StorageResult, Versioned,
};

/// The largest object one CopyObject copies.
const MAX_COPY_SIZE: u64 = 5 << 30;

#[async_trait]
impl ObjectStore for S3Storage {
    async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> StorageResult<ObjectInfo> {
        checked(key)?;
        let size = tokio::fs::metadata(path).await.map_err(StorageError::other)?.len();
        if size >= self.multipart_threshold {
            return self.put_multipart(key, path, size, content_type).await;
        }
        let body = ByteStream::from_path(path).await.map_err(StorageError::other)?;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .customize()
            .config_override(transfer_config(size))
            .send()
            .await
            .map_err(|e| sdk_error("put", key, e))?;
        Ok(ObjectInfo { size, etag: out.e_tag.map(unquoted) })
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> StorageResult<()> {
        checked(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| sdk_error("put", key, e))?;
        Ok(())
    }

    async fn get_pinned_to_file(&self, key: &str, path: &Path, pin: &Pin) -> StorageResult<ObjectInfo> {
        checked(key)?;
        let pinned = pin.etag.is_some() || pin.version_id.is_some();
        let first = self
            .get_object(key, pin.etag.as_deref(), pin.version_id.as_deref(), None)
            .await
            .map_err(|e| get_error(key, pinned, e))?;
        let etag = first.e_tag.clone().map(unquoted);
        let mut file = tokio::fs::File::create(path).await.map_err(StorageError::other)?;
        let result = async {
            let size = self.stream_to_file(key, first, pin, &mut file).await?;
            // Flushed, not synced: downloads land in scratch space, which a crash discards.
            file.flush().await.map_err(StorageError::other)?;
            Ok(size)
        }
        .await;
        match result {
            Ok(size) => Ok(ObjectInfo { size, etag }),
            Err(err) => {
                // A partial file must not pass for the object.
                drop(file);
                if let Err(e) = tokio::fs::remove_file(path).await {
                    tracing::debug!(path = %path.display(), error = %e, "Removing a partial download failed.");
                }
                Err(err)
            }
        }
    }

    async fn get_versioned(&self, key: &str) -> StorageResult<Option<Versioned>> {
        checked(key)?;
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(sdk_error("get", key, e)),
        };
        let etag = out
            .e_tag
            .clone()
            .map(unquoted)
            .ok_or_else(|| StorageError::other(anyhow::anyhow!("read `{key}`: S3 sent no ETag")))?;
        let bytes = out.body.collect().await.map_err(|e| StorageError::other(anyhow::anyhow!("read `{key}`: {e}")))?;
        Ok(Some(Versioned { bytes: bytes.into_bytes().to_vec(), etag }))
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        condition: Precondition<'_>,
    ) -> StorageResult<CasOutcome> {
        checked(key)?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes));
        let request = match condition {
            Precondition::Absent => request.if_none_match("*"),
            Precondition::Matches(etag) => request.if_match(ETag::new(etag).quoted()),
        };
        match request.send().await {
            Ok(out) => {
                let etag = out
                    .e_tag
                    .map(unquoted)
                    .ok_or_else(|| StorageError::other(anyhow::anyhow!("put `{key}`: S3 sent no ETag")))?;
                Ok(CasOutcome::Written { etag })
            }
            Err(e) => {
                // 412: the condition failed. 409: a concurrent conditional write won; S3 asks
                // to retry, which for a caller of a compare-and-swap means re-read first. 404
                // on If-Match: the version to replace was deleted.
                let lost = match status(&e) {
                    Some(412 | 409) => true,
                    Some(404) => {
                        matches!(condition, Precondition::Matches(_))
                            && e.as_service_error().and_then(|s| s.code()) == Some("NoSuchKey")
                    }
                    _ => false,
                };
                if lost { Ok(CasOutcome::Conflict) } else { Err(sdk_error("conditional put", key, e)) }
            }
        }
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectInfo>> {
        checked(key)?;
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(ObjectInfo {
                size: out.content_length.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                etag: out.e_tag.map(unquoted),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(sdk_error("head", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("list", prefix, e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key.clone()));
        }
        keys.sort();
        Ok(keys)
    }

    async fn copy(&self, from: &str, to: &str) -> StorageResult<ObjectInfo> {
        checked(from)?;
        checked(to)?;
        // The size, for the timeout and the caller, and a missing source told apart from a fault.
        let Some(source) = self.head(from).await? else { return Err(StorageError::NotFound(from.to_string())) };
        if source.size > MAX_COPY_SIZE {
            return Err(StorageError::other(anyhow::anyhow!(
                "copy `{from}`: {} bytes is more than one CopyObject copies",
                source.size
            )));
        }
        let out = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(copy_source(&self.bucket, from))
            .customize()
            .config_override(copy_config(source.size))
            .send()
            .await;
        match out {
            Ok(out) => {
                let etag = out.copy_object_result.and_then(|r| r.e_tag).map(unquoted);
                Ok(ObjectInfo { size: source.size, etag })
            }
            // Deleted between the look and the copy.
            Err(e) if status(&e) == Some(404) => Err(StorageError::NotFound(from.to_string())),
            Err(e) => Err(sdk_error("copy", from, e)),
        }
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        checked(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error("delete", key, e))?;
        Ok(())
    }
}
