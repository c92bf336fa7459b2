//! The job's loudness setting, measured on the whole source before anything is encoded (once
//! per title: a split job's segments all get the filter decided here), and the decision
//! ([`crate::domain::loudness`]) the plan applies to every output that encodes audio. A
//! dynamic decision costs a second pass: the source through the decided filter, measured, so
//! a final gain trims it to the target.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Inner, JobError};
use crate::domain::error_code::ErrorCode;
use crate::domain::job::JobSpec;
use crate::domain::loudness::{LoudnessAction, LoudnessReport, decide, trim};
use crate::domain::probe::MediaInfo;
use crate::domain::status::Stage;
use crate::jobs::Attempt;
use crate::media::loudness::{LoudnessError, measure, measure_filtered};

/// The least time each measuring pass is given; longer sources get twice their length (the
/// passes decode only the audio, faster than real time even through `loudnorm` at 192 kHz).
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
    let measured = measured.map_err(failed)?;
    let mut report = decide(settings, &measured);
    // loudnorm's dynamic result is measured once more, and trimmed to the target.
    if let (LoudnessAction::Dynamic, Some(filter)) = (report.action, report.filter.clone()) {
        let after = tokio::select! {
            after = measure_filtered(&filter, source, timeout) => after,
            () = stop.cancelled() => return Err(JobError::Interrupted),
        };
        trim(&mut report, &after.map_err(failed)?);
    }
    drop(slot);
    tracing::info!(
        integrated = measured.integrated,
        true_peak = measured.true_peak,
        action = ?report.action,
        gain_db = report.gain_db,
        trim_db = report.trim_db,
        "Loudness measured."
    );
    Ok(Some(report))
}

fn failed(err: LoudnessError) -> JobError {
    match err {
        LoudnessError::Ffmpeg(err) => JobError::from(err),
        other => JobError::permanent(ErrorCode::TranscodeFailed, format!("loudness analysis: {other}")),
    }
}
