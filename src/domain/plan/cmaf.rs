//! The `cmaf` ladder's part of the command: one fragmented MP4 file per rendition, every video
//! rung of every codec from the same decode, and one AAC file for the audio.
//!
//! ffmpeg writes only these files: one track each, fragmented at every keyframe (the keyframes
//! fall on the shared [`KEYFRAME_INTERVAL`](crate::domain::args::KEYFRAME_INTERVAL) clock), with
//! an empty `moov` up front and a `sidx` in single-file mode. The playlists, the MPD and the
//! segment files are the worker's, from what the files hold ([`CmafPackage`]): ffmpeg 5.1's
//! own HLS and DASH muxers write codec strings players cannot use for HEVC and AV1, and
//! placeholder bitrates for constant-quality encodes.

use std::ffi::OsString;
use std::path::Path;

use super::rungs_within;
use crate::domain::args::{aac, audio_filter, finish_block, fit, source_frame_times, strings};
use crate::domain::delivery::{CaptionTrack, DEFAULT_CODECS, Packaging, VideoCodec, gop_frames};
use crate::domain::job::OutputRequest;
use crate::domain::per_title::LadderDecision;
use crate::domain::probe::MediaInfo;
use crate::domain::subtitles::{EmbeddedPlan, plan_embedded};

/// The output's folder, relative to the job's output folder.
pub const CMAF_FOLDER: &str = "cmaf";
const FOLDER: &str = CMAF_FOLDER;
/// Audio fragments last this long (µs), like the video's GOPs.
const AUDIO_FRAGMENT_US: &str = "2000000";

/// What the worker packages after ffmpeg: the renditions' files and how to lay them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmafPackage {
    /// The output's folder, relative to the job's output folder (`cmaf`).
    pub folder: String,
    pub packaging: Packaging,
    /// The video rungs (codec by codec, largest first), then the audio, if any.
    pub renditions: Vec<CmafRendition>,
    /// Caption files to fetch and announce as WebVTT renditions.
    pub captions: Vec<CaptionTrack>,
    /// The source's own text tracks to extract and announce after the caption files.
    pub embedded: EmbeddedPlan,
}

impl CmafPackage {
    /// The manifest's note: the renditions by name, then the caption tracks with their origin
    /// (`en (upload)`, `fr (source stream 2)`) and the source's subtitle streams left out.
    pub fn note(&self) -> String {
        let names: Vec<&str> = self.renditions.iter().map(|r| r.name.as_str()).collect();
        let mut note = format!("{}: {}", self.packaging.name(), names.join(", "));
        let (embedded, skipped) = self.embedded.describe();
        let captions: Vec<String> =
            self.captions.iter().map(|c| format!("{} (upload)", c.language)).chain(embedded).collect();
        if !captions.is_empty() {
            note.push_str(&format!("; captions: {}", captions.join(", ")));
        }
        if !skipped.is_empty() {
            note.push_str(&format!("; not packaged: {}", skipped.join(", ")));
        }
        note
    }
}

/// The source's tracks `output` packages: none when it asks for none
/// (`"embedded_captions": false`), else [`plan_embedded`]'s. The source's path is the plan's
/// to set ([`EmbeddedPlan::source`]).
pub fn embedded_plan(output: &OutputRequest, media: &MediaInfo) -> EmbeddedPlan {
    if !output.embedded_captions.unwrap_or(true) {
        return EmbeddedPlan::default();
    }
    plan_embedded(media, output.captions.as_deref().unwrap_or_default())
}

/// One rendition of a `cmaf` ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmafRendition {
    /// `h264-720p`, `av1-360p`, or `audio`: its files' stem or folder.
    pub name: String,
    /// The file ffmpeg writes, relative to the job's output folder: `cmaf/<name>.mp4`.
    pub file: String,
    /// The video codec; `None` for the audio.
    pub codec: Option<VideoCodec>,
    /// The rung's short side; 0 for the audio.
    pub height: u32,
}

