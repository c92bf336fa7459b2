//! One attempt of one job: download, probe, transcode, upload, manifest; raced against the
//! heartbeat, the job timeout and shutdown; then the outcome is recorded exactly once.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::status::{HeartbeatSignal, StatusTracker};
use super::{HANDOVER_DELAY, Inner, JobError};
use crate::config::{Config, SourceLimits};
use crate::domain::job::{JobMessage, retry_delay};
use crate::domain::keys::manifest_key;
use crate::domain::plan::plan;
use crate::domain::preset::content_type_of;
use crate::domain::probe::{MediaInfo, sniff_reference_format};
use crate::domain::status::{JobState, Manifest, OutputRecord, SourceRecord, Stage, Timings};
use crate::media::ffmpeg::{FfmpegProgress, run_ffmpeg};
use crate::media::probe::{Probed, probe};
use crate::queue::SendOptions;

/// ffprobe reads headers only; a minute is plenty even for large files.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Scratch folders live here under the work dir.
const SCRATCH: &str = "media-worker";

/// Why a running attempt was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancelled,
    Superseded,
}

pub(super) async fn run(inner: Arc<Inner>, message: JobMessage, tracker: StatusTracker) {
    let span = tracing::info_span!("job", job_id = %message.job.job_id, attempt = message.attempt);
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
            result = attempt(&inner, &message, &tracker, scratch.path(), &stop) => result,
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
        // The attempt future is dropped by now: ffmpeg is killed and reaped, streams closed.
        scratch.remove().await;
        finish(&inner, &message, &tracker, outcome).await;
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "Job attempt ended.");
    }
    .instrument(span)
    .await
}

