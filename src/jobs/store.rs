//! Applying [`Event`]s to `jobs/<id>.json` by compare-and-swap.
//!
//! Each write is conditional on the version that was read (`If-Match`, or `If-None-Match: *`
//! to create), so two writers can never both act on the same version: the loser re-reads, asks
//! the state machine again, and either applies its event to the newer status or learns that it
//! is refused. Nothing else writes status documents.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::machine::{Event, Refused, apply};
use crate::domain::keys::{JOBS_PREFIX, job_id_of_status_key, status_key};
use crate::domain::status::JobStatus;
use crate::storage::{CasOutcome, Precondition, Storage, StorageError, StorageResult};

/// A busy job sees a handful of writers at most (its run, a canceller, a reaper); this many
/// lost races in a row means something is wrong.
const MAX_CONFLICTS: u32 = 20;

/// A status as stored, with the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// `None` when the document is missing or unreadable (an unreadable one is replaced).
    pub status: Option<JobStatus>,
    /// `None` when no document exists.
    pub etag: Option<String>,
}

impl Stored {
    pub const ABSENT: Stored = Stored { status: None, etag: None };
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Stored; the new status and its version.
    Done { status: JobStatus, etag: String },
    /// The state machine refused it against `current` (a lost race, or not allowed).
    Refused { reason: Refused, current: Option<JobStatus> },
}

impl Applied {
    pub fn status(&self) -> Option<&JobStatus> {
        match self {
            Applied::Done { status, .. } => Some(status),
            Applied::Refused { current, .. } => current.as_ref(),
        }
    }
}

/// A transition that won its compare-and-swap.
pub struct Transition<'a> {
    pub event: &'a Event,
    /// The status it was applied to (`None` when it created the document).
    pub before: Option<&'a JobStatus>,
    /// The status now stored.
    pub after: &'a JobStatus,
}

impl Transition<'_> {
    /// Whether this transition ended the job.
    pub fn ended(&self) -> bool {
        self.after.state.is_terminal() && self.before.is_none_or(|s| !s.state.is_terminal())
    }
}

/// Told about every transition that won its compare-and-swap (and only those), by the writer
/// that won it, after it is stored.
#[async_trait::async_trait]
pub trait Observer: Send + Sync + 'static {
    /// Any stored change. By default: [`Observer::on_terminal`] when it ended the job.
    async fn on_transition(&self, transition: &Transition<'_>) {
        if transition.ended() {
            self.on_terminal(transition.after);
        }
    }

    /// A job reached `completed`, `failed` or `cancelled`. Called once per job: final states
    /// are never left, and only the writer that won the transition calls it.
    fn on_terminal(&self, status: &JobStatus);
}

/// Logs final states.
pub struct LogObserver;

impl Observer for LogObserver {
    fn on_terminal(&self, status: &JobStatus) {
        tracing::info!(
            job_id = %status.job_id,
            state = ?status.state,
            attempt = status.attempt,
            error = status.error.as_ref().map(|e| e.code.as_str()),
            "Job ended."
        );
    }
}

/// The one writer of job status documents.
#[derive(Clone)]
pub struct JobStore {
    storage: Arc<dyn Storage>,
    observer: Arc<dyn Observer>,
}

