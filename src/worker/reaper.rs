//! The reaper: sweeps the in-processing ledger and recovers jobs whose worker died.
//!
//! For each ledger entry (one per run that tried to start):
//! - the job ended, or belongs to another run and has no handover pending: the entry is
//!   deleted (once it is older than the heartbeat timeout, so a start still in flight is never
//!   orphaned);
//! - a handover (retry, recovery, requeue) is pending for longer than the heartbeat timeout: the
//!   handing-over process died between the status and the message, so the message is published
//!   again, then the entry deleted;
//! - the entry's run owns the job and was heard from within the heartbeat timeout (or runs in
//!   this process): the entry stays hidden until the next check;
//! - otherwise the run's worker is presumed dead: the recover transition (compare-and-swap, so a
//!   heartbeat landing meanwhile wins) hands the job to its next attempt, or fails it with
//!   `worker_lost` when that was the last; then the message is published and the entry deleted.
//!
//! Several reapers (one per worker) can sweep at once: the queue's visibility timeout hands each
//! entry to one of them at a time, and the transitions are fenced anyway.

use std::time::Duration;

use chrono::Utc;

use super::Inner;
use crate::domain::dead_letter::{DeadLetter, Origin};
use crate::domain::error_code::ErrorCode;
use crate::domain::job::{JobMessage, LedgerEntry};
use crate::domain::status::{ErrorInfo, JobState, JobStatus};
use crate::jobs::{Applied, Event, Refused, Stored, tidy};
use crate::queue::{MAX_BATCH, Received};

/// At most this many batches per sweep, so one sweep of a huge ledger cannot run forever.
const MAX_BATCHES: usize = 100;

/// How long a start may still land after its ledger entry was sent, beyond the heartbeat
/// timeout: intake gives up on a start after `START_TIMEOUT`, and its calls are bounded.
pub(super) const START_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReapOutcome {
    /// Entries of ended (or superseded) attempts, removed.
    pub cleared: usize,
    /// Entries of live attempts, left hidden.
    pub alive: usize,
    /// Jobs of dead workers, republished for another attempt.
    pub recovered: usize,
    /// Jobs of dead workers with no attempts left, failed.
    pub failed: usize,
    /// Handovers whose message was lost with the process that made them, published again.
    pub republished: usize,
}

pub(super) async fn sweep(inner: &Inner) -> anyhow::Result<ReapOutcome> {
    let mut outcome = ReapOutcome::default();
    // An entry of a live attempt is looked at again after one heartbeat interval.
    let recheck = inner.config.heartbeat_interval;
    for _ in 0..MAX_BATCHES {
        let entries = inner.queues.processing.receive(MAX_BATCH, Duration::ZERO, recheck).await?;
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            if let Err(err) = reap_entry(inner, &entry, &mut outcome).await {
                tracing::warn!(message_id = %entry.message_id, error = format!("{err:#}"), "A ledger entry could not be checked.");
            }
        }
    }
    if outcome.cleared + outcome.recovered + outcome.failed + outcome.republished > 0 {
        tracing::info!(
            cleared = outcome.cleared,
            alive = outcome.alive,
            recovered = outcome.recovered,
            failed = outcome.failed,
            republished = outcome.republished,
            "Swept the in-processing ledger."
        );
    }
    Ok(outcome)
}

/// What a sweep does with one ledger entry, judged from the job's status.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A live run's (or a start still in flight): looked at again later.
    Keep,
    /// Of a run that no longer owns the job: removed.
    Clear,
    /// The job ended: its folder cleared once more, the entry removed.
    Ended,
    /// A handover whose message may be lost: published again, the entry removed.
    Republish,
    /// The owning run `run` went silent: its job recovered.
    Recover(String),
}

async fn reap_entry(inner: &Inner, received: &Received, outcome: &mut ReapOutcome) -> anyhow::Result<()> {
    let processing = &inner.queues.processing;
    let entry: LedgerEntry = match serde_json::from_str(&received.body) {
        Ok(entry) => entry,
        Err(err) => {
            let letter = DeadLetter::new(ErrorCode::MalformedLedgerEntry, err.to_string(), Origin::Processing);
            inner.dead_letter(&received.body, letter).await?;
            return processing.delete(&received.receipt).await;
        }
    };
    let job_id = entry.job.job_id.as_str();
    let stored = inner.store.read_versioned(job_id).await?;
    let verdict = match &stored.status {
        Some(status) => judge(inner, &entry, status, Utc::now()),
        // No status: the run never started the job (the ready message, still there, will
        // start it), unless its start is still in flight.
        None if start_may_land(inner, &entry) => Verdict::Keep,
        None => Verdict::Clear,
    };
    let removed = match verdict {
        Verdict::Keep => false,
        Verdict::Clear => {
            outcome.cleared += 1;
            true
        }
        Verdict::Ended => {
            // Whoever ended it cleared its folder, unless that was a canceller while its run was
            // dead, or the ending's clean-up was cut short: once more, from here.
            if let Some(status) = &stored.status {
                tidy::after_end(inner.storage.as_ref(), status).await;
            }
            outcome.cleared += 1;
            true
        }
        Verdict::Republish => {
            republish(inner, &stored).await?;
            outcome.republished += 1;
            true
        }
        Verdict::Recover(run) => recover(inner, &entry, stored, run, outcome).await?,
    };
    if !removed {
        outcome.alive += 1;
        tracing::debug!(job_id, attempt = entry.attempt, "Ledger entry kept.");
        return Ok(());
    }
    processing.delete(&received.receipt).await
}

