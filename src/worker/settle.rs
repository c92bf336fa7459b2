//! What happens after an attempt ends, in one place: [`finish`] maps an attempt's outcome to
//! what becomes of its job and its message (completed, already stored by the attempt; retried
//! with back-off; failed and dead-lettered; requeued on shutdown), and what its job's folder
//! keeps. The other ends of a job go through the same owners: a handover's message is
//! published by [`Inner::publish_handover`] (retries, requeues, the reaper's recoveries), a
//! failed job is cleared, dead-lettered and counted by [`Inner::settle_failed`] (a run's
//! failure, the reaper's last recovery), a job that cannot start is failed by
//! [`Inner::fail_unstarted`] (the intake), and every dead letter is sent by
//! [`Inner::dead_letter`].

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::commit::Completed;
use super::{Inner, JobError};
use crate::domain::dead_letter::{DeadLetter, Origin};
use crate::domain::job::{JobMessage, retry_delay};
use crate::domain::keys::manifest_key;
use crate::domain::status::{ErrorInfo, JobState, JobStatus};
use crate::jobs::{Applied, Attempt, AttemptError, Event, Refused, Stored, tidy};
use crate::queue::{Received, SendOptions};

/// Records the attempt's outcome: completed (already recorded), retried, failed and
/// dead-lettered, or requeued on shutdown; a cancelled or superseded run records nothing (the
/// canceller or the reaper already did). The status changes first, then the message is
/// published, so a message never arrives before the status that lets it start; the status's
/// `handover_pending` mark covers a crash in between.
///
/// Nothing here deletes a manifest that a `completed` status names: a manifest goes only once
/// this run has moved the job on by a fenced write (retrying, requeued, failed), before the
/// next attempt's message exists, or once the job has ended other than completed. A run whose
/// completion was stored but whose answer was lost (the job timeout or the shutdown cut it off)
/// learns it here, from the refusal of its next write, and counts the job completed.
pub(super) async fn finish(
    inner: &Inner,
    message: &JobMessage,
    tracker: &Attempt,
    outcome: Result<Completed, JobError>,
) {
    let result = match outcome {
        Ok(completed) => {
            if completed.tidy
                && let Some(status) = tracker.status().await
            {
                tidy::after_end(inner.storage.as_ref(), &status).await;
            }
            inner.counters.completed.fetch_add(1, Ordering::Relaxed);
            tracing::info!("Job completed.");
            Ok(())
        }
        Err(err) => record_failure(inner, message, tracker, err).await,
    };
    match result {
        Ok(()) => {}
        Err(FinishError::Lost(err)) => match tracker.status().await {
            Some(status) if status.state == JobState::Completed && status.run.as_deref() == Some(tracker.run_id()) => {
                tidy::after_end(inner.storage.as_ref(), &status).await;
                inner.counters.completed.fetch_add(1, Ordering::Relaxed);
                tracing::info!("Job completed (its completion was stored as the attempt was stopped).");
            }
            Some(status) if status.state.is_terminal() => {
                tidy::after_end(inner.storage.as_ref(), &status).await;
                tracing::info!(reason = %err, "The job ended while this attempt ended; nothing to record.");
            }
            _ => tracing::info!(reason = %err, "The job moved on while this attempt ended; nothing to record."),
        },
        Err(FinishError::Other(err)) => {
            // The ledger entry is still there: the reaper will see the stale heartbeat and retry.
            tracing::error!(
                error = format!("{err:#}"),
                "Could not record the outcome of the attempt; the reaper will recover the job."
            );
        }
    }
}

enum FinishError {
    Lost(AttemptError),
    Other(anyhow::Error),
}

impl From<AttemptError> for FinishError {
    fn from(err: AttemptError) -> Self {
        match err {
            AttemptError::Lost(_) => FinishError::Lost(err),
            AttemptError::Ledger(e) => FinishError::Other(e.into()),
        }
    }
}

impl From<anyhow::Error> for FinishError {
    fn from(err: anyhow::Error) -> Self {
        FinishError::Other(err)
    }
}

/// Deletes the job's manifest, which no status names: called by the run that holds the job,
/// right after it moved the job on (retrying, requeued) and before the next attempt's message
/// exists, so no later run can have written it. A manifest left by a run that lost the job
/// is replaced by the next attempt's, or cleared when the job fails.
async fn drop_stale_manifest(inner: &Inner, output_dir: &str) {
    let key = manifest_key(output_dir);
    if let Err(err) = inner.storage.delete(&key).await {
        tracing::warn!(key, error = %err, "Could not delete the manifest of a run that did not complete.");
    }
}

