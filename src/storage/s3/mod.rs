//! [`ObjectStore`] and [`ClientUploads`] on Amazon S3 (or any S3-compatible store).
//!
//! Layout: this file holds the store and the mapping of S3's answers; `transfer` the
//! streaming of large objects (multipart writes, resumable reads), `objects` and `uploads`
//! the two interfaces.
//!
//! [`ObjectStore`]: super::ObjectStore
//! [`ClientUploads`]: super::ClientUploads

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::presigning::PresigningConfig;

use super::{ObjectKey, StorageError, StorageResult};

mod objects;
#[cfg(test)]
mod tests;
mod transfer;
mod uploads;

/// The part size floor of the store's own multipart writes (S3's minimum, for anyone's
/// uploads, is [`super::multipart::MIN_PART_SIZE`]): larger parts, fewer requests. Also the
/// smallest multipart threshold.
pub const OWN_PART_SIZE_FLOOR: u64 = 16 << 20;
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
        Self { client, bucket: bucket.to_string(), multipart_threshold: multipart_threshold.max(OWN_PART_SIZE_FLOOR) }
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

/// S3 copies inside a region at tens of MB/s; a copy slower than this floor has stalled.
const COPY_FLOOR_RATE: u64 = 4 << 20;

/// Timeouts for a storage-side copy of `bytes`: the client's 10 s attempt timeout is too short
/// for a large object, which S3 copies before it answers.
fn copy_config(bytes: u64) -> aws_sdk_s3::config::Builder {
    let attempt = TRANSFER_BASE_TIMEOUT + Duration::from_secs(bytes.div_ceil(COPY_FLOOR_RATE));
    let timeouts = TimeoutConfig::builder().operation_attempt_timeout(attempt).operation_timeout(attempt * 3).build();
    aws_sdk_s3::config::Builder::default().timeout_config(timeouts)
}

/// CopyObject's `x-amz-copy-source`: the bucket and the key, URL-encoded (the key's `/` kept).
fn copy_source(bucket: &str, key: &str) -> String {
    const KEY: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    format!("{bucket}/{}", percent_encoding::utf8_percent_encode(key, KEY))
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

/// The key checks every store applies.
fn checked(key: &str) -> StorageResult<ObjectKey> {
    ObjectKey::parse(key)
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
