//! Split and stitch, without I/O: which jobs are encoded as segments by many workers, the
//! commands that cut, encode and join them, and the records that make the work resumable.
//!
//! A split job goes through four commands:
//! 1. **split**: one stream-copy pass cuts the source's video into pieces at its own keyframes,
//!    near a grid of `segment_duration`; the pieces keep the source's timestamps.
//! 2. **segments**: each piece is decoded once and encoded into every H.264 rendition the job
//!    needs (the MP4 outputs' and the HLS rungs'), as MPEG-TS with the source's timestamps, a
//!    keyframe at the piece's first frame and on the shared [`KEYFRAME_INTERVAL`](crate::domain::args::KEYFRAME_INTERVAL) clock. Any
//!    worker can run any segment.
//! 3. **audio** (once, for the whole source: per-segment AAC would click at every join) and
//!    the outputs that cannot be split (thumbnail, storyboard, GIF, MP3), alongside.
//! 4. **stitch**: per rendition, the segments' MPEG-TS files are joined byte for byte (their
//!    timestamps already continue one another) and muxed with the audio by stream copy into the
//!    MP4 outputs and the HLS ladder. Nothing is encoded twice.
//!
//! Invariants: every piece starts on a source keyframe, so segments are independent closed-GOP
//! encodes; every rendition cuts at the same instants; timestamps are the source's throughout,
//! shifted by one constant (`TS_OFFSET`) that keeps the encoders' B-frame delay from making
//! any timestamp negative (a negative one would be shifted per segment, breaking the joins).
//!
//! The parts: [`cuts`] (where the source is cut), [`commands`] (the ffmpeg commands),
//! [`playlist`] (editing the stitched HLS playlists), [`records`] (what makes the work
//! resumable) and [`request`] (a job's own choice). The keys of the records are
//! [`crate::domain::keys`]'s; the argument helpers shared with the unsplit plan are
//! [`crate::domain::args`]'s.

use serde::{Deserialize, Serialize};

use crate::domain::delivery::VideoCodec;
use crate::domain::job::OutputRequest;
use crate::domain::per_title::LadderDecision;
use crate::domain::plan::{VideoEncode, cmaf_rungs, hls_rungs, mp4_video, rung_name};
use crate::domain::preset::Preset;
use crate::domain::probe::MediaInfo;

mod commands;
mod cuts;
mod playlist;
mod records;
pub mod request;

pub use commands::{audio_args, parse_pieces, segment_args, split_args, stitch_args};
pub use cuts::{MIN_TAIL_PIECE, cut_times, piece_lengths};
pub use playlist::{first_video_pts, playlist_segments, retime_playlist, set_bandwidths};
pub use records::{
    Piece, SPLIT_VERSION, SegmentDone, SegmentFailed, SegmentMessage, SegmentTask, SplitRecord, describe,
};
pub use request::{SEGMENT_DURATION_RANGE, SplitRequest};

/// The segment stem of a `cmaf` ladder's H.264 rung: `cmaf-h264-<rung>`.
pub const CMAF_PREFIX: &str = "cmaf-h264-";

/// Deployment settings (`MEDIA_SPLIT_MIN_DURATION`, `MEDIA_SEGMENT_DURATION`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitSettings {
    /// Sources at least this long are split; 0 turns splitting off.
    pub min_duration: f64,
    pub segment_duration: f64,
}

/// One H.264 video encode made per segment and joined at the stitch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendition {
    /// File stem of its segments: the preset's name, or `hls-<rung>`.
    pub name: String,
    /// Short-side cap in pixels (none: the source's size).
    pub cap: Option<u32>,
    pub crf: u32,
    pub maxrate_kbps: u32,
}

impl Rendition {
    fn encode(&self) -> VideoEncode {
        VideoEncode { cap: self.cap, crf: self.crf, maxrate_kbps: self.maxrate_kbps }
    }
}

