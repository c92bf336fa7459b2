//! The end of a split job: the segments joined per rendition and muxed with the audio into
//! the outputs, by stream copy, and the HLS playlists finished from what was written. MPEG-TS
//! segments join byte for byte; a `cmaf` rung's fragmented MP4 segments join as one init
//! segment and their fragments ([`crate::domain::cmaf::join`]).

use std::path::Path;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::super::{Inner, JobError};
use super::Whole;
use crate::domain::cmaf::CmafError;
use crate::domain::delivery::VideoCodec;
use crate::domain::error_code::ErrorCode;
use crate::domain::job::{JobMessage, JobSpec};
use crate::domain::keys::segment_file_key;
use crate::domain::plan::{CMAF_FOLDER, PlannedOutput, embedded_plan, stitched_package};
use crate::domain::preset::Preset;
use crate::domain::split::{Rendition, SplitRecord, is_stitched, stitch_args};
use crate::media::ffmpeg::{Bounds, FfmpegProgress, run_ffmpeg};
use crate::media::fragmented::{FragmentedError, JoinedFile};

/// Joins every rendition's segments (their timestamps already continue one another) and
/// muxes them with the audio into the outputs, by stream copy; a `cmaf` output's embedded
/// captions come from the whole source (`whole`).
/// Returns the outputs it made, as planned outputs.
pub(super) async fn stitch(
    inner: &Inner,
    message: &JobMessage,
    whole: &Whole<'_>,
    record: &SplitRecord,
    dir: &Path,
    out_dir: &Path,
    stop: &CancellationToken,
) -> Result<Vec<PlannedOutput>, JobError> {
    let job = &message.job;
    let audio = dir.join("split/audio.m4a");
    let audio = tokio::fs::try_exists(&audio).await.unwrap_or(false).then_some(audio);
    let audio = audio.as_deref();
    let joined = dir.join("joined");
    tokio::fs::create_dir_all(&joined).await.map_err(|e| JobError::scratch("create the join folder", &e))?;
    for rendition in &record.renditions {
        if rendition.cmaf.is_some() {
            join_fragmented(inner, &job.output_dir, record, rendition, &joined).await?;
        } else {
            join_ts(inner, &job.output_dir, record, rendition, &joined).await?;
        }
    }
    let rungs: Vec<String> =
        record.renditions.iter().filter_map(|r| r.name.strip_prefix("hls-").map(str::to_string)).collect();
    for rung in &rungs {
        tokio::fs::create_dir_all(out_dir.join("hls").join(rung))
            .await
            .map_err(|e| JobError::scratch("create the HLS folders", &e))?;
    }
    let cmaf = job.outputs.iter().find(|o| o.preset == Preset::Cmaf);
    if cmaf.is_some() {
        tokio::fs::create_dir_all(out_dir.join(CMAF_FOLDER))
            .await
            .map_err(|e| JobError::scratch("create the CMAF folder", &e))?;
    }
    let args = stitch_args(&job.outputs, &record.renditions, &joined, audio, out_dir);
    let (sender, _receiver) = watch::channel(FfmpegProgress::default());
    run_ffmpeg(args, inner.config.job_timeout, stop, sender, &Bounds::on_scratch(out_dir)).await?;
    if !rungs.is_empty() {
        // A copy only guesses the segments' lengths, and has no bitrates to announce.
        let length = match (record.pieces.first(), record.pieces.last()) {
            (Some(first), Some(last)) => Some(last.end - first.start),
            _ => None,
        };
        super::super::hls::finish_ladder(&out_dir.join("hls"), &rungs, length).await?;
    }
    let mut planned = planned(job, record);
    if let Some(output) = cmaf {
        let mut embedded = embedded_plan(output, whole.media);
        embedded.source = whole.path.to_path_buf();
        let package = stitched_package(output, &cmaf_rungs(record), audio.is_some(), embedded);
        super::super::cmaf::package(inner, out_dir, &package, stop).await?;
        let note = format!("{}; stitched from {} segments", package.note(), record.pieces.len());
        let file = output.preset.file_name().to_string();
        planned.push(PlannedOutput {
            preset: output.preset,
            main_file: file.clone(),
            probe_file: file,
            folder: Some(format!("{CMAF_FOLDER}/")),
            note: Some(note),
        });
    }
    Ok(planned)
}

