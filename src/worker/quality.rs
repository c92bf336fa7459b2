//! Scoring what an attempt made: every video rendition against the source it came from (VMAF,
//! PSNR, SSIM and its bitrate), in a transcode slot, after the outputs are checked and before
//! they are uploaded. The per-second series go to `quality.json` beside the outputs; the
//! summaries go into the manifest.
//!
//! Scores are measures, not gates: a rendition that cannot be scored (an unreadable frame, a
//! scoring timeout) is logged and left without a block, and the job completes; a stop (cancel,
//! shutdown) stops the scoring like any other step.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::transcode::Made;
use super::{Inner, JobError};
use crate::domain::job::{JobSpec, OutputRequest};
use crate::domain::keys::QUALITY_FILE;
use crate::domain::plan::PlannedOutput;
use crate::domain::preset::Preset;
use crate::domain::probe::MediaInfo;
use crate::domain::quality::{BITRATE_WINDOW_SECONDS, bitrate, per_second, scoring_size, summarise};
use crate::domain::scoring::{QualitySidecar, RenditionQuality, RenditionSeries, Seam, seams, worst_seam};
use crate::domain::status::{SplitSummary, Stage};
use crate::jobs::Attempt;
use crate::media::quality::{ScoreRequest, Window, packet_sizes, score_many, subsample_for};

/// Longest a rendition's scoring may take, besides the job's own timeout: scoring decodes the
/// source and the rendition once more, so a run over the whole source is allowed its length
/// several times over.
const MIN_SCORE_TIMEOUT: Duration = Duration::from_secs(120);

/// One rendition to score: which output it belongs to, its name, its file, and the part of the
/// source it covers.
struct Target {
    output: usize,
    rendition: String,
    file: String,
    window: Option<Window>,
}

/// Each output's scored renditions, in the order of `made.outputs`.
pub(super) struct Scored {
    pub per_output: Vec<Vec<RenditionQuality>>,
}

/// Scores every video rendition in `out_dir` and writes `quality.json` there.
#[allow(clippy::too_many_arguments)]
pub(super) async fn score_outputs(
    inner: &Inner,
    job: &JobSpec,
    tracker: &Attempt,
    source: &Path,
    source_media: &MediaInfo,
    made: &Made,
    out_dir: &Path,
    stop: &CancellationToken,
) -> Result<Scored, JobError> {
    let mut per_output: Vec<Vec<RenditionQuality>> = vec![Vec::new(); made.outputs.len()];
    let targets = targets(&made.outputs, &job.outputs, out_dir).await;
    let Some((width, height)) = source_media.display_dimensions().map(|(w, h)| scoring_size(w, h)) else {
        return Ok(Scored { per_output });
    };
    if targets.is_empty() {
        return Ok(Scored { per_output });
    }
    tracker.stage(Stage::Scoring).await?;
    let slot = inner.transcode_slot().await?;
    let mut series = Vec::new();
    let cuts = seam_times(made.split.as_ref());
    let length = source_media.duration_seconds.unwrap_or(0.0);
    let timeout = MIN_SCORE_TIMEOUT.max(Duration::from_secs_f64(length.max(0.0) * 4.0));
    let frame_rate = source_media.video.as_ref().and_then(|v| v.frame_rate);
    let requests: Vec<ScoreRequest> = targets
        .iter()
        .map(|target| ScoreRequest {
            reference_window: target.window,
            subsample: subsample_for(frame_rate, Some(covered(target.window, length))),
            timeout,
            ..ScoreRequest::new(source, out_dir.join(&target.file), width, height)
        })
        .collect();
    // Every rendition against one decode of the source (one per source window).
    let scored = tokio::select! {
        scored = score_many(&requests) => scored,
        () = stop.cancelled() => return Err(JobError::Interrupted),
    };
    for ((target, request), scored) in targets.iter().zip(&requests).zip(scored) {
        let scores = match scored {
            Ok(scores) => scores,
            Err(err) => {
                tracing::warn!(rendition = %target.rendition, error = %err, "A rendition could not be scored.");
                continue;
            }
        };
        let distorted = &request.distorted;
        let duration = covered(target.window, length);
        let packets = packet_sizes(distorted, timeout).await.unwrap_or_default();
        let seams: Vec<Seam> = seams(&scores, &cuts);
        let block = summarise(&scores, bitrate(&packets, duration, BITRATE_WINDOW_SECONDS));
        series.push(RenditionSeries {
            output: made.outputs[target.output].preset.name().to_string(),
            rendition: target.rendition.clone(),
            vmaf_per_second: per_second(&scores),
            seams: seams.clone(),
        });
        per_output[target.output].push(RenditionQuality {
            rendition: target.rendition.clone(),
            file: target.file.clone(),
            quality: block,
            seams: worst_seam(&seams),
        });
    }
    drop(slot);
    let sidecar = QualitySidecar::new(&job.job_id, series);
    tokio::fs::write(out_dir.join(QUALITY_FILE), sidecar.to_json())
        .await
        .map_err(|e| JobError::scratch("write quality.json", &e))?;
    Ok(Scored { per_output })
}

