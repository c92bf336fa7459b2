//! One segment of a split job, taken from the ready queue by any worker: its piece is
//! downloaded, encoded into every rendition, stored, and checkpointed.
//!
//! The message is the segment's lease: it stays on the ready queue, hidden and re-hidden while
//! the encode runs, and is deleted only once the checkpoint is stored. A worker killed mid-encode
//! leaves it to reappear after `MEDIA_VISIBILITY_TIMEOUT`; one shutting down reveals it at
//! once. A segment with a checkpoint is never encoded again, and two copies encoding at once
//! both store the same files, the first checkpoint winning.
//!
//! A segment that failed for a passing reason (storage, a killed ffmpeg) is offered again as a
//! new message after a back-off, up to `MEDIA_MAX_ATTEMPTS` tries; after that, or after
//! `MEDIA_MAX_RECEIVES` deliveries without an outcome (it keeps taking its workers down), it
//! gets a retryable failure record: the coordinator then fails the job's attempt as retryable,
//! and the job's own attempts decide, with their back-off, as for a job that is not split. A
//! segment that cannot be encoded (bad input) gets a permanent failure record, which fails the
//! job. Every message is checked against its job's status first: one naming a folder that is
//! not its job's is dead-lettered (`segment_mismatch`) without reading or writing there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use anyhow::Context;

use super::permits::TranscodeSlot;
use super::scratch::ScratchDir;
use super::split::{is_done, read_record};
use super::transcode::millis;
use super::{Inner, JobError};
use crate::domain::dead_letter::{DeadLetter, Origin};
use crate::domain::error_code::ErrorCode;
use crate::domain::job::retry_delay;
use crate::domain::keys::{done_key, failed_key, piece_key, progress_key, segment_file_key, watermark_key};
use crate::domain::split::{
    Piece, SPLIT_VERSION, SegmentDone, SegmentFailed, SegmentMessage, SegmentTask, SplitRecord, describe,
    piece_fraction, segment_args,
};
use crate::domain::status::ErrorInfo;
use crate::media::ffmpeg::{Bounds, FfmpegProgress, run_ffmpeg};
use crate::queue::{Received, SendOptions};
use crate::storage::Precondition;