impl JobStore {
    /// A transition that won: told to the observer.
    async fn won(
        &self,
        job_id: &str,
        before: Option<&JobStatus>,
        next: JobStatus,
        etag: String,
        event: &Event,
    ) -> Applied {
        tracing::debug!(job_id, event = event.name(), state = ?next.state, "Job status changed.");
        self.observer.on_transition(&Transition { event, before, after: &next }).await;
        Applied::Done { status: next, etag }
    }

    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self { storage, observer: Arc::new(LogObserver) }
    }

    /// The same store, telling `observer` about final states instead of only logging them.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Every readable status document, in no particular order: one listing of `jobs/`, then a
    /// few reads at once. An unreadable document reads as none (the read logs it), so it does
    /// not hide the others. Cost grows with the number of jobs kept.
    pub async fn read_all(&self) -> StorageResult<Vec<JobStatus>> {
        use futures_util::{StreamExt, TryStreamExt};
        const READS_AT_ONCE: usize = 16;
        let keys = self.storage.list(JOBS_PREFIX).await?;
        let ids: Vec<String> = keys.iter().filter_map(|k| job_id_of_status_key(k)).map(str::to_string).collect();
        let statuses: Vec<Option<JobStatus>> = futures_util::stream::iter(ids)
            .map(|id| async move { self.read(&id).await })
            .buffer_unordered(READS_AT_ONCE)
            .try_collect()
            .await?;
        Ok(statuses.into_iter().flatten().collect())
    }

    /// The stored status of a job, if it has a readable one.
    pub async fn read(&self, job_id: &str) -> StorageResult<Option<JobStatus>> {
        Ok(self.read_versioned(job_id).await?.status)
    }

    pub async fn read_versioned(&self, job_id: &str) -> StorageResult<Stored> {
        let Some(found) = self.storage.get_versioned(&status_key(job_id)).await? else { return Ok(Stored::ABSENT) };
        let status = match serde_json::from_slice::<JobStatus>(&found.bytes) {
            Ok(status) => Some(status),
            Err(err) => {
                tracing::warn!(job_id, error = %err, "Job status is unreadable and will be replaced.");
                None
            }
        };
        Ok(Stored { status, etag: Some(found.etag) })
    }

    /// Reads the job's status and applies `event` to it.
    pub async fn apply(&self, job_id: &str, event: &Event) -> StorageResult<Applied> {
        let current = self.read_versioned(job_id).await?;
        self.apply_to(job_id, current, event).await
    }

    /// Applies `event` to exactly the version `current` names, or not at all: no re-read and no
    /// second try after a lost race. For marks that only mean something against the version
    /// they follow (a handover's `Published`): applied to a newer status, they could clear a
    /// later handover's mark. `true` when written.
    pub async fn apply_once(&self, job_id: &str, current: &Stored, event: &Event) -> StorageResult<bool> {
        let Ok(next) = apply(current.status.as_ref(), event, Utc::now()) else { return Ok(false) };
        let condition = match &current.etag {
            Some(etag) => Precondition::Matches(etag),
            None => Precondition::Absent,
        };
        let written = self.storage.put_if(&status_key(job_id), next.to_json(), "application/json", condition).await?;
        let won = matches!(written, CasOutcome::Written { .. });
        if won {
            self.observer.on_transition(&Transition { event, before: current.status.as_ref(), after: &next }).await;
        }
        Ok(won)
    }

    /// Applies `event` to a status already read (saving a read when the caller's copy is
    /// current); on a lost race, re-reads and tries again.
    pub async fn apply_to(&self, job_id: &str, mut current: Stored, event: &Event) -> StorageResult<Applied> {
        // What we tried to write last, in case the "conflict" was our own write: the SDK retries a
        // conditional PUT whose answer was lost, and the retry finds its own write in place.
        let mut attempted: Option<JobStatus> = None;
        // And the status that write was made from: the transition's `before` if it was ours.
        let mut attempted_from: Option<JobStatus> = None;
        let clock = std::time::Instant::now();
        for conflicts in 0..MAX_CONFLICTS {
            if let (Some(mine), Some(stored), Some(etag)) = (&attempted, &current.status, &current.etag)
                && mine == stored
            {
                return Ok(self.won(job_id, attempted_from.as_ref(), mine.clone(), etag.clone(), event).await);
            }
            let next = match apply(current.status.as_ref(), event, Utc::now()) {
                Ok(next) => next,
                Err(reason) => return Ok(Applied::Refused { reason, current: current.status }),
            };
            let condition = match &current.etag {
                Some(etag) => Precondition::Matches(etag),
                None => Precondition::Absent,
            };
            let written =
                self.storage.put_if(&status_key(job_id), next.to_json(), "application/json", condition).await?;
            match written {
                CasOutcome::Written { etag } => {
                    tracing::debug!(
                        job_id,
                        event = event.name(),
                        write_us = clock.elapsed().as_micros() as u64,
                        "Status written."
                    );
                    return Ok(self.won(job_id, current.status.as_ref(), next, etag, event).await);
                }
                CasOutcome::Conflict => {
                    tracing::debug!(
                        job_id,
                        event = event.name(),
                        conflicts,
                        "Job status changed under us; re-reading."
                    );
                    attempted = Some(next);
                    attempted_from = current.status.take();
                    // Contention between a few writers clears at once; back off a little anyway.
                    tokio::time::sleep(Duration::from_millis(u64::from(conflicts) * 5)).await;
                    current = self.read_versioned(job_id).await?;
                }
            }
        }
        Err(StorageError::other(anyhow::anyhow!(
            "job {job_id}: the status kept changing under `{}` ({MAX_CONFLICTS} lost races)",
            event.name()
        )))
    }
}