/// The filter graph, the output blocks (one per rendition) and the package of a `cmaf` output.
/// `ladder`: a per-title decision, if the output has a quality target; `af`: the audio
/// rendition's filter (the job's loudness), if any; `pad`: the picture the rungs scale (the
/// source's, or the watermarked one).
pub(super) fn cmaf(
    output: &OutputRequest,
    media: &MediaInfo,
    (ladder, af, pad): (Option<&LadderDecision>, Option<&str>, &str),
    out_dir: &Path,
) -> (String, Vec<OsString>, CmafPackage) {
    let packaging = output.packaging.unwrap_or_default();
    let gop = gop_frames(media.video.as_ref().and_then(|v| v.frame_rate));
    let rungs = cmaf_ladder(output, media, ladder);

    let mut renditions = Vec::new();
    let mut blocks = Vec::new();
    for (i, (codec, height, rate, crf)) in rungs.iter().enumerate() {
        let name = format!("{}-{height}p", codec.name());
        let file = format!("{FOLDER}/{name}.mp4");
        let mut block = strings(&["-map", &format!("[cv{i}]"), "-map_metadata", "-1", "-map_chapters", "-1"]);
        block.extend(codec.encoder_args_at(*crf, *rate, gop));
        block.extend(source_frame_times());
        block.extend(cmaf_fragmenting(packaging, false));
        blocks.extend(finish_block(block, out_dir.join(&file).into_os_string()));
        renditions.push(CmafRendition { name, file, codec: Some(*codec), height: *height });
    }
    if media.audio.is_some() {
        let file = format!("{FOLDER}/audio.mp4");
        let mut block = strings(&["-map", "0:a:0", "-map_metadata", "-1", "-map_chapters", "-1"]);
        block.extend(aac());
        block.extend(audio_filter(af));
        block.extend(cmaf_fragmenting(packaging, true));
        blocks.extend(finish_block(block, out_dir.join(&file).into_os_string()));
        renditions.push(CmafRendition { name: "audio".into(), file, codec: None, height: 0 });
    }
    let heights: Vec<u32> = rungs.iter().map(|(_, h, _, _)| *h).collect();
    let captions = output.captions.clone().unwrap_or_default();
    let embedded = embedded_plan(output, media);
    let package = CmafPackage { folder: FOLDER.into(), packaging, renditions, captions, embedded };
    (graph(pad, &heights), blocks, package)
}

/// Every video rung of a `cmaf` output: codec, short side, rate cap (kb/s) and CRF, codec by
/// codec, largest first. A per-title decision (made on the H.264 ladder, whose rungs and x264
/// settings are the `hls` preset's) sets the H.264 rungs' CRFs, and the rungs it left out, which
/// add nothing over their neighbour on this title, are left out of every codec's family; HEVC
/// and AV1 keep their fixed CRFs.
pub fn cmaf_ladder(
    output: &OutputRequest,
    media: &MediaInfo,
    ladder: Option<&LadderDecision>,
) -> Vec<(VideoCodec, u32, u32, u32)> {
    let codecs = output.codecs.clone().unwrap_or_else(|| DEFAULT_CODECS.to_vec());
    let mut rungs = Vec::new();
    for codec in codecs {
        for (height, rate) in rungs_within(codec.ladder(), output, media) {
            let chosen = ladder.map(|d| d.rungs.iter().find(|r| r.height == height));
            match (chosen, codec) {
                (None, _) => rungs.push((codec, height, rate, codec.crf())),
                (Some(None), _) => {}
                (Some(Some(rung)), VideoCodec::H264) => rungs.push((codec, height, rate, rung.crf)),
                (Some(Some(_)), _) => rungs.push((codec, height, rate, codec.crf())),
            }
        }
    }
    rungs
}

