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

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;

use super::Inner;
use crate::domain::dead_letter::{DeadLetter, Origin};
use crate::domain::job::{JobMessage, LedgerEntry};
use crate::domain::status::{ErrorInfo, JobState};
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

async fn reap_entry(inner: &Inner, received: &Received, outcome: &mut ReapOutcome) -> anyhow::Result<()> {
    let processing = &inner.queues.processing;
    let entry: LedgerEntry = match serde_json::from_str(&received.body) {
        Ok(entry) => entry,
        Err(err) => {
            let letter = DeadLetter::new("malformed_ledger_entry", err.to_string(), Origin::Processing);
            inner.dead_letter(&received.body, letter).await?;
            return processing.delete(&received.receipt).await;
        }
    };
    let job_id = entry.job.job_id.as_str();
    let stored = inner.store.read_versioned(job_id).await?;
    let now = Utc::now();
    let timeout = inner.config.heartbeat_timeout;
    let entry_age = now.signed_duration_since(entry.started_at).to_std().unwrap_or_default();
    let keep = |outcome: &mut ReapOutcome| {
        outcome.alive += 1;
        tracing::debug!(job_id, attempt = entry.attempt, "Ledger entry kept.");
    };

    let Some(status) = &stored.status else {
        // No status: the run never started the job (the ready message, still there, will
        // start it), unless its start is still in flight.
        if entry_age < timeout + START_GRACE {
            keep(outcome);
            return Ok(());
        }
        outcome.cleared += 1;
        return processing.delete(&received.receipt).await;
    };
    if status.state.is_terminal() {
        // Whoever ended it cleared its folder, unless that was a canceller while its run was
        // dead, or the ending's clean-up was cut short: once more, from here.
        tidy::after_end(inner.storage.as_ref(), status).await;
        outcome.cleared += 1;
        return processing.delete(&received.receipt).await;
    }
    if status.handover_pending {
        let pending_for = now.signed_duration_since(status.updated_at).to_std().unwrap_or_default();
        if pending_for < timeout {
            keep(outcome);
            return Ok(());
        }
        // Whoever handed the job over died before its message went out (or before it could
        // say so): publish it (again; a duplicate is refused at start). The retry's back-off is
        // not kept: the handover has waited a heartbeat timeout already.
        let message = JobMessage::new(status.job.clone(), status.attempt);
        inner.publish_handover(&message, Duration::ZERO, &stored).await?;
        outcome.republished += 1;
        tracing::warn!(job_id, attempt = status.attempt, "Republished a handover whose message may be lost.");
        return processing.delete(&received.receipt).await;
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
        if !lost_for_good && entry_age < timeout + START_GRACE {
            keep(outcome);
            return Ok(());
        }
        outcome.cleared += 1;
        return processing.delete(&received.receipt).await;
    }
    let Some(run) = status.run.clone() else {
        keep(outcome);
        return Ok(());
    };
    if status.heartbeat_is_fresh(now, timeout) || inner.is_running_here(job_id, status.attempt) {
        keep(outcome);
        return Ok(());
    }

    let worker = entry.worker.as_str();
    let event = Event::Recover { run, heartbeat_timeout: timeout };
    match inner.store.apply_to(job_id, stored.clone(), &event).await? {
        Applied::Done { status, .. } if status.state == JobState::Failed => {
            tidy::after_end(inner.storage.as_ref(), &status).await;
            let info = status.error.clone().unwrap_or_else(|| ErrorInfo {
                code: "worker_lost".into(),
                message: "the worker stopped responding".into(),
                retryable: false,
            });
            let message = JobMessage::new(entry.job.clone(), entry.attempt);
            let letter = DeadLetter::new(&info.code, &info.message, Origin::Reaper).about_job(job_id, true);
            inner.dead_letter(&message.to_json(), letter).await?;
            inner.counters.failed.fetch_add(1, Ordering::Relaxed);
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
        Applied::Refused { reason: Refused::Alive, .. } => {
            // A heartbeat landed between our read and our write.
            keep(outcome);
            return Ok(());
        }
        Applied::Refused { reason, current } => {
            // The job moved on (its run ended, or another reaper recovered it). Unless it ended,
            // a handover of it may be pending: keep the entry, so the next sweep sees that.
            tracing::debug!(job_id, reason = %reason, "The job moved on before it could be recovered.");
            if !current.is_some_and(|s| s.state.is_terminal()) {
                keep(outcome);
                return Ok(());
            }
            outcome.cleared += 1;
        }
    }
    processing.delete(&received.receipt).await
}
