//! What a `cmaf` ladder delivers: which video codecs, each with its own ladder and encoder
//! settings, and how the files are laid out for the players.
//!
//! One set of fragmented MP4 (CMAF) files serves both HLS and DASH players. Each codec is a
//! family of rungs of its own: players choose the family they decode (the codec strings in the
//! playlists tell them), then a rung within it. HEVC and AV1 reach a given quality in fewer
//! bits than H.264, so their rungs have lower rate caps; H.264 stays for every other device.

use std::ffi::OsString;

use serde::{Deserialize, Serialize};

use crate::domain::args::{KEYFRAME_INTERVAL, strings, x264};

/// A video codec of a `cmaf` ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// H.264 High, by x264: every browser and device.
    H264,
    /// HEVC Main, by x265, tagged `hvc1` (what Apple's players require).
    Hevc,
    /// AV1 Main, by SVT-AV1: recent browsers and devices.
    Av1,
}

impl VideoCodec {
    pub const ALL: [VideoCodec; 3] = [VideoCodec::H264, VideoCodec::Hevc, VideoCodec::Av1];

    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::Hevc => "hevc",
            VideoCodec::Av1 => "av1",
        }
    }

    /// The family's rungs: short side and peak bitrate (kb/s). The rate caps of HEVC and AV1
    /// are about 65 % and 55 % of H.264's, the saving their encoders give at equal quality.
    pub fn ladder(self) -> &'static [(u32, u32)] {
        match self {
            VideoCodec::H264 => &[(1080, 5000), (720, 2800), (480, 1400), (360, 800)],
            VideoCodec::Hevc => &[(1080, 3300), (720, 1800), (480, 900), (360, 520)],
            VideoCodec::Av1 => &[(1080, 2750), (720, 1550), (480, 770), (360, 440)],
        }
    }

    /// The constant-quality setting of every rung, chosen to look like H.264 at CRF 23.
    pub fn crf(self) -> u32 {
        match self {
            VideoCodec::H264 => 23,
            VideoCodec::Hevc => 25,
            VideoCodec::Av1 => 33,
        }
    }

    /// The encoder's arguments for one rung: its quality, its rate cap, and keyframes every
    /// [`KEYFRAME_INTERVAL`] seconds (`gop_frames` frames, for the encoder that counts frames),
    /// with closed GOPs, so every fragment starts with a frame decodable on its own.
    pub fn encoder_args(self, maxrate_kbps: u32, gop_frames: u32) -> Vec<OsString> {
        self.encoder_args_at(self.crf(), maxrate_kbps, gop_frames)
    }

    /// [`encoder_args`](Self::encoder_args) at another constant-quality setting: a per-title
    /// ladder's choice for the rung.
    pub fn encoder_args_at(self, crf: u32, maxrate_kbps: u32, gop_frames: u32) -> Vec<OsString> {
        let keyframes = strings(&["-force_key_frames:v", &format!("expr:gte(t,n_forced*{KEYFRAME_INTERVAL})")]);
        self.args(crf, maxrate_kbps, gop_frames, keyframes)
    }

    /// The encoder's arguments for one rung of a split job's segment: as [`Self::encoder_args`],
    /// but every codec puts a keyframe on every `gop_frames`-th frame counted from the
    /// segment's first. SVT-AV1 can only count frames (`-g`), from the start of its encode, so
    /// x264 and x265 count the same way (`n` is the frame number within the encode): the
    /// three codecs' keyframes then fall on the same frames in every segment, whatever the
    /// source time the segment starts at.
    pub fn segment_encoder_args(self, crf: u32, maxrate_kbps: u32, gop_frames: u32) -> Vec<OsString> {
        let keyframes = strings(&["-force_key_frames:v", &format!("expr:not(mod(n,{gop_frames}))")]);
        self.args(crf, maxrate_kbps, gop_frames, keyframes)
    }

    /// The encoder's arguments at `crf`, with `keyframes`, the forcing arguments of x264 and
    /// x265.
    fn args(self, crf_value: u32, maxrate_kbps: u32, gop_frames: u32, keyframes: Vec<OsString>) -> Vec<OsString> {
        let crf = crf_value.to_string();
        match self {
            VideoCodec::H264 => [x264(crf_value, maxrate_kbps), keyframes].concat(),
            // x265 opens its GOPs by default (a segment would then start with frames that need
            // the previous one), and makes forced keyframes non-IDR unless told.
            VideoCodec::Hevc => {
                let (maxrate, bufsize) = (format!("{maxrate_kbps}k"), format!("{}k", maxrate_kbps * 2));
                let encoder = strings(&[
                    "-c:v",
                    "libx265",
                    "-preset",
                    "fast",
                    "-profile:v",
                    "main",
                    "-pix_fmt",
                    "yuv420p",
                    "-crf",
                    &crf,
                    "-maxrate",
                    &maxrate,
                    "-bufsize",
                    &bufsize,
                ]);
                let closed =
                    strings(&["-forced-idr", "1", "-x265-params", "log-level=error:open-gop=0", "-tag:v", "hvc1"]);
                [encoder, keyframes, closed].concat()
            }
            // SVT-AV1 (as ffmpeg 5.1 drives it) ignores forced keyframes: a fixed GOP without
            // scene-change keyframes gives the same cadence, counted in frames. `mbr` caps the
            // rate of its constant-quality mode.
            VideoCodec::Av1 => strings(&[
                "-c:v",
                "libsvtav1",
                "-preset",
                "8",
                "-pix_fmt",
                "yuv420p",
                "-crf",
                &crf,
                "-g",
                &gop_frames.to_string(),
                "-svtav1-params",
                &format!("scd=0:mbr={maxrate_kbps}"),
            ]),
        }
    }
}

