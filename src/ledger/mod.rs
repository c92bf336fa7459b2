//! The job ledger: every job's status record, the events its transitions make (the outbox),
//! and the small documents kept beside them, in a database (DynamoDB on AWS, SQLite on the
//! local backend) instead of one object per job in the bucket.
//!
//! The interface is narrow on purpose: the lifecycle ([`crate::jobs`]) owns what a record
//! means and when it may change; an engine only stores rows and answers the few questions asked
//! of many jobs, each in O(page) whatever the history:
//! - a scope's jobs, newest first, by cursor, optionally of one state;
//! - the jobs of one write of a source;
//! - the jobs whose state or stage changed since a time.
//!
//! # Writes
//! [`Ledger::put`] stores a record only if the stored one has the revision the writer read
//! (`None`: no record yet), together with the events of that transition, all or nothing: a
//! transaction in both engines. The revision is the status's own (`JobStatus::revision`, one
//! more for each accepted event), so the compare-and-swap of the lifecycle keeps its meaning.
//!
//! # Retention
//! A record carries when it may go ([`Row::expires_at`]): `MEDIA_JOB_RETENTION` after its job
//! ended. DynamoDB's TTL removes it; the SQLite engine's [`Ledger::sweep`] does.
//!
//! # Layout
//! - [`sqlite`]: the local engine, in `<MEDIA_DATA_DIR>/ledger.db`.
//! - [`dynamo`]: the AWS engine, one table (`MEDIA_JOBS_TABLE`) with its indexes.

pub mod dynamo;
pub mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::domain::keys::KeyLayout;
use crate::domain::status::{JobState, JobStatus};
use crate::domain::tenant::Scope;

/// Longest page a query returns.
pub const MAX_PAGE: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database did not answer, or failed: worth retrying.
    #[error("the job ledger is unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// A stored record could not be read (a bug, or a record written by a newer version).
    #[error("a job ledger record is unreadable: {0}")]
    Corrupt(String),
}

pub type LedgerResult<T> = Result<T, LedgerError>;

impl LedgerError {
    pub fn unavailable(err: impl Into<anyhow::Error>) -> Self {
        LedgerError::Unavailable(err.into())
    }
}

/// A job's record as a ledger stores it: the status, and the fields the queries use, derived
/// from it once, here, for both engines.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub status: JobStatus,
    /// Who may list it: [`scope_label`] of its job.
    pub scope: String,
    /// When its state or stage last changed (its timeline's last entry): heartbeats do not
    /// move it, so indexes on it change a few times per job, not at every beat.
    pub changed_at: DateTime<Utc>,
    /// [`source_write`] of its source.
    pub source_write: String,
    /// When the record may be removed: `retention` after the job ended; never while it runs.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Row {
    pub fn new(status: JobStatus, layout: &KeyLayout, retention: Duration) -> Row {
        let changed_at = status.timeline.last().map_or(status.updated_at, |entry| entry.at);
        let expires_at = status
            .state
            .is_terminal()
            .then(|| status.updated_at + chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX));
        Row {
            scope: scope_label(layout, &status),
            source_write: source_write(&status.job.source_key, status.job.source.etag.as_deref()),
            changed_at,
            expires_at,
            status,
        }
    }

    pub fn job_id(&self) -> &str {
        &self.status.job_id
    }

    pub fn revision(&self) -> u64 {
        self.status.revision
    }
}

/// The scope that lists a job: `shared`, `tenant:<name>`, or `none` for a job whose source and
/// output folder lie in different scopes (only operators see it).
pub fn scope_label(layout: &KeyLayout, status: &JobStatus) -> String {
    let job = &status.job;
    if Scope::Shared.owns_job(layout, job) {
        return Scope::Shared.label();
    }
    let tenant = crate::domain::tenant::tenant_of(layout, &job.source_key);
    match tenant.map(Scope::Tenant) {
        Some(scope) if scope.owns_job(layout, job) => scope.label(),
        _ => "none".to_string(),
    }
}

/// One write of a source, as an index key: 32 hex digits of the SHA-256 of the key, and the
/// write's ETag (empty when the job is not pinned to one).
pub fn source_write(source_key: &str, etag: Option<&str>) -> String {
    let digest = Sha256::digest(source_key.as_bytes());
    format!("{}#{}", hex::encode(&digest[..16]), etag.unwrap_or_default())
}

/// Where a page starts: after the job created at `millis` (or changed, for
/// [`Order::Changed`]) with id `job_id`, in the list's order: newest first, ties by id,
/// highest first. Written `<millis>.<job id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub millis: i64,
    pub job_id: String,
}

impl Cursor {
    pub fn of(status: &JobStatus) -> Cursor {
        Cursor { millis: status.created_at.timestamp_millis(), job_id: status.job_id.clone() }
    }

    pub fn parse(text: &str) -> Option<Cursor> {
        let (millis, job_id) = text.split_once('.')?;
        let millis = millis.parse::<i64>().ok().filter(|m| *m >= 0)?;
        crate::domain::keys::validate_job_id(job_id).ok()?;
        Some(Cursor { millis, job_id: job_id.to_string() })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.millis, self.job_id)
    }
}

/// Whose jobs a query lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// One scope's, by its [`Scope::label`].
    Scope(String),
    /// Every job: operators.
    All,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct JobQuery {
    pub listed: Listed,
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Start after this job (the previous page's last).
    pub after: Option<Cursor>,
    /// 1 to [`MAX_PAGE`].
    pub limit: u32,
}

/// A page and, when there may be more, where the next one starts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobPage {
    pub jobs: Vec<JobStatus>,
    pub next: Option<Cursor>,
}

/// An event a transition makes, stored with it and sent later by the worker's relay.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// The event type, as its wire name (`job.completed`).
    pub kind: String,
    /// The status the transition stored: the event is built from it when it is sent.
    pub status: JobStatus,
}

