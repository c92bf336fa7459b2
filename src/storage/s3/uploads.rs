//! Client transfers on S3: presigned URLs for single uploads, downloads and parts; the API
//! only arranges them.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedPart;

use super::{S3Storage, as_i64, checked, no_such_upload, presigning, sdk_error, upload_error};
use crate::storage::etag::unquoted;
use crate::storage::{
    ClientUploads, Download, ETag, ObjectInfo, PartInfo, PresignedRequest, StorageError, StorageResult,
};

#[async_trait]
impl ClientUploads for S3Storage {
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        size: Option<u64>,
        expires: Duration,
    ) -> StorageResult<Option<PresignedRequest>> {
        checked(key)?;
        let presigned = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .set_content_length(size.map(as_i64))
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

    async fn open_download(&self, key: &str) -> StorageResult<Option<Download>> {
        checked(key)?;
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(sdk_error("get", key, e)),
        };
        let size = out.content_length.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        Ok(Some(Download { size, body: Box::new(out.body.into_async_read()) }))
    }

    async fn create_multipart(&self, key: &str, content_type: &str) -> StorageResult<String> {
        checked(key)?;
        self.create_upload(key, content_type).await
    }

    async fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        length: u64,
        expires: Duration,
    ) -> StorageResult<Option<PresignedRequest>> {
        checked(key)?;
        let presigned = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(i32::try_from(number).unwrap_or(i32::MAX))
            .content_length(as_i64(length))
            .presigned(presigning(expires)?)
            .await
            .map_err(|e| sdk_error("presign upload part", key, e))?;
        let headers = presigned.headers().map(|(name, value)| (name.to_string(), value.to_string())).collect();
        Ok(Some(PresignedRequest { method: presigned.method().to_string(), url: presigned.uri().to_string(), headers }))
    }

    async fn put_part(&self, key: &str, upload_id: &str, number: u32, path: &Path) -> StorageResult<PartInfo> {
        checked(key)?;
        let size = tokio::fs::metadata(path).await.map_err(StorageError::other)?.len();
        let body = ByteStream::from_path(path).await.map_err(StorageError::other)?;
        let etag = self.send_part(key, upload_id, i32::try_from(number).unwrap_or(i32::MAX), body, size).await?;
        Ok(PartInfo { number, size, etag: ETag::new(etag.unwrap_or_default()) })
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> StorageResult<Vec<PartInfo>> {
        checked(key)?;
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(|e| upload_error("list parts", key, e))?;
            for part in page.parts() {
                parts.push(PartInfo {
                    number: part.part_number().and_then(|n| u32::try_from(n).ok()).unwrap_or_default(),
                    size: part.size().and_then(|n| u64::try_from(n).ok()).unwrap_or_default(),
                    etag: ETag::new(part.e_tag().unwrap_or_default()),
                });
            }
            match (page.is_truncated(), page.next_part_number_marker()) {
                (Some(true), Some(next)) => marker = Some(next.to_string()),
                _ => break,
            }
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[PartInfo]) -> StorageResult<ObjectInfo> {
        checked(key)?;
        let completed: Vec<CompletedPart> = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(i32::try_from(p.number).unwrap_or(i32::MAX))
                    .e_tag(p.etag.quoted())
                    .build()
            })
            .collect();
        let out = self
            .complete_upload(key, upload_id, completed)
            .await
            .map_err(|e| upload_error("complete multipart upload", key, e))?;
        Ok(ObjectInfo { size: parts.iter().map(|p| p.size).sum(), etag: out.e_tag.map(unquoted) })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StorageResult<()> {
        checked(key)?;
        match self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(upload_id).send().await {
            Ok(_) => Ok(()),
            Err(e) if no_such_upload(&e) => Ok(()),
            Err(e) => Err(sdk_error("abort multipart upload", key, e)),
        }
    }
}
