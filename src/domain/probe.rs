//! What ffprobe says about a file, parsed from its JSON without I/O.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Demuxers that read other files or URLs named inside the input (playlists, concat lists).
/// A source that probes as one of these is refused before any transcoding.
const REFERENCE_FORMATS: &[&str] = &["hls", "applehttp", "concat", "ffconcat", "dash", "webm_dash_manifest", "tee"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VideoStream {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pix_fmt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<f64>,
    /// Degrees of display rotation from the stream's side data or tags, 0 when none.
    #[serde(default)]
    pub rotation: i32,
    /// CEA-608/708 captions ride in the stream's SEI or user data (found by decoding its first
    /// frames, and only when the job would package them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed_captions: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AudioStream {
    pub codec: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
}

/// A subtitle stream of a file, as the container describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubtitleStream {
    /// The stream's index in the file (ffmpeg's `0:<index>`).
    pub index: u32,
    /// ffmpeg's codec name: `mov_text`, `subrip`, `ass`, `webvtt`, `hdmv_pgs_subtitle`, ...
    pub codec: String,
    /// The container's language tag as written (ISO 639-2 mostly: `eng`, `fre`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The stream's title (Matroska's `title`, or an MP4 handler name that is not a default
    /// one), at most [`MAX_TITLE_CHARS`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

/// Characters of a subtitle stream's title kept: a title is a menu label, and the file chose
/// its length.
pub const MAX_TITLE_CHARS: usize = 128;

/// A media file's shape: recorded in the manifest for sources and outputs alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MediaInfo {
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoStream>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioStream>,
    #[serde(default)]
    pub video_streams: u32,
    #[serde(default)]
    pub audio_streams: u32,
    /// Every subtitle stream, in the file's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtitles: Vec<SubtitleStream>,
}

impl MediaInfo {
    /// A typical camera or editor export: an MP4 with one H.264 video stream of
    /// `width`x`height` (yuv420p, 30 fps) and one stereo AAC stream (48 kHz), `duration`
    /// seconds long. The source `media-worker presets` shows argv for, and the planners' tests
    /// start from.
    pub fn sample(width: u32, height: u32, duration: f64) -> Self {
        MediaInfo {
            format: "mov,mp4,m4a,3gp,3g2,mj2".into(),
            duration_seconds: Some(duration),
            video: Some(VideoStream {
                codec: "h264".into(),
                width,
                height,
                pix_fmt: Some("yuv420p".into()),
                frame_rate: Some(30.0),
                rotation: 0,
                closed_captions: false,
            }),
            audio: Some(AudioStream { codec: "aac".into(), channels: Some(2), sample_rate: Some(48000) }),
            video_streams: 1,
            audio_streams: 1,
            subtitles: Vec::new(),
        }
    }

    /// The same file without its audio stream.
    pub fn without_audio(self) -> Self {
        MediaInfo { audio: None, audio_streams: 0, ..self }
    }
}

/// Why a probed file is not usable media.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("ffprobe output is not valid JSON: {0}")]
    BadJson(String),
    #[error("no audio or video stream could be decoded")]
    NoStreams,
    #[error("`{0}` inputs name other files or URLs and are not accepted")]
    ReferenceFormat(String),
    #[error("a still image (`{0}`), not audio or video")]
    StillImage(String),
}

/// Recognises playlist and reference formats from a file's first bytes, before any tool reads
/// it: such files make ffmpeg open other files or network addresses.
pub fn sniff_reference_format(head: &[u8]) -> Option<&'static str> {
    let text = head.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(head);
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    let text = &text[start..];
    let starts =
        |prefix: &str| text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes());
    if starts("#EXTM3U") || starts("#EXTINF") {
        Some("hls")
    } else if starts("ffconcat") {
        Some("concat")
    } else if starts("[playlist]") {
        Some("pls")
    } else if starts("<?xml") || starts("<MPD") || starts("<smil") {
        Some("xml manifest")
    } else if starts("v=0") {
        Some("sdp")
    } else {
        None
    }
}

