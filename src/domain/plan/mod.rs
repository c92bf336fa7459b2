//! Turning a job's outputs and its probed source into ONE ffmpeg command, without I/O.
//!
//! Every output is an output block of the same command, so ffmpeg decodes the source once and
//! feeds every encoder from that decode (the HLS ladder splits it in a filter graph). Blocks
//! carry only server-side constants and numbers that were range-checked; the only paths are
//! the worker's scratch files, and the input is read with a `file`-only protocol whitelist.

use std::ffi::OsString;
use std::path::Path;

use crate::domain::args::{
    KEYFRAME_INTERVAL, aac, audio_filter, fan_out, finish_block, fit, hls_muxer, seconds, source_frame_times, strings,
    x264,
};
use crate::domain::delivery::VideoCodec;
use crate::domain::error_code::ErrorCode;
use crate::domain::job::OutputRequest;
use crate::domain::per_title::LadderDecision;
use crate::domain::preset::Preset;
use crate::domain::probe::MediaInfo;

/// The fixed ladder's CRF, on every rung.
pub const HLS_CRF: u32 = 23;
mod cmaf;
mod images;
mod watermark;

use watermark::VideoFeed;

pub use cmaf::{CMAF_FOLDER, CmafPackage, CmafRendition, cmaf_fragmenting, embedded_plan, stitched_package};
/// Codecs an MP4 can carry as they are (and that players handle), for `remux-mp4`.
const MP4_VIDEO_COPY: &[&str] = &["h264", "hevc", "av1"];
const MP4_AUDIO_COPY: &[&str] = &["aac", "mp3", "ac3", "eac3", "alac", "opus"];

/// One output of the command.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedOutput {
    pub preset: Preset,
    /// The file users open (relative to the output folder), e.g. `hls/master.m3u8`.
    pub main_file: String,
    /// The file to ffprobe for the manifest (differs from `main_file` for the storyboard).
    pub probe_file: String,
    /// Every file of this output is under this prefix (relative), or is `main_file` or
    /// `probe_file`.
    pub folder: Option<String>,
    /// What the plan decided that users may want to know (e.g. remux copy vs transcode).
    pub note: Option<String>,
}

/// The whole command for a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// ffmpeg's argv, without the program name.
    pub args: Vec<OsString>,
    pub outputs: Vec<PlannedOutput>,
    /// Folders (relative) that must exist before ffmpeg runs.
    pub folders: Vec<String>,
    /// Files the worker writes itself after ffmpeg: (relative path, content).
    pub sidecars: Vec<(String, String)>,
    /// `cmaf` ladders the worker packages after ffmpeg (playlists, MPD, segments).
    pub packages: Vec<CmafPackage>,
}

/// Why a job's outputs cannot be made from this source: all permanent.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("the source has no video stream, which preset `{0}` needs")]
    NoVideo(Preset),
    #[error("the source has no audio stream, which preset `{0}` needs")]
    NoAudio(Preset),
    #[error("{0}")]
    Option(String),
}

impl PlanError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PlanError::NoVideo(_) => ErrorCode::NoVideoStream,
            PlanError::NoAudio(_) => ErrorCode::NoAudioStream,
            PlanError::Option(_) => ErrorCode::InvalidOption,
        }
    }
}

/// Plans one command producing every output into `out_dir` from `input`.
pub fn plan(outputs: &[OutputRequest], media: &MediaInfo, input: &Path, out_dir: &Path) -> Result<Plan, PlanError> {
    plan_with(outputs, media, input, out_dir, &Decisions::default())
}

/// What the analysis before the encode decided for a job's outputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Decisions<'a> {
    /// Each output's per-title ladder, in the job's order (none: the fixed ladder).
    pub ladders: &'a [Option<LadderDecision>],
    /// The audio filter of the job's loudness setting ([`crate::domain::loudness`]), given to
    /// every output that encodes audio (`-af`); an output that copies its audio is left as is.
    pub audio_filter: Option<&'a str>,
    /// The job's watermark as drawn on this source, and the local path of its image: drawn
    /// once on the source's picture, before any output scales it
    /// ([`crate::domain::watermark`]).
    pub watermark: Option<(&'a crate::domain::watermark::Overlay, &'a Path)>,
}

