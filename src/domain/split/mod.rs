//! Split and stitch, without I/O: which jobs are encoded as segments by many workers, the
//! commands that cut, encode and join them, and the records that make the work resumable.
//!
//! A split job goes through four commands:
//! 1. **split**: one stream-copy pass cuts the source's video into pieces at its own keyframes,
//!    near a grid of `segment_duration`; the pieces keep the source's timestamps.
//! 2. **segments**: each piece is decoded once and encoded into every rendition the job needs,
//!    with the source's timestamps. The H.264 renditions of the MP4 outputs and the HLS rungs
//!    are MPEG-TS, with a keyframe at the piece's first frame and on the shared
//!    [`KEYFRAME_INTERVAL`](crate::domain::args::KEYFRAME_INTERVAL) clock. The rungs of a
//!    `cmaf` ladder, in any of its codecs (H.264, HEVC, AV1), are fragmented MP4 (see
//!    [`CmafRung`] for why), with a keyframe on every `gop_frames`-th frame from the piece's
//!    first, in every codec. Any worker can run any segment.
//! 3. **audio** (once, for the whole source: per-segment AAC would click at every join) and
//!    the outputs that cannot be split (thumbnail, storyboard, GIF, MP3), alongside.
//! 4. **stitch**: per rendition, the segments' MPEG-TS files are joined byte for byte (their
//!    timestamps already continue one another) and muxed with the audio by stream copy into the
//!    MP4 outputs and the HLS ladder; a `cmaf` rung's fragmented segments are joined as one init
//!    segment and every segment's fragments in order ([`crate::domain::cmaf::join`]), then
//!    copied beside the audio for packaging. Nothing is encoded twice.
//!
//! Invariants: every piece starts on a source keyframe, so segments are independent closed-GOP
//! encodes; every rendition cuts at the same instants (the MPEG-TS ones on the shared clock,
//! the `cmaf` rungs of all codecs on the same frames counted from each segment's first);
//! timestamps are the source's throughout, shifted by one constant (`TS_OFFSET`) that keeps
//! the encoders' B-frame delay from making any timestamp negative (a negative one would be
//! shifted per segment, breaking the joins).
//!
//! The parts: [`cuts`] (where the source is cut), [`commands`] (the ffmpeg commands),
//! [`playlist`] (editing the stitched HLS playlists), [`records`] (what makes the work
//! resumable) and [`request`] (a job's own choice). The keys of the records are
//! [`crate::domain::keys`]'s; the argument helpers shared with the unsplit plan are
//! [`crate::domain::args`]'s.

use serde::{Deserialize, Serialize};

use crate::domain::delivery::{DEFAULT_CODECS, VideoCodec, gop_frames};
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

/// The segment stem of a `cmaf` ladder's rung: `cmaf-<codec>-<rung>` (`cmaf-av1-480p`).
pub const CMAF_PREFIX: &str = "cmaf-";

/// Deployment settings (`MEDIA_SPLIT_MIN_DURATION`, `MEDIA_SEGMENT_DURATION`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitSettings {
    /// Sources at least this long are split; 0 turns splitting off.
    pub min_duration: f64,
    pub segment_duration: f64,
}

/// One video encode made per segment and joined at the stitch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendition {
    /// File stem of its segments: the preset's name, `hls-<rung>` or `cmaf-<codec>-<rung>`.
    pub name: String,
    /// Short-side cap in pixels (none: the source's size).
    pub cap: Option<u32>,
    pub crf: u32,
    pub maxrate_kbps: u32,
    /// A `cmaf` rung's codec and keyframe cadence; none for an H.264 rendition of the MP4
    /// outputs or the HLS ladder, whose segments are MPEG-TS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmaf: Option<CmafRung>,
}

/// What a `cmaf` rung's segments are encoded with.
///
/// Its segments are fragmented MP4, not MPEG-TS: ffmpeg 5.1 cannot put AV1 in MPEG-TS, and
/// fragmented MP4 carries all three codecs with the timestamps exact in the track's timescale
/// (`tfdt` is the source's decode time, written with `+frag_discont`), so joining them is a
/// copy of bytes that keeps every frame and its time. Matroska joined by the concat demuxer
/// was the other way: its millisecond timestamps round every frame at 29.97 fps, and the
/// concat demuxer places each file by the previous files' durations, not by their own times.
/// Every segment writes the same init segment (one encoder configuration per rung), which
/// the join checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmafRung {
    pub codec: VideoCodec,
    /// Frames between keyframes, counted from each segment's first frame: SVT-AV1 counts
    /// frames, so x264 and x265 count them too, and every codec cuts on the same frames.
    pub gop_frames: u32,
}

