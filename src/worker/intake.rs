//! What happens to a message received from the ready queue: it is parsed, deduplicated, and
//! either dead-lettered, dropped, split, or moved to the in-processing ledger and started.
//!
//! Every step sends before it deletes, so a crash in between duplicates a message (which the
//! status check recognises) and never loses one. A step that fails leaves the message on the
//! ready queue, where it reappears after its visibility timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use tokio::sync::OwnedSemaphorePermit;

use super::Inner;
use super::status::{StatusTracker, read_status};
use crate::domain::event::{EventContext, parse_ready_message};
use crate::domain::job::{JobMessage, LedgerEntry, MESSAGE_VERSION};
use crate::domain::status::JobState;
use crate::queue::{Received, SendOptions};

pub(super) async fn handle(inner: &Arc<Inner>, message: Received, permit: OwnedSemaphorePermit) {
    let message_id = message.message_id.clone();
    if let Err(err) = try_handle(inner, message, permit).await {
        tracing::warn!(
            message_id,
            error = format!("{err:#}"),
            "A ready message could not be handled; it will be redelivered."
        );
    }
}

async fn try_handle(inner: &Arc<Inner>, message: Received, permit: OwnedSemaphorePermit) -> anyhow::Result<()> {
    let ready = &inner.queues.ready;
    let ctx = EventContext { layout: &inner.config.layout, default_presets: &inner.config.default_presets };
    let parsed = match parse_ready_message(&message.body, &ctx) {
        Ok(parsed) => parsed,
        Err(poison) => {
            tracing::warn!(message_id = %message.message_id, reason = poison.code(), error = %poison, "Dead-lettering an unreadable message.");
            inner.dead_letter(&message.body, poison.code(), &poison.to_string(), "ready", None).await?;
            return ready.delete(&message.receipt).await;
        }
    };
    for invalid in &parsed.invalid {
        tracing::warn!(message_id = %message.message_id, reason = invalid.code, error = %invalid.reason, "Dead-lettering an unusable S3 record.");
        inner.dead_letter(&invalid.record, invalid.code, &invalid.reason, "ready", None).await?;
    }
    for reason in &parsed.ignored {
        tracing::debug!(message_id = %message.message_id, reason, "Ignoring a record.");
    }
    let mut jobs = parsed.jobs;
    if jobs.len() > 1 {
        // One message, several uploads: give each its own message so each gets its own permit,
        // visibility and retries.
        for job in &jobs {
            ready.send(&job.to_json(), SendOptions::default()).await?;
        }
        tracing::info!(message_id = %message.message_id, jobs = jobs.len(), "Split a multi-record event into jobs.");
        return ready.delete(&message.receipt).await;
    }
    let Some(job) = jobs.pop() else {
        return ready.delete(&message.receipt).await;
    };

    if let Some(reason) = duplicate_reason(inner, &job).await? {
        tracing::info!(job_id = %job.job.job_id, attempt = job.attempt, reason, "Skipping a duplicate delivery.");
        inner.counters.skipped.fetch_add(1, Ordering::Relaxed);
        return ready.delete(&message.receipt).await;
    }

    // Move to the ledger, then take it off the ready queue.
    let entry = LedgerEntry {
        version: MESSAGE_VERSION,
        job: job.job.clone(),
        attempt: job.attempt,
        worker: inner.config.worker_id.clone(),
        started_at: Utc::now(),
    };
    inner.queues.processing.send(&entry.to_json(), SendOptions::default()).await?;
    ready.delete(&message.receipt).await?;

    // Marked running before the next message is looked at, so a duplicate in the same batch
    // is recognised.
    let tracker = match StatusTracker::start(
        inner.storage.clone(),
        &job.job,
        job.attempt,
        inner.config.max_attempts,
        &inner.config.worker_id,
    )
    .await
    {
        Ok(tracker) => tracker,
        Err(err) => {
            // The ledger entry stays; the reaper recovers the job once it has been silent too long.
            tracing::warn!(job_id = %job.job.job_id, error = %err, "Could not record the job as running; leaving it to the reaper.");
            return Ok(());
        }
    };
    let running = inner.mark_running(&job.job.job_id, job.attempt);
    let job_inner = inner.clone();
    inner.counters.started.fetch_add(1, Ordering::Relaxed);
    let protected = inner.protection.job_started();
    inner.jobs.spawn(async move {
        // Held until the job ends, whatever way it ends.
        let _permit = permit;
        let _running = running;
        let _protected = protected;
        super::execute::run(job_inner, job, tracker).await;
    });
    Ok(())
}

/// Why this delivery must not run, if it must not: the job already ended, a later attempt
/// exists, or this very attempt is alive on another worker.
async fn duplicate_reason(inner: &Inner, job: &JobMessage) -> anyhow::Result<Option<&'static str>> {
    let Some(status) = read_status(inner.storage.as_ref(), &job.job.job_id).await? else { return Ok(None) };
    if status.state.is_terminal() {
        return Ok(Some("the job already ended"));
    }
    if status.attempt > job.attempt {
        return Ok(Some("a later attempt of the job exists"));
    }
    if status.attempt == job.attempt
        && status.state == JobState::Running
        && status.heartbeat_is_fresh(Utc::now(), inner.config.heartbeat_timeout)
    {
        return Ok(Some("the same attempt is running on a live worker"));
    }
    Ok(None)
}
