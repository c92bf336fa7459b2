//! The running total of a multipart upload: every part URL the API signs is recorded, with
//! its length, in a document of the job ledger ([`DocKind::SignedParts`], by a digest of the
//! upload id), and a part that would take the upload's signed total past
//! `MEDIA_API_MAX_UPLOAD` is refused before it is signed. A part signed again (a retry)
//! replaces its own length. Without this, an upload could take 10,000 parts of 5 GiB each
//! before its completion checks any total.
//!
//! Changed by compare-and-swap, so parts signed at once are all counted. The record goes when
//! the upload completes or is aborted; an abandoned one expires [`KEPT`] after its first part
//! was signed (longer than the bucket keeps an incomplete upload).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{ApiError, ApiResult};
use crate::ledger::{DocKind, Ledger};

/// How long a record stays when its upload is abandoned.
pub const KEPT: Duration = Duration::from_secs(3 * 24 * 3600);

/// Lost races in a row before giving up (each is another part signed at the same moment).
const MAX_CONFLICTS: u32 = 50;

fn record_id(upload_id: &str) -> String {
    hex::encode(&Sha256::digest(upload_id.as_bytes())[..16])
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Signed {
    /// The upload's key: a record is for one upload of one key.
    key: String,
    /// When its first part was signed, for the local sweep of abandoned uploads.
    #[serde(default)]
    started_at: Option<DateTime<Utc>>,
    /// Part number to the length signed for it.
    parts: BTreeMap<u32, u64>,
}

impl Signed {
    fn new(key: &str) -> Self {
        Signed { key: key.to_string(), started_at: Some(Utc::now()), parts: BTreeMap::new() }
    }

    fn total_with(&self, number: u32, size: u64) -> u64 {
        self.parts.iter().filter(|(n, _)| **n != number).map(|(_, s)| *s).sum::<u64>().saturating_add(size)
    }
}

/// Records part `number` of `size` bytes of the upload, or refuses it (422 `too_large`) when
/// the upload's parts would add up to more than `limit`.
pub async fn record(
    ledger: &dyn Ledger,
    key: &str,
    upload_id: &str,
    number: u32,
    size: u64,
    limit: u64,
) -> ApiResult<()> {
    let record = record_id(upload_id);
    for _ in 0..MAX_CONFLICTS {
        let current = ledger.doc_get(DocKind::SignedParts, &record).await?;
        let mut signed = match &current {
            Some(found) => serde_json::from_slice::<Signed>(&found.body).unwrap_or_default(),
            None => Signed::new(key),
        };
        if signed.key != key {
            // Not this upload's record (a digest collision, or a damaged record): start over.
            signed = Signed::new(key);
        }
        let total = signed.total_with(number, size);
        if total > limit {
            return Err(ApiError::unprocessable(
                "too_large",
                format!("with this part the upload's parts add up to {total} bytes; uploads are limited to {limit}"),
            ));
        }
        if signed.parts.get(&number) == Some(&size) {
            return Ok(());
        }
        signed.parts.insert(number, size);
        let body = serde_json::to_vec(&signed).map_err(|e| ApiError::Internal(e.into()))?;
        let started = signed.started_at.unwrap_or_else(Utc::now);
        let expires = started + chrono::Duration::from_std(KEPT).unwrap_or(chrono::Duration::MAX);
        let version = current.map(|c| c.version);
        if ledger.doc_put(DocKind::SignedParts, &record, &body, version, Some(expires)).await? {
            return Ok(());
        }
    }
    Err(ApiError::Unavailable(anyhow::anyhow!("the parts of upload {upload_id} kept changing while one was signed")))
}

/// Forgets an upload's record (it completed or was aborted); best effort.
pub async fn forget(ledger: &dyn Ledger, upload_id: &str) {
    if let Err(err) = ledger.doc_delete(DocKind::SignedParts, &record_id(upload_id)).await {
        tracing::debug!(error = %err, "Could not delete a multipart upload's record of signed parts.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_past_the_limit_are_refused_and_retries_replace_their_length() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = crate::ledger::sqlite::SqliteLedger::open(&dir.path().join("ledger.db")).unwrap();
        let key = "uploads/a/big.mov";
        for n in 1..=3 {
            record(&ledger, key, "u1", n, 30, 100).await.unwrap();
        }
        let refused = record(&ledger, key, "u1", 4, 40, 100).await.unwrap_err();
        assert!(matches!(refused, ApiError::Client { code: "too_large", .. }), "{refused:?}");
        record(&ledger, key, "u1", 3, 20, 100).await.unwrap();
        record(&ledger, key, "u1", 4, 20, 100).await.unwrap();
        assert!(record(&ledger, key, "u1", 5, 1, 100).await.is_err(), "100 of 100 signed");
        record(&ledger, key, "u2", 1, 100, 100).await.unwrap();
        forget(&ledger, "u1").await;
        record(&ledger, key, "u1", 9, 100, 100).await.unwrap();
    }

    #[tokio::test]
    async fn parts_signed_at_once_are_all_counted() {
        let dir = tempfile::tempdir().unwrap();
        let ledger =
            std::sync::Arc::new(crate::ledger::sqlite::SqliteLedger::open(&dir.path().join("ledger.db")).unwrap());
        let tasks: Vec<_> = (1..=20)
            .map(|n| {
                let ledger = ledger.clone();
                tokio::spawn(async move { record(ledger.as_ref(), "uploads/x", "u", n, 10, 100).await.is_ok() })
            })
            .collect();
        let mut accepted = 0;
        for task in tasks {
            accepted += usize::from(task.await.unwrap());
        }
        assert_eq!(accepted, 10, "exactly the parts that fit");
    }
}