impl Rendition {
    fn encode(&self) -> VideoEncode {
        VideoEncode { cap: self.cap, crf: self.crf, maxrate_kbps: self.maxrate_kbps }
    }

    /// A segment's file of this rendition: `<name>.ts`, or `<name>.mp4` for a `cmaf` rung.
    pub fn file_name(&self) -> String {
        let extension = if self.cmaf.is_some() { "mp4" } else { "ts" };
        format!("{}.{extension}", self.name)
    }

    /// A `cmaf` rung's file in the output folder, under `cmaf/`: `<codec>-<rung>.mp4`.
    pub fn cmaf_file(&self) -> Option<String> {
        self.name.strip_prefix(CMAF_PREFIX).map(|stem| format!("{stem}.mp4"))
    }

    /// A `cmaf` rung's codec. A record written before `cmaf` rungs had their own field names
    /// only H.264 rungs (`cmaf-h264-<rung>`), encoded as MPEG-TS: they stitch as they were made.
    pub fn cmaf_codec(&self) -> Option<VideoCodec> {
        let legacy = || self.name.starts_with("cmaf-h264-").then_some(VideoCodec::H264);
        self.cmaf.map(|rung| rung.codec).or_else(legacy)
    }
}

/// The renditions a job's outputs need, when the job can be split: its source lasts at least
/// the minimum (and has at least two segments' worth), is unrotated video, and every output is
/// either stitchable (the H.264 MP4 presets without trims, HLS, a `cmaf` ladder in any codecs) or cheap enough to run whole
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
                    cmaf: None,
                });
            }
            Preset::Hls => {
                for (height, rate) in hls_rungs(output, media) {
                    renditions.push(Rendition {
                        name: format!("hls-{}", rung_name(height)),
                        cap: Some(height),
                        crf: crate::domain::plan::HLS_CRF,
                        maxrate_kbps: rate,
                        cmaf: None,
                    });
                }
            }
            Preset::Cmaf => {
                let gop_frames = gop_frames(video.frame_rate);
                let codecs = output.codecs.clone().unwrap_or_else(|| DEFAULT_CODECS.to_vec());
                for codec in codecs {
                    for (height, rate) in cmaf_rungs(output, media, codec) {
                        renditions.push(Rendition {
                            name: format!("{CMAF_PREFIX}{}-{}", codec.name(), rung_name(height)),
                            cap: Some(height),
                            crf: codec.crf(),
                            maxrate_kbps: rate,
                            cmaf: Some(CmafRung { codec, gop_frames }),
                        });
                    }
                }
            }
            Preset::Thumbnail | Preset::Storyboard | Preset::Gif | Preset::Mp3 => {}
            Preset::WebmVp9 | Preset::RemuxMp4 | Preset::Custom(_) => return None,
        }
    }
    (!renditions.is_empty()).then_some((segment, renditions))
}

