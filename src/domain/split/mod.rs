//! Split and stitch, without I/O: which jobs are encoded as segments by many workers, the
//! commands that cut, encode and join them, and the records that make the work resumable.
//!
//! A split job goes through four commands:
//! 1. **split**: one stream-copy pass cuts the source's video into pieces at its own keyframes,
//!    near a grid of `segment_duration`; the pieces keep the source's timestamps.
//! 2. **segments**: each piece is decoded once and encoded into every H.264 rendition the job
//!    needs (the MP4 outputs' and the HLS rungs'), as MPEG-TS with the source's timestamps, a
//!    keyframe at the piece's first frame and on the shared [`KEYFRAME_INTERVAL`] clock. Any
//!    worker can run any segment.
//! 3. **audio** (once, for the whole source: per-segment AAC would click at every join) and
//!    the outputs that cannot be split (thumbnail, storyboard, GIF, MP3), alongside.
//! 4. **stitch**: per rendition, the segments' MPEG-TS files are joined byte for byte (their
//!    timestamps already continue one another) and muxed with the audio by stream copy into the
//!    MP4 outputs and the HLS ladder. Nothing is encoded twice.
//!
//! Invariants: every piece starts on a source keyframe, so segments are independent closed-GOP
//! encodes; every rendition cuts at the same instants; timestamps are the source's throughout,
//! shifted by one constant ([`TS_OFFSET`]) that keeps the encoders' B-frame delay from making
//! any timestamp negative (a negative one would be shifted per segment, breaking the joins).

use std::ffi::OsString;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::job::{MESSAGE_VERSION, OutputRequest};
use crate::domain::plan::{
    KEYFRAME_INTERVAL, VideoEncode, aac, fan_out, hls_muxer, hls_rungs, mp4_video, rung_name, strings, x264,
};
use crate::domain::preset::Preset;
use crate::domain::probe::MediaInfo;
use crate::domain::status::ErrorInfo;

mod cuts;
pub use cuts::{MIN_TAIL_PIECE, cut_times, piece_lengths};

/// Seconds added to every segment timestamp (see the module's invariants).
const TS_OFFSET: u32 = 10;
/// Bounds of a job's own `segment_duration`, in seconds.
pub const SEGMENT_DURATION_RANGE: (f64, f64) = (2.0, 600.0);
/// Version of the split records and segment messages.
pub const SPLIT_VERSION: u32 = 1;

/// Deployment settings (`MEDIA_SPLIT_MIN_DURATION`, `MEDIA_SEGMENT_DURATION`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitSettings {
    /// Sources at least this long are split; 0 turns splitting off.
    pub min_duration: f64,
    pub segment_duration: f64,
}

/// A job's own choice (`split` in its spec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    /// `false` keeps the job on one worker, however long the source.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds of source per segment (2 to 600); default: the deployment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 2, maximum = 600, example = 30)]
    pub segment_duration: Option<f64>,
}

fn yes() -> bool {
    true
}

impl SplitRequest {
    pub fn validate(&self) -> Result<(), String> {
        let (min, max) = SEGMENT_DURATION_RANGE;
        match self.segment_duration {
            Some(d) if !d.is_finite() || !(min..=max).contains(&d) => {
                Err(format!("`split.segment_duration` must be between {min} and {max} seconds, got {d}"))
            }
            _ => Ok(()),
        }
    }
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
                        crf: 23,
                        maxrate_kbps: rate,
                    });
                }
            }
            Preset::Thumbnail | Preset::Storyboard | Preset::Gif | Preset::Mp3 => {}
            Preset::WebmVp9 | Preset::RemuxMp4 | Preset::Custom(_) => return None,
        }
    }
    (!renditions.is_empty()).then_some((segment, renditions))
}

/// Whether an output is made by the stitch (else it runs whole, alongside).
pub fn is_stitched(preset: Preset) -> bool {
    matches!(preset, Preset::Mp4H264 | Preset::Mp4H264_1080 | Preset::Mp4H264_720 | Preset::Mp4H264_480 | Preset::Hls)
}