impl MediaInfo {
    /// Parses `ffprobe -print_format json -show_format -show_streams` of a SOURCE: playlists,
    /// reference formats and still images are refused.
    pub fn from_ffprobe_json(json: &str) -> Result<Self, ProbeError> {
        let info = Self::describe(json)?;
        if info.format.split(',').any(|f| REFERENCE_FORMATS.contains(&f)) {
            return Err(ProbeError::ReferenceFormat(info.format));
        }
        if info.format == "image2" || info.format.ends_with("_pipe") {
            return Err(ProbeError::StillImage(info.format));
        }
        Ok(info)
    }

    /// Parses ffprobe's JSON of a file the worker made itself (an HLS playlist, a JPEG, ...).
    pub fn describe(json: &str) -> Result<Self, ProbeError> {
        let root: Value = serde_json::from_str(json).map_err(|e| ProbeError::BadJson(e.to_string()))?;
        let format = root.pointer("/format/format_name").and_then(Value::as_str).unwrap_or("").to_string();
        let streams = root.get("streams").and_then(Value::as_array).cloned().unwrap_or_default();
        // Cover art is a "video" stream of one picture; it does not make a file a video.
        let is_picture = |s: &Value| s.pointer("/disposition/attached_pic").and_then(Value::as_i64) == Some(1);
        let videos: Vec<&Value> = streams
            .iter()
            .filter(|s| s.get("codec_type").and_then(Value::as_str) == Some("video") && !is_picture(s))
            .filter(|s| dimension(s, "width") > 0 && dimension(s, "height") > 0)
            .collect();
        let audios: Vec<&Value> =
            streams.iter().filter(|s| s.get("codec_type").and_then(Value::as_str) == Some("audio")).collect();
        if videos.is_empty() && audios.is_empty() {
            return Err(ProbeError::NoStreams);
        }
        let duration_seconds = root
            .pointer("/format/duration")
            .and_then(as_f64)
            .or_else(|| streams.iter().filter_map(|s| s.get("duration").and_then(as_f64)).reduce(f64::max))
            .filter(|d| d.is_finite() && *d >= 0.0);
        Ok(MediaInfo {
            format,
            duration_seconds,
            video: videos.first().map(|s| VideoStream {
                codec: text(s, "codec_name"),
                width: dimension(s, "width"),
                height: dimension(s, "height"),
                pix_fmt: s.get("pix_fmt").and_then(Value::as_str).map(str::to_string),
                frame_rate: s.get("avg_frame_rate").and_then(Value::as_str).and_then(parse_ratio),
                rotation: rotation(s),
                closed_captions: s.get("closed_captions").and_then(Value::as_i64) == Some(1),
            }),
            audio: audios.first().map(|s| AudioStream {
                codec: text(s, "codec_name"),
                channels: s.get("channels").and_then(Value::as_u64).and_then(|c| u32::try_from(c).ok()),
                sample_rate: s.get("sample_rate").and_then(as_f64).map(|r| r as u32),
            }),
            video_streams: u32::try_from(videos.len()).unwrap_or(u32::MAX),
            audio_streams: u32::try_from(audios.len()).unwrap_or(u32::MAX),
            subtitles: streams.iter().filter_map(subtitle).collect(),
        })
    }

    /// Width and height as displayed, after rotation metadata is applied.
    pub fn display_dimensions(&self) -> Option<(u32, u32)> {
        self.video
            .as_ref()
            .map(|v| if v.rotation.rem_euclid(180) == 90 { (v.height, v.width) } else { (v.width, v.height) })
    }
}

/// Whether ffprobe's JSON of a video stream whose first frames it decoded says the stream
/// carries closed captions (`closed_captions: 1`).
pub fn has_closed_captions(json: &str) -> Result<bool, ProbeError> {
    let root: Value = serde_json::from_str(json).map_err(|e| ProbeError::BadJson(e.to_string()))?;
    let streams = root.get("streams").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(streams.iter().any(|s| s.get("closed_captions").and_then(Value::as_i64) == Some(1)))
}

