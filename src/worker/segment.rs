//! One segment of a split job, taken from the ready queue by any worker: its piece is
//! downloaded, encoded into every rendition, stored, and checkpointed.
//!
//! The message is the segment's lease: it stays on the ready queue, hidden and re-hidden while
//! the encode runs, and is deleted only once the checkpoint is stored. A worker killed mid-encode
//! leaves it to reappear after `MEDIA_VISIBILITY_TIMEOUT`; one shutting down reveals it at
//! once. A segment with a checkpoint is never encoded again, and two copies encoding at once
//! both store the same files, the first checkpoint winning. A segment that cannot be encoded
//! (bad input, or `MEDIA_MAX_RECEIVES` deliveries) gets a failure record, which fails the job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::execute::millis;
use super::scratch::ScratchDir;
use super::split::{is_done, read_record};
use super::{Inner, JobError};
use crate::domain::split::{
    SPLIT_VERSION, SegmentDone, SegmentFailed, SegmentTask, describe, done_key, failed_key, piece_fraction, piece_key,
    progress_key, segment_args, segment_file_key,
};
use crate::domain::status::ErrorInfo;
use crate::media::ffmpeg::{FfmpegProgress, run_ffmpeg};
use crate::queue::Received;
use crate::storage::Precondition;

/// A segment that failed for a passing reason is offered again after this.
const RETRY_VISIBILITY: Duration = Duration::from_secs(5);

enum Outcome {
    Encoded,
    /// Another copy finished it first, or the job ended: nothing to do.
    NotNeeded(&'static str),
}

pub(super) async fn run(inner: Arc<Inner>, message: Received, task: SegmentTask, permit: OwnedSemaphorePermit) {
    let span = tracing::info_span!("segment", job_id = %task.job_id, segment = task.index);
    async move {
        let _permit = permit;
        let stop = inner.stop_jobs.child_token();
        let job_ended = AtomicBool::new(false);
        let (progress, watched) = watch::channel(0.0_f64);
        let outcome = tokio::select! {
            outcome = encode(&inner, &task, &stop, progress) => outcome,
            () = keep_lease(&inner, &message, &task, &stop, &job_ended, watched) => Err(JobError::Interrupted),
        };
        let queue = &inner.queues.ready;
        let settled = match outcome {
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
            Err(err @ JobError::Retryable { .. }) if message.receive_count < inner.max_receives() => {
                tracing::warn!(error = %err, receives = message.receive_count, "Segment failed; it will be retried.");
                queue.change_visibility(&message.receipt, RETRY_VISIBILITY).await
            }
            Err(err) => {
                tracing::warn!(error = %err, "Segment failed for good; its job fails.");
                match record_failure(&inner, &task, err.info()).await {
                    Ok(()) => queue.delete(&message.receipt).await,
                    Err(record) => Err(anyhow::anyhow!("record the segment's failure: {record}")),
                }
            }
        };
        if let Err(err) = settled {
            tracing::warn!(error = format!("{err:#}"), "Could not settle a segment message; it will be redelivered.");
        }
    }
    .instrument(span)
    .await
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
        if fraction > reported {
            let key = progress_key(&task.output_dir, task.index);
            if inner.storage.put_bytes(&key, format!("{fraction:.4}").into_bytes(), "text/plain").await.is_ok() {
                reported = fraction;
            }
        }
        if let Ok(Some(status)) = inner.store.read(&task.job_id).await
            && status.state.is_terminal()
        {
            job_ended.store(true, Ordering::Relaxed);
            stop.cancel();
            std::future::pending::<()>().await;
        }
    }
}

async fn encode(
    inner: &Inner,
    task: &SegmentTask,
    stop: &CancellationToken,
    progress: watch::Sender<f64>,
) -> Result<Outcome, JobError> {
    let status = inner.store.read(&task.job_id).await?;
    if status.is_none_or(|s| s.state.is_terminal()) {
        return Ok(Outcome::NotNeeded("the job ended"));
    }
    if is_done(inner, &task.output_dir, task.index).await? {
        return Ok(Outcome::NotNeeded("already encoded"));
    }
    let Some(record) = read_record(inner, &task.output_dir).await? else {
        return Ok(Outcome::NotNeeded("the job has no split record"));
    };
    let Some(piece) = record.pieces.iter().find(|p| p.index == task.index) else {
        return Err(JobError::permanent("segment_failed", format!("{} is not in the split record", describe(task))));
    };
    let started_at = Utc::now();
    let clock = Instant::now();

    let scratch = ScratchDir::named(&inner.config, &format!("{}-s{}", task.job_id, task.index))
        .await
        .map_err(|e| JobError::retryable("scratch", format!("{e:#}")))?;
    let result = async {
        let piece_path = scratch.path().join("piece.nut");
        inner.storage.get_to_file(&piece_key(&task.output_dir, task.index), &piece_path).await?;
        let out = scratch.path().join("out");
        tokio::fs::create_dir_all(&out).await.map_err(|e| JobError::scratch("create the segment folder", &e))?;
        let slot = inner.transcode_slot().await?;
        tracing::info!("Segment encode started.");
        let encode_clock = Instant::now();
        let (sender, mut receiver) = watch::channel(FfmpegProgress::default());
        let args = segment_args(&piece_path, piece, &record.renditions, &out);
        let report = async {
            while receiver.changed().await.is_ok() {
                let out_time = receiver.borrow().out_time;
                progress.send_replace(piece_fraction(piece, out_time));
            }
        };
        let (run, ()) = tokio::join!(run_ffmpeg(args, inner.config.job_timeout, stop, sender), report);
        drop(slot);
        run?;
        let encode_ms = millis(encode_clock);
        let mut bytes = 0;
        for rendition in &record.renditions {
            let key = segment_file_key(&task.output_dir, task.index, &rendition.name);
            bytes +=
                inner.storage.put_file(&key, &out.join(format!("{}.ts", rendition.name)), "video/mp2t").await?.size;
        }
        Ok::<(u64, u64), JobError>((encode_ms, bytes))
    }
    .await;
    scratch.remove().await;
    let (encode_ms, bytes) = result?;

    let done = SegmentDone {
        version: SPLIT_VERSION,
        index: task.index,
        worker: inner.config.worker_id.clone(),
        started_at,
        finished_at: Utc::now(),
        encode_ms,
        bytes,
    };
    let body = serde_json::to_vec_pretty(&done).map_err(|e| JobError::retryable("internal", e.to_string()))?;
    // Create-only: a copy that finished first keeps its record (the files are the same).
    inner
        .storage
        .put_if(&done_key(&task.output_dir, task.index), body, "application/json", Precondition::Absent)
        .await?;
    // A job that ended meanwhile has cleaned its folder, or will; files stored after its
    // clean-up would stay forever, so a segment that finds its job ended removes its own.
    if inner.store.read(&task.job_id).await?.is_none_or(|s| s.state.is_terminal()) {
        for rendition in &record.renditions {
            let _ = inner.storage.delete(&segment_file_key(&task.output_dir, task.index, &rendition.name)).await;
        }
        let _ = inner.storage.delete(&done_key(&task.output_dir, task.index)).await;
        return Ok(Outcome::NotNeeded("the job ended while the segment was encoded"));
    }
    tracing::info!(encode_ms, total_ms = millis(clock), bytes, "Segment encoded.");
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