/// The split pass: video only, stream copy, into `dir/piece-%05d.nut` (NUT keeps the source's
/// time base), with the pieces' start and end times in `dir/pieces.csv`.
pub fn split_args(source: &Path, dir: &Path, cuts: &[f64]) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file", "-i"]);
    args.push(source.as_os_str().to_owned());
    let times: Vec<String> = cuts.iter().map(|t| format!("{t:.3}")).collect();
    args.extend(strings(&["-map", "0:v:0", "-c", "copy", "-map_metadata", "-1", "-f", "segment"]));
    args.extend(strings(&["-segment_times", &times.join(","), "-reset_timestamps", "0", "-segment_format", "nut"]));
    args.extend(strings(&["-segment_list_type", "csv", "-segment_list"]));
    args.push(dir.join("pieces.csv").into_os_string());
    args.push(dir.join("piece-%05d.nut").into_os_string());
    args
}

/// One piece of the source: its index and the source times it covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Piece {
    pub index: u32,
    pub start: f64,
    pub end: f64,
}

/// The pieces named in the split pass's CSV list (`piece-00000.nut,0.000000,11.640000`).
pub fn parse_pieces(csv: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    for (line_no, line) in csv.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let mut fields = line.rsplitn(3, ',');
        let end = fields.next().and_then(|f| f.trim().parse::<f64>().ok());
        let start = fields.next().and_then(|f| f.trim().parse::<f64>().ok());
        let name = fields.next().unwrap_or_default();
        let (Some(start), Some(end)) = (start, end) else {
            return Err(format!("line {} of the piece list is not `name,start,end`", line_no + 1));
        };
        let expected = piece_file(u32::try_from(line_no).unwrap_or(u32::MAX));
        if !(name.ends_with(&expected) && start.is_finite() && end.is_finite() && end > start) {
            return Err(format!("line {} of the piece list names an unexpected piece", line_no + 1));
        }
        pieces.push(Piece { index: u32::try_from(line_no).unwrap_or(u32::MAX), start, end });
    }
    Ok(pieces)
}

/// The file name of piece `index` (in scratch, and under the job's `split/` folder).
pub fn piece_file(index: u32) -> String {
    format!("piece-{index:05}.nut")
}

/// Forced keyframes of a segment: its first frame, then the shared clock's ticks inside it.
fn keyframe_times(piece: &Piece) -> String {
    let mut times = vec![format!("{:.6}", piece.start)];
    let step = f64::from(KEYFRAME_INTERVAL);
    let mut tick = (piece.start / step).floor() * step + step;
    while tick < piece.end {
        times.push(format!("{tick:.6}"));
        tick += step;
    }
    times.join(",")
}

/// The segment encode: one decode of the piece, split into every rendition, each written as
/// `out_dir/<rendition>.ts` with the source's timestamps (plus [`TS_OFFSET`]).
pub fn segment_args(piece_path: &Path, piece: &Piece, renditions: &[Rendition], out_dir: &Path) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file", "-copyts", "-i"]);
    args.push(piece_path.as_os_str().to_owned());
    let caps: Vec<Option<u32>> = renditions.iter().map(|r| r.cap).collect();
    args.extend(strings(&["-filter_complex", &fan_out(&caps, "s", "r")]));
    let keyframes = keyframe_times(piece);
    for (i, rendition) in renditions.iter().enumerate() {
        args.extend(strings(&["-map", &format!("[r{i}]")]));
        let encode = rendition.encode();
        args.extend(x264(encode.crf, encode.maxrate_kbps));
        args.extend(strings(&["-force_key_frames:v", &keyframes, "-fps_mode", "vfr"]));
        args.extend(strings(&["-output_ts_offset", &TS_OFFSET.to_string(), "-f", "mpegts"]));
        args.push(out_dir.join(format!("{}.ts", rendition.name)).into_os_string());
    }
    args
}

/// The whole source's audio, once: AAC in MP4, as the unsplit outputs encode it.
pub fn audio_args(source: &Path, out: &Path) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file", "-i"]);
    args.push(source.as_os_str().to_owned());
    args.extend(strings(&["-map", "0:a:0", "-vn", "-map_metadata", "-1"]));
    args.extend(aac());
    args.extend(strings(&["-f", "mp4"]));
    args.push(out.as_os_str().to_owned());
    args
}

