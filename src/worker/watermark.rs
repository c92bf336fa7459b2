//! The job's watermark image: fetched from the caller's uploads (the write the size was
//! checked on, at most [`MAX_IMAGE_BYTES`]), probed like a source, and accepted only as one
//! still PNG, JPEG or WebP picture of at most [`MAX_IMAGE_SIDE`] pixels a side
//! ([`check_image`]); anything else fails the job with `invalid_watermark`. The plan draws it
//! ([`crate::domain::watermark`]); a split job's segments read the copy stored beside their
//! pieces ([`watermark_key`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Inner, JobError};
use crate::domain::error_code::ErrorCode;
use crate::domain::job::JobSpec;
use crate::domain::keys::piece_file;
use crate::domain::keys::watermark_key;
use crate::domain::probe::MediaInfo;
use crate::domain::watermark::{MAX_IMAGE_BYTES, MAX_IMAGE_SIDE, Overlay, check_image};
use crate::media::probe::{ProbeFailure, Probed, ffprobe, first_frame};
use crate::storage::Pin;

/// ffprobe reads one picture header in well under a second.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// The local copy's name in the attempt's scratch folder.
pub(super) const IMAGE_FILE: &str = "watermark.img";

/// The job's watermark as drawn on `media`, and its checked image in `dir`; `None` for a job
/// without one, or a source without video.
pub(super) async fn prepare(
    inner: &Inner,
    job: &JobSpec,
    media: &MediaInfo,
    dir: &Path,
) -> Result<Option<(Overlay, PathBuf)>, JobError> {
    let Some(settings) = &job.watermark else { return Ok(None) };
    let Some(overlay) = settings.overlay(media) else { return Ok(None) };
    // The key stays in the log; the status says only what is wrong with the file.
    let refuse = |why: &str| {
        JobError::permanent_naming(ErrorCode::InvalidWatermark, why.to_string(), format!("`{}`: {why}", settings.key))
    };
    let info = inner.storage.head(&settings.key).await?.ok_or_else(|| refuse("the image does not exist"))?;
    if info.size > MAX_IMAGE_BYTES {
        return Err(refuse(&format!("the image is larger than {MAX_IMAGE_BYTES} bytes")));
    }
    let local = dir.join(IMAGE_FILE);
    // Pinned to the write whose size was checked: a larger file put there since is not read.
    let pin = Pin { etag: info.etag.clone(), version_id: None };
    inner.storage.get_pinned_to_file(&settings.key, &local, &pin).await?;
    let image = match ffprobe(&local, PROBE_TIMEOUT, Probed::Output).await {
        Ok(image) => image,
        Err(ProbeFailure::Unreadable(_) | ProbeFailure::Invalid(_) | ProbeFailure::Flooded(_)) => {
            return Err(refuse("the file is not a picture ffmpeg can read"));
        }
        Err(other) => return Err(other.into()),
    };
    let (width, height) = check_image(&image).map_err(|why| refuse(&why))?;
    tracing::info!(width, height, max_side = MAX_IMAGE_SIDE, drawn_width = overlay.width, "Watermark image checked.");
    Ok(Some((overlay, local)))
}

/// Stores the checked image where a split job's segments read it.
pub(super) async fn store_for_segments(inner: &Inner, output_dir: &str, image: &Path) -> Result<(), JobError> {
    inner.storage.put_file(&watermark_key(output_dir), image, "application/octet-stream").await?;
    Ok(())
}

/// How much later a split job's segments time each frame than the whole job does: the
/// segments read their pieces with `-copyts`, and the split pass (a stream copy) shifts every
/// piece alike by the source's decoding delay so that no decoding time is negative, while a
/// whole job's command starts the source at zero. The segments draw the watermark on their
/// timeline, so it lands on the same frames.
pub(super) async fn piece_shift(source: &Path, pieces: &Path) -> Result<f64, JobError> {
    let whole = first_frame(source, PROBE_TIMEOUT).await?;
    let piece = first_frame(&pieces.join(piece_file(0)), PROBE_TIMEOUT).await?;
    let shift = match (whole, piece) {
        (Some((pts, start)), Some((piece, _))) => (piece - (pts - start)).clamp(0.0, 10.0),
        _ => 0.0,
    };
    tracing::debug!(shift, "The pieces' timeline against the whole job's.");
    Ok(shift)
}
