//! The reaper: sweeps the in-processing ledger and recovers jobs whose worker died.
//!
//! For each ledger entry (one per started attempt):
//! - the job ended, or moved on to a later attempt: the entry is deleted;
//! - the attempt's worker was heard from within the heartbeat timeout: the entry stays hidden
//!   until the next check;
//! - otherwise the worker is presumed dead: the next attempt is published to the ready queue
//!   (or, with no attempts left, the job is failed and dead-lettered), then the entry deleted.
//!
//! Several reapers (one per worker) can sweep at once: the queue's visibility timeout hands each
//! entry to one of them at a time.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::status::{read_status, update_status};
use super::{HANDOVER_DELAY, Inner};
use crate::domain::job::{JobMessage, LedgerEntry};
use crate::domain::status::{ErrorInfo, JobState, Stage};
use crate::queue::{MAX_BATCH, Received, SendOptions};

/// At most this many batches per sweep, so one sweep of a huge ledger cannot run forever.
const MAX_BATCHES: usize = 100;

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
}

pub(super) async fn sweep(inner: &Inner) -> anyhow::Result<ReapOutcome> {
    let mut outcome = ReapOutcome::default();
    // An entry of a live attempt is looked at again after one heartbeat interval.
    let recheck = inner.config.heartbeat_interval;
    for _ in 0..MAX_BATCHES {
        let entries = inner.queues.processing.receive(MAX_BATCH, std::time::Duration::ZERO, recheck).await?;
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            if let Err(err) = reap_entry(inner, &entry, &mut outcome).await {
                tracing::warn!(message_id = %entry.message_id, error = format!("{err:#}"), "A ledger entry could not be checked.");
            }
        }
    }
    if outcome.cleared + outcome.recovered + outcome.failed > 0 {
        tracing::info!(
            cleared = outcome.cleared,
            alive = outcome.alive,
            recovered = outcome.recovered,
            failed = outcome.failed,
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
            inner.dead_letter(&received.body, "malformed_ledger_entry", &err.to_string(), "processing", None).await?;
            return processing.delete(&received.receipt).await;
        }
    };
    let job_id = entry.job.job_id.as_str();
    let status = read_status(inner.storage.as_ref(), job_id).await?;
    let now = Utc::now();

    let mut last_heard: DateTime<Utc> = entry.started_at;
    if let Some(status) = &status {
        if status.state.is_terminal() || status.attempt > entry.attempt {
            outcome.cleared += 1;
            return processing.delete(&received.receipt).await;
        }
        if status.attempt == entry.attempt
            && let Some(beat) = status.heartbeat_at
        {
            last_heard = last_heard.max(beat);
        }
    }
    let silent_for = now.signed_duration_since(last_heard).to_std().unwrap_or_default();
    if silent_for < inner.config.heartbeat_timeout || inner.is_running_here(job_id, entry.attempt) {
        outcome.alive += 1;
        tracing::debug!(job_id, attempt = entry.attempt, silent_s = silent_for.as_secs(), "Ledger entry is alive.");
        return Ok(());
    }

    let worker = entry.worker.as_str();
    if entry.attempt >= inner.config.max_attempts {
        let info = ErrorInfo {
            code: "worker_lost".into(),
            message: format!(
                "worker {worker} stopped responding during attempt {} of {}, the last allowed",
                entry.attempt, inner.config.max_attempts
            ),
            retryable: false,
        };
        let message = JobMessage::new(entry.job.clone(), entry.attempt);
        inner.dead_letter(&message.to_json(), &info.code, &info.message, "reaper", Some(job_id)).await?;
        update_status(inner.storage.as_ref(), &entry.job, inner.config.max_attempts, |s| {
            s.error = Some(info);
            s.transition(JobState::Failed, Stage::Done, now, None);
        })
        .await?;
        inner.counters.failed.fetch_add(1, Ordering::Relaxed);
        outcome.failed += 1;
        tracing::warn!(job_id, worker, "Job of a dead worker failed: no attempts left.");
        return processing.delete(&received.receipt).await;
    }

    let next_attempt = entry.attempt + 1;
    let message = JobMessage::new(entry.job.clone(), next_attempt);
    inner.queues.ready.send(&message.to_json(), SendOptions::delayed(HANDOVER_DELAY)).await?;
    let note = format!("recovered: worker {worker} was silent for {}s", silent_for.as_secs());
    update_status(inner.storage.as_ref(), &entry.job, inner.config.max_attempts, |s| {
        s.attempt = next_attempt;
        s.worker = None;
        s.heartbeat_at = None;
        s.error = Some(ErrorInfo { code: "worker_lost".into(), message: note.clone(), retryable: true });
        s.transition(JobState::Retrying, Stage::Queued, now, Some(note.clone()));
    })
    .await?;
    outcome.recovered += 1;
    tracing::warn!(job_id, worker, next_attempt, "Recovered the job of a dead worker.");
    processing.delete(&received.receipt).await
}