/// An event taken from the outbox, leased to one relay for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The engine's handle for [`Ledger::outbox_done`].
    pub handle: String,
    pub event: OutboxEvent,
}

/// Small documents kept beside the jobs, each with a version for compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    /// A job's webhook delivery attempts (`notify::record`), by job id.
    Deliveries,
    /// The claim of an `Idempotency-Key`, by job id.
    Claim,
    /// The parts signed for a multipart upload, by a digest of its upload id.
    SignedParts,
}

impl DocKind {
    pub fn name(self) -> &'static str {
        match self {
            DocKind::Deliveries => "deliveries",
            DocKind::Claim => "claim",
            DocKind::SignedParts => "signed-parts",
        }
    }
}

/// A stored document and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub body: Vec<u8>,
    pub version: u64,
}

#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// The job's status, if it has a record.
    async fn get(&self, job_id: &str) -> LedgerResult<Option<JobStatus>>;

    /// Stores `row` if the stored record's revision is `expected` (`None`: there is none), with
    /// `events` in the same transaction; `false` (nothing stored) when the record is not at
    /// `expected`.
    async fn put(&self, row: &Row, expected: Option<u64>, events: &[OutboxEvent]) -> LedgerResult<bool>;

    /// A page of jobs, newest first.
    async fn list(&self, query: &JobQuery) -> LedgerResult<JobPage>;

    /// Every job (operators: `media-worker jobs --since`) whose state or stage changed at or
    /// after `since`, the most recent change first, at most `limit`.
    async fn changed_since(&self, since: DateTime<Utc>, limit: u32) -> LedgerResult<Vec<JobStatus>>;

    /// The jobs of one write of a source ([`source_write`]), newest first.
    async fn of_write(&self, source_key: &str, etag: &str) -> LedgerResult<Vec<JobStatus>>;

    /// Up to `max` events of the outbox, oldest first, leased for `lease`: no other relay takes
    /// them meanwhile; one not marked done by then is taken again.
    async fn outbox_take(&self, max: usize, lease: Duration) -> LedgerResult<Vec<OutboxEntry>>;

    /// Removes a sent event from the outbox.
    async fn outbox_done(&self, entry: &OutboxEntry) -> LedgerResult<()>;

    /// Events waiting in the outbox (for drains and metrics; approximate on DynamoDB).
    async fn outbox_len(&self) -> LedgerResult<u64>;

    async fn doc_get(&self, kind: DocKind, id: &str) -> LedgerResult<Option<Doc>>;

    /// Stores a document if the stored one has version `expected` (`None`: there is none); its
    /// version becomes one more. `false` when it is not at `expected`.
    async fn doc_put(
        &self,
        kind: DocKind,
        id: &str,
        body: &[u8],
        expected: Option<u64>,
        expires_at: Option<DateTime<Utc>>,
    ) -> LedgerResult<bool>;

    async fn doc_delete(&self, kind: DocKind, id: &str) -> LedgerResult<()>;

    /// Removes what expired before `now` (records past their retention, documents past their
    /// expiry); DynamoDB's TTL does this by itself.
    async fn sweep(&self, now: DateTime<Utc>) -> LedgerResult<usize>;

    /// Whether the database answers, for readiness checks.
    async fn ping(&self) -> LedgerResult<()>;

    /// A name for logs.
    fn name(&self) -> &str;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::sample_job;

    fn layout() -> KeyLayout {
        KeyLayout::new("uploads/", "outputs/").unwrap()
    }

    fn status(source_key: &str, output_dir: &str) -> JobStatus {
        let mut job = sample_job();
        job.source_key = source_key.into();
        job.output_dir = output_dir.into();
        JobStatus::queued(&job, 1, 3, Utc::now())
    }

    #[test]
    fn a_job_is_listed_in_the_scope_owning_its_source_and_folder() {
        let cases = [
            ("uploads/a.mp4", "outputs/a.mp4/job-1/", "shared"),
            ("uploads/tenants/acme/a.mp4", "outputs/tenants/acme/a.mp4/job-1/", "tenant:acme"),
            ("uploads/tenants/acme/a.mp4", "outputs/a.mp4/job-1/", "none"),
            ("uploads/tenants/acme/a.mp4", "outputs/tenants/globex/x/job-1/", "none"),
            ("uploads/a.mp4", "outputs/tenants/acme/x/job-1/", "none"),
        ];
        for (source, folder, label) in cases {
            assert_eq!(scope_label(&layout(), &status(source, folder)), label, "{source} {folder}");
        }
    }

    #[test]
    fn a_record_expires_its_retention_after_its_job_ended() {
        let running = status("uploads/a.mp4", "outputs/a.mp4/job-1/");
        let row = Row::new(running.clone(), &layout(), Duration::from_secs(3600));
        assert_eq!(row.expires_at, None, "a job that has not ended stays");
        assert_eq!(row.changed_at, running.timeline.last().unwrap().at);
        let mut ended = running;
        ended.state = JobState::Completed;
        let row = Row::new(ended.clone(), &layout(), Duration::from_secs(3600));
        assert_eq!(row.expires_at, Some(ended.updated_at + chrono::Duration::hours(1)));
    }

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let cursor = Cursor { millis: 1_700_000_000_000, job_id: "job-1".into() };
        assert_eq!(Cursor::parse(&cursor.to_string()), Some(cursor));
        for junk in ["", "1", "x.job-1", "-5.job-1", "12.", "12.a/b"] {
            assert_eq!(Cursor::parse(junk), None, "{junk}");
        }
        assert_ne!(source_write("uploads/a.mp4", Some("e1")), source_write("uploads/a.mp4", Some("e2")));
    }
}
