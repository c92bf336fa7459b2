//! An attempt's first step: the source in the scratch folder (imported from its URL, or
//! downloaded pinned to the write the job is for), refused when it names other files or is over
//! the deployment's limits, and probed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::transcode::millis;
use super::{JobError, StepCx};
use crate::config::SourceLimits;
use crate::domain::error_code::ErrorCode;
use crate::domain::job::JobSpec;
use crate::domain::preset::Preset;
use crate::domain::probe::{MediaInfo, sniff_reference_format};
use crate::domain::status::{Stage, Timings};
use crate::jobs::Attempt;
use crate::media::probe::{Probed, closed_captions, probe};
use crate::storage::{ObjectInfo, Pin, StorageError};

/// ffprobe reads headers only; a minute is plenty even for large files.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// The job's source, local and probed.
pub(super) struct Source {
    pub path: PathBuf,
    /// The write that was read: its size and ETag go into the manifest, and the ETag is checked
    /// again before the manifest is written.
    pub object: ObjectInfo,
    pub media: MediaInfo,
}

/// Fetches the source into `dir` and probes it, timing both into `timings`.
pub(super) async fn fetch(
    cx: &StepCx<'_>,
    job: &JobSpec,
    tracker: &Attempt,
    dir: &Path,
    timings: &mut Timings,
) -> Result<Source, JobError> {
    let path = dir.join("source");
    let clock = Instant::now();
    // A source named by URL is fetched first (straight into the scratch folder, and stored),
    // unless an earlier attempt stored it: then it is read like any other.
    let imported = match &job.import {
        Some(import) => super::import::fetch_source(cx, job, import, tracker, &path).await?,
        None => None,
    };
    let object = match imported {
        Some(object) => object,
        None => download_source(cx, job, &path).await?,
    };
    timings.download_ms = millis(clock);

    tracker.stage(Stage::Probing).await?;
    let clock = Instant::now();
    reject_reference_formats(&path).await?;
    let mut media = probe(&path, PROBE_TIMEOUT, Probed::Source).await?;
    check_limits(&media, &cx.config.limits)?;
    find_closed_captions(job, &path, &mut media).await;
    timings.probe_ms = millis(clock);
    Ok(Source { path, object, media })
}

/// Video codecs whose ffmpeg decoder gives the CEA-608/708 captions of their SEI or user data.
const CAPTION_CARRIERS: &[&str] = &["h264", "hevc", "mpeg2video"];

/// Notes in `media` whether the source's video carries closed captions, when a `cmaf` output
/// of the job would package them: the look decodes frames, so other jobs skip it. A look that
/// fails leaves the captions out (logged): they are an extra, not the job.
async fn find_closed_captions(job: &JobSpec, path: &Path, media: &mut MediaInfo) {
    let wanted = job.outputs.iter().any(|o| o.preset == Preset::Cmaf && o.embedded_captions != Some(false));
    let Some(video) = media.video.as_mut().filter(|v| wanted && CAPTION_CARRIERS.contains(&v.codec.as_str())) else {
        return;
    };
    match closed_captions(path, PROBE_TIMEOUT).await {
        Ok(found) => video.closed_captions = found,
        Err(err) => tracing::warn!(error = %err, "Could not look for closed captions; none are packaged."),
    }
}

/// The source's current size and ETag; `source_not_found` when there is none, and
/// `source_changed` when it is not the write the job is pinned to.
async fn source_head(cx: &StepCx<'_>, job: &JobSpec) -> Result<ObjectInfo, JobError> {
    let Some(head) = cx.storage.head(&job.source_key).await? else {
        return Err(JobError::permanent(
            ErrorCode::SourceNotFound,
            format!("the source `{}` does not exist", job.source_key),
        ));
    };
    if job.source.etag.as_ref().is_some_and(|pinned| head.etag.as_ref() != Some(pinned)) {
        return Err(JobError::from_source(StorageError::Changed(job.source_key.clone())));
    }
    Ok(head)
}

/// Downloads the job's source into `path`, pinned to the write the job is for (or, for a job
/// made without one, to what HEAD saw), so the outputs and the manifest describe exactly these
/// bytes.
async fn download_source(cx: &StepCx<'_>, job: &JobSpec, path: &Path) -> Result<ObjectInfo, JobError> {
    let limits = &cx.config.limits;
    // Refuse oversized or replaced sources before paying for the download. A job pinned to a
    // version id, or to the ETag and size its S3 event carried, trusts the pin: the pinned GET
    // below fails if the write is gone, and a HEAD is paid only then, to tell which.
    let pinned = job.source.version_id.is_some() || (job.source.etag.is_some() && job.source.size.is_some());
    let head = if pinned {
        ObjectInfo { size: job.source.size.unwrap_or_default(), etag: job.source.etag.clone() }
    } else {
        source_head(cx, job).await?
    };
    if head.size > limits.max_size {
        return Err(too_large(head.size, limits.max_size));
    }
    let pin = Pin { etag: job.source.etag.clone().or(head.etag.clone()), version_id: job.source.version_id.clone() };
    let object = match cx.storage.get_pinned_to_file(&job.source_key, path, &pin).await {
        Ok(object) => object,
        Err(StorageError::Changed(_) | StorageError::NotFound(_)) if pinned && job.source.version_id.is_none() => {
            source_head(cx, job).await?;
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
        ErrorCode::SourceTooLarge,
        format!("the source is {size} bytes; the limit is {limit} (MEDIA_MAX_SOURCE_SIZE)"),
    )
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
    let n = read.await.map_err(|e| JobError::retryable(ErrorCode::Scratch, format!("read the source: {e}")))?;
    match sniff_reference_format(&head[..n]) {
        Some(kind) => Err(JobError::permanent(
            ErrorCode::UnsupportedInput,
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
            ErrorCode::DurationTooLong,
            format!("the source lasts {duration:.0} s; the limit is {:?} (MEDIA_MAX_DURATION)", limits.max_duration),
        ));
    }
    if let Some(video) = &media.video {
        let pixels = u64::from(video.width) * u64::from(video.height);
        if pixels > limits.max_pixels {
            return Err(JobError::permanent(
                ErrorCode::ResolutionTooLarge,
                format!(
                    "the source is {}x{}; the limit is {} pixels (MEDIA_MAX_PIXELS)",
                    video.width, video.height, limits.max_pixels
                ),
            ));
        }
    }
    Ok(())
}