/// [`plan`], with what the analysis decided.
pub fn plan_with(
    outputs: &[OutputRequest],
    media: &MediaInfo,
    input: &Path,
    out_dir: &Path,
    decisions: &Decisions<'_>,
) -> Result<Plan, PlanError> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file", "-i"]);
    args.push(input.as_os_str().to_owned());
    let mut plan =
        Plan { args: Vec::new(), outputs: Vec::new(), folders: Vec::new(), sidecars: Vec::new(), packages: Vec::new() };
    let mut blocks: Vec<Vec<OsString>> = Vec::new();
    let mut feed = VideoFeed::new(decisions.watermark);
    for (index, output) in outputs.iter().enumerate() {
        let preset = output.preset;
        let ladder = decisions.ladders.get(index).and_then(Option::as_ref);
        if preset.needs_video() && media.video.is_none() {
            return Err(PlanError::NoVideo(preset));
        }
        if preset.needs_audio() && media.audio.is_none() {
            return Err(PlanError::NoAudio(preset));
        }
        check_window(output, media)?;
        blocks.push(output_block(output, media, (ladder, decisions.audio_filter), out_dir, &mut plan, &mut feed)?);
    }

    // A `cmaf` output's embedded captions are read from the same input, after the run.
    for package in &mut plan.packages {
        package.embedded.source = input.to_path_buf();
    }
    // The watermark's image input, then the global options (the filter graphs), after the
    // source's input and before the output blocks.
    args.extend(feed.finish());
    args.append(&mut plan.args);
    for block in blocks {
        args.extend(block);
    }
    plan.args = args;
    Ok(plan)
}

/// One output's block of the command, ending with its file; records the output in `plan` (and
/// any global option, folder or sidecar file it needs), given its ladder and the audio filter.
fn output_block(
    output: &OutputRequest,
    media: &MediaInfo,
    (ladder, af): (Option<&LadderDecision>, Option<&str>),
    out_dir: &Path,
    plan: &mut Plan,
    feed: &mut VideoFeed<'_>,
) -> Result<Vec<OsString>, PlanError> {
    let preset = output.preset;
    let main = preset.file_name().to_string();
    let mut planned =
        PlannedOutput { preset, main_file: main.clone(), probe_file: main.clone(), folder: None, note: None };
    let mut block = strings(&["-map_metadata", "-1", "-map_chapters", "-1"]);
    let mut file = out_dir.join(&main).into_os_string();
    match preset {
        Preset::Mp4H264 | Preset::Mp4H264_1080 | Preset::Mp4H264_720 | Preset::Mp4H264_480 => {
            block.extend(h264_mp4(output, af, feed));
        }
        Preset::WebmVp9 => block.extend(webm_vp9(output, af, feed)),
        Preset::Hls | Preset::Cmaf => {
            return Ok(ladder_block(output, media, (ladder, af), out_dir, (plan, feed), planned, block));
        }
        Preset::Thumbnail => {
            let duration = media.duration_seconds.unwrap_or(0.0);
            let time = output.time.unwrap_or(duration * 0.1);
            let filter = format!("select='gte(t,{})',{}", seconds(time), fit(Some(720)));
            let (map, vf) = feed.simple(&filter);
            block.extend(map.into_iter().chain(vf).chain(strings(&["-frames:v", "1", "-q:v", "3"])));
            block.extend(strings(&["-update", "1", "-f", "image2"]));
        }
        Preset::Storyboard => {
            let (filter, vtt) = images::storyboard(media);
            let (map, vf) = feed.simple(&filter);
            block.extend(map.into_iter().chain(vf).chain(strings(&["-frames:v", "1", "-q:v", "4"])));
            block.extend(strings(&["-update", "1", "-f", "image2"]));
            file = out_dir.join("storyboard.jpg").into_os_string();
            plan.sidecars.push((main, vtt));
            planned.probe_file = "storyboard.jpg".into();
        }
        Preset::Gif => {
            let (map, vf) = feed.simple(&images::gif_filter(output, media));
            block.extend(map.into_iter().chain(vf).chain(strings(&["-loop", "0", "-f", "gif"])));
        }
        Preset::Mp3 => block.extend(mp3(output, af)),
        Preset::RemuxMp4 => {
            let (remux, note) = remux(media, af, feed);
            block.extend(remux);
            planned.note = Some(note);
        }
        Preset::Custom(_) => {
            let Some(custom) = preset.custom() else {
                return Err(PlanError::Option(format!("preset `{preset}` is not installed")));
            };
            block.extend(trim(output));
            let scale = fit(output.max_height);
            block.extend(custom.args.iter().map(|a| OsString::from(if a == "{scale}" { scale.as_str() } else { a })));
            if feed.watermarked() {
                // An operator's argv maps the source's streams itself: it reads the source.
                planned.note = Some("no watermark: a preset of this deployment reads the source as it is".into());
            }
        }
    }
    plan.outputs.push(planned);
    Ok(finish_block(block, file))
}

