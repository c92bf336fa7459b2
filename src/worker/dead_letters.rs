//! The dead-letter sweep: every dead letter ends with its job in a final state and a reason.
//!
//! Dead letters the worker writes itself carry a `reason` and, when they concern a job, the
//! attribute `job_state` ([`crate::domain::dead_letter::DeadLetter`]): `recorded` once the
//! job's status says how it ended. Two kinds need finishing: messages SQS's redrive policy
//! moved on its own (no attributes at all), and messages dead-lettered while the store was
//! unreachable (`unrecorded`). For each, the sweep fails the job with `delivery_exhausted`
//! (unless it ended, or lives on under a later attempt or another delivery), then replaces the
//! message with a copy that carries the reason.

use std::collections::HashSet;
use std::time::Duration;

use super::Inner;
use crate::domain::dead_letter::{DeadLetter, Origin};
use crate::domain::error_code::ErrorCode;
use crate::domain::event::EventContext;
use crate::domain::job::JobMessage;
use crate::domain::ready::ReadyMessage;
use crate::domain::split::SegmentTask;
use crate::domain::status::ErrorInfo;
use crate::jobs::{Applied, Event, tidy};
use crate::queue::{MAX_BATCH, Received};

/// Hidden from other readers while a sweep looks at them; revealed again right after.
const LOOK: Duration = Duration::from_secs(30);
/// At most this many batches per sweep.
const MAX_BATCHES: usize = 20;

pub(super) async fn sweep(inner: &Inner) -> anyhow::Result<usize> {
    let queue = &inner.queues.dead_letter;
    let mut seen = HashSet::new();
    let mut untouched = Vec::new();
    let mut finished = 0;
    for _ in 0..MAX_BATCHES {
        let batch = queue.receive(MAX_BATCH, Duration::ZERO, LOOK).await?;
        if batch.is_empty() {
            break;
        }
        for message in batch {
            if !seen.insert(message.message_id.clone()) {
                untouched.push(message.receipt);
                continue;
            }
            match finish(inner, &message).await {
                Ok(true) => finished += 1,
                Ok(false) => untouched.push(message.receipt),
                Err(err) => {
                    tracing::warn!(message_id = %message.message_id, error = format!("{err:#}"), "A dead letter could not be finished; the next sweep tries again.");
                    untouched.push(message.receipt);
                }
            }
        }
    }
    // Operators' tools see the queue as it was.
    for receipt in untouched {
        if let Err(err) = queue.change_visibility(&receipt, Duration::ZERO).await {
            tracing::debug!(error = format!("{err:#}"), "Could not reveal a dead letter again.");
        }
    }
    if finished > 0 {
        tracing::info!(finished, "Recorded the reason of dead letters that had none.");
    }
    Ok(finished)
}

/// Finishes one dead letter if it needs it; `false` when it was already complete.
async fn finish(inner: &Inner, message: &Received) -> anyhow::Result<bool> {
    let said = DeadLetter::from_attributes(&message.attributes);
    if said.is_complete() {
        return Ok(false);
    }
    let ctx = EventContext { layout: &inner.config.layout, default_presets: &inner.config.default_presets };
    let (code, text, job_id) = match ReadyMessage::parse(&message.body, &ctx) {
        Err(poison) => (poison.code().to_string(), poison.to_string(), None),
        Ok(ready) => {
            let error = ErrorInfo::delivery_exhausted(message.receive_count.max(1));
            let named = match ready {
                ReadyMessage::Segment(task) => {
                    fail_segment(inner, &task, message.receive_count).await?;
                    Some(task.job_id)
                }
                ready => fail_jobs(inner, ready.jobs(), &error).await?,
            };
            (said.reason.unwrap_or(error.code), said.error.unwrap_or(error.message), named)
        }
    };
    let mut letter = DeadLetter::new(code, text, said.origin.unwrap_or(Origin::Redrive));
    if let Some(job_id) = job_id {
        letter = letter.about_job(job_id, true);
    }
    inner.dead_letter(&message.body, letter).await?;
    inner.queues.dead_letter.delete(&message.receipt).await?;
    Ok(true)
}

/// Fails the jobs of a dead letter with `delivery_exhausted`, unless they ended or live on;
/// the last job named, if any.
async fn fail_jobs(inner: &Inner, jobs: &[JobMessage], error: &ErrorInfo) -> anyhow::Result<Option<String>> {
    let mut named = None;
    for job in jobs {
        let event = Event::Exhausted { job: job.job.clone(), attempt: job.attempt, error: error.clone() };
        match inner.store.apply(&job.job.job_id, &event).await? {
            Applied::Done { status, .. } => {
                tidy::after_end(inner.storage.as_ref(), &status).await;
                tracing::warn!(job_id = %job.job.job_id, "Failed a job whose message was dead-lettered.")
            }
            Applied::Refused { reason, .. } => {
                tracing::info!(job_id = %job.job.job_id, reason = %reason, "A dead letter's job needs no change.");
            }
        }
        named = Some(job.job.job_id.clone());
    }
    Ok(named)
}

/// A split job's segment that kept taking its workers down: the job's attempt fails through
/// the segment's failure record, and its attempts decide. Only in the folder the job's status
/// names.
async fn fail_segment(inner: &Inner, task: &SegmentTask, receive_count: u32) -> anyhow::Result<()> {
    let live = inner.store.read(&task.job_id).await?.filter(|s| !s.state.is_terminal());
    if live.is_some_and(|s| s.job.output_dir == task.output_dir) {
        let message = format!("its message was delivered {} times without it being encoded", receive_count.max(1));
        let error = ErrorInfo { code: ErrorCode::SegmentFailed.into(), message, retryable: true };
        super::segment::record_failure(inner, task, error).await?;
        tracing::warn!(job_id = %task.job_id, segment = task.index, "Failed a segment whose message was dead-lettered.");
    }
    Ok(())
}