/// Whether the start of the entry's run may still land: the intake's start is bounded, so after
/// the heartbeat timeout and [`START_GRACE`] it never will.
fn start_may_land(inner: &Inner, entry: &LedgerEntry) -> bool {
    let age = Utc::now().signed_duration_since(entry.started_at).to_std().unwrap_or_default();
    age < inner.config.heartbeat_timeout + START_GRACE
}

/// The verdict on an entry whose job has a status.
fn judge(inner: &Inner, entry: &LedgerEntry, status: &JobStatus, now: chrono::DateTime<Utc>) -> Verdict {
    let timeout = inner.config.heartbeat_timeout;
    if status.state.is_terminal() {
        return Verdict::Ended;
    }
    if status.handover_pending {
        let pending_for = now.signed_duration_since(status.updated_at).to_std().unwrap_or_default();
        return if pending_for < timeout { Verdict::Keep } else { Verdict::Republish };
    }
    let owns = match &entry.run {
        Some(run) => status.run.as_deref() == Some(run.as_str()),
        // An entry written before runs had ids: judged by its attempt.
        None => status.attempt == entry.attempt,
    };
    if !owns || status.state != JobState::Running {
        // The entry's run does not own the job. It never will once another run owns it or a
        // later attempt exists; until then its start may still be in flight (bounded by
        // START_GRACE), so the entry is kept: deleting it under a start that then lands would
        // leave a running job no reaper knows of.
        let lost_for_good = status.state == JobState::Running || status.attempt > entry.attempt;
        return if !lost_for_good && start_may_land(inner, entry) { Verdict::Keep } else { Verdict::Clear };
    }
    let Some(run) = status.run.clone() else { return Verdict::Keep };
    if status.heartbeat_is_fresh(now, timeout) || inner.is_running_here(&entry.job.job_id, status.attempt) {
        return Verdict::Keep;
    }
    Verdict::Recover(run)
}

/// Whoever handed the job over died before its message went out (or before it could say so):
/// publish it (again; a duplicate is refused at start). The retry's back-off is not kept: the
/// handover has waited a heartbeat timeout already.
async fn republish(inner: &Inner, stored: &Stored) -> anyhow::Result<()> {
    let Some(status) = &stored.status else { return Ok(()) };
    let message = JobMessage::new(status.job.clone(), status.attempt);
    inner.publish_handover(&message, Duration::ZERO, stored).await?;
    tracing::warn!(job_id = %status.job_id, attempt = status.attempt, "Republished a handover whose message may be lost.");
    Ok(())
}

/// Recovers the job of a silent run: its next attempt, or failed when that was the last.
/// Whether the entry is to be removed.
async fn recover(
    inner: &Inner,
    entry: &LedgerEntry,
    stored: Stored,
    run: String,
    outcome: &mut ReapOutcome,
) -> anyhow::Result<bool> {
    let job_id = entry.job.job_id.as_str();
    let worker = entry.worker.as_str();
    let event = Event::Recover { run, heartbeat_timeout: inner.config.heartbeat_timeout };
    match inner.store.apply_to(job_id, stored, &event).await? {
        Applied::Done { status, .. } if status.state == JobState::Failed => {
            let lost = ErrorInfo {
                code: ErrorCode::WorkerLost.into(),
                message: "the worker stopped responding".into(),
                retryable: false,
            };
            let message = JobMessage::new(entry.job.clone(), entry.attempt);
            inner.settle_failed(&status, &message.to_json(), lost, Origin::Reaper).await?;
            outcome.failed += 1;
            tracing::warn!(job_id, worker, "Job of a dead worker failed: no attempts left.");
        }
        Applied::Done { status } => {
            let handover = Stored { status: Some(status.clone()) };
            let message = JobMessage::new(status.job.clone(), status.attempt);
            inner.publish_handover(&message, Duration::ZERO, &handover).await?;
            outcome.recovered += 1;
            tracing::warn!(job_id, worker, next_attempt = status.attempt, "Recovered the job of a dead worker.");
        }
        // A heartbeat landed between our read and our write.
        Applied::Refused { reason: Refused::Alive, .. } => return Ok(false),
        Applied::Refused { reason, current } => {
            // The job moved on (its run ended, or another reaper recovered it). Unless it ended,
            // a handover of it may be pending: keep the entry, so the next sweep sees that.
            tracing::debug!(job_id, reason = %reason, "The job moved on before it could be recovered.");
            if !current.is_some_and(|s| s.state.is_terminal()) {
                return Ok(false);
            }
            outcome.cleared += 1;
        }
    }
    Ok(true)
}