/// The stitch: for every stitched output, the joined renditions (`joined/<rendition>.ts`) and
/// the audio muxed by stream copy into `out_dir`, as the unsplit plan names the files.
pub fn stitch_args(
    outputs: &[OutputRequest],
    renditions: &[Rendition],
    joined: &Path,
    audio: Option<&Path>,
    out_dir: &Path,
) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file"]);
    for rendition in renditions {
        args.push("-i".into());
        args.push(joined.join(format!("{}.ts", rendition.name)).into_os_string());
    }
    let audio_input = renditions.len();
    if let Some(audio) = audio {
        args.push("-i".into());
        args.push(audio.as_os_str().to_owned());
    }
    let input_of = |name: &str| renditions.iter().position(|r| r.name == name);
    for output in outputs.iter().filter(|o| is_stitched(o.preset)) {
        let mut block = strings(&["-map_metadata", "-1", "-map_chapters", "-1"]);
        if output.preset == Preset::Hls {
            let names: Vec<String> =
                renditions.iter().filter_map(|r| r.name.strip_prefix("hls-").map(str::to_string)).collect();
            for name in &names {
                if let Some(i) = input_of(&format!("hls-{name}")) {
                    block.extend(strings(&["-map", &format!("{i}:v:0")]));
                }
            }
            if audio.is_some() {
                for _ in &names {
                    block.extend(strings(&["-map", &format!("{audio_input}:a:0")]));
                }
            }
            block.extend(strings(&["-c", "copy"]));
            block.extend(hls_muxer(&names, audio.is_some(), out_dir));
        } else {
            let Some(i) = input_of(output.preset.name()) else { continue };
            block.extend(strings(&["-map", &format!("{i}:v:0")]));
            if audio.is_some() {
                block.extend(strings(&["-map", &format!("{audio_input}:a:0")]));
            }
            block.extend(strings(&["-c", "copy", "-movflags", "+faststart", "-f", "mp4"]));
            block.push(out_dir.join(output.preset.file_name()).into_os_string());
        }
        args.extend(block);
    }
    args
}

