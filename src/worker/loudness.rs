//! The job's loudness setting, measured on the whole source before anything is encoded (once
//! per title: a split job's segments all get the filter decided here), and the decision
//! ([`crate::domain::loudness`]) the plan applies to every output that encodes audio.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Inner, JobError};
use crate::domain::error_code::ErrorCode;
use crate::domain::job::JobSpec;
use crate::domain::loudness::{LoudnessReport, decide};
use crate::domain::probe::MediaInfo;
use crate::domain::status::Stage;
use crate::jobs::Attempt;
use crate::media::loudness::{LoudnessError, measure};

/// The least time the measuring pass is given; longer sources get twice their length (the
/// pass decodes only the audio, far faster than real time).
const MIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The job's loudness report: `None` for a job without the setting or a source without audio.
pub(super) async fn analyse(
    inner: &Inner,
    job: &JobSpec,
    tracker: &Attempt,
    source: &Path,
    media: &MediaInfo,
    stop: &CancellationToken,
) -> Result<Option<LoudnessReport>, JobError> {
    let Some(settings) = &job.loudness else { return Ok(None) };
    if media.audio.is_none() {
        return Ok(None);
    }
    tracker.stage(Stage::Analysing).await?;
    let slot = inner.transcode_slot().await?;
    let length = media.duration_seconds.unwrap_or(0.0).max(0.0);
    let timeout = MIN_TIMEOUT.max(Duration::from_secs_f64(length * 2.0));
    let measured = tokio::select! {
        measured = measure(settings, source, timeout) => measured,
        () = stop.cancelled() => return Err(JobError::Interrupted),
    };
    drop(slot);
    let measured = measured.map_err(|e| match e {
        LoudnessError::Ffmpeg(err) => JobError::from(err),
        other => JobError::permanent(ErrorCode::TranscodeFailed, format!("loudness analysis: {other}")),
    })?;
    let report = decide(settings, &measured);
    tracing::info!(
        integrated = measured.integrated,
        true_peak = measured.true_peak,
        action = ?report.action,
        gain_db = report.gain_db,
        "Loudness measured."
    );
    Ok(Some(report))
}
