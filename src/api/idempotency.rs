//! Idempotent submissions (`Idempotency-Key`).
//!
//! The same caller and key always name the same job ([`job_id`]), on any instance, without
//! anything remembered. What a key was first used for is remembered once, before anything is
//! sent: a *claim* (a document of the job ledger, [`DocKind::Claim`], by job id), holding a
//! digest of the request, created only if absent, and kept as long as the job's record. Of two
//! requests racing with one key, exactly one creates it: with different
//! bodies the other is refused (422 `idempotency_key_reused`) having sent nothing; with the
//! same body both lead to the same job. A retry finds the claim and replays; a request that
//! died between its claim and its job is finished by its retry.

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use crate::domain::job::{ImportSource, NotifyTarget, OutputRequest, Repackage};
use crate::domain::split::SplitRequest;
use crate::ledger::{DocKind, Ledger};

/// The header making submissions idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on the answer to a retried submission.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The job id of an idempotent submission. The token itself never enters it.
pub fn job_id(caller: &Caller, key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(caller.id.as_bytes());
    hasher.update([0u8]);
    hasher.update(key.as_bytes());
    format!("job-{}", hex::encode(&hasher.finalize()[..24]))
}

/// The request's `Idempotency-Key`, if it has a valid one.
pub fn key_of(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let key = value.to_str().ok().filter(|k| {
        (1..=MAX_IDEMPOTENCY_KEY).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    });
    match key {
        Some(key) => Ok(Some(key.to_string())),
        None => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
        )),
    }
}

/// What a submission asks for, as its claim records it (a digest of this, serialised: every
/// field is a plain value or a list, so the serialisation is stable).
#[derive(Serialize)]
pub struct Request<'a> {
    pub source_key: &'a str,
    pub outputs: &'a [OutputRequest],
    pub output_dir: &'a str,
    pub notify: Option<&'a NotifyTarget>,
    pub import: Option<&'a ImportSource>,
    pub split: Option<&'a SplitRequest>,
    /// A packaging job's source package and new tracks (absent for every other job, whose
    /// digests stay as they were).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repackage: Option<&'a Repackage>,
}

impl Request<'_> {
    fn digest(&self) -> ApiResult<String> {
        let bytes = serde_json::to_vec(self).map_err(|e| ApiError::Internal(e.into()))?;
        Ok(hex::encode(Sha256::digest(&bytes)))
    }
}

/// What a claim said of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This request is the key's first: it makes the job.
    First,
    /// The key was used for this same request: the same job.
    Same,
    /// The key was used for another request: refused.
    Other,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// Hex SHA-256 of the serialised [`Request`].
    request: String,
}

/// Claims `job_id` for `request`, or tells what it was claimed for; the claim is kept `keep`
/// (the job's retention).
pub async fn claim(
    ledger: &dyn Ledger,
    job_id: &str,
    request: &Request<'_>,
    keep: std::time::Duration,
) -> ApiResult<Claim> {
    let digest = request.digest()?;
    let body = serde_json::to_vec(&Stored { version: 1, request: digest.clone() })
        .map_err(|e| ApiError::Internal(e.into()))?;
    let expires = chrono::Utc::now() + chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    if ledger.doc_put(DocKind::Claim, job_id, &body, None, Some(expires)).await? {
        return Ok(Claim::First);
    }
    let stored =
        ledger.doc_get(DocKind::Claim, job_id).await?.and_then(|doc| serde_json::from_slice::<Stored>(&doc.body).ok());
    Ok(match stored {
        Some(stored) if stored.request == digest => Claim::Same,
        Some(_) => Claim::Other,
        // Unreadable: a request of this key made it; the job it made, if any, is compared.
        None => Claim::Same,
    })
}

/// The refusal of a key used for another request.
pub fn reused() -> ApiError {
    ApiError::unprocessable("idempotency_key_reused", "this Idempotency-Key was used for a different request")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::validate_job_id;
    use crate::domain::preset::Preset;
    use crate::domain::tenant::Scope;
    use axum::http::HeaderValue;

    #[test]
    fn idempotent_ids_depend_on_caller_and_key_only() {
        let alice = Caller { id: "a".repeat(64), scope: Scope::Shared };
        let bob = Caller { id: "b".repeat(64), scope: Scope::Shared };
        let id = job_id(&alice, "order-17");
        assert_eq!(id, job_id(&alice, "order-17"));
        assert_ne!(id, job_id(&alice, "order-18"));
        assert_ne!(id, job_id(&bob, "order-17"));
        assert!(validate_job_id(&id).is_ok(), "{id}");
    }

    #[test]
    fn idempotency_keys_are_printable_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(key_of(&headers).unwrap(), None);
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("order 17/a"));
        assert_eq!(key_of(&headers).unwrap().as_deref(), Some("order 17/a"));
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(""));
        assert!(key_of(&headers).is_err());
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(&"k".repeat(256)).unwrap());
        assert!(key_of(&headers).is_err());
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert!(key_of(&headers).is_err());
    }

    #[tokio::test]
    async fn racing_claims_with_other_bodies_make_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::ledger::sqlite::SqliteLedger::open(&dir.path().join("ledger.db")).unwrap();
        let keep = std::time::Duration::from_secs(3600);
        let outputs = [OutputRequest::new(Preset::Mp4H264)];
        let whole = SplitRequest { enabled: false, segment_duration: None };
        let request = |split| Request {
            source_key: "uploads/a.mp4",
            outputs: &outputs,
            output_dir: "outputs/a.mp4/job-x/",
            notify: None,
            import: None,
            split,
            repackage: None,
        };
        let (plain, unsplit) = (request(None), request(Some(&whole)));
        let (a, b) = tokio::join!(claim(&storage, "job-x", &plain, keep), claim(&storage, "job-x", &unsplit, keep));
        let mut claims = [a.unwrap(), b.unwrap()];
        claims.sort_by_key(|c| *c as u8);
        assert_eq!(claims, [Claim::First, Claim::Other], "one makes the job, the other is refused");
        let again = claim(&storage, "job-x", &plain, keep).await.unwrap();
        let other = claim(&storage, "job-x", &unsplit, keep).await.unwrap();
        assert!(
            matches!((again, other), (Claim::Same, Claim::Other) | (Claim::Other, Claim::Same)),
            "{again:?} {other:?}"
        );
    }
}