/// A stream-copied HLS master playlist cannot know its variants' bitrates; this sets each
/// `BANDWIDTH` (peak) and `AVERAGE-BANDWIDTH` from the measured segments: per variant name,
/// (peak bits per second, average bits per second).
pub fn set_bandwidths(master: &str, measured: &[(String, u64, u64)]) -> String {
    let mut out = String::new();
    let lines: Vec<&str> = master.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let uri = lines.get(i + 1).copied().unwrap_or_default();
        let found = measured.iter().find(|(name, _, _)| uri.starts_with(&format!("{name}/")));
        match (line.strip_prefix("#EXT-X-STREAM-INF:"), found) {
            (Some(attributes), Some((_, peak, average))) => {
                let kept: Vec<&str> = split_attributes(attributes)
                    .into_iter()
                    .filter(|a| !a.starts_with("BANDWIDTH=") && !a.starts_with("AVERAGE-BANDWIDTH="))
                    .collect();
                let mut attrs = vec![format!("BANDWIDTH={peak}"), format!("AVERAGE-BANDWIDTH={average}")];
                attrs.extend(kept.iter().map(|a| a.to_string()));
                out.push_str(&format!("#EXT-X-STREAM-INF:{}\n", attrs.join(",")));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Attribute list items, keeping quoted commas (`CODECS="avc1.64001f,mp4a.40.2"`) inside.
fn split_attributes(list: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in list.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < list.len() {
        items.push(&list[start..]);
    }
    items
}

/// The segments of a variant playlist: (file, seconds) per `#EXTINF`.
pub fn playlist_segments(playlist: &str) -> Vec<(String, f64)> {
    let mut segments = Vec::new();
    let mut pending: Option<f64> = None;
    for line in playlist.lines() {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            pending = rest.split(',').next().and_then(|d| d.trim().parse().ok());
        } else if !line.starts_with('#')
            && !line.trim().is_empty()
            && let Some(seconds) = pending.take()
        {
            segments.push((line.trim().to_string(), seconds));
        }
    }
    segments
}

/// The presentation time (seconds) of the first video frame in an MPEG-TS file's first bytes:
/// the first PES packet of a video stream (id `0xE0`-`0xEF`) that carries a PTS.
pub fn first_video_pts(ts: &[u8]) -> Option<f64> {
    for packet in ts.chunks_exact(188) {
        if packet[0] != 0x47 || packet[1] & 0x40 == 0 {
            continue;
        }
        let payload = match (packet[3] >> 4) & 0b11 {
            0b01 => 4,
            0b11 => 5 + usize::from(packet[4]),
            _ => continue,
        };
        let pes = packet.get(payload..)?;
        if pes.len() < 14 || pes[..3] != [0, 0, 1] || !(0xE0..=0xEF).contains(&pes[3]) || pes[7] & 0x80 == 0 {
            continue;
        }
        let b = &pes[9..14];
        let pts = (u64::from(b[0] >> 1) & 0x07) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1);
        return Some(pts as f64 / 90_000.0);
    }
    None
}

/// A variable-rate source's stream-copied playlist has its segment lengths guessed at the
/// average frame rate (MPEG-TS stores no frame durations). This sets each `#EXTINF` from the
/// segments' first frame times (`starts`, one per segment) and the video's `end`, and the
/// target duration from the longest.
pub fn retime_playlist(playlist: &str, starts: &[f64], end: f64) -> String {
    let mut lengths = starts.windows(2).map(|w| w[1] - w[0]).collect::<Vec<f64>>();
    if let Some(last) = starts.last() {
        lengths.push(end - last);
    }
    let longest = lengths.iter().copied().fold(0.0_f64, f64::max);
    let mut next = lengths.iter();
    let mut out = String::new();
    for line in playlist.lines() {
        if line.starts_with("#EXTINF:")
            && let Some(length) = next.next()
        {
            out.push_str(&format!("#EXTINF:{:.6},\n", length.max(0.0)));
        } else if line.starts_with("#EXT-X-TARGETDURATION:") {
            out.push_str(&format!("#EXT-X-TARGETDURATION:{}\n", longest.round().max(1.0) as u64));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `<output_dir>split/`: what a split job keeps between workers and attempts (deleted once the
/// job completes).
pub fn split_dir(output_dir: &str) -> String {
    format!("{output_dir}split/")
}

pub fn record_key(output_dir: &str) -> String {
    format!("{}split.json", split_dir(output_dir))
}

pub fn piece_key(output_dir: &str, index: u32) -> String {
    format!("{}{}", split_dir(output_dir), piece_file(index))
}

pub fn audio_key(output_dir: &str) -> String {
    format!("{}audio.m4a", split_dir(output_dir))
}

/// Segment `index`'s encoded rendition.
pub fn segment_file_key(output_dir: &str, index: u32, rendition: &str) -> String {
    format!("{}segment-{index:05}/{rendition}.ts", split_dir(output_dir))
}

/// The checkpoint: present once every rendition of segment `index` is stored.
pub fn done_key(output_dir: &str, index: u32) -> String {
    format!("{}segment-{index:05}.done.json", split_dir(output_dir))
}

/// How far the encode of segment `index` is, as a fraction written as text (`0.42`), refreshed
/// at every heartbeat while it runs.
pub fn progress_key(output_dir: &str, index: u32) -> String {
    format!("{}segment-{index:05}.progress", split_dir(output_dir))
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

/// Present when segment `index` failed for good.
pub fn failed_key(output_dir: &str, index: u32) -> String {
    format!("{}segment-{index:05}.failed.json", split_dir(output_dir))
}

/// `split/split.json`: written once per job (create-only) by the run that split the source;
/// later attempts reuse it, so finished segments stay valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRecord {
    pub version: u32,
    /// The source write the pieces were cut from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_etag: Option<String>,
    pub segment_duration: f64,
    pub pieces: Vec<Piece>,
    pub renditions: Vec<Rendition>,
    pub worker: String,
    pub split_ms: u64,
}

/// `split/segment-<n>.done.json`: segment `n` is encoded and stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentDone {
    pub version: u32,
    pub index: u32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// When the encode itself began (after the download and the wait for a transcode slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encode_started_at: Option<DateTime<Utc>>,
    pub encode_ms: u64,
    /// Bytes of every rendition of the segment.
    pub bytes: u64,
}

/// `split/segment-<n>.failed.json`: segment `n` cannot be encoded; the job fails naming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentFailed {
    pub version: u32,
    pub index: u32,
    pub error: ErrorInfo,
}

/// A segment to encode, on the ready queue: `{"version": 1, "segment": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentMessage {
    pub version: u32,
    pub segment: SegmentTask,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentTask {
    pub job_id: String,
    /// The job's folder, where its `split/` records are. Checked against the job's status
    /// before anything is read or written there: a message is no authority on where to write.
    pub output_dir: String,
    pub index: u32,
    pub count: u32,
    /// Tries of this segment that failed for a passing reason, within the job's attempt;
    /// each is offered again after a back-off, until `MEDIA_MAX_ATTEMPTS` tries.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tries: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl SegmentMessage {
    pub fn new(task: SegmentTask) -> Self {
        Self { version: MESSAGE_VERSION, segment: task }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain owned data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The segment as people read it: `segment 3 of 10`.
pub fn describe(task: &SegmentTask) -> String {
    format!("segment {} of {}", task.index + 1, task.count)
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
            }),
            audio: Some(AudioStream { codec: "aac".into(), channels: Some(2), sample_rate: Some(48000) }),
            video_streams: 1,
            audio_streams: 1,
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

    #[test]
    fn piece_list() {
        let csv = "piece-00000.nut,0.000000,11.640000\npiece-00001.nut,11.640000,19.400000\n";
        let pieces = parse_pieces(csv).unwrap();
        assert_eq!(
            pieces,
            vec![Piece { index: 0, start: 0.0, end: 11.64 }, Piece { index: 1, start: 11.64, end: 19.4 }]
        );
        assert!(parse_pieces("piece-00001.nut,0,1\n").is_err());
        assert!(parse_pieces("piece-00000.nut,2,1\n").is_err());
        assert!(parse_pieces("piece-00000.nut,x,1\n").is_err());
    }

    #[test]
    fn keyframes_on_the_shared_clock() {
        assert_eq!(
            keyframe_times(&Piece { index: 1, start: 11.64, end: 17.0 }),
            "11.640000,12.000000,14.000000,16.000000"
        );
        assert_eq!(keyframe_times(&Piece { index: 0, start: 0.0, end: 4.0 }), "0.000000,2.000000");
    }

    #[test]
    fn exact_argv() {
        let renditions = vec![
            Rendition { name: "mp4-h264".into(), cap: None, crf: 23, maxrate_kbps: 8000 },
            Rendition { name: "hls-360p".into(), cap: Some(360), crf: 23, maxrate_kbps: 800 },
        ];
        let piece = Piece { index: 2, start: 4.0, end: 6.5 };
        let args: Vec<String> = segment_args(Path::new("/s/p.nut"), &piece, &renditions, Path::new("/s/o"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let expected = "-hide_banner -nostdin -y -protocol_whitelist file -copyts -i /s/p.nut \
            -filter_complex [0:v:0]split=2[s0][s1];[s0]scale=trunc(iw/2)*2:trunc(ih/2)*2[r0];\
            [s1]scale=w='if(gte(iw,ih),-2,trunc(min(iw,360)/2)*2)':h='if(gte(iw,ih),trunc(min(ih,360)/2)*2,-2)'[r1] \
            -map [r0] -c:v libx264 -preset fast -profile:v high -pix_fmt yuv420p -crf 23 -maxrate 8000k -bufsize 16000k \
            -force_key_frames:v 4.000000,6.000000 -fps_mode vfr -output_ts_offset 10 -f mpegts /s/o/mp4-h264.ts \
            -map [r1] -c:v libx264 -preset fast -profile:v high -pix_fmt yuv420p -crf 23 -maxrate 800k -bufsize 1600k \
            -force_key_frames:v 4.000000,6.000000 -fps_mode vfr -output_ts_offset 10 -f mpegts /s/o/hls-360p.ts";
        assert_eq!(args.join(" "), expected);

        let outputs = outputs(&[Preset::Mp4H264, Preset::Hls, Preset::Thumbnail]);
        let args: Vec<String> =
            stitch_args(&outputs, &renditions, Path::new("/j"), Some(Path::new("/j/audio.m4a")), Path::new("/o"))
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
        let expected = "-hide_banner -nostdin -y -protocol_whitelist file -i /j/mp4-h264.ts -i /j/hls-360p.ts \
            -i /j/audio.m4a -map_metadata -1 -map_chapters -1 -map 0:v:0 -map 2:a:0 -c copy -movflags +faststart \
            -f mp4 /o/mp4-h264.mp4 -map_metadata -1 -map_chapters -1 -map 1:v:0 -map 2:a:0 -c copy -f hls -hls_time 6 \
            -hls_playlist_type vod -hls_flags independent_segments -hls_segment_type mpegts -hls_segment_filename \
            /o/hls/%v/segment_%05d.ts -master_pl_name master.m3u8 -var_stream_map v:0,a:0,name:360p \
            /o/hls/%v/index.m3u8";
        assert_eq!(args.join(" "), expected);

        let args: Vec<String> = split_args(Path::new("/s/source"), Path::new("/s/p"), &[20.0, 40.0])
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "-hide_banner -nostdin -y -protocol_whitelist file -i /s/source -map 0:v:0 -c copy -map_metadata -1 \
             -f segment -segment_times 20.000,40.000 -reset_timestamps 0 -segment_format nut -segment_list_type csv \
             -segment_list /s/p/pieces.csv /s/p/piece-%05d.nut"
        );
    }

    #[test]
    fn playlist_lengths_from_frame_times() {
        let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:8\n#EXTINF:8.640000,\ns0.ts\n#EXTINF:3.440000,\ns1.ts\n#EXTINF:3.360000,\ns2.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(
            retime_playlist(playlist, &[1.4, 10.04, 13.48], 17.4),
            "#EXTM3U\n#EXT-X-TARGETDURATION:9\n#EXTINF:8.640000,\ns0.ts\n#EXTINF:3.440000,\ns1.ts\n#EXTINF:3.920000,\ns2.ts\n#EXT-X-ENDLIST\n"
        );
        // A TS packet with a video PES whose PTS is 90000 * 1.5.
        let mut packet = vec![0x47, 0x41, 0x00, 0x10, 0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5];
        let pts: u64 = 135_000;
        packet.extend([
            0x21 | (((pts >> 30) as u8 & 0x07) << 1),
            (pts >> 22) as u8,
            (((pts >> 15) as u8) << 1) | 1,
            (pts >> 7) as u8,
            ((pts as u8) << 1) | 1,
        ]);
        packet.resize(188, 0xFF);
        let mut file = vec![0x47, 0x01, 0x00, 0x10];
        file.resize(188, 0xFF);
        file.extend(&packet);
        assert_eq!(first_video_pts(&file), Some(1.5));
        assert_eq!(first_video_pts(&file[..188]), None);
        assert_eq!(first_video_pts(b"garbage"), None);
    }

    #[test]
    fn master_playlist_bandwidths() {
        let master = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-STREAM-INF:BANDWIDTH=103568,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\"\n360p/index.m3u8\n\n";
        let fixed = set_bandwidths(master, &[("360p".into(), 900_000, 700_000)]);
        assert_eq!(
            fixed,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-STREAM-INF:BANDWIDTH=900000,AVERAGE-BANDWIDTH=700000,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\"\n360p/index.m3u8\n\n"
        );
        let playlist = "#EXTM3U\n#EXTINF:6.000000,\nsegment_00000.ts\n#EXTINF:4.5,\nsegment_00001.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(
            playlist_segments(playlist),
            vec![("segment_00000.ts".to_string(), 6.0), ("segment_00001.ts".to_string(), 4.5)]
        );
    }
}