/// The renditions with the per-title ladders applied (`ladders` in the order of `outputs`): each
/// H.264 rung of an `hls` or `cmaf` ladder at the CRF its output's decision chose, and the rungs
/// it dropped left out (of every codec of a `cmaf` ladder), so every segment of a rung is
/// encoded alike.
pub fn apply_ladders(
    renditions: Vec<Rendition>,
    outputs: &[OutputRequest],
    ladders: &[Option<LadderDecision>],
) -> Vec<Rendition> {
    let decision_of = |preset: Preset| {
        outputs.iter().position(|o| o.preset == preset).and_then(|i| ladders.get(i)).and_then(Option::as_ref)
    };
    let (hls, cmaf) = (decision_of(Preset::Hls), decision_of(Preset::Cmaf));
    renditions
        .into_iter()
        .filter_map(|mut r| {
            let (decision, h264) = if r.name.starts_with("hls-") {
                (hls, true)
            } else if let Some(codec) = r.cmaf_codec() {
                (cmaf, codec == VideoCodec::H264)
            } else {
                return Some(r);
            };
            let Some(decision) = decision else { return Some(r) };
            let rung = r.name.rsplit('-').next().unwrap_or_default();
            let chosen = decision.rungs.iter().find(|d| d.name == rung)?;
            if h264 {
                r.crf = chosen.crf;
            }
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

    fn media(duration: f64, rotation: i32) -> MediaInfo {
        let mut media = MediaInfo::sample(1280, 720, duration);
        if let Some(video) = media.video.as_mut() {
            (video.frame_rate, video.rotation) = (Some(25.0), rotation);
        }
        media
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
            Rendition { name: "mp4-h264-720".into(), cap: Some(720), crf: 23, maxrate_kbps: 3500, cmaf: None }
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
    fn a_cmaf_ladder_splits_in_every_codec() {
        let cmaf = outputs(&[Preset::Cmaf]);
        let (_, renditions) = split_plan(&cmaf, &media(120.0, 0), &SETTINGS, None).unwrap();
        let names: Vec<&str> = renditions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["cmaf-h264-720p", "cmaf-h264-480p", "cmaf-h264-360p"]);
        assert!(is_stitched(Preset::Cmaf));
        let three = OutputRequest {
            codecs: Some(vec![VideoCodec::H264, VideoCodec::Hevc, VideoCodec::Av1]),
            max_height: Some(480),
            ..OutputRequest::new(Preset::Cmaf)
        };
        let (_, renditions) = split_plan(&[three], &media(120.0, 0), &SETTINGS, None).unwrap();
        let names: Vec<&str> = renditions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["cmaf-h264-480p", "cmaf-h264-360p", "cmaf-hevc-480p", "cmaf-hevc-360p", "cmaf-av1-480p", "cmaf-av1-360p"]
        );
        assert_eq!(
            renditions[4],
            Rendition {
                name: "cmaf-av1-480p".into(),
                cap: Some(480),
                crf: 33,
                maxrate_kbps: 770,
                cmaf: Some(CmafRung { codec: VideoCodec::Av1, gop_frames: 50 }),
            }
        );
        assert_eq!(renditions[4].file_name(), "cmaf-av1-480p.mp4");
        assert_eq!(renditions[4].cmaf_file().as_deref(), Some("av1-480p.mp4"));
        // A record written before `cmaf` rungs had their own field still reads.
        let old: Rendition =
            serde_json::from_str(r#"{"name":"hls-360p","cap":360,"crf":23,"maxrate_kbps":800}"#).unwrap();
        assert_eq!((old.cmaf, old.file_name(), old.cmaf_file()), (None, "hls-360p.ts".to_string(), None));
        let legacy: Rendition =
            serde_json::from_str(r#"{"name":"cmaf-h264-360p","cap":360,"crf":23,"maxrate_kbps":800}"#).unwrap();
        assert_eq!(legacy.file_name(), "cmaf-h264-360p.ts", "its segments were MPEG-TS");
        assert_eq!(
            (legacy.cmaf_file().as_deref(), legacy.cmaf_codec()),
            (Some("h264-360p.mp4"), Some(VideoCodec::H264))
        );
        assert_eq!(renditions[4].cmaf_codec(), Some(VideoCodec::Av1));
    }

    #[test]
    fn per_title_decisions_apply_to_their_own_ladder() {
        // The decision keeps 720p at CRF 27 and 360p at 23, and leaves 480p out.
        let rung = |name: &str, height: u32, crf: u32| {
            serde_json::json!({"name": name, "height": height, "crf": crf, "predicted_vmaf": 93.0,
                "predicted_kbps": 900.0, "predicted_peak_kbps": 1200.0, "cap_kbps": 2800, "capped": false,
                "reason": "target", "probes": []})
        };
        let decision: LadderDecision = serde_json::from_value(serde_json::json!({
            "target": {"vmaf": 93.0}, "duration_seconds": 120.0, "windows": [],
            "rungs": [rung("720p", 720, 27), rung("360p", 360, 23)],
            "dropped": [{"name": "480p", "height": 480, "crf": 23, "predicted_vmaf": 88.0, "predicted_kbps": 700.0,
                "reason": "quality_step", "compared_with": "360p", "probes": []}],
            "predicted_bytes": 1000
        }))
        .unwrap();
        let cmaf =
            OutputRequest { codecs: Some(vec![VideoCodec::H264, VideoCodec::Av1]), ..OutputRequest::new(Preset::Cmaf) };
        let jobs = [cmaf, OutputRequest::new(Preset::Hls), OutputRequest::new(Preset::Mp4H264_720)];
        let (_, renditions) = split_plan(&jobs, &media(120.0, 0), &SETTINGS, None).unwrap();
        let applied = apply_ladders(renditions, &jobs, &[Some(decision), None, None]);
        let crfs: Vec<(&str, u32)> = applied.iter().map(|r| (r.name.as_str(), r.crf)).collect();
        assert_eq!(
            crfs,
            [
                ("cmaf-h264-720p", 27),
                ("cmaf-h264-360p", 23),
                ("cmaf-av1-720p", 33),
                ("cmaf-av1-360p", 33),
                ("hls-720p", 23),
                ("hls-480p", 23),
                ("hls-360p", 23),
                ("mp4-h264-720", 23),
            ],
            "the cmaf ladder's decision leaves the hls ladder as it is"
        );
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