/// Refreshes the status every heartbeat interval; on a cancellation or takeover it stops the
/// attempt. Never returns on its own.
async fn heartbeat(
    inner: &Inner,
    tracker: &StatusTracker,
    stop: &CancellationToken,
    reason: &Mutex<Option<StopReason>>,
) {
    let mut ticker = tokio::time::interval(inner.config.heartbeat_interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let stop_reason = match tracker.heartbeat().await {
            Ok(HeartbeatSignal::Continue) => continue,
            Ok(HeartbeatSignal::Cancelled) => StopReason::Cancelled,
            Ok(HeartbeatSignal::Superseded) => StopReason::Superseded,
            Err(err) => {
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

/// The work itself. Returns once the manifest is written and the status says completed.
async fn attempt(
    inner: &Inner,
    message: &JobMessage,
    tracker: &StatusTracker,
    dir: &Path,
    stop: &CancellationToken,
) -> Result<(), JobError> {
    let job = &message.job;
    let limits = &inner.config.limits;
    let started = Instant::now();
    let mut timings = Timings::default();

    // Refuse oversized sources before paying for the download.
    let head = inner.storage.head(&job.source_key).await?;
    let Some(head) = head else {
        return Err(JobError::permanent("source_not_found", format!("the source `{}` does not exist", job.source_key)));
    };
    if head.size > limits.max_size {
        return Err(JobError::permanent(
            "source_too_large",
            format!("the source is {} bytes; the limit is {} (MEDIA_MAX_SOURCE_SIZE)", head.size, limits.max_size),
        ));
    }

    let source_path = dir.join("source");
    let clock = Instant::now();
    let source_object =
        inner.storage.get_to_file(&job.source_key, &source_path).await.map_err(JobError::from_source)?;
    timings.download_ms = millis(clock);

    tracker.stage(Stage::Probing).await?;
    let clock = Instant::now();
    reject_reference_formats(&source_path).await?;
    let source_media = probe(&source_path, PROBE_TIMEOUT, Probed::Source).await?;
    check_limits(&source_media, limits)?;
    timings.probe_ms = millis(clock);

    let out_dir = dir.join("out");
    let plan = plan(&job.outputs, &source_media, &source_path, &out_dir)
        .map_err(|e| JobError::permanent(e.code(), e.to_string()))?;
    for folder in std::iter::once(String::new()).chain(plan.folders.iter().cloned()) {
        tokio::fs::create_dir_all(out_dir.join(&folder))
            .await
            .map_err(|e| JobError::retryable("scratch", format!("create {folder}: {e}")))?;
    }

    tracker.stage(Stage::Transcoding).await?;
    let clock = Instant::now();
    let (sender, mut receiver) = watch::channel(FfmpegProgress::default());
    let run = run_ffmpeg(plan.args.clone(), inner.config.job_timeout, stop, sender);
    let report = async {
        while receiver.changed().await.is_ok() {
            let done = receiver.borrow().out_time;
            let fraction = source_media.duration_seconds.filter(|d| *d > 0.0).map_or(0.0, |d| (done / d).min(1.0));
            tracker.set_progress(fraction * 100.0).await;
        }
    };
    let (result, ()) = tokio::join!(run, report);
    let run = result?;
    for (file, content) in &plan.sidecars {
        tokio::fs::write(out_dir.join(file), content)
            .await
            .map_err(|e| JobError::retryable("scratch", format!("write {file}: {e}")))?;
    }
    let mut probed = Vec::new();
    for output in &plan.outputs {
        let media = probe(&out_dir.join(&output.probe_file), PROBE_TIMEOUT, Probed::Output).await.map_err(|e| {
            JobError::permanent(
                "transcode_failed",
                format!("ffmpeg produced an unreadable `{}` output: {e}", output.preset),
            )
        })?;
        probed.push(media);
    }
    timings.transcode_ms = millis(clock);
    tracing::info!(outputs = plan.outputs.len(), speed = run.speed, elapsed_ms = millis(clock), "Outputs transcoded.");

    tracker.stage(Stage::Uploading).await?;
    let clock = Instant::now();
    let files = list_files(&out_dir).await.map_err(|e| JobError::retryable("scratch", format!("list outputs: {e}")))?;
    let mut uploaded: Vec<(String, u64)> = Vec::new();
    for relative in &files {
        let key = format!("{}{relative}", job.output_dir);
        let stored = inner.storage.put_file(&key, &out_dir.join(relative), content_type_of(relative)).await?;
        uploaded.push((relative.clone(), stored.size));
    }
    let outputs = plan
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
                key: format!("{}{}", job.output_dir, output.main_file),
                files: mine.iter().map(|(rel, _)| format!("{}{rel}", job.output_dir)).collect(),
                size: mine.iter().map(|(_, size)| size).sum(),
                content_type: output.preset.content_type().into(),
                speed: run.speed,
                note: output.note.clone(),
                media,
            }
        })
        .collect();
    timings.upload_ms = millis(clock);

    tracker.stage(Stage::Finalizing).await?;
    timings.total_ms = millis(started);
    let manifest = Manifest {
        version: 1,
        job_id: job.job_id.clone(),
        attempt: message.attempt,
        worker: inner.config.worker_id.clone(),
        completed_at: Utc::now(),
        source: SourceRecord {
            key: job.source_key.clone(),
            etag: source_object.etag,
            size: source_object.size,
            media: source_media,
        },
        outputs,
        timings,
    };
    let key = manifest_key(&job.output_dir);
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| JobError::retryable("internal", e.to_string()))?;
    // Written last: its presence means every output is in place.
    inner.storage.put_bytes(&key, body, "application/json").await?;
    tracker.finish(JobState::Completed, Stage::Done, None, None, Some(key)).await?;
    Ok(())
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
/// dead-lettered, cancelled, or requeued on shutdown. Publishing comes before the status
/// change, so a crash in between leaves a duplicate, never a lost job.
async fn finish(inner: &Inner, message: &JobMessage, tracker: &StatusTracker, outcome: Result<(), JobError>) {
    let result = match outcome {
        Ok(()) => {
            inner.counters.completed.fetch_add(1, Ordering::Relaxed);
            tracing::info!("Job completed.");
            Ok(())
        }
        Err(err) => record_failure(inner, message, tracker, err).await,
    };
    if let Err(err) = result {
        // The ledger entry is still there: the reaper will see the stale heartbeat and retry.
        tracing::error!(
            error = format!("{err:#}"),
            "Could not record the outcome of the attempt; the reaper will recover the job."
        );
    }
}

async fn record_failure(
    inner: &Inner,
    message: &JobMessage,
    tracker: &StatusTracker,
    err: JobError,
) -> anyhow::Result<()> {
    let next_attempt = message.attempt + 1;
    match &err {
        JobError::Superseded => {
            tracing::warn!("Another attempt took over this job; this one stops without recording anything.");
            Ok(())
        }
        JobError::Cancelled => {
            tracing::info!("Job cancelled.");
            tracker.finish(JobState::Cancelled, Stage::Done, None, Some("cancelled on request".into()), None).await?;
            Ok(())
        }
        JobError::Interrupted => {
            // Shutting down is not the job's fault: requeue at once for another worker.
            let next = JobMessage::new(message.job.clone(), next_attempt);
            inner.queues.ready.send(&next.to_json(), SendOptions::delayed(HANDOVER_DELAY)).await?;
            tracker.hand_over(JobState::Queued, next_attempt, None, "requeued: the worker shut down".into()).await?;
            tracing::info!(next_attempt, "Job requeued for another worker.");
            Ok(())
        }
        JobError::Retryable { .. } if message.attempt < inner.config.max_attempts => {
            let delay = retry_delay(inner.config.retry_base_delay, next_attempt).max(HANDOVER_DELAY);
            let next = JobMessage::new(message.job.clone(), next_attempt);
            inner.queues.ready.send(&next.to_json(), SendOptions::delayed(delay)).await?;
            tracker
                .hand_over(JobState::Retrying, next_attempt, Some(err.info()), format!("retry in {delay:?}"))
                .await?;
            inner.counters.retried.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, next_attempt, delay = ?delay, "Attempt failed; retrying.");
            Ok(())
        }
        JobError::Retryable { .. } | JobError::Permanent { .. } => {
            let mut info = err.info();
            if info.retryable {
                info.message = format!("{} (after {} attempts)", info.message, message.attempt);
            }
            inner
                .dead_letter(&message.to_json(), &info.code, &info.message, "worker", Some(&message.job.job_id))
                .await?;
            tracker.finish(JobState::Failed, Stage::Done, Some(info), None, None).await?;
            inner.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, "Job failed.");
            Ok(())
        }
    }
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A job's scratch folder, removed when the attempt ends (and, as a backstop, when dropped).
struct ScratchDir {
    path: Option<PathBuf>,
}

