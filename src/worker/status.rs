//! Reading and writing `jobs/<id>.json`, with one writer per running attempt.
//!
//! A cancellation is written into the same document from outside (the API). Object stores
//! have no compare-and-swap here, so the attempt's writer re-reads before the writes that
//! could otherwise bury a cancellation (start, stage changes, hand-overs) and leaves a
//! cancelled document alone; the heartbeat then stops the attempt and records the outcome.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::Mutex;

use crate::domain::job::JobSpec;
use crate::domain::keys::status_key;
use crate::domain::status::{ErrorInfo, JobState, JobStatus, Stage};
use crate::storage::{Storage, StorageResult};

/// The stored status of a job, or `None` when there is none (or it is unreadable, which is
/// treated the same: the next write replaces it).
pub async fn read_status(storage: &dyn Storage, job_id: &str) -> StorageResult<Option<JobStatus>> {
    let Some(bytes) = storage.get_bytes(&status_key(job_id)).await? else { return Ok(None) };
    match serde_json::from_slice(&bytes) {
        Ok(status) => Ok(Some(status)),
        Err(err) => {
            tracing::warn!(job_id, error = %err, "Job status is unreadable and will be replaced.");
            Ok(None)
        }
    }
}

pub async fn write_status(storage: &dyn Storage, status: &JobStatus) -> StorageResult<()> {
    storage.put_bytes(&status_key(&status.job_id), status.to_json(), "application/json").await
}

/// Updates the stored status of a job from outside a running attempt (queueing, retries,
/// recovery), keeping its history.
pub async fn update_status(
    storage: &dyn Storage,
    job: &JobSpec,
    max_attempts: u32,
    change: impl FnOnce(&mut JobStatus),
) -> StorageResult<JobStatus> {
    let now = Utc::now();
    let mut status =
        read_status(storage, &job.job_id).await?.unwrap_or_else(|| JobStatus::queued(job, 1, max_attempts, now));
    change(&mut status);
    status.updated_at = now;
    write_status(storage, &status).await?;
    Ok(status)
}

/// What a heartbeat learned from the stored status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatSignal {
    Continue,
    /// Someone marked the job cancelled.
    Cancelled,
    /// The reaper handed the job to a later attempt.
    Superseded,
}

/// The status of one running attempt. Every write goes through the lock, so stage changes and
/// heartbeats never overwrite each other with stale copies.
pub struct StatusTracker {
    storage: Arc<dyn Storage>,
    status: Mutex<JobStatus>,
}

impl StatusTracker {
    /// Marks the attempt running, keeping the job's history if it has one.
    pub async fn start(
        storage: Arc<dyn Storage>,
        job: &JobSpec,
        attempt: u32,
        max_attempts: u32,
        worker: &str,
    ) -> StorageResult<Self> {
        let now = Utc::now();
        let stored = read_status(storage.as_ref(), &job.job_id).await?;
        let cancelled = stored.as_ref().is_some_and(|s| s.state == JobState::Cancelled);
        let mut status = stored.unwrap_or_else(|| JobStatus::queued(job, attempt, max_attempts, now));
        status.attempt = attempt;
        status.max_attempts = max_attempts;
        status.worker = Some(worker.to_string());
        status.heartbeat_at = Some(now);
        status.progress = 0.0;
        status.error = None;
        status.manifest_key = None;
        status.transition(JobState::Running, Stage::Downloading, now, None);
        if cancelled {
            // Cancelled since the delivery was checked: keep it; the first heartbeat stops us.
            tracing::info!(job_id = %job.job_id, "The job was cancelled as it started.");
        } else {
            write_status(storage.as_ref(), &status).await?;
        }
        Ok(Self { storage, status: Mutex::new(status) })
    }

    /// Whether the stored status says cancelled (then it must not be overwritten).
    async fn cancelled_in_store(&self, job_id: &str) -> StorageResult<bool> {
        Ok(read_status(self.storage.as_ref(), job_id).await?.is_some_and(|s| s.state == JobState::Cancelled))
    }

    pub async fn stage(&self, stage: Stage) -> StorageResult<()> {
        let mut status = self.status.lock().await;
        let now = Utc::now();
        status.heartbeat_at = Some(now);
        status.transition(JobState::Running, stage, now, None);
        if self.cancelled_in_store(&status.job_id).await? {
            return Ok(());
        }
        write_status(self.storage.as_ref(), &status).await
    }

    /// Records progress in memory; the next heartbeat or stage change stores it.
    pub async fn set_progress(&self, percent: f64) {
        self.status.lock().await.progress = (percent * 10.0).round().clamp(0.0, 1000.0) / 10.0;
    }

    /// Checks the stored status for a cancellation or a takeover, then refreshes the heartbeat.
    pub async fn heartbeat(&self) -> StorageResult<HeartbeatSignal> {
        let mut status = self.status.lock().await;
        if let Some(stored) = read_status(self.storage.as_ref(), &status.job_id).await? {
            if stored.state == JobState::Cancelled {
                // Keep the canceller's timeline entry in the record the attempt ends with.
                status.timeline = stored.timeline;
                return Ok(HeartbeatSignal::Cancelled);
            }
            if stored.attempt > status.attempt {
                return Ok(HeartbeatSignal::Superseded);
            }
        }
        let now = Utc::now();
        status.heartbeat_at = Some(now);
        status.updated_at = now;
        write_status(self.storage.as_ref(), &status).await?;
        Ok(HeartbeatSignal::Continue)
    }

    /// Records the end of this attempt.
    pub async fn finish(
        &self,
        state: JobState,
        stage: Stage,
        error: Option<ErrorInfo>,
        note: Option<String>,
        manifest_key: Option<String>,
    ) -> StorageResult<()> {
        let mut status = self.status.lock().await;
        let now = Utc::now();
        if state == JobState::Completed {
            status.progress = 100.0;
        }
        status.error = error;
        status.manifest_key = manifest_key;
        status.transition(state, stage, now, note);
        write_status(self.storage.as_ref(), &status).await
    }

    /// Hands the job to its next attempt (already published): state `retrying` or `queued`.
    pub async fn hand_over(
        &self,
        state: JobState,
        next_attempt: u32,
        error: Option<ErrorInfo>,
        note: String,
    ) -> StorageResult<()> {
        let mut status = self.status.lock().await;
        if self.cancelled_in_store(&status.job_id).await? {
            // The next attempt is already published; its delivery sees the cancellation and
            // is dropped.
            return Ok(());
        }
        let now = Utc::now();
        status.attempt = next_attempt;
        status.error = error;
        status.worker = None;
        status.heartbeat_at = None;
        status.transition(state, Stage::Queued, now, Some(note));
        write_status(self.storage.as_ref(), &status).await
    }
}
