//! [`Storage`] on Amazon S3 (or any S3-compatible store).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::abort_multipart_upload::builders::AbortMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::complete_multipart_upload::{CompleteMultipartUploadError, CompleteMultipartUploadOutput};
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::byte_stream::Length;
use tokio::io::AsyncWriteExt;

use super::{
    CasOutcome, ObjectInfo, PartInfo, Pin, Precondition, PresignedRequest, Storage, StorageError, StorageResult,
    Versioned,
};
use crate::domain::keys::validate_key;

/// S3 allows at most this many parts per upload.
const MAX_PARTS: u64 = 10_000;
/// Parts are at least this large (S3's minimum is 5 MiB).
const MIN_PART_SIZE: u64 = 16 << 20;
/// The slowest link a transfer must still get through: a request sending `n` bytes may take
/// `n / TRANSFER_FLOOR_RATE` seconds on top of [`TRANSFER_BASE_TIMEOUT`].
const TRANSFER_FLOOR_RATE: u64 = 256 << 10;
const TRANSFER_BASE_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a download whose body breaks is resumed before it fails.
const MAX_RESUMES: u32 = 5;

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
        let upload_id = self.create_multipart(key, content_type).await?;
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
                Ok(ObjectInfo { size, etag: out.e_tag.map(unquote) })
            }
            Err(e) => {
                // Aborting an upload that did complete after all fails harmlessly (NoSuchUpload).
                pending.abort().await;
                Err(sdk_error("complete multipart upload", key, e))
            }
        }
    }

    /// CompleteMultipartUpload of these parts.
    async fn complete_upload(
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
    async fn send_part(
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
            let etag = self.send_part(key, upload_id, number, body, length).await?;
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(etag).build());
            offset += length;
            number += 1;
        }
        Ok(parts)
    }

    /// A GetObject for `key`, conditional on `etag` (If-Match) and of `version_id` when given,
    /// from byte `from` on when given.
    async fn get_object(
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
            .set_if_match(etag.map(quote))
            .set_version_id(version_id.map(str::to_string))
            .set_range(from.map(|n| format!("bytes={n}-")))
            .send()
            .await
    }

    /// Streams a GetObject response into `file`, resuming (same ETag, from the first missing
    /// byte) when the body breaks off; returns the size, checked against the object's length.
    async fn stream_to_file(
        &self,
        key: &str,
        first: GetObjectOutput,
        pin: &Pin,
        file: &mut tokio::fs::File,
    ) -> StorageResult<u64> {
        let total = content_length(key, first.content_length)?;
        // Resumed reads must see the bytes the first one saw, or splice two versions.
        let etag = first.e_tag.clone().map(unquote);
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

/// Per-request timeouts for sending `bytes`: the client's 10 s attempt timeout would kill a
/// large part on a slow link. A body that stops moving is failed sooner by stalled-stream
/// protection; these bound one that merely crawls below the floor rate.
/// Longest one try of CompleteMultipartUpload may take.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(300);

fn transfer_timeouts(bytes: u64) -> TimeoutConfig {
    let attempt = TRANSFER_BASE_TIMEOUT + Duration::from_secs(bytes.div_ceil(TRANSFER_FLOOR_RATE));
    TimeoutConfig::builder().operation_attempt_timeout(attempt).operation_timeout(attempt * 3).build()
}

/// A config override carrying [`transfer_timeouts`]; the client's other timeouts still apply.
fn transfer_config(bytes: u64) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(transfer_timeouts(bytes))
}

/// Maps a failed GetObject: a `pinned` read whose version is gone or replaced is `Changed`.
fn get_error(key: &str, pinned: bool, err: SdkError<GetObjectError>) -> StorageError {
    if status(&err) == Some(412) {
        return StorageError::Changed(key.to_string());
    }
    let missing = err.as_service_error().is_some_and(|e| e.is_no_such_key() || e.code() == Some("NoSuchVersion"));
    match (missing, pinned) {
        (true, true) => StorageError::Changed(key.to_string()),
        (true, false) => StorageError::NotFound(key.to_string()),
        (false, _) => sdk_error("get", key, err),
    }
}

fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

fn content_length(key: &str, length: Option<i64>) -> StorageResult<u64> {
    length
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| StorageError::other(anyhow::anyhow!("read `{key}`: S3 sent no content length")))
}

fn quote(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
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

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// S3 says the multipart upload is gone (completed, aborted, expired) or never was.
fn no_such_upload<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    err.as_service_error().and_then(ProvideErrorMetadata::code) == Some("NoSuchUpload") || status(err) == Some(404)
}