enum Outcome {
    Encoded,
    /// Another copy finished it first, or the job ended: nothing to do.
    NotNeeded(&'static str),
}

/// Whether a delivered segment may be encoded.
enum Admitted {
    Yes,
    /// The job ended, or has no such segment any more: the message goes.
    NotNeeded(&'static str),
    /// The message names a folder that is not its job's: it is dead-lettered, and nothing is
    /// read or written where it points.
    Mismatch,
}

/// Settles one segment message. `slot`: the transcode slot taken for it on receipt, if one was
/// free (else it waits for one).
pub(super) async fn run(
    inner: Arc<Inner>,
    message: Received,
    task: SegmentTask,
    permit: OwnedSemaphorePermit,
    slot: Option<TranscodeSlot>,
) {
    let span = tracing::info_span!("segment", job_id = %task.job_id, segment = task.index, tries = task.tries);
    async move {
        let _permit = permit;
        let settled = match admit(&inner, &task).await {
            Ok(Admitted::Yes) => work(&inner, &message, &task, slot).await,
            Ok(Admitted::NotNeeded(why)) => {
                tracing::info!(why, "Segment not needed.");
                inner.queues.ready.delete(&message.receipt).await
            }
            Ok(Admitted::Mismatch) => {
                let reason = "the segment message names a folder that is not its job's";
                tracing::warn!(folder = %task.output_dir, "Dead-lettering a segment message: {reason}.");
                match inner
                    .dead_letter(&message.body, DeadLetter::new(ErrorCode::SegmentMismatch, reason, Origin::Ready))
                    .await
                {
                    Ok(()) => inner.queues.ready.delete(&message.receipt).await,
                    Err(err) => Err(err),
                }
            }
            // Left on the queue: it reappears after its visibility timeout.
            Err(err) => Err(anyhow::anyhow!("check the segment's job: {err}")),
        };
        if let Err(err) = settled {
            tracing::warn!(error = format!("{err:#}"), "Could not settle a segment message; it will be redelivered.");
        }
    }
    .instrument(span)
    .await
}

/// Checks a segment against its job's status before anything is read or written for it.
async fn admit(inner: &Inner, task: &SegmentTask) -> Result<Admitted, JobError> {
    let Some(status) = inner.store.read(&task.job_id).await? else {
        return Ok(Admitted::NotNeeded("the job has no status"));
    };
    if status.job.output_dir != task.output_dir {
        return Ok(Admitted::Mismatch);
    }
    if status.state.is_terminal() {
        return Ok(Admitted::NotNeeded("the job ended"));
    }
    Ok(Admitted::Yes)
}

/// Encodes an admitted segment and settles its message: deleted once done, offered again
/// after a back-off on a passing failure, or a failure record for the job's coordinator.
async fn work(
    inner: &Inner,
    message: &Received,
    task: &SegmentTask,
    slot: Option<TranscodeSlot>,
) -> anyhow::Result<()> {
    let queue = &inner.queues.ready;
    if message.receive_count > inner.max_receives() {
        // Delivered again and again without an outcome: it takes down the workers that run it
        // (killed for memory, crashed). A passing cause, maybe: the job's attempts decide.
        let why = format!("{} was delivered {} times without finishing", describe(task), message.receive_count);
        tracing::warn!(receives = message.receive_count, "Segment never finishes; its job's attempt fails.");
        let err = JobError::retryable(ErrorCode::SegmentFailed, why);
        record_failure(inner, task, err.info()).await.context("record the segment's failure")?;
        return queue.delete(&message.receipt).await;
    }
    let stop = inner.stop_jobs.child_token();
    let job_ended = AtomicBool::new(false);
    let (progress, watched) = watch::channel(0.0_f64);
    let outcome = tokio::select! {
        outcome = encode(inner, task, slot, &stop, progress) => outcome,
        () = keep_lease(inner, message, task, &stop, &job_ended, watched) => Err(JobError::Interrupted),
    };
    match outcome {
        Ok(Outcome::Encoded) => queue.delete(&message.receipt).await,
        Ok(Outcome::NotNeeded(why)) => {
            tracing::info!(why, "Segment not needed.");
            queue.delete(&message.receipt).await
        }
        Err(_) if job_ended.load(Ordering::Relaxed) => {
            tracing::info!("The job ended; segment dropped.");
            queue.delete(&message.receipt).await
        }
        Err(JobError::Interrupted) => {
            tracing::info!("Shutting down; the segment is offered to other workers at once.");
            queue.change_visibility(&message.receipt, Duration::ZERO).await
        }
        Err(err @ JobError::Retryable { .. }) if task.tries + 1 < inner.config.max_attempts => {
            // Offered again as a new message, so crash redeliveries and these tries are
            // counted apart; the copy goes out before this delivery is deleted.
            let delay = retry_delay(inner.config.retry_base_delay, task.tries + 2);
            tracing::warn!(error = %err, delay = ?delay, "Segment failed; it will be tried again.");
            let next = SegmentTask { tries: task.tries + 1, ..task.clone() };
            queue.send(&SegmentMessage::new(next).to_json(), SendOptions::delayed(delay)).await?;
            queue.delete(&message.receipt).await
        }
        Err(err) => {
            tracing::warn!(error = %err, "Segment failed; its job's attempt fails.");
            record_failure(inner, task, err.info()).await.context("record the segment's failure")?;
            queue.delete(&message.receipt).await
        }
    }
}

/// Keeps the message hidden while the encode runs, tells the job's coordinator how far it is,
/// and stops the encode when the job ends (cancelled, failed). Never returns otherwise.
async fn keep_lease(
    inner: &Inner,
    message: &Received,
    task: &SegmentTask,
    stop: &CancellationToken,
    job_ended: &AtomicBool,
    progress: watch::Receiver<f64>,
) {
    let mut reported = 0.0;
    let visibility = inner.config.visibility_timeout;
    let mut ticker = tokio::time::interval((visibility / 3).min(inner.config.heartbeat_interval));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if let Err(err) = inner.queues.ready.change_visibility(&message.receipt, visibility).await {
            tracing::warn!(error = format!("{err:#}"), "Could not extend a segment's lease.");
        }
        let fraction = *progress.borrow();
        let key = progress_key(&task.output_dir, task.index);
        if fraction > reported
            && inner.storage.put_bytes(&key, format!("{fraction:.4}").into_bytes(), "text/plain").await.is_ok()
        {
            reported = fraction;
        }
        // Read after the write: a job that ended before it was read as ended here, so a write
        // that landed after the job's clean-up is taken back.
        if let Ok(Some(status)) = inner.store.read(&task.job_id).await
            && status.state.is_terminal()
        {
            let _ = inner.storage.delete(&key).await;
            job_ended.store(true, Ordering::Relaxed);
            stop.cancel();
            std::future::pending::<()>().await;
        }
    }
}

async fn encode(
    inner: &Inner,
    task: &SegmentTask,
    slot: Option<TranscodeSlot>,
    stop: &CancellationToken,
    progress: watch::Sender<f64>,
) -> Result<Outcome, JobError> {
    if is_done(inner, &task.output_dir, task.index).await? {
        return Ok(Outcome::NotNeeded("already encoded"));
    }
    let Some(record) = read_record(inner, &task.output_dir).await? else {
        return Ok(Outcome::NotNeeded("the job has no split record"));
    };
    let Some(piece) = record.pieces.iter().find(|p| p.index == task.index) else {
        return Err(JobError::permanent(
            ErrorCode::SegmentFailed,
            format!("{} is not in the split record", describe(task)),
        ));
    };
    let started_at = Utc::now();
    let clock = Instant::now();

    let scratch = ScratchDir::named(&inner.config, &format!("{}-s{}", task.job_id, task.index))
        .await
        .map_err(|e| JobError::retryable(ErrorCode::Scratch, format!("{e:#}")))?;
    let result = encode_piece(inner, task, piece, &record, slot, scratch.path(), stop, progress).await;
    scratch.remove().await;
    let (encode_started_at, encode_ms, bytes) = result?;
    let done = SegmentDone {
        version: SPLIT_VERSION,
        index: task.index,
        worker: inner.config.worker_id.clone(),
        started_at,
        finished_at: Utc::now(),
        encode_started_at: Some(encode_started_at),
        encode_ms,
        bytes,
    };
    let outcome = checkpoint(inner, task, &record, &done).await?;
    if matches!(outcome, Outcome::Encoded) {
        tracing::info!(encode_ms, total_ms = millis(clock), bytes, "Segment encoded.");
    }
    Ok(outcome)
}

/// Downloads the piece into `folder`, encodes it in a transcode slot (`slot`, or the next one
/// free) and uploads its files: when the encode started, how long it took, and the bytes stored.
#[allow(clippy::too_many_arguments)]
async fn encode_piece(
    inner: &Inner,
    task: &SegmentTask,
    piece: &Piece,
    record: &SplitRecord,
    slot: Option<TranscodeSlot>,
    folder: &std::path::Path,
    stop: &CancellationToken,
    progress: watch::Sender<f64>,
) -> Result<(chrono::DateTime<Utc>, u64, u64), JobError> {
    let piece_path = folder.join("piece.nut");
    let out = folder.join("out");
    let fetch = async {
        inner.storage.get_to_file(&piece_key(&task.output_dir, task.index), &piece_path).await?;
        tokio::fs::create_dir_all(&out).await.map_err(|e| JobError::scratch("create the segment folder", &e))
    };
    // In line for a transcode slot while the piece downloads: slots go in the order segments
    // were taken, so one taken ahead never overtakes an earlier one whose piece is larger.
    let wait = async {
        match slot {
            Some(slot) => Ok(slot),
            None => inner.transcode_slot().await,
        }
    };
    let (fetched, slot) = tokio::join!(fetch, wait);
    fetched?;
    let slot = slot?;
    tracing::info!("Segment encode started.");
    let encode_started_at = Utc::now();
    let encode_clock = Instant::now();
    let (sender, mut receiver) = watch::channel(FfmpegProgress::default());
    let image = folder.join(super::watermark::IMAGE_FILE);
    if record.watermark.is_some() {
        inner.storage.get_to_file(&watermark_key(&task.output_dir), &image).await?;
    }
    let watermark = record.watermark.as_ref().map(|overlay| (overlay, image.as_path()));
    let args = segment_args(&piece_path, piece, &record.renditions, &out, watermark);
    let report = async {
        while receiver.changed().await.is_ok() {
            let out_time = receiver.borrow().out_time;
            progress.send_replace(piece_fraction(piece, out_time));
        }
    };
    // A piece is as long as the split record says: its encode is bounded by that (its
    // timestamps are the source's).
    let bounds = Bounds::on_scratch(&out).lasting(piece.end - piece.start).from(piece.start);
    let (run, ()) = tokio::join!(run_ffmpeg(args, inner.config.job_timeout, stop, sender, &bounds), report);
    drop(slot);
    run?;
    let encode_ms = millis(encode_clock);
    let mut bytes = 0;
    for rendition in &record.renditions {
        let file = rendition.file_name();
        let key = segment_file_key(&task.output_dir, task.index, &file);
        let kind = if rendition.cmaf.is_some() { "video/mp4" } else { "video/mp2t" };
        bytes += inner.storage.put_file(&key, &out.join(&file), kind).await?.size;
    }
    Ok((encode_started_at, encode_ms, bytes))
}

/// Writes the segment's checkpoint, unless its job ended meanwhile.
async fn checkpoint(
    inner: &Inner,
    task: &SegmentTask,
    record: &SplitRecord,
    done: &SegmentDone,
) -> Result<Outcome, JobError> {
    let body = serde_json::to_vec_pretty(done).map_err(|e| JobError::retryable(ErrorCode::Internal, e.to_string()))?;
    // Create-only: a copy that finished first keeps its record (the files are the same).
    inner
        .storage
        .put_if(&done_key(&task.output_dir, task.index), body, "application/json", Precondition::Absent)
        .await?;
    // A job that ended meanwhile has cleaned its folder, or will; files stored after its
    // clean-up would stay forever, so a segment that finds its job ended removes its own.
    if inner.store.read(&task.job_id).await?.is_none_or(|s| s.state.is_terminal()) {
        for rendition in &record.renditions {
            let _ = inner.storage.delete(&segment_file_key(&task.output_dir, task.index, &rendition.file_name())).await;
        }
        let _ = inner.storage.delete(&done_key(&task.output_dir, task.index)).await;
        let _ = inner.storage.delete(&progress_key(&task.output_dir, task.index)).await;
        return Ok(Outcome::NotNeeded("the job ended while the segment was encoded"));
    }
    Ok(Outcome::Encoded)
}

/// Records that a segment cannot be encoded (create-only: the first reason stays); the job's
/// coordinator then fails the job, naming the segment.
pub(super) async fn record_failure(inner: &Inner, task: &SegmentTask, error: ErrorInfo) -> anyhow::Result<()> {
    let failed = SegmentFailed { version: SPLIT_VERSION, index: task.index, error };
    let body = serde_json::to_vec_pretty(&failed)?;
    inner
        .storage
        .put_if(&failed_key(&task.output_dir, task.index), body, "application/json", Precondition::Absent)
        .await?;
    Ok(())
}
