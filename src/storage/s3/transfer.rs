//! Streaming large objects: multipart writes that abort when abandoned, and downloads that
//! resume where they broke off, on the same version.

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::operation::abort_multipart_upload::builders::AbortMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::complete_multipart_upload::{CompleteMultipartUploadError, CompleteMultipartUploadOutput};
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::byte_stream::Length;
use tokio::io::AsyncWriteExt;

use super::{
    COMPLETE_TIMEOUT, MAX_RESUMES, OWN_PART_SIZE_FLOOR, S3Storage, as_i64, content_length, get_error, sdk_error,
    transfer_config, upload_error,
};
use crate::storage::etag::unquoted;
use crate::storage::multipart::MAX_PARTS;
use crate::storage::{ETag, ObjectInfo, Pin, StorageError, StorageResult};

impl S3Storage {
    /// Starts a multipart upload; its id.
    pub(super) async fn create_upload(&self, key: &str, content_type: &str) -> StorageResult<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| sdk_error("create multipart upload", key, e))?;
        Ok(created.upload_id.ok_or_else(|| anyhow::anyhow!("S3 returned no upload id for {key}"))?)
    }

    pub(super) async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        content_type: &str,
    ) -> StorageResult<ObjectInfo> {
        let upload_id = self.create_upload(key, content_type).await?;
        // From here on every way out (error, failed completion, this future being dropped)
        // aborts the upload, unless it completed.
        let pending = PendingUpload::new(&self.client, &self.bucket, key, &upload_id);
        let parts = match self.upload_parts(key, path, size, &upload_id).await {
            Ok(parts) => parts,
            Err(err) => {
                pending.abort().await;
                return Err(err);
            }
        };
        match self.complete_upload(key, &upload_id, parts).await {
            Ok(out) => {
                pending.completed();
                Ok(ObjectInfo { size, etag: out.e_tag.map(unquoted) })
            }
            Err(e) => {
                // Aborting an upload that did complete after all fails harmlessly (NoSuchUpload).
                pending.abort().await;
                Err(sdk_error("complete multipart upload", key, e))
            }
        }
    }

    /// CompleteMultipartUpload of these parts.
    pub(super) async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<CompleteMultipartUploadOutput, SdkError<CompleteMultipartUploadError, HttpResponse>> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .customize()
            // S3 may take minutes to assemble a large object; a small call's timeout would
            // retry a completion that is still under way.
            .config_override(
                aws_sdk_s3::config::Builder::default().timeout_config(
                    TimeoutConfig::builder()
                        .operation_attempt_timeout(COMPLETE_TIMEOUT)
                        .operation_timeout(COMPLETE_TIMEOUT * 2)
                        .build(),
                ),
            )
            .send()
            .await
    }

    /// UploadPart of `length` bytes; the part's ETag as S3 gives it (quoted).
    pub(super) async fn send_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: ByteStream,
        length: u64,
    ) -> StorageResult<Option<String>> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(as_i64(length))
            .body(body)
            .customize()
            .config_override(transfer_config(length))
            .send()
            .await
            .map_err(|e| upload_error("upload part", key, e))?;
        Ok(out.e_tag)
    }

    /// Streams each part straight from the file: memory stays at one part's buffers.
    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> StorageResult<Vec<CompletedPart>> {
        let part_size = size.div_ceil(u64::from(MAX_PARTS)).max(OWN_PART_SIZE_FLOOR).next_multiple_of(1 << 20);
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
            let etag = self.send_part(key, upload_id, number, body, length).await?;
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(etag).build());
            offset += length;
            number += 1;
        }
        Ok(parts)
    }

    /// A GetObject for `key`, conditional on `etag` (If-Match) and of `version_id` when given,
    /// from byte `from` on when given.
    pub(super) async fn get_object(
        &self,
        key: &str,
        etag: Option<&str>,
        version_id: Option<&str>,
        from: Option<u64>,
    ) -> Result<GetObjectOutput, SdkError<GetObjectError>> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_match(etag.map(|etag| ETag::new(etag).quoted()))
            .set_version_id(version_id.map(str::to_string))
            .set_range(from.map(|n| format!("bytes={n}-")))
            .send()
            .await
    }

    /// Streams a GetObject response into `file`, resuming (same ETag, from the first missing
    /// byte) when the body breaks off; returns the size, checked against the object's length.
    pub(super) async fn stream_to_file(
        &self,
        key: &str,
        first: GetObjectOutput,
        pin: &Pin,
        file: &mut tokio::fs::File,
    ) -> StorageResult<u64> {
        let total = content_length(key, first.content_length)?;
        // Resumed reads must see the bytes the first one saw, or splice two versions.
        let etag = first.e_tag.clone().map(unquoted);
        let mut body = first.body;
        let mut written = 0u64;
        let mut resumes = 0u32;
        loop {
            let broken = match body.try_next().await {
                Ok(Some(chunk)) => {
                    written += chunk.len() as u64;
                    if written > total {
                        return Err(StorageError::other(anyhow::anyhow!(
                            "read `{key}`: more than the {total} bytes announced"
                        )));
                    }
                    file.write_all(&chunk).await.map_err(StorageError::other)?;
                    continue;
                }
                Ok(None) if written == total => return Ok(written),
                Ok(None) => anyhow::anyhow!("the body ended after {written} of {total} bytes"),
                // All bytes are in: a failure after the last one loses nothing.
                Err(_) if written == total => return Ok(written),
                Err(e) => anyhow::Error::new(e),
            };
            resumes += 1;
            if resumes > MAX_RESUMES {
                return Err(StorageError::Other(
                    broken.context(format!("read `{key}`: gave up after {MAX_RESUMES} resumptions")),
                ));
            }
            let Some(etag) = etag.as_deref() else {
                return Err(StorageError::Other(
                    broken.context(format!("read `{key}`: cannot resume a download without an ETag")),
                ));
            };
            tracing::warn!(key, written, total, resumes, error = %broken, "Download broke off; resuming.");
            tokio::time::sleep(Duration::from_millis(200) * resumes).await;
            let out = self
                .get_object(key, Some(etag), pin.version_id.as_deref(), Some(written))
                .await
                .map_err(|e| get_error(key, true, e))?;
            let rest = content_length(key, out.content_length)?;
            if rest != total - written {
                return Err(StorageError::other(anyhow::anyhow!(
                    "read `{key}`: resuming at byte {written} of {total} returned {rest} bytes"
                )));
            }
            body = out.body;
        }
    }
}

