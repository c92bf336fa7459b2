//! One attempt of one job, raced against the heartbeat, the job timeout and shutdown; then
//! [`super::settle`] records the outcome once. The attempt is three steps: the source
//! ([`super::source`]: download or import, probe), the outputs (a split job's by
//! [`super::split`], any other by [`super::transcode`]), and the commit ([`super::commit`]:
//! upload, manifest, completed).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::commit::{self, Completed};
use super::permits::JobPermit;
use super::quality;
use super::scratch::ScratchDir;
use super::source::{self, Source};
use super::split::{self, Cut};
use super::transcode::{Made, millis, transcode};
use super::{Inner, JobError};
use crate::domain::error_code::ErrorCode;
use crate::domain::job::JobMessage;
use crate::domain::plan::Decisions;
use crate::domain::split::{apply_ladders, split_plan};
use crate::domain::status::Timings;
use crate::jobs::{Attempt, AttemptError};

/// Why a running attempt was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancelled,
    Superseded,
}

pub(super) async fn run(inner: Arc<Inner>, message: JobMessage, tracker: Attempt, permit: JobPermit) {
    let span =
        tracing::info_span!("job", job_id = %message.job.job_id, attempt = message.attempt, run = %tracker.run_id());
    async move {
        let started = Instant::now();
        tracing::info!(source = %message.job.source_key, "Job started.");

        let stop = inner.stop_jobs.child_token();
        let reason: Mutex<Option<StopReason>> = Mutex::new(None);
        let scratch = match ScratchDir::create(&inner.config, &message).await {
            Ok(dir) => dir,
            Err(err) => {
                let failed = Err(JobError::retryable(ErrorCode::Scratch, format!("{err:#}")));
                super::settle::finish(&inner, &message, &tracker, failed).await;
                return;
            }
        };

        let outcome = tokio::select! {
            result = attempt(&inner, &message, &tracker, &permit, scratch.path(), &stop) => result,
            () = heartbeat(&inner, &tracker, &stop, &reason) => Err(JobError::retryable(ErrorCode::Internal, "heartbeat loop ended")),
            () = tokio::time::sleep(inner.config.job_timeout) => {
                Err(JobError::retryable(ErrorCode::Timeout, format!("the attempt exceeded MEDIA_JOB_TIMEOUT ({:?})", inner.config.job_timeout)))
            }
            () = stop.cancelled() => Err(JobError::Interrupted),
        };
        // However the stop was noticed (here, or by ffmpeg being stopped), say why it happened.
        let outcome = match outcome {
            Err(JobError::Interrupted) => Err(match reason.lock().ok().and_then(|r| *r) {
                Some(StopReason::Cancelled) => JobError::Cancelled,
                Some(StopReason::Superseded) => JobError::Superseded,
                None => JobError::Interrupted,
            }),
            other => other,
        };
        // The attempt future is dropped by now: ffmpeg is killed and reaped, streams closed,
        // unfinished multipart uploads aborted.
        scratch.remove().await;
        super::settle::finish(&inner, &message, &tracker, outcome).await;
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "Job attempt ended.");
    }
    .instrument(span)
    .await
}

/// Refreshes the status every heartbeat interval, and writes a stage once it has lasted
/// [`STAGE_WRITE_DELAY`](crate::jobs::attempt::STAGE_WRITE_DELAY); when the run has lost the
/// job (cancelled, or recovered by the reaper while it was silent) it stops the attempt. Never
/// returns on its own.
async fn heartbeat(inner: &Inner, tracker: &Attempt, stop: &CancellationToken, reason: &Mutex<Option<StopReason>>) {
    let mut ticker = tokio::time::interval(inner.config.heartbeat_interval);
    ticker.tick().await;
    loop {
        let written = tokio::select! {
            _ = ticker.tick() => tracker.heartbeat().await,
            () = tracker.stage_settled() => tracker.flush().await,
        };
        let stop_reason = match written {
            Ok(()) => continue,
            Err(err @ AttemptError::Lost(_)) if err.is_cancelled() => StopReason::Cancelled,
            Err(AttemptError::Lost(_)) => StopReason::Superseded,
            Err(AttemptError::Ledger(err)) => {
                // A missed heartbeat is not fatal: the timeout is several intervals long.
                tracing::warn!(error = %err, "Heartbeat failed.");
                continue;
            }
        };
        if let Ok(mut slot) = reason.lock() {
            *slot = Some(stop_reason);
        }
        tracing::info!(reason = ?stop_reason, "Stopping the attempt.");
        stop.cancel();
    }
}