/// The codecs of a `cmaf` ladder whose request names none: H.264, which every device decodes.
pub const DEFAULT_CODECS: [VideoCodec; 1] = [VideoCodec::H264];

/// How a `cmaf` ladder's files are laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Packaging {
    /// An init segment and numbered media segments of about six seconds per rendition.
    #[default]
    Segments,
    /// One MP4 file per rendition, addressed by byte ranges (`#EXT-X-BYTERANGE`, DASH
    /// `SegmentBase`): a few objects per title, for stores that charge per object.
    SingleFile,
}

impl Packaging {
    pub const ALL: [Packaging; 2] = [Packaging::Segments, Packaging::SingleFile];

    pub fn name(self) -> &'static str {
        match self {
            Packaging::Segments => "segments",
            Packaging::SingleFile => "single_file",
        }
    }
}

/// Most caption tracks an output may carry.
pub const MAX_CAPTION_TRACKS: usize = 8;
/// Largest caption file read, in bytes: a feature film's subtitles are a few hundred kilobytes.
pub const MAX_CAPTION_BYTES: u64 = 2 << 20;

/// A caption file given with a `cmaf` job, among the caller's uploads, that becomes a WebVTT
/// rendition of the HLS playlists and the MPD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionTrack {
    /// The file's key: SubRip (`.srt`), WebVTT or Scenarist (SCC), told apart by its content.
    pub key: String,
    /// Its language, an RFC 5646 tag (`en`, `pt-BR`).
    pub language: String,
    /// What players show in their menus (default: the language tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl CaptionTrack {
    /// The name players show.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.language)
    }
}

/// Checks a request's caption tracks: at most [`MAX_CAPTION_TRACKS`], each with a language tag
/// of RFC 5646's shape (letters, digits and hyphens, 2 to 35 characters, starting with a
/// letter) and a name of at most 64 printable characters without quotes; languages distinct.
pub fn validate_captions(tracks: &[CaptionTrack]) -> Result<(), String> {
    if tracks.is_empty() || tracks.len() > MAX_CAPTION_TRACKS {
        return Err(format!("`captions` must list 1 to {MAX_CAPTION_TRACKS} tracks"));
    }
    for (i, track) in tracks.iter().enumerate() {
        let tag = &track.language;
        let shaped = (2..=35).contains(&tag.len())
            && tag.starts_with(|c: char| c.is_ascii_alphabetic())
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !shaped {
            return Err(format!("`captions[{i}].language` must be a language tag such as `en` or `pt-BR`"));
        }
        if track
            .name
            .as_deref()
            .is_some_and(|n| n.is_empty() || n.chars().count() > 64 || n.chars().any(|c| c == '"' || c.is_control()))
        {
            return Err(format!("`captions[{i}].name` must be 1 to 64 printable characters without quotes"));
        }
        if tracks[..i].iter().any(|t| t.language.eq_ignore_ascii_case(tag)) {
            return Err(format!("`captions[{i}].language` repeats an earlier track's"));
        }
    }
    Ok(())
}

