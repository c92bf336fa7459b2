//! What happens to a message received from the ready queue: it is parsed, and either
//! dead-lettered, dropped, split, left for another worker, or started; a split job's segment
//! goes to [`super::segment`].
//!
//! Starting is, in this order: the ledger entry is sent (so every running job has a record the
//! reaper sees), the start transition is won by compare-and-swap (at most one run per attempt,
//! however many copies of the message are delivered at once), and only then is the message
//! deleted from ready. A crash between any two steps leaves the message or the entry behind,
//! never a job nobody will finish; a step that fails leaves the message on the ready queue,
//! where it reappears after its visibility timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::OwnedSemaphorePermit;

use super::Inner;
use super::scratch::{self, Room};
use crate::domain::dead_letter::{DeadLetter, Origin};
use crate::domain::error_code::ErrorCode;
use crate::domain::event::EventContext;
use crate::domain::job::{JobMessage, LedgerEntry, MESSAGE_VERSION};
use crate::domain::ready::ReadyMessage;
use crate::domain::split::SegmentTask;
use crate::domain::status::ErrorInfo;
use crate::jobs::{Attempt, Refused};
use crate::queue::{Received, SendOptions};

/// Longest a start (read and compare-and-swap of the status) may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);

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
    let job = match ReadyMessage::parse(&message.body, &ctx) {
        Err(poison) => {
            tracing::warn!(message_id = %message.message_id, reason = %poison.code(), error = %poison, "Dead-lettering an unreadable message.");
            let letter = DeadLetter::new(poison.code(), poison.to_string(), Origin::Ready);
            inner.dead_letter(&message.body, letter).await?;
            return ready.delete(&message.receipt).await;
        }
        Ok(ReadyMessage::Segment(task)) => {
            start_segment(inner, message, task, permit);
            return Ok(());
        }
        Ok(ReadyMessage::Job(job)) => *job,
        Ok(ReadyMessage::S3Event { jobs, ignored, invalid }) => {
            for invalid in &invalid {
                tracing::warn!(message_id = %message.message_id, reason = %invalid.code, error = %invalid.reason, "Dead-lettering an unusable S3 record.");
                let letter = DeadLetter::new(invalid.code, invalid.reason.clone(), Origin::Ready);
                inner.dead_letter(&invalid.record, letter).await?;
            }
            for reason in &ignored {
                tracing::debug!(message_id = %message.message_id, reason, "Ignoring a record.");
            }
            match <[JobMessage; 1]>::try_from(jobs) {
                Ok([job]) => job,
                Err(jobs) => return fan_out(inner, &message, &jobs).await,
            }
        }
    };
    if message.receive_count >= inner.max_receives() {
        return inner.exhaust(&message, &job).await;
    }
    if !has_room(inner, &message, &job).await? {
        return Ok(());
    }
    start(inner, message, job, permit).await
}

/// Hands a split job's segment to [`super::segment`], counted, with the slot it can start in
/// now if any, before the intake's next receive.
fn start_segment(inner: &Arc<Inner>, message: Received, task: SegmentTask, permit: OwnedSemaphorePermit) {
    let segment_inner = inner.clone();
    let protected = inner.protection.job_started();
    let in_hand = inner.segment_in_hand();
    let slot = inner.try_transcode_slot();
    inner.jobs.spawn(async move {
        let (_protected, _in_hand) = (protected, in_hand);
        super::segment::run(segment_inner, message, task, permit, slot).await;
    });
}

/// One message, several uploads (or none): each gets its own message, so each gets its own
/// permit, visibility and retries.
async fn fan_out(inner: &Inner, message: &Received, jobs: &[JobMessage]) -> anyhow::Result<()> {
    let ready = &inner.queues.ready;
    if !jobs.is_empty() {
        for job in jobs {
            ready.send(&job.to_json(), SendOptions::default()).await?;
        }
        tracing::info!(message_id = %message.message_id, jobs = jobs.len(), "Split a multi-record event into jobs.");
    }
    ready.delete(&message.receipt).await
}