/// The work itself, in three steps: the source, the outputs, the commit. Returns once the
/// manifest is written and the status says completed.
async fn attempt(
    inner: &Inner,
    message: &JobMessage,
    tracker: &Attempt,
    permit: &JobPermit,
    dir: &Path,
    stop: &CancellationToken,
) -> Result<Completed, JobError> {
    // A job that only packages has no source to read: another job's package is its input.
    if let Some(repackage) = &message.job.repackage {
        return super::recaption::attempt(inner, message, repackage, tracker, dir, stop).await;
    }
    let started = Instant::now();
    let mut timings = Timings::default();
    let source = source::fetch(&inner.step_cx(), &message.job, tracker, dir, &mut timings).await?;

    let job = &message.job;
    let clock = Instant::now();
    let qc = super::qc::check(inner, job, tracker, &source.path, &source.media, stop).await?;
    let ladders = super::per_title::analyse(inner, job, tracker, &source.path, &source.media, dir, stop).await?;
    let loudness = super::loudness::analyse(inner, job, tracker, &source.path, &source.media, stop).await?;
    let watermark = super::watermark::prepare(inner, job, &source.media, dir).await?;
    timings.analysis_ms = millis(clock);

    let out_dir = dir.join("out");
    let clock = Instant::now();
    let decisions = Decisions {
        ladders: &ladders,
        audio_filter: loudness.as_ref().and_then(|l| l.audio_filter()),
        watermark: watermark.as_ref().map(|(overlay, image)| (overlay, image.as_path())),
    };
    let made = produce(inner, message, tracker, permit, &source, &decisions, dir, &out_dir, stop).await?;
    let probed = commit::probe_outputs(&made, job, &source.media, &out_dir).await?;
    timings.transcode_ms = millis(clock);
    tracing::info!(outputs = made.outputs.len(), speed = made.speed, elapsed_ms = millis(clock), "Outputs transcoded.");
    let clock = Instant::now();
    let scored =
        quality::score_outputs(inner, job, tracker, &source.path, &source.media, &made, &out_dir, stop).await?;
    timings.scoring_ms = millis(clock);

    let outputs = commit::Outputs { made, probed, timings, started, quality: scored.per_output, ladders, qc, loudness };
    commit::commit(&inner.step_cx(), message, tracker, source, outputs, &out_dir).await
}

/// Every output in `out_dir`: a split job's from its segments, unless its source cannot be cut;
/// any other from one ffmpeg run here.
#[allow(clippy::too_many_arguments)]
async fn produce(
    inner: &Inner,
    message: &JobMessage,
    tracker: &Attempt,
    permit: &JobPermit,
    source: &Source,
    decisions: &Decisions<'_>,
    dir: &Path,
    out_dir: &Path,
    stop: &CancellationToken,
) -> Result<Made, JobError> {
    let job = &message.job;
    if let Some((segment, renditions)) =
        split_plan(&job.outputs, &source.media, &inner.config.split, job.split.as_ref())
    {
        let renditions = apply_ladders(renditions, &job.outputs, decisions.ladders);
        let whole = split::Whole {
            path: &source.path,
            media: &source.media,
            etag: source.object.etag.clone(),
            audio_filter: decisions.audio_filter,
            watermark: decisions.watermark,
        };
        match split::produce(inner, message, tracker, permit, &whole, segment, renditions, dir, out_dir, stop).await? {
            Cut::Stitched(made) => return Ok(made),
            Cut::TooFewPieces => {}
        }
    }
    transcode(inner, job, tracker, &source.path, &source.media, decisions, out_dir, stop).await
}
