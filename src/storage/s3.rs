//! [`Storage`] on Amazon S3 (or any S3-compatible store).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::byte_stream::Length;
use tokio::io::AsyncWriteExt;

use super::{ObjectInfo, PresignedRequest, Storage, StorageError, StorageResult};
use crate::domain::keys::validate_key;

/// S3 allows at most this many parts per upload.
const MAX_PARTS: u64 = 10_000;
/// Parts are at least this large (S3's minimum is 5 MiB).
const MIN_PART_SIZE: u64 = 16 << 20;

pub struct S3Storage {
    client: Client,
    bucket: String,
    /// Files at least this large go up in parts, so outputs above 5 GiB work and a failed part
    /// is retried alone.
    multipart_threshold: u64,
}

impl S3Storage {
    pub fn new(client: Client, bucket: &str, multipart_threshold: u64) -> Self {
        Self { client, bucket: bucket.to_string(), multipart_threshold: multipart_threshold.max(MIN_PART_SIZE) }
    }

    async fn put_multipart(&self, key: &str, path: &Path, size: u64, content_type: &str) -> StorageResult<ObjectInfo> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| sdk_error("create multipart upload", key, e))?;
        let upload_id = created.upload_id.ok_or_else(|| anyhow::anyhow!("S3 returned no upload id for {key}"))?;
        let result = self.upload_parts(key, path, size, &upload_id).await;
        match result {
            Ok(parts) => {
                let out = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                    .send()
                    .await
                    .map_err(|e| sdk_error("complete multipart upload", key, e))?;
                Ok(ObjectInfo { size, etag: out.e_tag.map(unquote) })
            }
            Err(err) => {
                // Abandoned parts cost money until aborted (the bucket lifecycle rule is a backstop).
                let abort = self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(&upload_id);
                if let Err(e) = abort.send().await {
                    tracing::warn!(key, error = %DisplayErrorContext(e), "Aborting a failed multipart upload failed.");
                }
                Err(err)
            }
        }
    }

    /// Streams each part straight from the file: memory stays at one part's buffers.
    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> StorageResult<Vec<CompletedPart>> {
        let part_size = size.div_ceil(MAX_PARTS).max(MIN_PART_SIZE).next_multiple_of(1 << 20);
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let length = part_size.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(length))
                .build()
                .await
                .map_err(StorageError::other)?;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(i64::try_from(length).unwrap_or(i64::MAX))
                .body(body)
                .send()
                .await
                .map_err(|e| sdk_error("upload part", key, e))?;
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag).build());
            offset += length;
            number += 1;
        }
        Ok(parts)
    }
}

fn unquote(etag: String) -> String {
    etag.trim_matches('"').to_string()
}

fn checked(key: &str) -> StorageResult<()> {
    validate_key(key).map_err(|reason| StorageError::InvalidKey { key: key.to_string(), reason })
}

/// SigV4 presigned URLs live at most a week.
fn presigning(expires: Duration) -> StorageResult<PresigningConfig> {
    PresigningConfig::expires_in(expires).map_err(|e| StorageError::other(anyhow::anyhow!("presigning: {e}")))
}

fn sdk_error<E>(action: &str, key: &str, err: E) -> StorageError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StorageError::Other(anyhow::anyhow!("S3 {action} `{key}`: {}", DisplayErrorContext(err)))
}

#[async_trait]
impl Storage for S3Storage {
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
            .send()
            .await
            .map_err(|e| sdk_error("put", key, e))?;
        Ok(ObjectInfo { size, etag: out.e_tag.map(unquote) })
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

    async fn get_to_file(&self, key: &str, path: &Path) -> StorageResult<ObjectInfo> {
        checked(key)?;
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StorageError::NotFound(key.to_string()));
            }
            Err(e) => return Err(sdk_error("get", key, e)),
        };
        let etag = out.e_tag.clone().map(unquote);
        let mut body = out.body;
        let mut file = tokio::fs::File::create(path).await.map_err(StorageError::other)?;
        let mut size = 0u64;
        while let Some(chunk) =
            body.try_next().await.map_err(|e| StorageError::other(anyhow::anyhow!("read `{key}`: {e}")))?
        {
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(StorageError::other)?;
        }
        file.flush().await.map_err(StorageError::other)?;
        file.sync_all().await.map_err(StorageError::other)?;
        Ok(ObjectInfo { size, etag })
    }

    async fn get_bytes(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        checked(key)?;
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(sdk_error("get", key, e)),
        };
        let bytes = out.body.collect().await.map_err(|e| StorageError::other(anyhow::anyhow!("read `{key}`: {e}")))?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectInfo>> {
        checked(key)?;
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(ObjectInfo {
                size: out.content_length.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                etag: out.e_tag.map(unquote),
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

    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        expires: Duration,
    ) -> StorageResult<Option<PresignedRequest>> {
        checked(key)?;
        let presigned = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .presigned(presigning(expires)?)
            .await
            .map_err(|e| sdk_error("presign put", key, e))?;
        let mut headers: Vec<(String, String)> =
            presigned.headers().map(|(name, value)| (name.to_string(), value.to_string())).collect();
        // The content type is signed: S3 refuses the PUT unless the client sends the same one.
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
            headers.push(("content-type".to_string(), content_type.to_string()));
        }
        Ok(Some(PresignedRequest { method: presigned.method().to_string(), url: presigned.uri().to_string(), headers }))
    }

    async fn presign_get(&self, key: &str, expires: Duration) -> StorageResult<Option<String>> {
        checked(key)?;
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning(expires)?)
            .await
            .map_err(|e| sdk_error("presign get", key, e))?;
        Ok(Some(presigned.uri().to_string()))
    }
}
