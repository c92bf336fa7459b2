//! The job's QC rules, measured on the source before anything is encoded: a source that breaks
//! a `fail` rule fails the job (`qc_failed`, its findings in the error's sentence) without
//! spending the encode; one that breaks only `warn` rules goes on, its findings in the manifest
//! and the `job.completed` event.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Inner, JobError};
use crate::domain::error_code::ErrorCode;
use crate::domain::job::JobSpec;
use crate::domain::probe::MediaInfo;
use crate::domain::qc::{QcReport, SourceStreams, Verdict, evaluate};
use crate::domain::status::Stage;
use crate::jobs::Attempt;
use crate::media::qc::{QcError, measure};

/// The least time the analysis pass is given; longer sources get four times their length.
const MIN_QC_TIMEOUT: Duration = Duration::from_secs(120);

/// Measures the source against the job's rules; `None` for a job without rules.
pub(super) async fn check(
    inner: &Inner,
    job: &JobSpec,
    tracker: &Attempt,
    source: &Path,
    media: &MediaInfo,
    stop: &CancellationToken,
) -> Result<Option<QcReport>, JobError> {
    let Some(settings) = &job.qc else { return Ok(None) };
    let streams = SourceStreams::of(media);
    if !settings.measures(streams) {
        return Ok(Some(evaluate(settings, &Default::default())));
    }
    tracker.stage(Stage::Analysing).await?;
    let slot = inner.transcode_slot().await?;
    let length = media.duration_seconds.unwrap_or(0.0).max(0.0);
    let timeout = MIN_QC_TIMEOUT.max(Duration::from_secs_f64(length * 4.0));
    let measured = tokio::select! {
        measured = measure(settings, source, streams, timeout) => measured,
        () = stop.cancelled() => return Err(JobError::Interrupted),
    };
    drop(slot);
    let measured = measured.map_err(|e| match e {
        QcError::Ffmpeg(err) => JobError::from(err),
        other => JobError::permanent(ErrorCode::TranscodeFailed, format!("QC analysis: {other}")),
    })?;
    let report = evaluate(settings, &measured);
    if report.verdict == Verdict::Fail {
        let failed: Vec<&str> = report.findings.iter().map(|f| f.message.as_str()).collect();
        // The findings are numbers and rule names only: safe to follow the public sentence.
        let findings = failed.join("; ");
        return Err(JobError::permanent_naming(ErrorCode::QcFailed, findings.clone(), findings));
    }
    Ok(Some(report))
}
