//! An attempt's last step: the outputs checked, uploaded into the attempt's own folder, and
//! committed by the manifest, written last; then the status says completed.

use std::path::Path;
use std::time::Instant;

use chrono::Utc;

use super::source::{PROBE_TIMEOUT, Source};
use super::transcode::{Made, millis};
use super::{JobError, StepCx};
use crate::domain::error_code::ErrorCode;
use crate::domain::job::{JobMessage, JobSpec};
use crate::domain::keys::{QUALITY_FILE, attempt_dir, manifest_key};
use crate::domain::loudness::LoudnessReport;
use crate::domain::per_title::LadderDecision;
use crate::domain::plan::{expected_duration, is_truncated};
use crate::domain::preset::content_type_of;
use crate::domain::probe::MediaInfo;
use crate::domain::qc::QcReport;
use crate::domain::scoring::RenditionQuality;
use crate::domain::status::{JobState, Manifest, OutputRecord, SourceRecord, Stage, Timings};
use crate::jobs::Attempt;
use crate::media::probe::{Probed, probe};
use crate::storage::{CasOutcome, Precondition, StorageError};

/// An attempt that completed its job.
pub(super) struct Completed {
    /// Whether the folder may hold more than the result (an earlier run's files, a split job's
    /// `split/` folder), to clear; a first run of a whole job leaves nothing else.
    pub(super) tidy: bool,
}