/// The muxer of a rendition: fragmented MP4 with an empty `moov` up front, CMAF brands, and
/// one index (`sidx`) of every fragment in single-file mode, where players fetch fragments by
/// range. Video is fragmented at every keyframe, audio every two seconds.
pub fn cmaf_fragmenting(packaging: Packaging, audio: bool) -> Vec<OsString> {
    let index = if packaging == Packaging::SingleFile { "+global_sidx" } else { "" };
    let (mut args, fragments) =
        if audio { (strings(&["-frag_duration", AUDIO_FRAGMENT_US]), "") } else { (Vec::new(), "+frag_keyframe") };
    args.extend(strings(&["-movflags", &format!("{fragments}+empty_moov+default_base_moof+cmaf{index}"), "-f", "mp4"]));
    args
}

/// The package of a `cmaf` output a split job stitched: its rungs, as (codec, short side) in
/// the order the unsplit plan lists them (codec by codec, largest first), the audio when there
/// is some, and the captions of the whole source (`embedded`, from [`embedded_plan`]).
pub fn stitched_package(
    output: &OutputRequest,
    rungs: &[(VideoCodec, u32)],
    audio: bool,
    embedded: EmbeddedPlan,
) -> CmafPackage {
    let mut renditions: Vec<CmafRendition> = rungs
        .iter()
        .map(|&(codec, height)| {
            let name = format!("{}-{height}p", codec.name());
            CmafRendition { file: format!("{FOLDER}/{name}.mp4"), name, codec: Some(codec), height }
        })
        .collect();
    if audio {
        renditions.push(CmafRendition {
            name: "audio".into(),
            file: format!("{FOLDER}/audio.mp4"),
            codec: None,
            height: 0,
        });
    }
    let captions = output.captions.clone().unwrap_or_default();
    let packaging = output.packaging.unwrap_or_default();
    CmafPackage { folder: FOLDER.into(), packaging, renditions, captions, embedded }
}

