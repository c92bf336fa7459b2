//! Object storage, as two interfaces: [`ObjectStore`], the objects the worker, the job store
//! and the notifier read and write, and [`ClientUploads`], the direct transfers the API hands
//! to clients (presigned URLs and multipart uploads). Each backend implements both, in its own
//! folder: [`s3`] on Amazon S3, [`local`] on a local folder.
//!
//! Objects move between storage and local files by streaming: no implementation holds a whole
//! media file in memory. Small JSON documents (status, manifests) use the byte helpers.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::keys::KeyError;

mod etag;
mod key;
pub mod local;
pub mod s3;

pub use etag::ETag;
pub use key::ObjectKey;

/// What a store says of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// Content identity (S3's ETag, or a digest on the local backend), bare as [`ETag`] keeps
    /// it: never quoted.
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

/// The condition a conditional write ([`ObjectStore::put_if`]) must meet to take effect.
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
    /// The ETag (quoted or not) the object must still have.
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

/// One part of a client's multipart upload, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// 1 to 10 000.
    pub number: u32,
    pub size: u64,
    pub etag: ETag,
}

/// S3's limits on a multipart upload, kept on both backends so a client behaves the same, and
/// followed by the S3 store's own multipart writes.
pub mod multipart {
    /// Parts per upload.
    pub const MAX_PARTS: u32 = 10_000;
    /// S3's rule: every part but the last is at least this large. (The S3 store's own uploads
    /// use larger parts: [`OWN_PART_SIZE_FLOOR`](super::s3::OWN_PART_SIZE_FLOOR).)
    pub const MIN_PART_SIZE: u64 = 5 << 20;
    /// No part is larger.
    pub const MAX_PART_SIZE: u64 = 5 << 30;
    /// The largest object a multipart upload makes.
    pub const MAX_OBJECT_SIZE: u64 = 5 << 40;
}

/// The objects themselves: what the worker, the job store and the notifier read and write.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
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

    /// Copies the object at `from` to `to`, replacing `to`, inside the store: its bytes never
    /// pass through this process (S3 CopyObject, objects up to 5 GiB; a kernel-side file copy on
    /// the local backend). [`StorageError::NotFound`] when nothing is stored at `from`.
    async fn copy(&self, from: &str, to: &str) -> StorageResult<ObjectInfo>;
}

/// An object opened for a client's download, streamed as it is sent.
pub struct Download {
    pub size: u64,
    pub body: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
}

/// Transfers between a client and the store that the API arranges: presigned URLs where the
/// store has them, and the API in the middle where it has not (the local backend).
#[async_trait]
pub trait ClientUploads: Send + Sync + 'static {
    /// A URL a client can PUT one object to directly, with `content_type` bound into the
    /// signature; `None` when the store has no such URLs (the API then serves the upload).
    /// With `size`, the length is signed too: the store refuses a body of any other length.
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        size: Option<u64>,
        expires: Duration,
    ) -> StorageResult<Option<PresignedRequest>>;

    /// A URL a client can download an object from directly; `None` as for [`Self::presign_put`]
    /// (the API then serves the download: [`Self::open_download`]).
    async fn presign_get(&self, key: &str, expires: Duration) -> StorageResult<Option<String>>;

    /// Opens an object to stream it to a client; `None` when there is no such object.
    async fn open_download(&self, key: &str) -> StorageResult<Option<Download>>;

    /// Starts a client's multipart upload of `key`; the store's upload id.
    async fn create_multipart(&self, key: &str, content_type: &str) -> StorageResult<String>;

    /// A URL a client can PUT part `number` to, `length` bound into its signature; `None` when
    /// the store has no such URLs (the API then receives the part: [`Self::put_part`]).
    async fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        length: u64,
        expires: Duration,
    ) -> StorageResult<Option<PresignedRequest>>;

    /// Stores part `number` from a local file, replacing an earlier one of that number.
    async fn put_part(&self, key: &str, upload_id: &str, number: u32, path: &Path) -> StorageResult<PartInfo>;

    /// The parts stored so far, by number; [`StorageError::NotFound`] when the upload does not
    /// exist (completed, aborted, or cleaned up).
    async fn list_parts(&self, key: &str, upload_id: &str) -> StorageResult<Vec<PartInfo>>;

    /// Assembles these parts, in order, into the object; its upload event follows as for any
    /// write.
    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[PartInfo]) -> StorageResult<ObjectInfo>;

    /// Removes an upload and its parts; a missing upload is not an error.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StorageResult<()>;

    /// Removes multipart uploads started more than `age` ago; how many. On S3 the bucket's
    /// lifecycle rule does this, and this does nothing.
    async fn sweep_multipart(&self, age: Duration) -> StorageResult<usize> {
        let _ = age;
        Ok(0)
    }
}
