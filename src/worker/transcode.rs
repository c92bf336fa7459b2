//! Transcoding a whole source on this worker: one ffmpeg run makes every output, in a
//! transcode slot; and the bounds and the errors of any run over a whole source, which a split
//! job's outputs made whole share.

use std::path::Path;
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Inner, JobError};
use crate::config::SourceLimits;
use crate::domain::error_code::ErrorCode;
use crate::domain::job::JobSpec;
use crate::domain::plan::{Decisions, PlannedOutput, plan_with};
use crate::domain::probe::MediaInfo;
use crate::domain::status::{SplitSummary, Stage};
use crate::jobs::Attempt;
use crate::media::ffmpeg::{Bounds, FfmpegError, FfmpegProgress, run_ffmpeg};

/// What the transcode left in the output folder: the outputs in the job's order, ffmpeg's
/// speed, and how a split job was encoded.
pub(super) struct Made {
    pub outputs: Vec<PlannedOutput>,
    pub speed: Option<f64>,
    pub split: Option<SplitSummary>,
}

/// Every output from one ffmpeg run on this worker, holding a transcode slot.
#[allow(clippy::too_many_arguments)]
pub(super) async fn transcode(
    inner: &Inner,
    job: &JobSpec,
    tracker: &Attempt,
    source_path: &Path,
    source_media: &MediaInfo,
    decisions: &Decisions<'_>,
    out_dir: &Path,
    stop: &CancellationToken,
) -> Result<Made, JobError> {
    let plan = plan_with(&job.outputs, source_media, source_path, out_dir, decisions)
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
    for package in &plan.packages {
        super::cmaf::package(inner, out_dir, package, stop).await?;
    }
    // The HLS ladder's segments last what their frames do, and it announces what its rungs
    // measure, not ffmpeg's rate caps.
    let rungs: Vec<String> = plan.folders.iter().filter_map(|f| f.strip_prefix("hls/")).map(str::to_string).collect();
    if !rungs.is_empty() {
        super::hls::finish_ladder(&out_dir.join("hls"), &rungs, source_media.duration_seconds).await?;
    }
    Ok(Made { outputs: plan.outputs, speed: run.speed, split: None })
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
            ErrorCode::DurationUnderstated,
            format!("the source played past {at:.1} s, though its header says it lasts {said:.1} s"),
        ),
        _ => JobError::permanent(
            ErrorCode::DurationTooLong,
            format!("the source played past {at:.1} s; the limit is {:?} (MEDIA_MAX_DURATION)", limits.max_duration),
        ),
    }
}

pub(super) fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
