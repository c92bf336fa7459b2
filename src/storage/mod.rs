//! The narrow object-store interface the worker needs, with S3 and local-disk implementations.
//!
//! Objects move between storage and local files by streaming: no implementation holds a whole
//! media file in memory. Small JSON documents (status, manifests) use the byte helpers.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::keys::KeyError;

pub mod local;
pub mod s3;

/// What a store says of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// Content identity (S3's ETag, or a digest on the local backend), without quotes.
    pub etag: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object `{0}` does not exist")]
    NotFound(String),
    /// The object is no longer the version a read was pinned to (it was replaced or deleted).
    #[error("object `{0}` changed: it is no longer the version this read was pinned to")]
    Changed(String),
    #[error("key `{key}` refused: {reason}")]
    InvalidKey { key: String, reason: KeyError },
    /// Network, permission, disk: worth retrying.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl StorageError {
    pub fn other(err: impl Into<anyhow::Error>) -> Self {
        StorageError::Other(err.into())
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// A small document and the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub bytes: Vec<u8>,
    /// The version tag to pass to [`Precondition::Matches`] to replace exactly this version.
    pub etag: String,
}

/// The condition a conditional write ([`Storage::put_if`]) must meet to take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition<'a> {
    /// Only if no object exists at the key (S3 `If-None-Match: *`).
    Absent,
    /// Only if the stored object is still this version (S3 `If-Match: <etag>`).
    Matches(&'a str),
}

/// What a conditional write did. A lost race is an ordinary outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written; the new version's tag.
    Written { etag: String },
    /// The condition did not hold (another writer got there first): nothing was written.
    Conflict,
}

/// Which version of an object a read must see. Empty: whatever is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pin {
    /// The ETag (without quotes) the object must still have.
    pub etag: Option<String>,
    /// The S3 version id to read (versioned buckets); it stays readable after an overwrite.
    pub version_id: Option<String>,
}

/// A request anyone holding it can make, without credentials, until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedRequest {
    pub method: String,
    pub url: String,
    /// Headers the client must send exactly as given: they are part of the signature.
    pub headers: Vec<(String, String)>,
}

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Streams a local file into the store.
    async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> StorageResult<ObjectInfo>;

    /// Stores a small document.
    async fn put_bytes(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> StorageResult<()>;

    /// Streams an object into a local file, replacing it.
    async fn get_to_file(&self, key: &str, path: &Path) -> StorageResult<ObjectInfo> {
        self.get_pinned_to_file(key, path, &Pin::default()).await
    }

    /// Streams exactly the pinned version of an object into a local file, replacing it; fails
    /// with [`StorageError::Changed`] when the stored object is no longer that version. A
    /// transfer that stalls is resumed where it stopped (same version), not restarted.
    async fn get_pinned_to_file(&self, key: &str, path: &Path, pin: &Pin) -> StorageResult<ObjectInfo>;

    /// Reads a small document with its version tag; `None` when it does not exist.
    async fn get_versioned(&self, key: &str) -> StorageResult<Option<Versioned>>;

    /// Stores a small document only if `condition` holds, atomically with the check: the
    /// compare-and-swap every job state change goes through.
    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        condition: Precondition<'_>,
    ) -> StorageResult<CasOutcome>;

    /// Reads a small document; `None` when it does not exist.
    async fn get_bytes(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        Ok(self.get_versioned(key).await?.map(|found| found.bytes))
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectInfo>>;

    /// Keys under a prefix, in lexical order.
    async fn list(&self, prefix: &str) -> StorageResult<Vec<String>>;

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> StorageResult<()>;

    /// A URL a client can PUT one object to directly, with `content_type` bound into the
    /// signature; `None` when the store has no such URLs (the API then serves the upload).
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        expires: Duration,
    ) -> StorageResult<Option<PresignedRequest>>;

    /// A URL a client can download an object from directly; `None` as for [`Self::presign_put`].
    async fn presign_get(&self, key: &str, expires: Duration) -> StorageResult<Option<String>>;
}