/// A `subtitle` stream's description; `None` for any other stream.
fn subtitle(stream: &Value) -> Option<SubtitleStream> {
    if stream.get("codec_type").and_then(Value::as_str) != Some("subtitle") {
        return None;
    }
    let tag = |name: &str| {
        let value: String =
            stream.pointer(&format!("/tags/{name}"))?.as_str()?.trim().chars().take(MAX_TITLE_CHARS).collect();
        (!value.is_empty()).then_some(value)
    };
    // MP4 keeps a track's name in its handler; muxers write their own default there.
    let handler = tag("handler_name").filter(|h| !h.ends_with("Handler") && !h.starts_with("Core Media"));
    let flag = |name: &str| stream.pointer(&format!("/disposition/{name}")).and_then(Value::as_i64) == Some(1);
    Some(SubtitleStream {
        index: stream.get("index").and_then(Value::as_u64).and_then(|i| u32::try_from(i).ok())?,
        codec: text(stream, "codec_name"),
        language: tag("language"),
        title: tag("title").or(handler),
        default: flag("default"),
        forced: flag("forced"),
    })
}

fn text(stream: &Value, field: &str) -> String {
    stream.get(field).and_then(Value::as_str).unwrap_or("unknown").to_string()
}

fn dimension(stream: &Value, field: &str) -> u32 {
    stream.get(field).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

/// ffprobe writes most numbers as strings ("12.345").
fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::String(s) => s.parse().ok(),
        other => other.as_f64(),
    }
}

fn parse_ratio(raw: &str) -> Option<f64> {
    let (num, den) = raw.split_once('/')?;
    let (num, den): (f64, f64) = (num.parse().ok()?, den.parse().ok()?);
    (den != 0.0 && num > 0.0).then(|| num / den)
}