/// The renditions a job's outputs need, when the job can be split: its source lasts at least
/// the minimum (and has at least two segments' worth), is unrotated video, and every output is
/// either stitchable (the H.264 MP4 presets without trims, HLS) or cheap enough to run whole
/// alongside (thumbnail, storyboard, GIF, MP3). Returns the segment duration too.
pub fn split_plan(
    outputs: &[OutputRequest],
    media: &MediaInfo,
    settings: &SplitSettings,
    request: Option<&SplitRequest>,
) -> Option<(f64, Vec<Rendition>)> {
    if request.is_some_and(|r| !r.enabled) || settings.min_duration <= 0.0 {
        return None;
    }
    let segment = request.and_then(|r| r.segment_duration).unwrap_or(settings.segment_duration);
    let duration = media.duration_seconds?;
    let video = media.video.as_ref()?;
    if duration < settings.min_duration || duration < 2.0 * segment || video.rotation != 0 {
        return None;
    }
    let mut renditions = Vec::new();
    for output in outputs {
        match output.preset {
            Preset::Mp4H264 | Preset::Mp4H264_1080 | Preset::Mp4H264_720 | Preset::Mp4H264_480 => {
                if output.start.is_some() || output.duration.is_some() {
                    return None;
                }
                let v = mp4_video(output);
                renditions.push(Rendition {
                    name: output.preset.name().to_string(),
                    cap: v.cap,
                    crf: v.crf,
                    maxrate_kbps: v.maxrate_kbps,
                });
            }
            Preset::Hls => {
                for (height, rate) in hls_rungs(output, media) {
                    renditions.push(Rendition {
                        name: format!("hls-{}", rung_name(height)),
                        cap: Some(height),
                        crf: crate::domain::plan::HLS_CRF,
                        maxrate_kbps: rate,
                    });
                }
            }
            // An H.264 ladder stitches like HLS; HEVC and AV1 rungs are encoded whole.
            Preset::Cmaf if output.codecs.as_ref().is_none_or(|c| c == &[VideoCodec::H264]) => {
                for (height, rate) in cmaf_rungs(output, media, VideoCodec::H264) {
                    renditions.push(Rendition {
                        name: format!("{CMAF_PREFIX}{}", rung_name(height)),
                        cap: Some(height),
                        crf: VideoCodec::H264.crf(),
                        maxrate_kbps: rate,
                    });
                }
            }
            Preset::Thumbnail | Preset::Storyboard | Preset::Gif | Preset::Mp3 => {}
            Preset::Cmaf | Preset::WebmVp9 | Preset::RemuxMp4 | Preset::Custom(_) => return None,
        }
    }
    (!renditions.is_empty()).then_some((segment, renditions))
}

/// The renditions with a per-title ladder applied: each HLS rung at the CRF its decision chose,
/// and the rungs it dropped left out, so every segment of a rung is encoded alike.
pub fn apply_ladders(renditions: Vec<Rendition>, ladders: &[Option<LadderDecision>]) -> Vec<Rendition> {
    let Some(decision) = ladders.iter().flatten().next() else { return renditions };
    renditions
        .into_iter()
        .filter_map(|mut r| {
            let Some(rung) = r.name.strip_prefix("hls-") else { return Some(r) };
            let chosen = decision.rungs.iter().find(|d| d.name == rung)?;
            r.crf = chosen.crf;
            Some(r)
        })
        .collect()
}

/// Whether an output is made by the stitch (else it runs whole, alongside).
pub fn is_stitched(preset: Preset) -> bool {
    matches!(
        preset,
        Preset::Mp4H264 | Preset::Mp4H264_1080 | Preset::Mp4H264_720 | Preset::Mp4H264_480 | Preset::Hls | Preset::Cmaf
    )
}

/// The fraction of `piece` an encode has written, from ffmpeg's output time (the source's
/// times, or from zero, depending on how ffmpeg reports a copied timeline).
pub fn piece_fraction(piece: &Piece, out_time: f64) -> f64 {
    let length = (piece.end - piece.start).max(1e-3);
    let done = if out_time >= piece.start { out_time - piece.start } else { out_time };
    (done / length).clamp(0.0, 1.0)
}