/// The caption formats read, by their content (never by the caller's file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptionFormat {
    SubRip,
    WebVtt,
    Scc,
}

impl CaptionFormat {
    /// ffmpeg's demuxer for the format, named on the command so the file cannot choose one.
    pub fn demuxer(self) -> &'static str {
        match self {
            CaptionFormat::SubRip => "srt",
            CaptionFormat::WebVtt => "webvtt",
            CaptionFormat::Scc => "scc",
        }
    }

    /// The format of a caption file from its first bytes: a WebVTT signature, SCC's header, or
    /// SubRip's first cue (a number, then a `-->` timing line); `None` for anything else.
    pub fn sniff(head: &[u8]) -> Option<CaptionFormat> {
        let text = std::str::from_utf8(head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head)).ok().or_else(|| {
            // A head cut inside a multi-byte character is still text.
            let valid = std::str::from_utf8(head).err()?.valid_up_to();
            std::str::from_utf8(&head[..valid]).ok()
        })?;
        let text = text.trim_start_matches('\u{feff}');
        if text.starts_with("WEBVTT") {
            return Some(CaptionFormat::WebVtt);
        }
        if text.starts_with("Scenarist_SCC V1.0") {
            return Some(CaptionFormat::Scc);
        }
        let mut lines = text.lines().map(str::trim).skip_while(|l| l.is_empty());
        let numbered = lines.next().is_some_and(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()));
        let timed = lines.next().is_some_and(|l| l.contains("-->") && l.starts_with(|c: char| c.is_ascii_digit()));
        (numbered && timed).then_some(CaptionFormat::SubRip)
    }
}

/// A WebVTT file as HLS wants it: `X-TIMESTAMP-MAP` in its header maps its cue times onto the
/// media's (presentation time 0 of the renditions is 90 kHz time 0), once.
pub fn with_timestamp_map(vtt: &str) -> String {
    with_timestamp_map_at(vtt, 0)
}

/// [`with_timestamp_map`], mapping the cues' zero to the 90 kHz time `mpegts` (the value a
/// package recorded for its captions, so tracks added later line up like the first ones).
pub fn with_timestamp_map_at(vtt: &str, mpegts: u64) -> String {
    let vtt = vtt.trim_start_matches('\u{feff}');
    let (header, rest) = vtt.split_once('\n').unwrap_or((vtt, ""));
    if rest.lines().take_while(|l| !l.trim().is_empty()).any(|l| l.starts_with("X-TIMESTAMP-MAP=")) {
        return vtt.to_string();
    }
    format!("{}\nX-TIMESTAMP-MAP=MPEGTS:{mpegts},LOCAL:00:00:00.000\n{rest}", header.trim_end())
}

/// Frames between keyframes for an encoder that counts frames: [`KEYFRAME_INTERVAL`] seconds
/// at the source's frame rate (25 fps when it says none), at least one.
pub fn gop_frames(frame_rate: Option<f64>) -> u32 {
    let rate = frame_rate.filter(|r| r.is_finite() && *r > 0.0).unwrap_or(25.0).min(240.0);
    ((rate * f64::from(KEYFRAME_INTERVAL)).round() as u32).max(1)
}