/// A ladder's blocks (`hls`, `cmaf`): its filter graph goes among the global options, its
/// folders and (for `cmaf`) what the worker packages afterwards into `plan`.
fn ladder_block(
    output: &OutputRequest,
    media: &MediaInfo,
    (ladder, af): (Option<&LadderDecision>, Option<&str>),
    out_dir: &Path,
    (plan, feed): (&mut Plan, &mut VideoFeed<'_>),
    mut planned: PlannedOutput,
    mut block: Vec<OsString>,
) -> Vec<OsString> {
    let pad = feed.pad();
    let graph = if output.preset == Preset::Cmaf {
        let (graph, blocks, package) = cmaf::cmaf(output, media, (ladder, af, &pad), out_dir);
        plan.folders.push(package.folder.clone());
        planned.folder = Some(format!("{}/", package.folder));
        planned.note = Some(package.note());
        plan.packages.push(package);
        block = blocks;
        graph
    } else {
        let (graph, hls_block, rungs) = hls(output, media, (ladder, af, &pad), out_dir);
        // The block ends with the variant playlists' path; the master playlist is named by
        // `-master_pl_name` and lands beside their folders, at `hls/master.m3u8`.
        block.extend(hls_block);
        plan.folders.extend(rungs.iter().map(|name| format!("hls/{name}")));
        planned.folder = Some("hls/".into());
        planned.note = Some(format!("rungs: {}", rungs.join(", ")));
        graph
    };
    feed.graph(graph);
    plan.outputs.push(planned);
    block
}

/// An H.264 MP4 output's streams, encoders and muxer.
fn h264_mp4(output: &OutputRequest, af: Option<&str>, feed: &mut VideoFeed<'_>) -> Vec<OsString> {
    let video = mp4_video(output);
    let (mut block, vf) = feed.simple(&fit(video.cap));
    block.extend(strings(&["-map", "0:a:0?"]));
    block.extend(trim(output));
    block.extend(vf);
    block.extend(x264(video.crf, video.maxrate_kbps));
    block.extend(source_frame_times());
    block.extend(aac());
    block.extend(audio_filter(af));
    block.extend(strings(&["-movflags", "+faststart", "-f", "mp4"]));
    block
}

/// An MP3 output: the first audio stream only.
fn mp3(output: &OutputRequest, af: Option<&str>) -> Vec<OsString> {
    let mut block = strings(&["-map", "0:a:0", "-vn"]);
    block.extend(trim(output));
    block.extend(audio_filter(af));
    block.extend(strings(&["-c:a", "libmp3lame", "-b:a", "192k", "-f", "mp3"]));
    block
}

/// A WebM output's streams, encoders and muxer.
fn webm_vp9(output: &OutputRequest, af: Option<&str>, feed: &mut VideoFeed<'_>) -> Vec<OsString> {
    let (mut block, vf) = feed.simple(&fit(output.max_height));
    block.extend(strings(&["-map", "0:a:0?"]));
    block.extend(trim(output));
    block.extend(vf);
    block.extend(source_frame_times());
    block.extend(vp9_opus());
    block.extend(audio_filter(af));
    block
}

/// VP9 video and Opus audio, in WebM.
fn vp9_opus() -> Vec<OsString> {
    strings(&[
        "-c:v",
        "libvpx-vp9",
        "-crf",
        "32",
        "-b:v",
        "0",
        "-deadline",
        "good",
        "-cpu-used",
        "4",
        "-row-mt",
        "1",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "libopus",
        "-b:a",
        "96k",
        "-ac",
        "2",
        "-f",
        "webm",
    ])
}

/// How long an output should last, in seconds, when the plan fixes it: the source from the
/// output's `start` (a GIF: its clip length), cut to its `duration`. `None` for images, for
/// operator presets (their argv may trim) and when the source's duration is unknown.
pub fn expected_duration(output: &OutputRequest, source: &MediaInfo) -> Option<f64> {
    let total = source.duration_seconds?;
    let start = output.start.unwrap_or(0.0);
    match output.preset {
        Preset::Thumbnail | Preset::Storyboard | Preset::Custom(_) => None,
        Preset::Gif => Some(output.duration.unwrap_or_else(|| (total - start).clamp(1.0, 3.0)).min(total - start)),
        _ => {
            let available = (total - start).max(0.0);
            Some(output.duration.map_or(available, |d| d.min(available)))
        }
    }
}

/// Whether an output of `actual` seconds is short of `expected` by more than a frame or two
/// (two frames at `frame_rate`, at least 0.1 s): a truncated output fails its attempt.
pub fn is_truncated(expected: f64, actual: Option<f64>, frame_rate: Option<f64>) -> bool {
    let tolerance = frame_rate.filter(|r| *r > 0.0).map_or(0.1, |r| (2.0 / r).max(0.1));
    actual.is_none_or(|actual| actual + tolerance < expected)
}

fn min_cap(rung: Option<u32>, max_height: Option<u32>) -> Option<u32> {
    match (rung, max_height) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Output-side trimming: `-ss` and `-t` before the output, so other outputs are unaffected.
fn trim(output: &OutputRequest) -> Vec<OsString> {
    let mut args = Vec::new();
    if let Some(start) = output.start {
        args.extend(strings(&["-ss", &seconds(start)]));
    }
    if let Some(duration) = output.duration {
        args.extend(strings(&["-t", &seconds(duration)]));
    }
    args
}

/// Start positions and thumbnail times must fall inside the source.
fn check_window(output: &OutputRequest, media: &MediaInfo) -> Result<(), PlanError> {
    let Some(duration) = media.duration_seconds else { return Ok(()) };
    for (name, value) in [("start", output.start), ("time", output.time)] {
        if let Some(v) = value
            && v >= duration
        {
            return Err(PlanError::Option(format!(
                "`{name}` {v} s of `{}` is past the end of the {duration:.3} s source",
                output.preset
            )));
        }
    }
    Ok(())
}

/// The video encode of one H.264 output: short-side cap, CRF and peak bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoEncode {
    pub cap: Option<u32>,
    pub crf: u32,
    pub maxrate_kbps: u32,
}

/// The video of an MP4 preset's output (its rung, capped by the request's `max_height`).
pub fn mp4_video(output: &OutputRequest) -> VideoEncode {
    let (rung, crf, maxrate_kbps) = match output.preset {
        Preset::Mp4H264_1080 => (Some(1080), 22, 6000),
        Preset::Mp4H264_720 => (Some(720), 23, 3500),
        Preset::Mp4H264_480 => (Some(480), 24, 1500),
        _ => (None, 23, 8000),
    };
    VideoEncode { cap: min_cap(rung, output.max_height), crf, maxrate_kbps }
}

/// The HLS ladder for this source: short side and peak bitrate (kb/s) of each rung.
pub fn hls_rungs(output: &OutputRequest, media: &MediaInfo) -> Vec<(u32, u32)> {
    rungs_within(VideoCodec::H264.ladder(), output, media)
}

/// The rungs of a `cmaf` ladder's `codec` for this source: short side and peak bitrate (kb/s).
pub fn cmaf_rungs(output: &OutputRequest, media: &MediaInfo, codec: VideoCodec) -> Vec<(u32, u32)> {
    rungs_within(codec.ladder(), output, media)
}

/// The rungs of `ladder` at or below the source's short side (and the request's cap); a source
/// below the smallest rung gets one rung at its own size.
fn rungs_within(ladder: &[(u32, u32)], output: &OutputRequest, media: &MediaInfo) -> Vec<(u32, u32)> {
    let short_side = media.display_dimensions().map(|(w, h)| w.min(h)).unwrap_or(0);
    let limit = output.max_height.map_or(short_side, |cap| cap.min(short_side));
    let mut rungs: Vec<(u32, u32)> = ladder.iter().copied().filter(|(h, _)| *h <= limit).collect();
    if let (true, Some((_, rate))) = (rungs.is_empty(), ladder.last()) {
        rungs.push((limit.max(2) & !1, *rate));
    }
    rungs
}

/// The name of a rung, as its folder under `hls/` and in the master playlist.
pub fn rung_name(height: u32) -> String {
    format!("{height}p")
}

/// The rungs of an HLS ladder: short side, rate cap (kb/s) and CRF; a per-title ladder keeps
/// the rungs its decision kept, each at its chosen CRF.
pub fn ladder_rungs(
    output: &OutputRequest,
    media: &MediaInfo,
    ladder: Option<&LadderDecision>,
) -> Vec<(u32, u32, u32)> {
    let fixed = hls_rungs(output, media);
    match ladder {
        None => fixed.into_iter().map(|(h, rate)| (h, rate, HLS_CRF)).collect(),
        Some(decision) => fixed
            .into_iter()
            .filter_map(|(h, rate)| decision.rungs.iter().find(|r| r.height == h).map(|r| (h, rate, r.crf)))
            .collect(),
    }
}

/// The HLS ladder: a filter graph splitting one decode into the rungs, and the output block.
fn hls(
    output: &OutputRequest,
    media: &MediaInfo,
    (ladder, af, pad): (Option<&LadderDecision>, Option<&str>, &str),
    out_dir: &Path,
) -> (String, Vec<OsString>, Vec<String>) {
    let rungs = ladder_rungs(output, media, ladder);
    let names: Vec<String> = rungs.iter().map(|(h, _, _)| rung_name(*h)).collect();
    let n = rungs.len();
    let caps: Vec<Option<u32>> = rungs.iter().map(|(h, _, _)| Some(*h)).collect();
    let graph = fan_out(pad, &caps, "hs", "hv");

    let audio = media.audio.is_some();
    let mut block = Vec::new();
    for i in 0..n {
        block.extend(strings(&["-map", &format!("[hv{i}]")]));
    }
    if audio {
        for _ in 0..n {
            block.extend(strings(&["-map", "0:a:0"]));
        }
    }
    block.extend(strings(&["-c:v", "libx264", "-preset", "fast", "-profile:v", "high", "-pix_fmt", "yuv420p"]));
    if rungs.iter().all(|(_, _, crf)| *crf == HLS_CRF) {
        block.extend(strings(&["-crf", &HLS_CRF.to_string()]));
    } else {
        for (i, (_, _, crf)) in rungs.iter().enumerate() {
            block.extend(strings(&[&format!("-crf:v:{i}"), &crf.to_string()]));
        }
    }
    for (i, (_, rate, _)) in rungs.iter().enumerate() {
        block.extend(strings(&[
            &format!("-maxrate:v:{i}"),
            &format!("{rate}k"),
            &format!("-bufsize:v:{i}"),
            &format!("{}k", rate * 2),
        ]));
    }
    // Keyframes on a shared clock, so every rung's segments cut at the same instants.
    block.extend(strings(&["-force_key_frames:v", &format!("expr:gte(t,n_forced*{KEYFRAME_INTERVAL})")]));
    block.extend(source_frame_times());
    if audio {
        // One filter per audio stream: every rung's audio is scaled alike.
        block.extend(aac());
        block.extend(audio_filter(af));
    }
    block.extend(hls_muxer(&names, audio, out_dir));
    (graph, block, names)
}

/// Stream copy where MP4 and players allow it; otherwise that stream is transcoded (and only
/// then does the audio get the loudness filter: copied audio is left as it is).
/// A watermark goes only into video it transcodes: copied video is the source's as it is.
fn remux(media: &MediaInfo, af: Option<&str>, feed: &mut VideoFeed<'_>) -> (Vec<OsString>, String) {
    let copied = media.video.as_ref().is_none_or(|v| MP4_VIDEO_COPY.contains(&v.codec.as_str()));
    let (mut args, vf) = if copied { (strings(&["-map", "0:v:0?"]), Vec::new()) } else { feed.simple(&fit(None)) };
    args.extend(strings(&["-map", "0:a:0?"]));
    let mut notes = Vec::new();
    match &media.video {
        Some(v) if copied => {
            args.extend(strings(&["-c:v", "copy"]));
            if v.codec == "hevc" {
                // Apple players need the hvc1 tag for HEVC in MP4.
                args.extend(strings(&["-tag:v", "hvc1"]));
            }
            let unmarked = if feed.watermarked() { ", no watermark" } else { "" };
            notes.push(format!("video copied ({}){unmarked}", v.codec));
        }
        Some(v) => {
            args.extend(vf);
            args.extend(x264(23, 8000));
            args.extend(source_frame_times());
            notes.push(format!("video transcoded from {} to h264", v.codec));
        }
        None => {}
    }
    match &media.audio {
        Some(a) if MP4_AUDIO_COPY.contains(&a.codec.as_str()) => {
            args.extend(strings(&["-c:a", "copy"]));
            notes.push(format!("audio copied ({})", a.codec));
        }
        Some(a) => {
            args.extend(aac());
            args.extend(audio_filter(af));
            notes.push(format!("audio transcoded from {} to aac", a.codec));
        }
        None => {}
    }
    args.extend(strings(&["-movflags", "+faststart", "-f", "mp4"]));
    (args, notes.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`MediaInfo::sample`] with the codecs named, a stream left out where `None`.
    fn media(width: u32, height: u32, audio: Option<&str>, video: Option<&str>) -> MediaInfo {
        let mut media = MediaInfo::sample(width, height, 60.0);
        match (audio, media.audio.as_mut()) {
            (Some(codec), Some(stream)) => stream.codec = codec.into(),
            _ => media = media.without_audio(),
        }
        match (video, media.video.as_mut()) {
            (Some(codec), Some(stream)) => stream.codec = codec.into(),
            _ => (media.video, media.video_streams) = (None, 0),
        }
        media
    }

    fn argv(outputs: &[OutputRequest], media: &MediaInfo) -> String {
        let plan = plan(outputs, media, Path::new("/s/source"), Path::new("/s/out")).unwrap();
        plan.args.iter().map(|a| a.to_str().unwrap()).collect::<Vec<_>>().join(" ")
    }

    const INPUT: &str = "-hide_banner -nostdin -y -protocol_whitelist file -i /s/source";
    const STRIP: &str = "-map_metadata -1 -map_chapters -1";

    #[test]
    fn every_preset_argv_is_exact() {
        let hd = media(1920, 1080, Some("aac"), Some("h264"));
        let cases: Vec<(OutputRequest, String)> = vec![
            (
                OutputRequest::new(Preset::Mp4H264),
                format!(
                    "{STRIP} -map 0:v:0 -map 0:a:0? -vf scale=trunc(iw/2)*2:trunc(ih/2)*2 -c:v libx264 -preset fast \
                     -profile:v high -pix_fmt yuv420p -crf 23 -maxrate 8000k -bufsize 16000k -fps_mode vfr -enc_time_base:v 1/90000 -c:a aac -b:a 128k -ac 2 \
                     -movflags +faststart -f mp4 /s/out/mp4-h264.mp4"
                ),
            ),
            (
                OutputRequest { start: Some(1.5), duration: Some(10.0), ..OutputRequest::new(Preset::Mp4H264_720) },
                format!(
                    "{STRIP} -map 0:v:0 -map 0:a:0? -ss 1.500 -t 10.000 \
                     -vf scale=w='if(gte(iw,ih),-2,trunc(min(iw,720)/2)*2)':h='if(gte(iw,ih),trunc(min(ih,720)/2)*2,-2)' \
                     -c:v libx264 -preset fast -profile:v high -pix_fmt yuv420p -crf 23 -maxrate 3500k -bufsize 7000k \
                     -fps_mode vfr -enc_time_base:v 1/90000 -c:a aac -b:a 128k -ac 2 -movflags +faststart -f mp4 \
                     /s/out/mp4-h264-720.mp4"
                ),
            ),
            (
                OutputRequest::new(Preset::Thumbnail),
                format!(
                    "{STRIP} -map 0:v:0 -vf select='gte(t,6.000)',scale=w='if(gte(iw,ih),-2,trunc(min(iw,720)/2)*2)':\
                     h='if(gte(iw,ih),trunc(min(ih,720)/2)*2,-2)' -frames:v 1 -q:v 3 -update 1 -f image2 /s/out/thumbnail.jpg"
                ),
            ),
            (
                OutputRequest::new(Preset::Storyboard),
                format!(
                    "{STRIP} -map 0:v:0 -vf fps=1/1,scale=160:90,tile=10x6 -frames:v 1 -q:v 4 -update 1 -f image2 \
                     /s/out/storyboard.jpg"
                ),
            ),
            (
                OutputRequest { start: Some(2.0), duration: Some(4.0), ..OutputRequest::new(Preset::Gif) },
                format!(
                    "{STRIP} -map 0:v:0 -vf trim=start=2.000:duration=4.000,setpts=PTS-STARTPTS,fps=12,\
                     scale=w='min(iw,480)':h=-2:flags=lanczos,split[g0][g1];[g0]palettegen=stats_mode=diff[gp];\
                     [g1][gp]paletteuse=dither=bayer -loop 0 -f gif /s/out/animation.gif"
                ),
            ),
            (
                OutputRequest::new(Preset::Mp3),
                format!("{STRIP} -map 0:a:0 -vn -c:a libmp3lame -b:a 192k -f mp3 /s/out/audio.mp3"),
            ),
            (
                OutputRequest::new(Preset::RemuxMp4),
                format!(
                    "{STRIP} -map 0:v:0? -map 0:a:0? -c:v copy -c:a copy -movflags +faststart -f mp4 /s/out/remux.mp4"
                ),
            ),
            (
                OutputRequest::new(Preset::WebmVp9),
                format!(
                    "{STRIP} -map 0:v:0 -map 0:a:0? -vf scale=trunc(iw/2)*2:trunc(ih/2)*2 -fps_mode vfr -enc_time_base:v 1/90000 \
                     -c:v libvpx-vp9 -crf 32 \
                     -b:v 0 -deadline good -cpu-used 4 -row-mt 1 -pix_fmt yuv420p -c:a libopus -b:a 96k -ac 2 -f webm \
                     /s/out/webm-vp9.webm"
                ),
            ),
        ];
        for (output, expected) in cases {
            assert_eq!(argv(std::slice::from_ref(&output), &hd), format!("{INPUT} {expected}"), "{}", output.preset);
        }
    }

    #[test]
    fn the_loudness_filter_goes_to_every_output_that_encodes_audio() {
        let af = "aformat=channel_layouts=stereo,volume=-3.00dB";
        let decisions = Decisions { ladders: &[], audio_filter: Some(af), watermark: None };
        let run = |presets: &[Preset], audio: &str| {
            let outputs: Vec<OutputRequest> = presets.iter().map(|p| OutputRequest::new(*p)).collect();
            let media = media(1280, 720, Some(audio), Some("h264"));
            let plan = plan_with(&outputs, &media, Path::new("/s/source"), Path::new("/s/out"), &decisions).unwrap();
            plan.args.iter().map(|a| a.to_str().unwrap().to_string()).collect::<Vec<_>>().join(" ")
        };
        let args = run(
            &[Preset::Mp4H264_720, Preset::WebmVp9, Preset::Mp3, Preset::Hls, Preset::Cmaf, Preset::Thumbnail],
            "aac",
        );
        let filter = format!("-af {af}");
        // One in each of mp4, webm, mp3, the HLS ladder's block (every rung's audio) and the
        // cmaf audio rendition; none in the thumbnail's.
        assert_eq!(args.matches(&filter).count(), 5, "{args}");
        assert!(args.contains(&format!("-c:a aac -b:a 128k -ac 2 {filter} -movflags +faststart")), "{args}");
        assert!(args.contains(&format!("-map 0:a:0 -vn {filter} -c:a libmp3lame")), "{args}");
        assert!(args.contains(&format!("-c:a libopus -b:a 96k -ac 2 -f webm {filter} /s/out/webm-vp9.webm")), "{args}");
        assert!(args.contains(&format!("{filter} -frag_duration")), "cmaf audio: {args}");
        // remux-mp4 copies AAC as it is; it filters only audio it transcodes.
        assert!(!run(&[Preset::RemuxMp4], "aac").contains("-af"));
        assert!(run(&[Preset::RemuxMp4], "pcm_s16le").contains(&format!("-c:a aac -b:a 128k -ac 2 {filter}")));
    }

    #[test]
    fn hls_ladder_has_only_rungs_at_or_below_the_source() {
        let args = argv(&[OutputRequest::new(Preset::Hls)], &media(1280, 720, Some("aac"), Some("h264")));
        assert!(args.contains("-filter_complex [0:v:0]split=3[hs0][hs1][hs2];"), "{args}");
        assert!(args.contains("-var_stream_map v:0,a:0,name:720p v:1,a:1,name:480p v:2,a:2,name:360p"), "{args}");
        assert!(args.contains("-maxrate:v:0 2800k -bufsize:v:0 5600k"));
        // Every frame at its source time, as the MP4 outputs and a split job's segments keep them.
        assert!(args.contains("-force_key_frames:v expr:gte(t,n_forced*2) -fps_mode vfr -enc_time_base:v 1/90000"));
        assert!(args.ends_with("-master_pl_name master.m3u8 -var_stream_map v:0,a:0,name:720p v:1,a:1,name:480p v:2,a:2,name:360p /s/out/hls/%v/index.m3u8"));

        // Portrait phone video: rungs follow the short side; no audio means no audio maps.
        let portrait = plan(
            &[OutputRequest::new(Preset::Hls)],
            &media(1080, 1920, None, Some("h264")),
            Path::new("/s/source"),
            Path::new("/s/out"),
        )
        .unwrap();
        let args: Vec<&str> = portrait.args.iter().map(|a| a.to_str().unwrap()).collect();
        assert!(args.contains(&"v:0,name:1080p v:1,name:720p v:2,name:480p v:3,name:360p"));
        assert!(!args.contains(&"0:a:0"));
        assert_eq!(portrait.folders, vec!["hls/1080p", "hls/720p", "hls/480p", "hls/360p"]);

        // A tiny source gets one rung of its own size; max_height caps the ladder.
        assert!(argv(&[OutputRequest::new(Preset::Hls)], &media(320, 241, None, Some("h264"))).contains("name:240p"));
        let capped = OutputRequest { max_height: Some(480), ..OutputRequest::new(Preset::Hls) };
        assert!(argv(&[capped], &media(1920, 1080, None, Some("h264"))).contains("v:0,name:480p v:1,name:360p /s"));
    }

    #[test]
    fn several_outputs_share_one_command_and_one_decode() {
        let outputs = [
            OutputRequest::new(Preset::Mp4H264_720),
            OutputRequest::new(Preset::Hls),
            OutputRequest::new(Preset::Thumbnail),
        ];
        let plan =
            plan(&outputs, &media(1920, 1080, Some("aac"), Some("h264")), Path::new("/s/source"), Path::new("/s/out"))
                .unwrap();
        let args: Vec<&str> = plan.args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args.iter().filter(|a| **a == "-i").count(), 1);
        // The filter graph comes before the first output block.
        let graph = args.iter().position(|a| *a == "-filter_complex").unwrap();
        let first_output = args.iter().position(|a| a.starts_with("/s/out/")).unwrap();
        assert!(graph < first_output);
        let mains: Vec<&str> = plan.outputs.iter().map(|o| o.main_file.as_str()).collect();
        assert_eq!(mains, vec!["mp4-h264-720.mp4", "hls/master.m3u8", "thumbnail.jpg"]);
    }

    #[test]
    fn remux_copies_what_mp4_carries_and_transcodes_the_rest() {
        let copy = plan(
            &[OutputRequest::new(Preset::RemuxMp4)],
            &media(640, 480, Some("mp3"), Some("h264")),
            Path::new("/i"),
            Path::new("/o"),
        )
        .unwrap();
        assert_eq!(copy.outputs[0].note.as_deref(), Some("video copied (h264), audio copied (mp3)"));
        let args = argv(&[OutputRequest::new(Preset::RemuxMp4)], &media(640, 480, Some("pcm_s16le"), Some("mpeg4")));
        assert!(args.contains("-c:v libx264") && args.contains("-c:a aac"), "{args}");
        let hevc = argv(&[OutputRequest::new(Preset::RemuxMp4)], &media(640, 480, None, Some("hevc")));
        assert!(hevc.contains("-c:v copy -tag:v hvc1"));
    }

    #[test]
    fn storyboard_cues_tile_the_sprite() {
        let plan = plan(
            &[OutputRequest::new(Preset::Storyboard)],
            &media(1280, 720, None, Some("h264")),
            Path::new("/i"),
            Path::new("/o"),
        )
        .unwrap();
        let (file, vtt) = &plan.sidecars[0];
        assert_eq!(file, "storyboard.vtt");
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nstoryboard.jpg#xywh=0,0,160,90\n"));
        assert!(vtt.contains("00:00:59.000 --> 00:01:00.000\nstoryboard.jpg#xywh=1440,450,160,90"));
        assert_eq!(plan.outputs[0].probe_file, "storyboard.jpg");
    }

    #[test]
    fn impossible_outputs_are_permanent_errors() {
        let audio_only = media(0, 0, Some("mp3"), None);
        let err =
            plan(&[OutputRequest::new(Preset::Mp4H264)], &audio_only, Path::new("/i"), Path::new("/o")).unwrap_err();
        assert_eq!(err.code().as_str(), "no_video_stream");
        assert!(plan(&[OutputRequest::new(Preset::Mp3)], &audio_only, Path::new("/i"), Path::new("/o")).is_ok());
        let silent = media(640, 480, None, Some("h264"));
        assert_eq!(
            plan(&[OutputRequest::new(Preset::Mp3)], &silent, Path::new("/i"), Path::new("/o"))
                .unwrap_err()
                .code()
                .as_str(),
            "no_audio_stream"
        );
        let late = OutputRequest { time: Some(61.0), ..OutputRequest::new(Preset::Thumbnail) };
        assert_eq!(
            plan(&[late], &silent, Path::new("/i"), Path::new("/o")).unwrap_err().code().as_str(),
            "invalid_option"
        );
    }

    #[test]
    fn hostile_paths_stay_single_arguments() {
        let plan = plan(
            &[OutputRequest::new(Preset::Mp4H264)],
            &media(640, 480, None, Some("h264")),
            Path::new("/tmp/-f lavfi -i x"),
            Path::new("/o"),
        )
        .unwrap();
        let i = plan.args.iter().position(|a| a == "-i").unwrap();
        assert_eq!(plan.args[i + 1], "/tmp/-f lavfi -i x");
    }

    #[test]
    fn expected_durations_follow_trims_and_truncation_is_a_frame_or_two() {
        let source = MediaInfo {
            format: "mov,mp4".into(),
            duration_seconds: Some(10.0),
            video: None,
            audio: None,
            video_streams: 1,
            audio_streams: 1,
            subtitles: Vec::new(),
        };
        let out = |preset, start: Option<f64>, duration: Option<f64>| OutputRequest {
            start,
            duration,
            ..OutputRequest::new(preset)
        };
        let cases = [
            (out(Preset::Mp4H264, None, None), Some(10.0)),
            (out(Preset::Mp4H264_480, Some(2.0), Some(3.0)), Some(3.0)),
            (out(Preset::Mp4H264_480, Some(8.0), Some(5.0)), Some(2.0)),
            (out(Preset::Mp3, Some(4.0), None), Some(6.0)),
            (out(Preset::Gif, Some(1.0), Some(2.0)), Some(2.0)),
            (out(Preset::Gif, None, None), Some(3.0)),
            (out(Preset::Thumbnail, None, None), None),
            (out(Preset::Storyboard, None, None), None),
        ];
        for (output, want) in cases {
            assert_eq!(expected_duration(&output, &source), want, "{output:?}");
        }
        assert!(!is_truncated(10.0, Some(9.95), Some(25.0)));
        assert!(is_truncated(10.0, Some(9.8), Some(25.0)), "more than two frames short");
        assert!(!is_truncated(10.0, Some(9.85), Some(12.0)), "two frames at 12 fps");
        assert!(is_truncated(10.0, None, None), "no duration at all");
        assert!(!is_truncated(10.0, Some(10.4), Some(30.0)), "longer is not truncated");
    }
}