/// Whether the scratch disk has room for the job now; when not, the job is offered again later
/// or, when it never fits, failed (`false` either way).
async fn has_room(inner: &Inner, message: &Received, job: &JobMessage) -> anyhow::Result<bool> {
    match scratch::room(&inner.config, job.job.source.size) {
        Room::Now => Ok(true),
        Room::Later { need, free } => {
            tracing::info!(
                job_id = %job.job.job_id,
                need_bytes = need,
                free_bytes = free,
                "Not enough scratch space for this job now; offering it again shortly."
            );
            decline(inner, message, job).await.map(|()| false)
        }
        Room::Never { need, capacity } => {
            let error = ErrorInfo {
                code: ErrorCode::SourceTooLarge.into(),
                message: format!(
                    "the job needs about {need} bytes of scratch space; a worker's scratch disk \
                     (MEDIA_WORK_DIR) holds {capacity} bytes in all"
                ),
                retryable: false,
            };
            inner.fail_unstarted(message, job, error).await.map(|()| false)
        }
    }
}

/// Starts the job: ledger entry, start transition, delete, then the run in its own task.
async fn start(
    inner: &Arc<Inner>,
    message: Received,
    job: JobMessage,
    permit: OwnedSemaphorePermit,
) -> anyhow::Result<()> {
    let ready = &inner.queues.ready;
    // The run's fencing token: every status write of this run carries it.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let entry = LedgerEntry {
        version: MESSAGE_VERSION,
        job: job.job.clone(),
        attempt: job.attempt,
        run: Some(run.clone()),
        worker: inner.config.worker_id.clone(),
        started_at: Utc::now(),
    };
    inner.queues.processing.send(&entry.to_json(), SendOptions::default()).await?;

    // Bounded, so the reaper knows how long a start can still land (see `reaper::START_GRACE`).
    let start =
        Attempt::start(&inner.store, &job.job, job.attempt, &run, &inner.config.worker_id, inner.config.max_attempts);
    let started = tokio::time::timeout(START_TIMEOUT, start)
        .await
        .map_err(|_| anyhow::anyhow!("starting job {} took longer than {START_TIMEOUT:?}", job.job.job_id))??;
    let attempt = match started {
        Ok(attempt) => attempt,
        Err(refused) => {
            // Another copy of this message won, or the job ended or moved on: this delivery is a
            // duplicate. (Our ledger entry names a run that never owned the job; the reaper
            // clears it.)
            if refused == Refused::Mismatch {
                let reason = "the message names an existing job but describes it differently";
                inner
                    .dead_letter(&message.body, DeadLetter::new(ErrorCode::JobMismatch, reason, Origin::Ready))
                    .await?;
            }
            tracing::info!(job_id = %job.job.job_id, attempt = job.attempt, reason = %refused, "Dropping a delivery that cannot start.");
            inner.counters.skipped.fetch_add(1, Ordering::Relaxed);
            return ready.delete(&message.receipt).await;
        }
    };
    if let Err(err) = ready.delete(&message.receipt).await {
        // The job is ours whatever happens to the message: its redelivery is refused at start.
        tracing::warn!(job_id = %job.job.job_id, error = format!("{err:#}"), "Could not delete a started message.");
    }

    let running = inner.mark_running(&job.job.job_id, job.attempt);
    let job_inner = inner.clone();
    inner.counters.started.fetch_add(1, Ordering::Relaxed);
    let protected = inner.protection.job_started();
    inner.jobs.spawn(async move {
        // Held until the job ends, whatever way it ends (the permit: unless the run gives it
        // back while it only waits, see `permits::JobPermit`).
        let _running = running;
        let _protected = protected;
        super::execute::run(job_inner, job, attempt, super::permits::JobPermit::new(permit)).await;
    });
    Ok(())
}

/// Offers a job that does not fit the scratch disk now to the workers again after
/// `MEDIA_RETRY_BASE_DELAY`, as a new message: a decline is no delivery of the job, so it must not
/// spend the receives after which the job would fail (`MEDIA_MAX_RECEIVES`). The copy is sent
/// before the delivery is deleted, so a crash in between leaves a duplicate, never nothing.
async fn decline(inner: &Inner, message: &Received, job: &JobMessage) -> anyhow::Result<()> {
    let ready = &inner.queues.ready;
    ready.send(&job.to_json(), SendOptions::delayed(inner.config.retry_base_delay)).await?;
    ready.delete(&message.receipt).await
}
