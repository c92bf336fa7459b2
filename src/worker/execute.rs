//! One attempt of one job: download (or import), probe, transcode, upload, manifest; raced
//! against the heartbeat, the job timeout and shutdown; then [`super::settle`] records the outcome once.

use std::path::Path;
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
use crate::domain::job::{JobMessage, JobSpec};
use crate::domain::keys::{attempt_dir, manifest_key};
use crate::domain::plan::{PlannedOutput, expected_duration, is_truncated, plan};
use crate::domain::preset::content_type_of;
use crate::domain::probe::{MediaInfo, sniff_reference_format};
use crate::domain::split::split_plan;
use crate::domain::status::{JobState, Manifest, OutputRecord, SourceRecord, SplitSummary, Stage, Timings};
use crate::jobs::{Attempt, AttemptError};
use crate::media::ffmpeg::{Bounds, FfmpegError, FfmpegProgress, run_ffmpeg};
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
                let failed = Err(JobError::retryable("scratch", format!("{err:#}")));
                super::settle::finish(&inner, &message, &tracker, failed).await;
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
    Ok(Completed { tidy: !first_run || manifest_split })
}

/// An attempt that completed its job.
pub(super) struct Completed {
    /// Whether the folder may hold more than the result (an earlier run's files, a split job's
    /// `split/` folder), to clear; a first run of a whole job leaves nothing else.
    pub(super) tidy: bool,
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
    let bounds = source_bounds(&inner.config.limits, source_media, out_dir);
    let run = run_ffmpeg(plan.args.clone(), inner.config.job_timeout, stop, sender, &bounds);
    let report = async {
        while receiver.changed().await.is_ok() {
            let done = receiver.borrow().out_time;
            let fraction = source_media.duration_seconds.filter(|d| *d > 0.0).map_or(0.0, |d| (done / d).min(1.0));
            tracker.set_progress(fraction * 100.0);
        }
    };
    let (result, ()) = tokio::join!(run, report);
    drop(slot);
    let run = result.map_err(|e| ran_over(e, &inner.config.limits, source_media))?;
    for (file, content) in &plan.sidecars {
        tokio::fs::write(out_dir.join(file), content)
            .await
            .map_err(|e| JobError::scratch(&format!("write {file}"), &e))?;
    }
    Ok(Produced { outputs: plan.outputs, speed: run.speed, split: None })
}

/// The bounds of a run over the whole source: no more output than the source says it lasts
/// (when it says nothing, or more than the deployment accepts: `MEDIA_MAX_DURATION`), and
/// never the last of the scratch disk.
pub(super) fn source_bounds(limits: &SourceLimits, media: &MediaInfo, folder: &Path) -> Bounds {
    let most = limits.max_duration.as_secs_f64();
    Bounds::on_scratch(folder).lasting(media.duration_seconds.map_or(most, |d| d.min(most)))
}

/// The job's error for a run over the whole source that failed: one stopped at its length
/// bound names what was passed, the deployment's limit or the source's own header.
pub(super) fn ran_over(err: FfmpegError, limits: &SourceLimits, media: &MediaInfo) -> JobError {
    let FfmpegError::Overran(at) = err else { return err.into() };
    match media.duration_seconds {
        Some(said) if said < limits.max_duration.as_secs_f64() => JobError::permanent(
            "duration_understated",
            format!("the source played past {at:.1} s, though its header says it lasts {said:.1} s"),
        ),
        _ => JobError::permanent(
            "duration_too_long",
            format!("the source played past {at:.1} s; the limit is {:?} (MEDIA_MAX_DURATION)", limits.max_duration),
        ),
    }
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

/// How many runs of the job have started (each start records `running` at `downloading`).
fn runs_started(status: &crate::domain::status::JobStatus) -> usize {
    status.timeline.iter().filter(|e| e.state == JobState::Running && e.stage == Stage::Downloading).count()
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

pub(super) fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
