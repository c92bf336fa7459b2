//! The handle one run of a job writes through: every write is fenced by the run's token and
//! made against the version this run last wrote, so in the usual case (nobody else touched the
//! status) a heartbeat or a stage change is one conditional PUT with no read before it.
//!
//! Stage changes are coalesced: a stage is written once it has lasted [`STAGE_WRITE_DELAY`]
//! (the worker's heartbeat task waits for that with [`Attempt::stage_settled`]), or with the
//! run's next write, whichever comes first, carrying the times the stages were entered. A short
//! job's download, probe and upload then cost no write of their own, and the timeline still
//! lists every stage with its time. `Finalizing` is written at once: it is the fence after
//! which only this run may complete the job.

use std::sync::{Mutex as SyncMutex, PoisonError};
use std::time::Duration;

use tokio::sync::Mutex;

use super::machine::{Event, Refused, StageMark};
use super::store::{Applied, JobStore, Stored};
use crate::domain::job::JobSpec;
use crate::domain::status::{ErrorInfo, JobState, JobStatus, Stage};
use crate::ledger::LedgerError;

/// How long a stage must last to be written on its own (see the module).
pub const STAGE_WRITE_DELAY: Duration = Duration::from_millis(250);

/// Why a write of a run did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The run no longer owns the job (cancelled, taken over, ended): it must stop quietly.
    #[error("the run lost the job: {0}")]
    Lost(Refused),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl AttemptError {
    /// Whether the run lost the job to a cancellation.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, AttemptError::Lost(Refused::Ended(JobState::Cancelled)))
    }
}

pub struct Attempt {
    store: JobStore,
    job_id: String,
    run: String,
    /// The status as this run last wrote (or read) it, with its version.
    last: Mutex<Stored>,
    /// Percent done, kept in memory; the next heartbeat or stage change stores it.
    progress: SyncMutex<f64>,
    /// Stages entered and not yet written, in order.
    pending: SyncMutex<Vec<StageMark>>,
    /// Rung when a stage is entered, for [`Attempt::stage_settled`].
    stage_entered: tokio::sync::Notify,
}

impl Attempt {
    /// Takes the job for attempt `attempt` as run `run`: the start transition, won at most once
    /// per attempt. `Err(refused)` means another run owns the job, or it ended, or the delivery
    /// is stale: the caller drops the delivery without running anything.
    pub async fn start(
        store: &JobStore,
        job: &JobSpec,
        attempt: u32,
        run: &str,
        worker: &str,
        max_attempts: u32,
    ) -> Result<Result<Attempt, Refused>, LedgerError> {
        let event =
            Event::Start { job: job.clone(), attempt, run: run.to_string(), worker: worker.to_string(), max_attempts };
        let current = store.read_versioned(&job.job_id).await?;
        match store.apply_to(&job.job_id, current, &event).await? {
            Applied::Done { status } => Ok(Ok(Attempt {
                store: store.clone(),
                job_id: job.job_id.clone(),
                run: run.to_string(),
                last: Mutex::new(Stored { status: Some(status) }),
                progress: SyncMutex::new(0.0),
                pending: SyncMutex::new(Vec::new()),
                stage_entered: tokio::sync::Notify::new(),
            })),
            Applied::Refused { reason, .. } => Ok(Err(reason)),
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// The status as this run last saw it.
    pub async fn status(&self) -> Option<JobStatus> {
        self.last.lock().await.status.clone()
    }

    pub fn set_progress(&self, percent: f64) {
        if let Ok(mut progress) = self.progress.lock() {
            *progress = percent;
        }
    }

    fn progress(&self) -> f64 {
        self.progress.lock().map(|p| *p).unwrap_or_default()
    }

    async fn write(&self, event: Event) -> Result<JobStatus, AttemptError> {
        let mut last = self.last.lock().await;
        match self.store.apply_to(&self.job_id, last.clone(), &event).await? {
            Applied::Done { status } => {
                *last = Stored { status: Some(status.clone()) };
                Ok(status)
            }
            Applied::Refused { reason, current } => {
                if current.is_some() {
                    last.status = current;
                }
                Err(AttemptError::Lost(reason))
            }
        }
    }

    /// Proves the run alive and stores its progress (and any stage not yet written); `Lost`
    /// when it must stop.
    pub async fn heartbeat(&self) -> Result<(), AttemptError> {
        if self.has_pending() {
            return self.flush().await;
        }
        self.write(Event::Heartbeat { run: self.run.clone(), progress: self.progress() }).await.map(|_| ())
    }

    /// Enters `stage`: recorded now, written later (see the module), except `Finalizing`,
    /// which is written at once with any stage before it.
    pub async fn stage(&self, stage: Stage) -> Result<(), AttemptError> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).push(StageMark::now(stage));
        if stage == Stage::Finalizing {
            return self.flush().await;
        }
        self.stage_entered.notify_one();
        Ok(())
    }

    /// Returns once a stage has been entered and no other followed it for
    /// [`STAGE_WRITE_DELAY`]: the moment to [`flush`](Self::flush) it.
    pub async fn stage_settled(&self) {
        self.stage_entered.notified().await;
        while tokio::time::timeout(STAGE_WRITE_DELAY, self.stage_entered.notified()).await.is_ok() {}
    }

    /// Writes the stages entered since the last write, if any.
    pub async fn flush(&self) -> Result<(), AttemptError> {
        let stages = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if stages.is_empty() {
            return Ok(());
        }
        let event = Event::Stage { run: self.run.clone(), stages: stages.clone(), progress: self.progress() };
        match self.write(event).await {
            Err(AttemptError::Ledger(err)) => {
                // Not written: kept for the next write, ahead of any stage entered since.
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                pending.splice(0..0, stages);
                Err(AttemptError::Ledger(err))
            }
            other => other.map(|_| ()),
        }
    }

    fn has_pending(&self) -> bool {
        !self.pending.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// Before a run's last write (retry, fail, interrupt): its unwritten stages, so the
    /// timeline shows where it was. Only losing the job stops the last write.
    async fn flush_before_end(&self) -> Result<(), AttemptError> {
        match self.flush().await {
            Err(lost @ AttemptError::Lost(_)) => Err(lost),
            _ => Ok(()),
        }
    }

    pub async fn complete(&self, manifest_key: &str) -> Result<JobStatus, AttemptError> {
        self.write(Event::Complete { run: self.run.clone(), manifest_key: manifest_key.to_string() }).await
    }

    /// Retries after `delay`, or fails when this was the last attempt: the returned status says
    /// which (`retrying` with the next attempt, or `failed`).
    pub async fn retry(&self, error: ErrorInfo, delay: Duration) -> Result<JobStatus, AttemptError> {
        self.flush_before_end().await?;
        self.write(Event::Retry { run: self.run.clone(), error, delay }).await
    }

    pub async fn fail(&self, error: ErrorInfo) -> Result<JobStatus, AttemptError> {
        self.flush_before_end().await?;
        self.write(Event::Fail { run: self.run.clone(), error }).await
    }

    /// Requeues the same attempt (the worker is shutting down).
    pub async fn interrupt(&self, note: &str) -> Result<JobStatus, AttemptError> {
        self.flush_before_end().await?;
        self.write(Event::Interrupt { run: self.run.clone(), note: note.to_string() }).await
    }

    /// The status with the version this run last wrote or read.
    pub async fn last_version(&self) -> Stored {
        self.last.lock().await.clone()
    }
}