/// Probes every output in `out_dir`: one ffprobe cannot read is a failed transcode, and one
/// shorter than its source a truncated one (retried).
pub(super) async fn probe_outputs(
    made: &Made,
    job: &JobSpec,
    source_media: &MediaInfo,
    out_dir: &Path,
) -> Result<Vec<MediaInfo>, JobError> {
    let mut probed = Vec::new();
    for (output, request) in made.outputs.iter().zip(&job.outputs) {
        let media = probe(&out_dir.join(&output.probe_file), PROBE_TIMEOUT, Probed::Output).await.map_err(|e| {
            JobError::permanent(
                ErrorCode::TranscodeFailed,
                format!("ffmpeg produced an unreadable `{}` output: {e}", output.preset),
            )
        })?;
        if let Some(expected) = expected_duration(request, source_media) {
            let frame_rate = media.video.as_ref().and_then(|v| v.frame_rate);
            if is_truncated(expected, media.duration_seconds, frame_rate) {
                return Err(JobError::retryable(
                    ErrorCode::OutputTruncated,
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
    Ok(probed)
}

/// What an attempt made, checked, ready to commit.
pub(super) struct Outputs {
    pub made: Made,
    /// Each output's media, in the order of `made.outputs`.
    pub probed: Vec<MediaInfo>,
    /// The earlier steps' timings; the commit adds its own and the total.
    pub timings: Timings,
    /// When the attempt started, for the total.
    pub started: Instant,
    /// Each output's scored renditions, in the order of `made.outputs`.
    pub quality: Vec<Vec<RenditionQuality>>,
    /// Each output's per-title ladder, in the job's order.
    pub ladders: Vec<Option<LadderDecision>>,
    /// The job's QC rules as measured on the source.
    pub qc: Option<QcReport>,
    /// The source's loudness and what was done about it.
    pub loudness: Option<LoudnessReport>,
}

/// Uploads the outputs, then writes the manifest and completes the job.
pub(super) async fn commit(
    cx: &StepCx<'_>,
    message: &JobMessage,
    tracker: &Attempt,
    source: Source,
    outputs: Outputs,
    out_dir: &Path,
) -> Result<Completed, JobError> {
    let job = &message.job;
    let mut timings = outputs.timings.clone();
    tracker.stage(Stage::Uploading).await?;
    let clock = Instant::now();
    let (records, first_run) = upload(cx, message, tracker, &outputs, out_dir).await?;
    timings.upload_ms = millis(clock);

    // From here on the job cannot be cancelled, and only this run may complete it.
    tracker.stage(Stage::Finalizing).await?;
    // The source was replaced while we worked: these outputs describe a write that is no longer
    // the source, and the new write's own job makes the outputs.
    if let Some(current) = cx.storage.head(&job.source_key).await?
        && current.etag.is_some()
        && current.etag != source.object.etag
        && job.source.version_id.is_none()
    {
        return Err(JobError::from_source(StorageError::Changed(job.source_key.clone())));
    }
    timings.total_ms = millis(outputs.started);
    let quality_key = records
        .iter()
        .any(|r| !r.quality.is_empty())
        .then(|| format!("{}{QUALITY_FILE}", attempt_dir(&job.output_dir, message.attempt)));
    let manifest = Manifest {
        version: 1,
        job_id: job.job_id.clone(),
        attempt: message.attempt,
        worker: cx.config.worker_id.clone(),
        run: Some(tracker.run_id().to_string()),
        completed_at: Utc::now(),
        source: SourceRecord {
            key: job.source_key.clone(),
            etag: source.object.etag,
            size: source.object.size,
            media: source.media,
        },
        outputs: records,
        timings,
        split: outputs.made.split,
        quality_key,
        qc: outputs.qc,
        loudness: outputs.loudness,
    };
    let manifest_split = manifest.split.is_some();
    let key = manifest_key(&job.output_dir);
    let body =
        serde_json::to_vec_pretty(&manifest).map_err(|e| JobError::retryable(ErrorCode::Internal, e.to_string()))?;
    write_manifest(cx, &key, &job.job_id, message.attempt, body).await?;
    tracker.complete(&key).await?;
    Ok(Completed { tidy: !first_run || manifest_split })
}

/// Uploads every file of `out_dir` into the attempt's folder, and says which belong to which
/// output; and whether this is the job's first run (which can find nothing of an earlier one).
async fn upload(
    cx: &StepCx<'_>,
    message: &JobMessage,
    tracker: &Attempt,
    outputs: &Outputs,
    out_dir: &Path,
) -> Result<(Vec<OutputRecord>, bool), JobError> {
    // This attempt's own folder: nothing another attempt wrote can end up under its manifest.
    let folder = attempt_dir(&message.job.output_dir, message.attempt);
    let files = list_files(out_dir).await.map_err(|e| JobError::scratch("list outputs", &e))?;
    // A requeued attempt (after a shutdown) may find its earlier run's files: keep only ours.
    // On a job's first run there can be none, and the listing is skipped.
    let first_run = tracker.status().await.is_some_and(|s| runs_started(&s) == 1);
    if !first_run {
        for stale in cx.storage.list(&folder).await? {
            if !files.iter().any(|rel| format!("{folder}{rel}") == stale) {
                cx.storage.delete(&stale).await?;
            }
        }
    }
    let mut uploaded: Vec<(String, u64)> = Vec::new();
    for relative in &files {
        let key = format!("{folder}{relative}");
        let stored = cx.storage.put_file(&key, &out_dir.join(relative), content_type_of(relative)).await?;
        uploaded.push((relative.clone(), stored.size));
    }
    let made = &outputs.made;
    let records = made
        .outputs
        .iter()
        .zip(outputs.probed.iter().cloned())
        .enumerate()
        .map(|(index, (output, media))| {
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
                speed: made.speed,
                note: output.note.clone(),
                media,
                quality: outputs.quality.get(index).cloned().unwrap_or_default(),
                ladder: outputs.ladders.get(index).cloned().flatten(),
            }
        })
        .collect();
    Ok((records, first_run))
}

/// Writes the manifest, the commit record of the outputs, last. Create-only, except over the
/// manifest of an earlier attempt of the same job that never reached `completed` (its run was
/// recovered after writing it). Never over a later attempt's: a run frozen past `finalizing`
/// whose job was meanwhile completed by a newer attempt must not replace that one's record.
pub(super) async fn write_manifest(
    cx: &StepCx<'_>,
    key: &str,
    job_id: &str,
    attempt: u32,
    body: Vec<u8>,
) -> Result<(), JobError> {
    let storage = &cx.storage;
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
            return Err(JobError::permanent(
                ErrorCode::OutputConflict,
                format!("`{key}` holds the manifest of another job"),
            ));
        }
        if written_by > attempt {
            return Err(JobError::Superseded);
        }
        condition_etag = Some(found.etag);
    }
    Err(JobError::retryable(ErrorCode::Storage, format!("`{key}` kept changing while the manifest was written")))
}

/// How many runs of the job have started (each start records `running` at `downloading`).
fn runs_started(status: &crate::domain::status::JobStatus) -> usize {
    status.timeline.iter().filter(|e| e.state == JobState::Running && e.stage == Stage::Downloading).count()
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
