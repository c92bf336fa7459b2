//! One attempt of one job: download (or import), probe, transcode, upload, manifest; raced
//! against the heartbeat, the job timeout and shutdown; then the outcome is recorded exactly once.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::scratch::ScratchDir;
use super::split::JobPermit;
use super::{Inner, JobError};
use crate::config::SourceLimits;
use crate::domain::job::{JobMessage, JobSpec, retry_delay};
use crate::domain::keys::{attempt_dir, manifest_key};
use crate::domain::plan::{PlannedOutput, expected_duration, is_truncated, plan};
use crate::domain::preset::content_type_of;
use crate::domain::probe::{MediaInfo, sniff_reference_format};
use crate::domain::split::split_plan;
use crate::domain::status::{JobState, Manifest, OutputRecord, SourceRecord, SplitSummary, Stage, Timings};
use crate::jobs::{Attempt, AttemptError};
use crate::media::ffmpeg::{FfmpegProgress, run_ffmpeg};
use crate::media::probe::{Probed, probe};
use crate::storage::{CasOutcome, ObjectInfo, Pin, Precondition, StorageError};

/// ffprobe reads headers only; a minute is plenty even for large files.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

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
                finish(&inner, &message, &tracker, Err(JobError::retryable("scratch", format!("{err:#}")))).await;
                return;
            }
        };

        let outcome = tokio::select! {
            result = attempt(&inner, &message, &tracker, &permit, scratch.path(), &stop) => result,
            () = heartbeat(&inner, &tracker, &stop, &reason) => Err(JobError::retryable("internal", "heartbeat loop ended")),
            () = tokio::time::sleep(inner.config.job_timeout) => {
                Err(JobError::retryable("timeout", format!("the attempt exceeded MEDIA_JOB_TIMEOUT ({:?})", inner.config.job_timeout)))
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
        // Tidying a completed job's folder happens here, after the race: once the job is
        // completed the heartbeat is refused, and that must not turn the run into a loser.
        let outcome = match outcome {
            Ok(completed) => {
                if let Some(ours) = &completed.other_attempts {
                    remove_other_attempts(&inner, &message.job.output_dir, ours).await;
                }
                if completed.split {
                    super::split::clean_up(&inner, &message.job.output_dir).await;
                }
                Ok(())
            }
            Err(err) => Err(err),
        };
        finish(&inner, &message, &tracker, outcome).await;
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
            Err(AttemptError::Storage(err)) => {
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

/// The source's current size and ETag; `source_not_found` when there is none, and
/// `source_changed` when it is not the write the job is pinned to.
async fn source_head(inner: &Inner, job: &JobSpec) -> Result<ObjectInfo, JobError> {
    let Some(head) = inner.storage.head(&job.source_key).await? else {
        return Err(JobError::permanent("source_not_found", format!("the source `{}` does not exist", job.source_key)));
    };
    if job.source.etag.as_ref().is_some_and(|pinned| head.etag.as_ref() != Some(pinned)) {
        return Err(JobError::from_source(StorageError::Changed(job.source_key.clone())));
    }
    Ok(head)
}

/// Downloads the job's source into `path`, pinned to the write the job is for (or, for a job
/// made without one, to what HEAD saw), so the outputs and the manifest describe exactly these
/// bytes.
async fn download_source(inner: &Inner, job: &JobSpec, path: &Path) -> Result<ObjectInfo, JobError> {
    let limits = &inner.config.limits;
    // Refuse oversized or replaced sources before paying for the download. A job pinned to a
    // version id, or to the ETag and size its S3 event carried, trusts the pin: the pinned GET
    // below fails if the write is gone, and a HEAD is paid only then, to tell which.
    let pinned = job.source.version_id.is_some() || (job.source.etag.is_some() && job.source.size.is_some());
    let head = if pinned {
        ObjectInfo { size: job.source.size.unwrap_or_default(), etag: job.source.etag.clone() }
    } else {
        source_head(inner, job).await?
    };
    if head.size > limits.max_size {
        return Err(too_large(head.size, limits.max_size));
    }
    let pin = Pin { etag: job.source.etag.clone().or(head.etag.clone()), version_id: job.source.version_id.clone() };
    let object = match inner.storage.get_pinned_to_file(&job.source_key, path, &pin).await {
        Ok(object) => object,
        Err(StorageError::Changed(_) | StorageError::NotFound(_)) if pinned && job.source.version_id.is_none() => {
            source_head(inner, job).await?;
            return Err(JobError::from_source(StorageError::Changed(job.source_key.clone())));
        }
        Err(err) => return Err(JobError::from_source(err)),
    };
    if object.size > limits.max_size {
        return Err(too_large(object.size, limits.max_size));
    }
    Ok(object)
}

fn too_large(size: u64, limit: u64) -> JobError {
    JobError::permanent(
        "source_too_large",
        format!("the source is {size} bytes; the limit is {limit} (MEDIA_MAX_SOURCE_SIZE)"),
    )
}

/// The work itself. Returns once the manifest is written and the status says completed.
async fn attempt(
    inner: &Inner,
    message: &JobMessage,
    tracker: &Attempt,
    permit: &JobPermit,
    dir: &Path,
    stop: &CancellationToken,
) -> Result<Completed, JobError> {
    let job = &message.job;
    let limits = &inner.config.limits;
    let started = Instant::now();
    let mut timings = Timings::default();

    let source_path = dir.join("source");
    let clock = Instant::now();
    // A source named by URL is fetched first (straight into the scratch folder, and stored),
    // unless an earlier attempt stored it: then it is read like any other.
    let imported = match &job.import {
        Some(import) => super::import::fetch_source(inner, job, import, tracker, &source_path).await?,
        None => None,
    };
    let source_object = match imported {
        Some(object) => object,
        None => download_source(inner, job, &source_path).await?,
    };
    timings.download_ms = millis(clock);

    tracker.stage(Stage::Probing).await?;
    let clock = Instant::now();
    reject_reference_formats(&source_path).await?;
    let source_media = probe(&source_path, PROBE_TIMEOUT, Probed::Source).await?;
    check_limits(&source_media, limits)?;
    timings.probe_ms = millis(clock);

    let out_dir = dir.join("out");
    let clock = Instant::now();
    let split = split_plan(&job.outputs, &source_media, &inner.config.split, job.split.as_ref());
    let produced = match split {
        Some((segment, renditions)) => {
            let whole =
                super::split::Whole { path: &source_path, media: &source_media, etag: source_object.etag.clone() };
            super::split::produce(inner, message, tracker, permit, &whole, segment, renditions, dir, &out_dir, stop)
                .await?
        }
        None => None,
    };
    let produced = match produced {
        Some(produced) => produced,
        None => transcode(inner, job, tracker, &source_path, &source_media, &out_dir, stop).await?,
    };
    let mut probed = Vec::new();
    for (output, request) in produced.outputs.iter().zip(&job.outputs) {
        let media = probe(&out_dir.join(&output.probe_file), PROBE_TIMEOUT, Probed::Output).await.map_err(|e| {
            JobError::permanent(
                "transcode_failed",
                format!("ffmpeg produced an unreadable `{}` output: {e}", output.preset),
            )
        })?;
        if let Some(expected) = expected_duration(request, &source_media) {
            let frame_rate = media.video.as_ref().and_then(|v| v.frame_rate);
            if is_truncated(expected, media.duration_seconds, frame_rate) {
                return Err(JobError::retryable(
                    "output_truncated",
                    format!(
                        "the `{}` output lasts {:.3} s instead of {expected:.3} s",
                        output.preset,
                        media.duration_seconds.unwrap_or_default()
                    ),
                ));
            }
        }
        probed.push(media);
    }
    timings.transcode_ms = millis(clock);
    tracing::info!(
        outputs = produced.outputs.len(),
        speed = produced.speed,
        elapsed_ms = millis(clock),
        "Outputs transcoded."
    );

    tracker.stage(Stage::Uploading).await?;
    let clock = Instant::now();
    // This attempt's own folder: nothing another attempt wrote can end up under its manifest.
    let folder = attempt_dir(&job.output_dir, message.attempt);
    let files = list_files(&out_dir).await.map_err(|e| JobError::scratch("list outputs", &e))?;
    // A requeued attempt (after a shutdown) may find its earlier run's files: keep only ours.
    // On a job's first run there can be none, and the listing is skipped.
    let first_run = tracker.status().await.is_some_and(|s| runs_started(&s) == 1);
    if !first_run {
        for stale in inner.storage.list(&folder).await? {
            if !files.iter().any(|rel| format!("{folder}{rel}") == stale) {
                inner.storage.delete(&stale).await?;
            }
        }
    }
    let mut uploaded: Vec<(String, u64)> = Vec::new();
    for relative in &files {
        let key = format!("{folder}{relative}");
        let stored = inner.storage.put_file(&key, &out_dir.join(relative), content_type_of(relative)).await?;
        uploaded.push((relative.clone(), stored.size));
    }
    let outputs = produced
        .outputs
        .iter()
        .zip(probed)
        .map(|(output, media)| {
            let mine: Vec<&(String, u64)> = uploaded
                .iter()
                .filter(|(rel, _)| {
                    *rel == output.main_file
                        || *rel == output.probe_file
                        || output.folder.as_deref().is_some_and(|f| rel.starts_with(f))
                })
                .collect();
            OutputRecord {
                preset: output.preset,
                key: format!("{folder}{}", output.main_file),
                files: mine.iter().map(|(rel, _)| format!("{folder}{rel}")).collect(),
                size: mine.iter().map(|(_, size)| size).sum(),
                content_type: output.preset.content_type().into(),
                speed: produced.speed,
                note: output.note.clone(),
                media,
            }
        })
        .collect();
    timings.upload_ms = millis(clock);

    // From here on the job cannot be cancelled, and only this run may complete it.
    tracker.stage(Stage::Finalizing).await?;
    // The source was replaced while we worked: these outputs describe a write that is no longer
    // the source, and the new write's own job makes the outputs.
    if let Some(current) = inner.storage.head(&job.source_key).await?
        && current.etag.is_some()
        && current.etag != source_object.etag
        && job.source.version_id.is_none()
    {
        return Err(JobError::from_source(StorageError::Changed(job.source_key.clone())));
    }
    timings.total_ms = millis(started);
    let manifest = Manifest {
        version: 1,
        job_id: job.job_id.clone(),
        attempt: message.attempt,
        worker: inner.config.worker_id.clone(),
        run: Some(tracker.run_id().to_string()),
        completed_at: Utc::now(),
        source: SourceRecord {
            key: job.source_key.clone(),
            etag: source_object.etag,
            size: source_object.size,
            media: source_media,
        },
        outputs,
        timings,
        split: produced.split,
    };
    let manifest_split = manifest.split.is_some();
    let key = manifest_key(&job.output_dir);
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| JobError::retryable("internal", e.to_string()))?;
    write_manifest(inner, &key, &job.job_id, message.attempt, body).await?;
    tracker.complete(&key).await?;
    Ok(Completed { other_attempts: (!first_run).then_some(folder), split: manifest_split })
}

/// What is left to tidy once an attempt completed its job.
struct Completed {
    /// This attempt's folder, when earlier attempts may have left files beside it.
    other_attempts: Option<String>,
    /// A split job, whose `split/` folder goes.
    split: bool,
}

/// What the transcode left in the output folder: the outputs in the job's order, ffmpeg's
/// speed, and how a split job was encoded.
pub(super) struct Produced {
    pub outputs: Vec<PlannedOutput>,
    pub speed: Option<f64>,
    pub split: Option<SplitSummary>,
}

/// Every output from one ffmpeg run on this worker, holding a transcode slot.
pub(super) async fn transcode(
    inner: &Inner,
    job: &JobSpec,
    tracker: &Attempt,
    source_path: &Path,
    source_media: &MediaInfo,
    out_dir: &Path,
    stop: &CancellationToken,
) -> Result<Produced, JobError> {
    let plan = plan(&job.outputs, source_media, source_path, out_dir)
        .map_err(|e| JobError::permanent(e.code(), e.to_string()))?;
    for folder in std::iter::once(String::new()).chain(plan.folders.iter().cloned()) {
        tokio::fs::create_dir_all(out_dir.join(&folder))
            .await
            .map_err(|e| JobError::scratch(&format!("create {folder}"), &e))?;
    }

    // Only `MEDIA_CONCURRENCY` ffmpeg processes at once; a prefetched job waits here, its
    // source already local, and starts the moment a slot frees.
    let slot = inner.transcode_slot().await?;
    tracker.stage(Stage::Transcoding).await?;
    let (sender, mut receiver) = watch::channel(FfmpegProgress::default());
    let run = run_ffmpeg(plan.args.clone(), inner.config.job_timeout, stop, sender);
    let report = async {
        while receiver.changed().await.is_ok() {
            let done = receiver.borrow().out_time;
            let fraction = source_media.duration_seconds.filter(|d| *d > 0.0).map_or(0.0, |d| (done / d).min(1.0));
            tracker.set_progress(fraction * 100.0);
        }
    };
    let (result, ()) = tokio::join!(run, report);
    drop(slot);
    let run = result?;
    for (file, content) in &plan.sidecars {
        tokio::fs::write(out_dir.join(file), content)
            .await
            .map_err(|e| JobError::scratch(&format!("write {file}"), &e))?;
    }
    Ok(Produced { outputs: plan.outputs, speed: run.speed, split: None })
}

/// Writes the manifest, the commit record of the outputs, last. Create-only, except over the
/// manifest of an earlier attempt of the same job that never reached `completed` (its run was
/// recovered after writing it). Never over a later attempt's: a run frozen past `finalizing`
/// whose job was meanwhile completed by a newer attempt must not replace that one's record.
async fn write_manifest(inner: &Inner, key: &str, job_id: &str, attempt: u32, body: Vec<u8>) -> Result<(), JobError> {
    let storage = &inner.storage;
    // Almost always the first manifest of the job: create it without reading first, and look at
    // what is there only when the create loses.
    let mut condition_etag: Option<String> = None;
    for _ in 0..5 {
        let condition = match &condition_etag {
            None => Precondition::Absent,
            Some(etag) => Precondition::Matches(etag),
        };
        if let CasOutcome::Written { .. } = storage.put_if(key, body.clone(), "application/json", condition).await? {
            return Ok(());
        }
        let Some(found) = storage.get_versioned(key).await? else {
            condition_etag = None;
            continue;
        };
        let (owner, written_by) = match serde_json::from_slice::<Manifest>(&found.bytes) {
            Ok(manifest) => (Some(manifest.job_id), manifest.attempt),
            Err(_) => (None, 0),
        };
        if owner.as_deref().is_some_and(|owner| owner != job_id) {
            return Err(JobError::permanent("output_conflict", format!("`{key}` holds the manifest of another job")));
        }
        if written_by > attempt {
            return Err(JobError::Superseded);
        }
        condition_etag = Some(found.etag);
    }
    Err(JobError::retryable("storage", format!("`{key}` kept changing while the manifest was written")))
}

/// Deletes the job's manifest if this run wrote it: a run that ends without completing (the
/// status write failed, the timeout or shutdown came in between, the job was taken over) must
/// not leave a record of outputs the job does not have.
async fn withdraw_manifest(inner: &Inner, output_dir: &str, run: &str) {
    let key = manifest_key(output_dir);
    let ours = match inner.storage.get_versioned(&key).await {
        Ok(Some(found)) => {
            serde_json::from_slice::<Manifest>(&found.bytes).is_ok_and(|m| m.run.as_deref() == Some(run))
        }
        Ok(None) => false,
        Err(err) => {
            tracing::warn!(key, error = %err, "Could not check for this run's manifest.");
            false
        }
    };
    if ours && let Err(err) = inner.storage.delete(&key).await {
        tracing::warn!(key, error = %err, "Could not withdraw the manifest of a run that did not complete.");
    }
}

/// How many runs of the job have started (each start records `running` at `downloading`).
fn runs_started(status: &crate::domain::status::JobStatus) -> usize {
    status.timeline.iter().filter(|e| e.state == JobState::Running && e.stage == Stage::Downloading).count()
}

/// Deletes what earlier attempts of the job left in its folder (best effort: the manifest
/// names only this attempt's files either way).
async fn remove_other_attempts(inner: &Inner, output_dir: &str, ours: &str) {
    let mine = manifest_key(output_dir);
    remove_files(inner, output_dir, |key| !key.starts_with(ours) && *key != mine).await;
}

/// Deletes the files under `folder` that `doomed` picks (best effort, logged).
async fn remove_files(inner: &Inner, folder: &str, doomed: impl Fn(&str) -> bool) {
    let Ok(keys) = inner.storage.list(folder).await else { return };
    for key in keys.iter().filter(|k| doomed(k)) {
        if let Err(err) = inner.storage.delete(key).await {
            tracing::debug!(key, error = %err, "Could not delete a file of the job.");
        }
    }
}

/// Playlists and reference files name other files or URLs; they are refused from their first
/// bytes, before ffprobe opens them.
async fn reject_reference_formats(path: &Path) -> Result<(), JobError> {
    let mut head = vec![0u8; 512];
    let read = async {
        let mut file = tokio::fs::File::open(path).await?;
        let n = file.read(&mut head).await?;
        Ok::<usize, std::io::Error>(n)
    };
    let n = read.await.map_err(|e| JobError::retryable("scratch", format!("read the source: {e}")))?;
    match sniff_reference_format(&head[..n]) {
        Some(kind) => Err(JobError::permanent(
            "unsupported_input",
            format!("the source is a {kind} file, which names other files or URLs; upload the media itself"),
        )),
        None => Ok(()),
    }
}

fn check_limits(media: &MediaInfo, limits: &SourceLimits) -> Result<(), JobError> {
    if let Some(duration) = media.duration_seconds
        && duration > limits.max_duration.as_secs_f64()
    {
        return Err(JobError::permanent(
            "duration_too_long",
            format!("the source lasts {duration:.0} s; the limit is {:?} (MEDIA_MAX_DURATION)", limits.max_duration),
        ));
    }
    if let Some(video) = &media.video {
        let pixels = u64::from(video.width) * u64::from(video.height);
        if pixels > limits.max_pixels {
            return Err(JobError::permanent(
                "resolution_too_large",
                format!(
                    "the source is {}x{}; the limit is {} pixels (MEDIA_MAX_PIXELS)",
                    video.width, video.height, limits.max_pixels
                ),
            ));
        }
    }
    Ok(())
}

/// Every file under `root`, as relative paths with `/`, sorted.
async fn list_files(root: &Path) -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let mut entries = tokio::fs::read_dir(&folder).await?;
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if entry.file_type().await?.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                files.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Records the attempt's outcome: completed (already recorded), retried, failed and
/// dead-lettered, or requeued on shutdown; a cancelled or superseded run records nothing (the
/// canceller or the reaper already did). The status changes first, then the message is
/// published, so a message never arrives before the status that lets it start; the status's
/// `handover_pending` mark covers a crash in between.
async fn finish(inner: &Inner, message: &JobMessage, tracker: &Attempt, outcome: Result<(), JobError>) {
    let result = match outcome {
        Ok(()) => {
            inner.counters.completed.fetch_add(1, Ordering::Relaxed);
            tracing::info!("Job completed.");
            Ok(())
        }
        Err(err) => {
            withdraw_manifest(inner, &message.job.output_dir, tracker.run_id()).await;
            record_failure(inner, message, tracker, err).await
        }
    };
    match result {
        Ok(()) => {}
        Err(FinishError::Lost(err)) => {
            tracing::info!(reason = %err, "The job moved on while this attempt ended; nothing to record.");
        }
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
            AttemptError::Storage(e) => FinishError::Other(e.into()),
        }
    }
}

impl From<anyhow::Error> for FinishError {
    fn from(err: anyhow::Error) -> Self {
        FinishError::Other(err)
    }
}

async fn record_failure(
    inner: &Inner,
    message: &JobMessage,
    tracker: &Attempt,
    err: JobError,
) -> Result<(), FinishError> {
    let job_id = message.job.job_id.as_str();
    match &err {
        JobError::Superseded => {
            tracing::warn!("Another attempt took over this job; this one stops without recording anything.");
            Ok(())
        }
        JobError::Cancelled => {
            // What this run (or an earlier one) uploaded before it noticed: a cancelled job
            // keeps no outputs. Its folder is its own, and no run can complete it any more.
            remove_files(inner, &message.job.output_dir, |_| true).await;
            tracing::info!("Job cancelled.");
            Ok(())
        }
        JobError::Interrupted => {
            // Shutting down is not the job's fault: the same attempt, at once, for another worker.
            tracker.interrupt("requeued: the worker shut down").await?;
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
                let next = JobMessage::new(message.job.clone(), status.attempt);
                inner.publish_handover(&next, delay, &tracker.last_version().await).await?;
                inner.counters.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, next_attempt = status.attempt, delay = ?delay, "Attempt failed; retrying.");
            } else {
                super::split::clean_up(inner, &message.job.output_dir).await;
                let info = status.error.clone().unwrap_or_else(|| err.info());
                inner
                    .dead_letter(&message.to_json(), &info.code, &info.message, "worker", Some((job_id, true)))
                    .await?;
                inner.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "Job failed: no attempts left.");
            }
            Ok(())
        }
        JobError::Permanent { .. } => {
            let info = err.info();
            tracker.fail(info.clone()).await?;
            super::split::clean_up(inner, &message.job.output_dir).await;
            inner.dead_letter(&message.to_json(), &info.code, &info.message, "worker", Some((job_id, true))).await?;
            inner.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, "Job failed.");
            Ok(())
        }
    }
}

pub(super) fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
