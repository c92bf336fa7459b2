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
    async fn get_to_file(&self, key: &str, path: &Path) -> StorageResult<ObjectInfo>;

    /// Reads a small document; `None` when it does not exist.
    async fn get_bytes(&self, key: &str) -> StorageResult<Option<Vec<u8>>>;

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