/// A failed call on a multipart upload: [`StorageError::NotFound`] when the upload is gone.
fn upload_error<E>(action: &str, key: &str, err: SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if no_such_upload(&err) { StorageError::NotFound(key.to_string()) } else { sdk_error(action, key, err) }
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
            .customize()
            .config_override(transfer_config(size))
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

    async fn get_pinned_to_file(&self, key: &str, path: &Path, pin: &Pin) -> StorageResult<ObjectInfo> {
        checked(key)?;
        let pinned = pin.etag.is_some() || pin.version_id.is_some();
        let first = self
            .get_object(key, pin.etag.as_deref(), pin.version_id.as_deref(), None)
            .await
            .map_err(|e| get_error(key, pinned, e))?;
        let etag = first.e_tag.clone().map(unquote);
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
            .map(unquote)
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
            Precondition::Matches(etag) => request.if_match(quote(etag)),
        };
        match request.send().await {
            Ok(out) => {
                let etag = out
                    .e_tag
                    .map(unquote)
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

    async fn create_multipart(&self, key: &str, content_type: &str) -> StorageResult<String> {
        checked(key)?;
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
        Ok(PartInfo { number, size, etag: etag.map(unquote).unwrap_or_default() })
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
                    etag: part.e_tag().map(|e| unquote(e.to_string())).unwrap_or_default(),
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
                    .e_tag(quote(&p.etag))
                    .build()
            })
            .collect();
        let out = self
            .complete_upload(key, upload_id, completed)
            .await
            .map_err(|e| upload_error("complete multipart upload", key, e))?;
        Ok(ObjectInfo { size: parts.iter().map(|p| p.size).sum(), etag: out.e_tag.map(unquote) })
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn transfer_timeouts_scale_with_the_bytes_sent() {
        let small = transfer_timeouts(0);
        assert_eq!(small.operation_attempt_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(small.operation_timeout(), Some(Duration::from_secs(90)));
        // 64 MiB at 256 KiB/s is 256 s.
        let part = transfer_timeouts(64 << 20);
        assert_eq!(part.operation_attempt_timeout(), Some(Duration::from_secs(30 + 256)));
        assert_eq!(part.operation_timeout(), Some(Duration::from_secs(3 * (30 + 256))));
        // A partial second still counts, and the connect timeout is left to the client.
        assert_eq!(transfer_timeouts(1).operation_attempt_timeout(), Some(Duration::from_secs(31)));
        assert_eq!(part.connect_timeout(), None);
    }

    /// Each request's `(range, if-match)` headers.
    type Requests = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

    /// A fake S3 serving one object (ETag `v<generation>`). The first `breaks` responses send half
    /// of what they announce and hang up; after `replace_after` requests the object is replaced.
    struct FlakyServer {
        endpoint: String,
        requests: Requests,
    }

    async fn flaky_server(data: Vec<u8>, breaks: usize, replace_after: usize) -> FlakyServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let header = |name: &str| {
                    head.lines().find_map(|line| {
                        let (n, v) = line.split_once(':')?;
                        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                };
                let (range, if_match) = (header("range"), header("if-match"));
                let count = {
                    let mut log = log.lock().unwrap();
                    log.push((range.clone(), if_match.clone()));
                    log.len()
                };
                let etag = if count > replace_after { "\"v2\"" } else { "\"v1\"" };
                if if_match.as_deref().is_some_and(|m| m != etag) {
                    let body = "<Error><Code>PreconditionFailed</Code><Message>no</Message></Error>";
                    let response = format!(
                        "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/xml\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(response.as_bytes()).await.unwrap();
                    continue;
                }
                let from: usize = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.strip_suffix('-'))
                    .map_or(0, |n| n.parse().unwrap());
                let rest = &data[from..];
                let status = if range.is_some() { "206 Partial Content" } else { "200 OK" };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n\r\n",
                    rest.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
                let sent = if count <= breaks { rest.len() / 2 } else { rest.len() };
                socket.write_all(&rest[..sent]).await.unwrap();
                // Dropping the socket hangs up, mid-body when `sent` is short.
            }
        });
        FlakyServer { endpoint, requests }
    }

    fn store(endpoint: &str) -> S3Storage {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .force_path_style(true)
            .build();
        S3Storage::new(Client::from_conf(config), "bucket", 0)
    }

    fn data() -> Vec<u8> {
        (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
    }

    #[tokio::test]
    async fn a_broken_download_resumes_on_the_same_version() {
        let data = data();
        let server = flaky_server(data.clone(), 2, usize::MAX).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let info = store(&server.endpoint).get_to_file("uploads/a.mp4", &path).await.unwrap();
        assert_eq!(info, ObjectInfo { size: data.len() as u64, etag: Some("v1".into()) });
        assert!(std::fs::read(&path).unwrap() == data, "the resumed download differs");
        let requests = server.requests.lock().unwrap().clone();
        let (half, quarter) = (data.len() / 2, data.len() / 2 + (data.len() - data.len() / 2) / 2);
        assert_eq!(
            requests,
            [
                (None, None),
                (Some(format!("bytes={half}-")), Some("\"v1\"".into())),
                (Some(format!("bytes={quarter}-")), Some("\"v1\"".into())),
            ]
        );
    }

    #[tokio::test]
    async fn a_download_gives_up_after_five_resumptions() {
        let server = flaky_server(data(), usize::MAX, usize::MAX).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let err = store(&server.endpoint).get_to_file("uploads/a.mp4", &path).await.unwrap_err();
        assert!(matches!(err, StorageError::Other(_)), "{err:?}");
        assert_eq!(server.requests.lock().unwrap().len(), 1 + MAX_RESUMES as usize);
        assert!(!path.exists(), "a partial download was left behind");
    }

    #[tokio::test]
    async fn a_download_whose_object_is_replaced_mid_way_is_changed() {
        let server = flaky_server(data(), 1, 1).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let err = store(&server.endpoint).get_to_file("uploads/a.mp4", &path).await.unwrap_err();
        assert!(matches!(&err, StorageError::Changed(k) if k == "uploads/a.mp4"), "{err:?}");
        assert!(!path.exists());
    }
}