/// Aborts a multipart upload unless told it completed: abandoned parts are billed until aborted
/// (the bucket lifecycle rule is only a backstop).
struct PendingUpload {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl PendingUpload {
    fn new(client: &Client, bucket: &str, key: &str, upload_id: &str) -> Self {
        Self {
            client: client.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            armed: true,
        }
    }

    fn request(&self) -> AbortMultipartUploadFluentBuilder {
        self.client.abort_multipart_upload().bucket(&self.bucket).key(&self.key).upload_id(&self.upload_id)
    }

    /// Aborts now. Stays armed until the request returns, so dropping this mid-way still aborts.
    async fn abort(mut self) {
        let result = self.request().send().await;
        self.armed = false;
        if let Err(e) = result {
            tracing::warn!(key = self.key, error = %DisplayErrorContext(e), "Aborting a multipart upload failed.");
        }
    }

    fn completed(mut self) {
        self.armed = false;
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let request = self.request();
        let key = std::mem::take(&mut self.key);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = request.send().await {
                        tracing::warn!(key, error = %DisplayErrorContext(e), "Aborting a dropped multipart upload failed.");
                    }
                });
            }
            Err(_) => tracing::warn!(key, "A dropped multipart upload was left to the bucket lifecycle rule."),
        }
    }
}