async fn record_failure(
    inner: &Inner,
    message: &JobMessage,
    tracker: &Attempt,
    err: JobError,
) -> Result<(), FinishError> {
    let output_dir = message.job.output_dir.as_str();
    match &err {
        JobError::Superseded => {
            tracing::warn!("Another attempt took over this job; this one stops without recording anything.");
            Ok(())
        }
        JobError::Cancelled => {
            // What this run (or an earlier one) uploaded before it noticed: a cancelled job
            // keeps no outputs. Its folder is its own, and no run can complete it any more.
            if let Some(status) = tracker.status().await.filter(|s| s.state == JobState::Cancelled) {
                tidy::after_end(inner.storage.as_ref(), &status).await;
            }
            tracing::info!("Job cancelled.");
            Ok(())
        }
        JobError::Interrupted => {
            // Shutting down is not the job's fault: the same attempt, at once, for another worker.
            tracker.interrupt("requeued: the worker shut down").await?;
            drop_stale_manifest(inner, output_dir).await;
            let handover = tracker.last_version().await;
            let next = JobMessage::new(message.job.clone(), message.attempt);
            inner.publish_handover(&next, Duration::ZERO, &handover).await?;
            tracing::info!("Job requeued for another worker.");
            Ok(())
        }
        JobError::Retryable { .. } => {
            let delay = retry_delay(inner.config.retry_base_delay, message.attempt + 1);
            let status = tracker.retry(err.info(), delay).await?;
            if status.state == JobState::Retrying {
                drop_stale_manifest(inner, output_dir).await;
                let next = JobMessage::new(message.job.clone(), status.attempt);
                inner.publish_handover(&next, delay, &tracker.last_version().await).await?;
                inner.counters.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, next_attempt = status.attempt, delay = ?delay, "Attempt failed; retrying.");
            } else {
                inner.settle_failed(&status, &message.to_json(), err.info(), Origin::Worker).await?;
                tracing::warn!(error = %err, "Job failed: no attempts left.");
            }
            Ok(())
        }
        JobError::Permanent { .. } => {
            let status = tracker.fail(err.info()).await?;
            inner.settle_failed(&status, &message.to_json(), err.info(), Origin::Worker).await?;
            tracing::warn!(error = %err, "Job failed.");
            Ok(())
        }
    }
}

impl Inner {
    /// Publishes the message of a handover (a retry, a recovery, a requeue) whose status is
    /// already stored as `handover` (that exact version), then clears the status's pending
    /// mark, once and only against that version: had the job moved on meanwhile (started, and
    /// even handed over again), the mark is no longer this handover's to clear.
    pub(super) async fn publish_handover(
        &self,
        message: &JobMessage,
        delay: Duration,
        handover: &Stored,
    ) -> anyhow::Result<()> {
        self.queues.ready.send(&message.to_json(), SendOptions::delayed(delay)).await?;
        let event = crate::jobs::Event::Published { attempt: message.attempt };
        match self.store.apply_once(&message.job.job_id, handover, &event).await {
            Ok(_) => {}
            // The mark stays; the reaper republishes once it is old, and a duplicate is harmless.
            Err(err) => {
                tracing::warn!(job_id = %message.job.job_id, error = %err, "Could not record a handover as published.")
            }
        }
        Ok(())
    }

    /// Sends a body to the dead-letter queue with why it is there (`letter`, signed with this
    /// worker's name). A letter naming a job says whether that job's status already records the
    /// failure: the dead-letter sweep finishes the job of one that says it does not.
    pub(super) async fn dead_letter(&self, body: &str, letter: DeadLetter) -> anyhow::Result<()> {
        let body = if body.is_empty() { "(empty message)" } else { body };
        let letter = letter.by(self.config.worker_id.clone());
        let options = letter
            .to_attributes()
            .into_iter()
            .fold(SendOptions::default(), |options, (name, value)| options.with_attribute(&name, value));
        self.queues.dead_letter.send(body, options).await?;
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A job that ended failed: its folder cleared, its message (`body`) dead-lettered with the
    /// reason its status records (else `fallback`), from `origin`, and counted.
    pub(super) async fn settle_failed(
        &self,
        status: &JobStatus,
        body: &str,
        fallback: ErrorInfo,
        origin: Origin,
    ) -> anyhow::Result<()> {
        tidy::after_end(self.storage.as_ref(), status).await;
        let info = status.error.clone().unwrap_or(fallback);
        let letter = DeadLetter::new(&info.code, &info.message, origin).about_job(status.job_id.clone(), true);
        self.dead_letter(body, letter).await?;
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A message delivered `MEDIA_MAX_RECEIVES` times without being started (the store or the
    /// ledger kept failing): its job is failed with `delivery_exhausted` and the message
    /// dead-lettered with that reason, before SQS's redrive would move it without one.
    pub(super) async fn exhaust(&self, message: &Received, job: &JobMessage) -> anyhow::Result<()> {
        self.fail_unstarted(message, job, ErrorInfo::delivery_exhausted(message.receive_count)).await
    }

    /// Fails a job that cannot start, with `error`, and dead-letters its message with that reason.
    /// When the status cannot be written now, the dead letter says so, and the dead-letter sweep
    /// records it later. A message of a job that is running elsewhere, or ended, is only a
    /// duplicate.
    pub(super) async fn fail_unstarted(
        &self,
        message: &Received,
        job: &JobMessage,
        error: ErrorInfo,
    ) -> anyhow::Result<()> {
        let job_id = job.job.job_id.as_str();
        let event = Event::Exhausted { job: job.job.clone(), attempt: job.attempt, error: error.clone() };
        let recorded = match self.store.apply(job_id, &event).await {
            Ok(Applied::Done { status, .. }) => {
                tidy::after_end(self.storage.as_ref(), &status).await;
                true
            }
            Ok(Applied::Refused { reason: Refused::InProgress | Refused::Superseded | Refused::Ended(_), .. }) => {
                tracing::info!(job_id, "Dropping an exhausted duplicate of a job that lives on or ended.");
                return self.queues.ready.delete(&message.receipt).await;
            }
            Ok(Applied::Refused { reason, .. }) => {
                tracing::warn!(job_id, reason = %reason, "An exhausted message's job cannot be failed.");
                true
            }
            Err(err) => {
                tracing::warn!(job_id, error = %err, "Could not record an exhausted job; the dead-letter sweep will.");
                false
            }
        };
        tracing::warn!(job_id, code = %error.code, receives = message.receive_count, recorded, "Dead-lettering a job that cannot start.");
        let letter = DeadLetter::new(&error.code, &error.message, Origin::Ready).about_job(job_id, recorded);
        self.dead_letter(&message.body, letter).await?;
        self.queues.ready.delete(&message.receipt).await
    }
}