/// A split job's progress in percent: finished segments whole, running ones by their fraction,
/// each weighted by its length.
pub fn job_progress(pieces: &[Piece], done: &dyn Fn(u32) -> bool, running: &dyn Fn(u32) -> Option<f64>) -> f64 {
    let total: f64 = pieces.iter().map(|p| p.end - p.start).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let made: f64 = pieces
        .iter()
        .map(|p| {
            let share = if done(p.index) { 1.0 } else { running(p.index).unwrap_or(0.0).clamp(0.0, 1.0) };
            share * (p.end - p.start)
        })
        .sum();
    (made / total * 100.0).clamp(0.0, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::probe::{AudioStream, VideoStream};

    fn media(duration: f64, rotation: i32) -> MediaInfo {
        MediaInfo {
            format: "mov,mp4,m4a,3gp,3g2,mj2".into(),
            duration_seconds: Some(duration),
            video: Some(VideoStream {
                codec: "h264".into(),
                width: 1280,
                height: 720,
                pix_fmt: Some("yuv420p".into()),
                frame_rate: Some(25.0),
                rotation,
                closed_captions: false,
            }),
            audio: Some(AudioStream { codec: "aac".into(), channels: Some(2), sample_rate: Some(48000) }),
            video_streams: 1,
            audio_streams: 1,
            subtitles: Vec::new(),
        }
    }

    const SETTINGS: SplitSettings = SplitSettings { min_duration: 60.0, segment_duration: 20.0 };

    fn outputs(presets: &[Preset]) -> Vec<OutputRequest> {
        presets.iter().map(|p| OutputRequest::new(*p)).collect()
    }

    #[test]
    fn which_jobs_split() {
        let mp4_hls = outputs(&[Preset::Mp4H264_720, Preset::Hls, Preset::Thumbnail, Preset::Mp3]);
        let (segment, renditions) = split_plan(&mp4_hls, &media(120.0, 0), &SETTINGS, None).unwrap();
        assert_eq!(segment, 20.0);
        let names: Vec<&str> = renditions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["mp4-h264-720", "hls-720p", "hls-480p", "hls-360p"]);
        assert_eq!(
            renditions[0],
            Rendition { name: "mp4-h264-720".into(), cap: Some(720), crf: 23, maxrate_kbps: 3500 }
        );

        let refused: &[(&[Preset], f64, i32)] = &[
            (&[Preset::Mp4H264], 59.0, 0),                   // too short
            (&[Preset::Mp4H264], 120.0, 90),                 // rotated
            (&[Preset::Mp4H264, Preset::WebmVp9], 120.0, 0), // an output that cannot be stitched
            (&[Preset::Gif, Preset::Thumbnail], 120.0, 0),   // nothing to stitch
        ];
        for (presets, duration, rotation) in refused {
            assert_eq!(
                split_plan(&outputs(presets), &media(*duration, *rotation), &SETTINGS, None),
                None,
                "{presets:?}"
            );
        }
        let mut trimmed = outputs(&[Preset::Mp4H264]);
        trimmed[0].start = Some(5.0);
        assert_eq!(split_plan(&trimmed, &media(120.0, 0), &SETTINGS, None), None);
        let off = SplitRequest { enabled: false, segment_duration: None };
        assert_eq!(split_plan(&outputs(&[Preset::Mp4H264]), &media(120.0, 0), &SETTINGS, Some(&off)), None);
        let own = SplitRequest { enabled: true, segment_duration: Some(30.0) };
        assert_eq!(split_plan(&outputs(&[Preset::Mp4H264]), &media(120.0, 0), &SETTINGS, Some(&own)).unwrap().0, 30.0);
        let disabled = SplitSettings { min_duration: 0.0, ..SETTINGS };
        assert_eq!(split_plan(&outputs(&[Preset::Mp4H264]), &media(120.0, 0), &disabled, None), None);
        assert!(SplitRequest { enabled: true, segment_duration: Some(1.0) }.validate().is_err());
        assert!(own.validate().is_ok());
    }

    #[test]
    fn an_h264_cmaf_ladder_splits_and_other_codecs_run_whole() {
        let cmaf = outputs(&[Preset::Cmaf]);
        let (_, renditions) = split_plan(&cmaf, &media(120.0, 0), &SETTINGS, None).unwrap();
        let names: Vec<&str> = renditions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["cmaf-h264-720p", "cmaf-h264-480p", "cmaf-h264-360p"]);
        assert!(is_stitched(Preset::Cmaf));
        let av1 =
            OutputRequest { codecs: Some(vec![VideoCodec::H264, VideoCodec::Av1]), ..OutputRequest::new(Preset::Cmaf) };
        assert_eq!(split_plan(&[av1], &media(120.0, 0), &SETTINGS, None), None);
    }

    #[test]
    fn progress_weighs_segments_by_length() {
        let pieces = [
            Piece { index: 0, start: 0.0, end: 10.0 },
            Piece { index: 1, start: 10.0, end: 15.0 },
            Piece { index: 2, start: 15.0, end: 20.0 },
        ];
        let progress = job_progress(&pieces, &|i| i == 0, &|i| (i == 1).then_some(0.5));
        assert!((progress - 62.5).abs() < 1e-9, "{progress}");
        assert_eq!(job_progress(&pieces, &|_| true, &|_| None), 100.0);
        assert_eq!(piece_fraction(&pieces[1], 12.5), 0.5);
        assert_eq!(piece_fraction(&pieces[1], 2.5), 0.5);
        assert_eq!(piece_fraction(&pieces[1], 99.0), 1.0);
    }
}