/// The seconds of a source of `length` seconds that a rendition of `window` shows.
fn covered(window: Option<Window>, length: f64) -> f64 {
    window.map_or(length, |w| w.duration.unwrap_or(length - w.start).min(length - w.start))
}

/// The source times a split job's segments were joined at: every piece's start but the first.
fn seam_times(split: Option<&SplitSummary>) -> Vec<f64> {
    let Some(split) = split else { return Vec::new() };
    let mut starts: Vec<f64> = split.segment_timings.iter().map(|s| s.start).filter(|s| *s > 0.0).collect();
    starts.sort_by(f64::total_cmp);
    starts
}

/// The renditions to score: each video output's file, and each rung of an HLS ladder.
async fn targets(outputs: &[PlannedOutput], requests: &[OutputRequest], out_dir: &Path) -> Vec<Target> {
    let mut targets = Vec::new();
    for (index, (output, request)) in outputs.iter().zip(requests).enumerate() {
        let window = (request.start.is_some() || request.duration.is_some())
            .then(|| Window { start: request.start.unwrap_or(0.0), duration: request.duration });
        match output.preset {
            Preset::Hls => {
                for rung in rungs(&out_dir.join("hls")).await {
                    targets.push(Target {
                        output: index,
                        file: format!("hls/{rung}/index.m3u8"),
                        rendition: rung,
                        window,
                    });
                }
            }
            Preset::Cmaf => {
                for (rendition, file) in cmaf_renditions(&out_dir.join("cmaf")).await {
                    targets.push(Target { output: index, file: format!("cmaf/{file}"), rendition, window });
                }
            }
            preset if is_video_rendition(preset, output) => targets.push(Target {
                output: index,
                rendition: preset.name().to_string(),
                file: output.main_file.clone(),
                window,
            }),
            _ => {}
        }
    }
    targets
}

/// Whether an output is a video encode of the source worth scoring: the H.264 and VP9 files,
/// a remux that transcoded its video (a copy is the source itself), an operator's video preset.
fn is_video_rendition(preset: Preset, output: &PlannedOutput) -> bool {
    match preset {
        Preset::Mp4H264 | Preset::Mp4H264_1080 | Preset::Mp4H264_720 | Preset::Mp4H264_480 | Preset::WebmVp9 => true,
        Preset::RemuxMp4 => output.note.as_deref().is_some_and(|n| n.contains("video transcoded")),
        Preset::Custom(_) => preset.needs_video() && preset.content_type().starts_with("video/"),
        Preset::Hls | Preset::Cmaf | Preset::Thumbnail | Preset::Storyboard | Preset::Gif | Preset::Mp3 => false,
    }
}

/// The video renditions of a `cmaf` ladder, as (name, file under `cmaf/`): each rung's media
/// playlist (segments) or file (single file); not the audio.
async fn cmaf_renditions(cmaf: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(cmaf).await else { return found };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".mp4").filter(|stem| *stem != "audio") {
            found.push((stem.to_string(), name.clone()));
        } else if name != "audio" && tokio::fs::try_exists(entry.path().join("index.m3u8")).await.unwrap_or(false) {
            found.push((name.clone(), format!("{name}/index.m3u8")));
        }
    }
    found.sort();
    found
}

/// The rungs of the ladder in `hls`: its folders holding an `index.m3u8`, sorted.
async fn rungs(hls: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(hls).await else { return found };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path: PathBuf = entry.path();
        if tokio::fs::try_exists(path.join("index.m3u8")).await.unwrap_or(false) {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found.sort_by_key(|name| std::cmp::Reverse(name.trim_end_matches('p').parse::<u32>().unwrap_or(0)));
    found
}