fn rotation(stream: &Value) -> i32 {
    let from_side_data = stream
        .get("side_data_list")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find_map(|d| d.get("rotation").and_then(Value::as_i64)));
    let from_tags = stream.pointer("/tags/rotate").and_then(as_f64).map(|r| r as i64);
    from_side_data.or(from_tags).and_then(|r| i32::try_from(r).ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_playlists_and_references() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"#EXTM3U\n#EXTINF:10,\nhttp://evil/a.ts\n", Some("hls")),
            (b"\xEF\xBB\xBF  #extm3u\n", Some("hls")),
            (b"ffconcat version 1.0\nfile '/etc/passwd'\n", Some("concat")),
            (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n", Some("sdp")),
            (b"<?xml version=\"1.0\"?><MPD>", Some("xml manifest")),
            (b"\x00\x00\x00\x20ftypisom", None),
            (b"\x1aE\xdf\xa3", None),
            (b"", None),
        ];
        for (head, expected) in cases {
            assert_eq!(sniff_reference_format(head), *expected, "{head:?}");
        }
    }

    const H264_AAC: &str = r#"{
        "streams": [
            {"index":0,"codec_name":"h264","codec_type":"video","width":1280,"height":720,"pix_fmt":"yuv420p","avg_frame_rate":"30/1","duration":"20.000000"},
            {"index":1,"codec_name":"aac","codec_type":"audio","sample_rate":"48000","channels":2,"duration":"20.010000"}
        ],
        "format": {"format_name":"mov,mp4,m4a,3gp,3g2,mj2","duration":"20.010000","size":"1234"}
    }"#;

    const ROTATED_PHONE: &str = r#"{
        "streams": [
            {"codec_name":"h264","codec_type":"video","width":1920,"height":1080,"avg_frame_rate":"30000/1001",
             "side_data_list":[{"side_data_type":"Display Matrix","rotation":-90}]}
        ],
        "format": {"format_name":"mov,mp4,m4a,3gp,3g2,mj2","duration":"3.0"}
    }"#;

    const MP3_WITH_COVER: &str = r#"{
        "streams": [
            {"codec_name":"mp3","codec_type":"audio","sample_rate":"44100","channels":2},
            {"codec_name":"mjpeg","codec_type":"video","width":500,"height":500,"disposition":{"attached_pic":1}}
        ],
        "format": {"format_name":"mp3","duration":"61.2"}
    }"#;

    #[test]
    fn parses_fixtures() {
        let info = MediaInfo::from_ffprobe_json(H264_AAC).unwrap();
        assert_eq!(info.duration_seconds, Some(20.01));
        let video = info.video.as_ref().unwrap();
        assert_eq!((video.codec.as_str(), video.width, video.height), ("h264", 1280, 720));
        assert_eq!(video.frame_rate, Some(30.0));
        assert_eq!(info.audio.as_ref().unwrap().sample_rate, Some(48000));
        assert_eq!(info.display_dimensions(), Some((1280, 720)));

        let phone = MediaInfo::from_ffprobe_json(ROTATED_PHONE).unwrap();
        assert_eq!(phone.video.as_ref().unwrap().rotation, -90);
        assert_eq!(phone.display_dimensions(), Some((1080, 1920)));
        assert!(phone.audio.is_none());

        let mp3 = MediaInfo::from_ffprobe_json(MP3_WITH_COVER).unwrap();
        assert!(mp3.video.is_none(), "cover art is not a video stream");
        assert_eq!(mp3.audio_streams, 1);
    }

    #[test]
    fn refuses_what_is_not_media() {
        let cases = [
            ("not json", "BadJson"),
            (r#"{"streams":[],"format":{"format_name":"tty"}}"#, "NoStreams"),
            (r#"{"format":{"format_name":"image2"},"streams":[{"codec_type":"data"}]}"#, "NoStreams"),
            (
                r#"{"streams":[{"codec_type":"video","width":1,"height":1}],"format":{"format_name":"hls"}}"#,
                "ReferenceFormat",
            ),
            (r#"{"streams":[{"codec_type":"audio"}],"format":{"format_name":"concat"}}"#, "ReferenceFormat"),
            (
                r#"{"streams":[{"codec_type":"video","width":64,"height":64}],"format":{"format_name":"png_pipe"}}"#,
                "StillImage",
            ),
        ];
        for (json, kind) in cases {
            let err = MediaInfo::from_ffprobe_json(json).unwrap_err();
            assert!(format!("{err:?}").starts_with(kind), "{json}: {err:?}");
        }
    }

    #[test]
    fn subtitle_streams_are_recorded_with_their_names() {
        let json = r#"{
            "streams": [
                {"index":0,"codec_name":"h264","codec_type":"video","width":320,"height":180,"closed_captions":1},
                {"index":1,"codec_name":"mov_text","codec_type":"subtitle","disposition":{"default":1,"forced":0},
                 "tags":{"language":"eng","handler_name":"English"}},
                {"index":2,"codec_name":"mov_text","codec_type":"subtitle","tags":{"language":"fra","handler_name":"SubtitleHandler"}},
                {"index":3,"codec_name":"ass","codec_type":"subtitle","disposition":{"forced":1},"tags":{"title":"  ","language":"ger"}},
                {"index":4,"codec_name":"subrip","codec_type":"subtitle","tags":{"title":"Commentary"}}
            ],
            "format": {"format_name":"matroska,webm","duration":"4.0"}
        }"#;
        let info = MediaInfo::from_ffprobe_json(json).unwrap();
        assert!(info.video.as_ref().unwrap().closed_captions);
        let seen: Vec<String> = info
            .subtitles
            .iter()
            .map(|s| format!("{} {} {:?} {:?} {} {}", s.index, s.codec, s.language, s.title, s.default, s.forced))
            .collect();
        assert_eq!(
            seen,
            vec![
                "1 mov_text Some(\"eng\") Some(\"English\") true false",
                "2 mov_text Some(\"fra\") None false false",
                "3 ass Some(\"ger\") None false true",
                "4 subrip None Some(\"Commentary\") false false",
            ]
        );
        let long = format!(
            r#"{{"streams":[{{"index":0,"codec_type":"audio"}},{{"index":1,"codec_type":"subtitle","tags":{{"title":"{}"}}}}],"format":{{}}}}"#,
            "t".repeat(5000)
        );
        let info = MediaInfo::from_ffprobe_json(&long).unwrap();
        assert_eq!(info.subtitles[0].title.as_ref().map(String::len), Some(MAX_TITLE_CHARS));
        assert!(MediaInfo::from_ffprobe_json(H264_AAC).unwrap().subtitles.is_empty());

        let frames = r#"{"frames":[{"key_frame":1}],"streams":[{"closed_captions":1}]}"#;
        assert_eq!(has_closed_captions(frames), Ok(true));
        assert_eq!(has_closed_captions(r#"{"frames":[],"streams":[{"closed_captions":0}]}"#), Ok(false));
        assert!(has_closed_captions("nope").is_err());
    }
}