/// One decode scaled once per distinct rung size, each size split among the codecs that have
/// it: output `i` is labelled `[cv<i>]`, in the order of `heights`. `pad`: the picture's.
fn graph(pad: &str, heights: &[u32]) -> String {
    let mut sizes: Vec<u32> = heights.to_vec();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    let mut chains = Vec::new();
    let fan = if sizes.len() == 1 {
        format!("[{pad}]null[cs0]")
    } else {
        format!("[{pad}]split={}{}", sizes.len(), (0..sizes.len()).map(|j| format!("[cs{j}]")).collect::<String>())
    };
    chains.push(fan);
    for (j, size) in sizes.iter().enumerate() {
        // Every codec's rung of this size.
        let users: Vec<usize> = heights.iter().enumerate().filter(|(_, h)| *h == size).map(|(i, _)| i).collect();
        let outs: String = users.iter().map(|i| format!("[cv{i}]")).collect();
        let scaled = fit(Some(*size));
        if users.len() == 1 {
            chains.push(format!("[cs{j}]{scaled}{outs}"));
        } else {
            chains.push(format!("[cs{j}]{scaled},split={}{outs}", users.len()));
        }
    }
    chains.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::preset::Preset;

    fn media(width: u32, height: u32, audio: bool) -> MediaInfo {
        let media = MediaInfo::sample(width, height, 30.0);
        if audio { media } else { media.without_audio() }
    }

    fn request(codecs: &[VideoCodec], packaging: Option<Packaging>) -> OutputRequest {
        OutputRequest { codecs: Some(codecs.to_vec()), packaging, ..OutputRequest::new(Preset::Cmaf) }
    }

    fn text(args: &[OsString]) -> String {
        args.iter().map(|a| a.to_str().unwrap()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn every_codec_has_its_rungs_from_one_scale_per_size() {
        let (graph, blocks, package) = cmaf(
            &request(&[VideoCodec::H264, VideoCodec::Av1], None),
            &media(1280, 720, true),
            (None, None, "0:v:0"),
            Path::new("/o"),
        );
        let names: Vec<&str> = package.renditions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["h264-720p", "h264-480p", "h264-360p", "av1-720p", "av1-480p", "av1-360p", "audio"]);
        assert_eq!(graph.matches("scale=").count(), 3, "{graph}");
        assert!(graph.starts_with("[0:v:0]split=3[cs0][cs1][cs2];"), "{graph}");
        assert!(graph.contains(",split=2[cv0][cv3]"), "{graph}");
        assert!(graph.contains(",split=2[cv2][cv5]"), "{graph}");
        let args = text(&blocks);
        assert!(args.starts_with(
            "-map [cv0] -map_metadata -1 -map_chapters -1 -c:v libx264 -preset fast -profile:v high -pix_fmt yuv420p \
             -crf 23 -maxrate 2800k -bufsize 5600k -force_key_frames:v expr:gte(t,n_forced*2) \
             -fps_mode vfr -enc_time_base:v 1/90000 -movflags +frag_keyframe+empty_moov+default_base_moof+cmaf -f mp4 /o/cmaf/h264-720p.mp4 "
        ));
        assert!(args.contains(
            "-map [cv3] -map_metadata -1 -map_chapters -1 -c:v libsvtav1 -preset 8 -pix_fmt yuv420p -crf 33 -g 60 \
             -svtav1-params scd=0:mbr=1550 -fps_mode vfr -enc_time_base:v 1/90000 -movflags +frag_keyframe+empty_moov+default_base_moof+cmaf -f mp4 /o/cmaf/av1-720p.mp4"
        ));
        assert!(args.ends_with(
            "-map 0:a:0 -map_metadata -1 -map_chapters -1 -c:a aac -b:a 128k -ac 2 -frag_duration 2000000 \
             -movflags +empty_moov+default_base_moof+cmaf -f mp4 /o/cmaf/audio.mp4"
        ));
        assert_eq!(package.note(), "segments: h264-720p, h264-480p, h264-360p, av1-720p, av1-480p, av1-360p, audio");
    }

    #[test]
    fn single_file_mode_indexes_fragments_and_hevc_closes_its_gops() {
        let (graph, blocks, package) = cmaf(
            &request(&[VideoCodec::Hevc], Some(Packaging::SingleFile)),
            &media(640, 360, false),
            (None, None, "0:v:0"),
            Path::new("/o"),
        );
        assert_eq!(
            graph,
            "[0:v:0]null[cs0];[cs0]scale=w='if(gte(iw,ih),-2,trunc(min(iw,360)/2)*2)':h='if(gte(iw,ih),trunc(min(ih,360)/2)*2,-2)'[cv0]"
        );
        let args = text(&blocks);
        assert!(args.contains("-c:v libx265 -preset fast -profile:v main -pix_fmt yuv420p -crf 25 -maxrate 520k"));
        assert!(args.contains("-forced-idr 1 -x265-params log-level=error:open-gop=0 -tag:v hvc1"));
        assert!(args.ends_with(
            "-movflags +frag_keyframe+empty_moov+default_base_moof+cmaf+global_sidx -f mp4 /o/cmaf/hevc-360p.mp4"
        ));
        assert_eq!(package.renditions.len(), 1, "no audio rendition without audio");
        assert_eq!(package.packaging, Packaging::SingleFile);
    }

    #[test]
    fn a_small_source_gets_one_rung_per_codec_at_its_size() {
        let (_, _, package) = cmaf(
            &request(&[VideoCodec::H264, VideoCodec::Hevc], None),
            &media(320, 240, true),
            (None, None, "0:v:0"),
            Path::new("/o"),
        );
        let names: Vec<&str> = package.renditions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["h264-240p", "hevc-240p", "audio"]);
    }

    #[test]
    fn a_per_title_decision_sets_the_h264_crfs_and_drops_its_rungs_from_every_codec() {
        use crate::domain::per_title::{ChoiceReason, Probe, QualityTarget, RungCandidate, RungChoice, Window};
        // 720p at CRF 27; 480p adds nothing over 360p (less than the quality step) and is left out.
        let rung = |height: u32, cap: u32, crf: u32, vmaf: f64, kbps: f64| {
            let reason = ChoiceReason::Target;
            let choice =
                RungChoice { crf, predicted_vmaf: vmaf, predicted_kbps: kbps, predicted_peak_kbps: kbps, reason };
            let probe =
                Probe { crf, worst_window_vmaf: vmaf, mean_vmaf: vmaf, kbps, peak_kbps: kbps, worst_window_kbps: kbps };
            RungCandidate { name: format!("{height}p"), height, cap_kbps: cap, choice, probes: vec![probe] }
        };
        let rungs =
            vec![rung(720, 2800, 27, 95.0, 1500.0), rung(480, 1400, 21, 88.2, 900.0), rung(360, 800, 23, 88.0, 500.0)];
        let windows = vec![Window { start: 10.0, duration: 2.0 }];
        let decision = LadderDecision::new(QualityTarget { vmaf: 95.0 }, 60.0, windows, rungs);
        assert_eq!(decision.dropped.iter().map(|d| d.height).collect::<Vec<_>>(), [480], "{decision:?}");

        let output = request(&[VideoCodec::H264, VideoCodec::Av1], None);
        let ladder = cmaf_ladder(&output, &media(1280, 720, true), Some(&decision));
        assert_eq!(
            ladder,
            [
                (VideoCodec::H264, 720, 2800, 27),
                (VideoCodec::H264, 360, 800, 23),
                (VideoCodec::Av1, 720, 1550, 33),
                (VideoCodec::Av1, 360, 440, 33),
            ]
        );
        let (_, blocks, package) =
            cmaf(&output, &media(1280, 720, true), (Some(&decision), None, "0:v:0"), Path::new("/o"));
        let names: Vec<&str> = package.renditions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["h264-720p", "h264-360p", "av1-720p", "av1-360p", "audio"]);
        assert!(text(&blocks).contains("-crf 27 -maxrate 2800k"));
        // Without a decision, the fixed ladder.
        let fixed = cmaf_ladder(&output, &media(1280, 720, true), None);
        assert_eq!(fixed.len(), 6);
        assert!(fixed.iter().all(|(codec, _, _, crf)| *crf == codec.crf()));
    }

    #[test]
    fn the_note_names_every_caption_track_and_its_origin() {
        use crate::domain::probe::SubtitleStream;
        let mut source = media(640, 360, true);
        let stream = |index, codec: &str, language: &str| SubtitleStream {
            index,
            codec: codec.into(),
            language: Some(language.into()),
            title: None,
            default: false,
            forced: false,
        };
        source.subtitles = vec![stream(2, "subrip", "fre"), stream(3, "hdmv_pgs_subtitle", "eng")];
        let sidecar = CaptionTrack { key: "uploads/en.srt".into(), language: "en".into(), name: None };
        let output = OutputRequest { captions: Some(vec![sidecar]), ..request(&[VideoCodec::H264], None) };
        let (_, _, package) = cmaf(&output, &source, (None, None, "0:v:0"), Path::new("/o"));
        assert_eq!(
            package.note(),
            "segments: h264-360p, audio; captions: en (upload), fr (source stream 2); \
             not packaged: source stream 3 hdmv_pgs_subtitle (bitmap subtitles)"
        );
        let stitched = stitched_package(&output, &[(VideoCodec::H264, 360)], true, embedded_plan(&output, &source));
        assert_eq!(stitched.note(), package.note());

        let without = OutputRequest { embedded_captions: Some(false), ..output };
        let (_, _, package) = cmaf(&without, &source, (None, None, "0:v:0"), Path::new("/o"));
        assert_eq!(package.embedded, EmbeddedPlan::default());
        assert_eq!(package.note(), "segments: h264-360p, audio; captions: en (upload)");
    }
}