/// A rendition's MPEG-TS segments joined byte for byte into `joined/<rendition>.ts`: their
/// timestamps already continue one another.
async fn join_ts(
    inner: &Inner,
    output_dir: &str,
    record: &SplitRecord,
    rendition: &Rendition,
    joined: &Path,
) -> Result<(), JobError> {
    let part = joined.join("part.ts");
    let target = joined.join(rendition.file_name());
    let mut file = tokio::fs::File::create(&target).await.map_err(|e| JobError::scratch("create a join", &e))?;
    for piece in &record.pieces {
        inner.storage.get_to_file(&segment_file_key(output_dir, piece.index, &rendition.file_name()), &part).await?;
        let mut source = tokio::fs::File::open(&part).await.map_err(|e| JobError::scratch("open a segment", &e))?;
        tokio::io::copy(&mut source, &mut file).await.map_err(|e| JobError::scratch("join a segment", &e))?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(|e| JobError::scratch("join a segment", &e))?;
    let _ = tokio::fs::remove_file(&part).await;
    Ok(())
}

/// A `cmaf` rung's fragmented segments joined into `joined/<rendition>.mp4`, one segment on
/// the scratch disk at a time. A segment with another init segment (encoder configuration)
/// than the first fails the job, naming it.
async fn join_fragmented(
    inner: &Inner,
    output_dir: &str,
    record: &SplitRecord,
    rendition: &Rendition,
    joined: &Path,
) -> Result<(), JobError> {
    let part = joined.join("part.mp4");
    let count = record.pieces.len();
    let failed = |err: FragmentedError| match err {
        FragmentedError::Io { source, .. } => JobError::scratch("join a segment", &source),
        FragmentedError::Cmaf { source: CmafError::InitMismatch(n), .. } => JobError::permanent_naming(
            ErrorCode::SegmentFailed,
            format!("segment {} of {count}", n + 1),
            format!("{} of segment {} of {count}: {}", rendition.name, n + 1, CmafError::InitMismatch(n)),
        ),
        FragmentedError::Cmaf { source, path } => {
            JobError::retryable(ErrorCode::Internal, format!("join {}: {}: {source}", rendition.name, path.display()))
        }
    };
    let mut file = JoinedFile::create(&joined.join(rendition.file_name())).await.map_err(failed)?;
    for piece in &record.pieces {
        inner.storage.get_to_file(&segment_file_key(output_dir, piece.index, &rendition.file_name()), &part).await?;
        file.append(&part).await.map_err(failed)?;
    }
    file.finish().await.map_err(failed)?;
    let _ = tokio::fs::remove_file(&part).await;
    Ok(())
}

/// The codec and short side of a stitched `cmaf` ladder's rungs, codec by codec, largest
/// first (the record's order).
fn cmaf_rungs(record: &SplitRecord) -> Vec<(VideoCodec, u32)> {
    record.renditions.iter().filter_map(|r| Some((r.cmaf_codec()?, r.cap?))).collect()
}

/// The outputs stitched from the segments, as the manifest describes them.
fn planned(job: &JobSpec, record: &SplitRecord) -> Vec<PlannedOutput> {
    let count = record.pieces.len();
    let mut planned = Vec::new();
    for output in job.outputs.iter().filter(|o| is_stitched(o.preset) && o.preset != Preset::Cmaf) {
        let file = output.preset.file_name().to_string();
        let (folder, note) = if output.preset == Preset::Hls {
            let rungs: Vec<&str> = record.renditions.iter().filter_map(|r| r.name.strip_prefix("hls-")).collect();
            (Some("hls/".to_string()), Some(format!("rungs: {}; stitched from {count} segments", rungs.join(", "))))
        } else {
            (None, Some(format!("stitched from {count} segments")))
        };
        planned.push(PlannedOutput { preset: output.preset, main_file: file.clone(), probe_file: file, folder, note });
    }
    planned
}