impl ScratchDir {
    async fn create(config: &Config, message: &JobMessage) -> anyhow::Result<Self> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{}-a{}-{}", message.job.job_id, message.attempt, &unique[..8]);
        let path = config.work_dir.join(SCRATCH).join(name);
        tokio::fs::create_dir_all(&path).await.map_err(|e| anyhow::anyhow!("create {}: {e}", path.display()))?;
        Ok(Self { path: Some(path) })
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("."))
    }

    async fn remove(mut self) {
        if let Some(path) = self.path.take()
            && let Err(err) = tokio::fs::remove_dir_all(&path).await
        {
            tracing::warn!(path = %path.display(), error = %err, "Could not remove a scratch folder.");
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// Removes scratch folders left by killed workers: any older than twice the job timeout
/// cannot belong to a running attempt.
pub(super) async fn sweep_stale_work_dirs(config: &Config) {
    let root = config.work_dir.join(SCRATCH);
    let Ok(mut entries) = tokio::fs::read_dir(&root).await else { return };
    let max_age = config.job_timeout.saturating_mul(2);
    while let Ok(Some(entry)) = entries.next_entry().await {
        let old = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if old {
            tracing::info!(path = %entry.path().display(), "Removing a stale scratch folder.");
            let _ = tokio::fs::remove_dir_all(entry.path()).await;
        }
    }
}