/// Checks a request's codec list: one to three distinct codecs.
pub fn validate_codecs(codecs: &[VideoCodec]) -> Result<(), String> {
    let mut sorted = codecs.to_vec();
    sorted.sort();
    sorted.dedup();
    if codecs.is_empty() || sorted.len() != codecs.len() {
        return Err("`codecs` must list one to three distinct codecs of h264, hevc and av1".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_names_round_trip_through_json() {
        for codec in VideoCodec::ALL {
            let json = serde_json::to_string(&codec).unwrap();
            assert_eq!(json, format!("\"{}\"", codec.name()));
            assert_eq!(serde_json::from_str::<VideoCodec>(&json).unwrap(), codec);
        }
        assert!(serde_json::from_str::<VideoCodec>("\"vp9\"").is_err());
        assert_eq!(serde_json::to_string(&Packaging::SingleFile).unwrap(), "\"single_file\"");
    }

    #[test]
    fn newer_codecs_cap_lower_on_every_rung() {
        for (i, (height, h264)) in VideoCodec::H264.ladder().iter().enumerate() {
            for codec in [VideoCodec::Hevc, VideoCodec::Av1] {
                let (h, rate) = codec.ladder()[i];
                assert_eq!(h, *height);
                assert!(rate < *h264, "{codec:?} at {h}");
            }
        }
    }

    #[test]
    fn segment_keyframes_are_counted_in_frames_by_every_codec() {
        let text =
            |args: Vec<OsString>| args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
        assert_eq!(
            text(VideoCodec::H264.segment_encoder_args(23, 800, 50)),
            "-c:v libx264 -preset fast -profile:v high -pix_fmt yuv420p -crf 23 -maxrate 800k -bufsize 1600k \
             -force_key_frames:v expr:not(mod(n,50))"
        );
        assert_eq!(
            text(VideoCodec::Hevc.segment_encoder_args(25, 520, 50)),
            "-c:v libx265 -preset fast -profile:v main -pix_fmt yuv420p -crf 25 -maxrate 520k -bufsize 1040k \
             -force_key_frames:v expr:not(mod(n,50)) -forced-idr 1 -x265-params log-level=error:open-gop=0 -tag:v hvc1"
        );
        assert_eq!(
            text(VideoCodec::Av1.segment_encoder_args(33, 440, 50)),
            text(VideoCodec::Av1.encoder_args(440, 50)),
            "SVT-AV1 counts frames in both"
        );
        assert!(text(VideoCodec::H264.encoder_args(800, 50)).ends_with("-force_key_frames:v expr:gte(t,n_forced*2)"));
    }

    #[test]
    fn gop_follows_the_frame_rate() {
        assert_eq!(gop_frames(Some(30.0)), 60);
        assert_eq!(gop_frames(Some(29.97)), 60);
        assert_eq!(gop_frames(Some(23.976)), 48);
        assert_eq!(gop_frames(None), 50);
        assert_eq!(gop_frames(Some(f64::NAN)), 50);
        assert_eq!(gop_frames(Some(0.1)), 1);
    }

    fn track(language: &str, name: Option<&str>) -> CaptionTrack {
        CaptionTrack { key: "uploads/a.srt".into(), language: language.into(), name: name.map(str::to_string) }
    }

    #[test]
    fn caption_tracks_are_few_tagged_and_named_plainly() {
        assert!(validate_captions(&[track("en", None), track("pt-BR", Some("Português"))]).is_ok());
        assert!(validate_captions(&[]).is_err());
        assert!(validate_captions(&vec![track("en", None); 9]).is_err());
        for bad in ["e", "1en", "en_US", "en\"", ""] {
            assert!(validate_captions(&[track(bad, None)]).is_err(), "{bad}");
        }
        for bad in ["", "a\"b", "line\nbreak"] {
            assert!(validate_captions(&[track("en", Some(bad))]).is_err(), "{bad:?}");
        }
        assert!(validate_captions(&[track("en", None), track("EN", None)]).is_err());
        assert_eq!(track("fr", None).label(), "fr");
    }

    #[test]
    fn caption_formats_are_told_by_content() {
        assert_eq!(CaptionFormat::sniff(b"WEBVTT\n\n00:01.000 --> 00:02.000\nhi"), Some(CaptionFormat::WebVtt));
        assert_eq!(
            CaptionFormat::sniff(b"\xEF\xBB\xBF1\r\n00:00:01,000 --> 00:00:02,500\r\nhi"),
            Some(CaptionFormat::SubRip)
        );
        assert_eq!(CaptionFormat::sniff(b"\n\n12\n00:00:01,000 --> 00:00:02,500\n"), Some(CaptionFormat::SubRip));
        assert_eq!(CaptionFormat::sniff(b"Scenarist_SCC V1.0\n\n00:00:00:00\t9420"), Some(CaptionFormat::Scc));
        for other in [&b"[Script Info]\n"[..], b"#EXTM3U\n", b"1\nnot a time\n", b"\x00\x01", b""] {
            assert_eq!(CaptionFormat::sniff(other), None, "{other:?}");
        }
    }

    #[test]
    fn webvtt_gets_one_timestamp_map() {
        let mapped = with_timestamp_map("WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n");
        assert_eq!(mapped, "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n00:01.000 --> 00:02.000\nhi\n");
        assert_eq!(with_timestamp_map(&mapped), mapped);
    }

    #[test]
    fn codec_lists_are_short_and_distinct() {
        assert!(validate_codecs(&[VideoCodec::H264, VideoCodec::Av1]).is_ok());
        assert!(validate_codecs(&[]).is_err());
        assert!(validate_codecs(&[VideoCodec::H264, VideoCodec::H264]).is_err());
    }
}
