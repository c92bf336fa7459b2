//! The preset catalogue: named, server-side output recipes.
//!
//! Users choose presets by name, with a few typed, range-checked options; they never contribute
//! ffmpeg arguments. How a job's presets become one ffmpeg command is in [`crate::domain::plan`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Preset {
    /// H.264 High (yuv420p) + AAC in MP4, index up front, at the source's size.
    Mp4H264,
    /// The same, fitted to 1080 lines (the short side), never upscaled.
    Mp4H264_1080,
    Mp4H264_720,
    Mp4H264_480,
    /// An adaptive HLS ladder (1080/720/480/360, rungs at or below the source) from one decode.
    Hls,
    /// One ladder of fragmented MP4 (CMAF) renditions for HLS and DASH players alike, in one or
    /// more video codecs ([`crate::domain::delivery`]), with our own playlists and MPD.
    Cmaf,
    /// A JPEG poster frame.
    Thumbnail,
    /// A sprite sheet of thumbnails plus WebVTT cues, for scrubbing previews in players.
    Storyboard,
    /// A short animated GIF with a generated palette.
    Gif,
    /// The first audio track as 192 kb/s MP3.
    Mp3,
    /// Stream copy into MP4 when the codecs allow; incompatible streams are transcoded.
    RemuxMp4,
    /// VP9 + Opus in WebM.
    WebmVp9,
    /// An operator's preset from `MEDIA_PRESETS_FILE`, by its index in the installed list.
    Custom(u16),
}

/// A preset name that the catalogue does not have.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("unknown preset `{name}` (known: {known})")]
pub struct UnknownPreset {
    pub name: String,
    pub known: String,
}

/// The per-output options a preset accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptedOptions {
    pub start: bool,
    pub duration: bool,
    pub max_height: bool,
    pub time: bool,
    /// The video codecs of a ladder (`codecs`), a list from [`crate::domain::delivery::VideoCodec::ALL`].
    pub codecs: bool,
    /// How a ladder's files are laid out (`packaging`), one of [`crate::domain::delivery::Packaging::ALL`].
    pub packaging: bool,
}

const NONE: AcceptedOptions =
    AcceptedOptions { start: false, duration: false, max_height: false, time: false, codecs: false, packaging: false };
const TRIM_AND_SIZE: AcceptedOptions = AcceptedOptions { start: true, duration: true, max_height: true, ..NONE };

impl Preset {
    pub const ALL: &'static [Preset] = &[
        Preset::Mp4H264,
        Preset::Mp4H264_1080,
        Preset::Mp4H264_720,
        Preset::Mp4H264_480,
        Preset::Hls,
        Preset::Cmaf,
        Preset::Thumbnail,
        Preset::Storyboard,
        Preset::Gif,
        Preset::Mp3,
        Preset::RemuxMp4,
        Preset::WebmVp9,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Mp4H264 => "mp4-h264",
            Preset::Mp4H264_1080 => "mp4-h264-1080",
            Preset::Mp4H264_720 => "mp4-h264-720",
            Preset::Mp4H264_480 => "mp4-h264-480",
            Preset::Hls => "hls",
            Preset::Cmaf => "cmaf",
            Preset::Thumbnail => "thumbnail",
            Preset::Storyboard => "storyboard",
            Preset::Gif => "gif",
            Preset::Mp3 => "mp3",
            Preset::RemuxMp4 => "remux-mp4",
            Preset::WebmVp9 => "webm-vp9",
            Preset::Custom(i) => custom_presets().get(usize::from(i)).map_or("unknown", |c| c.name.as_str()),
        }
    }

    /// Every preset: the built-in catalogue, then the operator's.
    pub fn all() -> Vec<Preset> {
        let custom = (0..custom_presets().len()).filter_map(|i| u16::try_from(i).ok()).map(Preset::Custom);
        Preset::ALL.iter().copied().chain(custom).collect()
    }

    /// The operator's definition, for custom presets.
    pub fn custom(self) -> Option<&'static CustomPreset> {
        match self {
            Preset::Custom(i) => custom_presets().get(usize::from(i)),
            _ => None,
        }
    }

    /// The main file of this preset's output, relative to the job's output folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Preset::Mp4H264 => "mp4-h264.mp4",
            Preset::Mp4H264_1080 => "mp4-h264-1080.mp4",
            Preset::Mp4H264_720 => "mp4-h264-720.mp4",
            Preset::Mp4H264_480 => "mp4-h264-480.mp4",
            Preset::Hls => "hls/master.m3u8",
            Preset::Cmaf => "cmaf/master.m3u8",
            Preset::Thumbnail => "thumbnail.jpg",
            Preset::Storyboard => "storyboard.vtt",
            Preset::Gif => "animation.gif",
            Preset::Mp3 => "audio.mp3",
            Preset::RemuxMp4 => "remux.mp4",
            Preset::WebmVp9 => "webm-vp9.webm",
            Preset::Custom(i) => custom_presets().get(usize::from(i)).map_or("unknown", |c| c.file.as_str()),
        }
    }

    pub fn content_type(self) -> &'static str {
        content_type_of(self.file_name())
    }

    /// What the output is, in a few words, for catalogues (`GET /v1/presets`, the console).
    pub fn description(self) -> &'static str {
        match self {
            Preset::Mp4H264 => "MP4 (H.264, AAC) at the source's size",
            Preset::Mp4H264_1080 => "MP4 (H.264, AAC) fitted to 1080 lines",
            Preset::Mp4H264_720 => "MP4 (H.264, AAC) fitted to 720 lines",
            Preset::Mp4H264_480 => "MP4 (H.264, AAC) fitted to 480 lines",
            Preset::Hls => "HLS ladder for adaptive streaming, 1080 to 360 lines",
            Preset::Cmaf => "CMAF ladder for HLS and DASH, in H.264, HEVC and/or AV1",
            Preset::Thumbnail => "JPEG poster frame",
            Preset::Storyboard => "sprite sheet with WebVTT cues, for scrubbing previews",
            Preset::Gif => "animated GIF, 1 to 6 seconds",
            Preset::Mp3 => "the audio as MP3",
            Preset::RemuxMp4 => "the source's streams copied into MP4 where they fit",
            Preset::WebmVp9 => "WebM (VP9, Opus)",
            Preset::Custom(_) => "a preset of this deployment",
        }
    }

    /// Whether a source without a video stream must be refused for this preset.
    pub fn needs_video(self) -> bool {
        match self.custom() {
            Some(c) => c.needs_video,
            None => !matches!(self, Preset::Mp3 | Preset::RemuxMp4 | Preset::Custom(_)),
        }
    }

    /// Whether a source without an audio stream must be refused for this preset.
    pub fn needs_audio(self) -> bool {
        match self.custom() {
            Some(c) => c.needs_audio,
            None => matches!(self, Preset::Mp3),
        }
    }

    pub fn accepted_options(self) -> AcceptedOptions {
        match self {
            Preset::Mp4H264 | Preset::Mp4H264_1080 | Preset::Mp4H264_720 | Preset::Mp4H264_480 | Preset::WebmVp9 => {
                TRIM_AND_SIZE
            }
            Preset::Hls => AcceptedOptions { max_height: true, ..NONE },
            Preset::Cmaf => AcceptedOptions { max_height: true, codecs: true, packaging: true, ..NONE },
            Preset::Thumbnail => AcceptedOptions { time: true, ..NONE },
            Preset::Gif | Preset::Mp3 => AcceptedOptions { start: true, duration: true, ..NONE },
            Preset::Storyboard | Preset::RemuxMp4 => NONE,
            Preset::Custom(_) => self.custom().map_or(NONE, |c| AcceptedOptions {
                start: c.options.iter().any(|o| o == "start"),
                duration: c.options.iter().any(|o| o == "duration"),
                max_height: c.options.iter().any(|o| o == "max_height"),
                ..NONE
            }),
        }
    }
}

/// The content type of a media file from its extension (any case): stored with every output,
/// and sent with local downloads.
pub fn content_type_of(file: &str) -> &'static str {
    let name = file.rsplit('/').next().unwrap_or(file);
    let extension = name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "m4a" => "audio/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        "m4s" => "video/iso.segment",
        "mpd" => "application/dash+xml",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "vtt" => "text/vtt",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = UnknownPreset;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let all = Preset::all();
        all.iter().copied().find(|p| p.name() == name).ok_or_else(|| UnknownPreset {
            name: name.chars().take(64).collect(),
            known: all.iter().map(|p| p.name()).collect::<Vec<_>>().join(", "),
        })
    }
}

impl TryFrom<String> for Preset {
    type Error = UnknownPreset;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<Preset> for String {
    fn from(preset: Preset) -> String {
        preset.name().to_string()
    }
}

/// An operator's preset, from the TOML file named by `MEDIA_PRESETS_FILE`:
///
/// ```toml
/// [[preset]]
/// name = "mp4-hevc"
/// file = "hevc.mp4"                      # output file name; its extension sets the content type
/// needs_video = true                     # default true
/// needs_audio = false                    # default false
/// options = ["start", "duration", "max_height"]
/// args = ["-map", "0:v:0", "-map", "0:a:0?", "-vf", "{scale}", "-c:v", "libx265", "-crf", "28",
///         "-tag:v", "hvc1", "-c:a", "aac", "-f", "mp4"]
/// ```
///
/// `args` is one output block: the input and the output path are the worker's. The one
/// placeholder, `{scale}`, is a whole argument that becomes a scale filter fitting the output's
/// `max_height` (or just making dimensions even). `start`/`duration` become `-ss`/`-t`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPreset {
    pub name: String,
    pub file: String,
    #[serde(default = "yes")]
    pub needs_video: bool,
    #[serde(default)]
    pub needs_audio: bool,
    #[serde(default)]
    pub options: Vec<String>,
    pub args: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresetsFile {
    #[serde(default)]
    preset: Vec<CustomPreset>,
}

/// Options that name inputs, protocols or global behaviour: never in an operator's block.
const FORBIDDEN_ARGS: &[&str] = &[
    "-i",
    "-y",
    "-n",
    "-protocol_whitelist",
    "-filter_complex",
    "-lavfi",
    "-filter_complex_script",
    "-attach",
    "-dump_attachment",
];
/// Filters and options that read files by name.
const FILE_READERS: &[&str] = &["movie", "textfile", "fontfile", "sendcmd", "zmq", "file=", "=/", "='/"];
const PROTOCOLS: &[&str] = &[
    "file:", "pipe:", "fd:", "http:", "https:", "tcp:", "udp:", "rtp:", "rtmp:", "concat:", "subfile:", "data:",
    "crypto:", "ftp:", "unix:", "tls:", "srt:",
];

/// Parses and validates an operator's presets file.
pub fn parse_presets_file(text: &str) -> Result<Vec<CustomPreset>, String> {
    let file: PresetsFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
    let mut files: Vec<&str> = Preset::ALL.iter().map(|p| p.file_name()).collect();
    files.push(crate::domain::keys::MANIFEST_FILE);
    files.push(crate::domain::keys::QUALITY_FILE);
    for preset in &file.preset {
        let name = preset.name.as_str();
        let valid_name = (1..=40).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_name {
            return Err(format!("preset name `{name}`: use 1 to 40 of a-z, 0-9 and -"));
        }
        if names.contains(&name) {
            return Err(format!("preset name `{name}` is already taken"));
        }
        names.push(name);
        let f = preset.file.as_str();
        let valid_file = (1..=64).contains(&f.len())
            && f.contains('.')
            && !f.starts_with('.')
            && f.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid_file || files.contains(&f) {
            return Err(format!("preset `{name}`: file `{f}` must be a new plain file name with an extension"));
        }
        files.push(f);
        if let Some(bad) = preset.options.iter().find(|o| !matches!(o.as_str(), "start" | "duration" | "max_height")) {
            return Err(format!("preset `{name}`: unknown option `{bad}` (start, duration, max_height)"));
        }
        if preset.args.is_empty() {
            return Err(format!("preset `{name}`: args is empty"));
        }
        for arg in &preset.args {
            let refused = FORBIDDEN_ARGS.contains(&arg.as_str())
                || PROTOCOLS.iter().any(|p| arg.to_ascii_lowercase().starts_with(p))
                || arg.contains("://")
                || FILE_READERS.iter().any(|r| arg.contains(r))
                || arg.starts_with('/')
                || arg.starts_with('~')
                || arg.contains("..")
                || arg.contains('%')
                || (arg.contains('{') && arg != "{scale}");
            if refused {
                return Err(format!(
                    "preset `{name}`: argument `{arg}` is not allowed (inputs, paths, protocols, patterns and unknown placeholders are the worker's)"
                ));
            }
        }
    }
    Ok(file.preset)
}

static CUSTOM_PRESETS: std::sync::OnceLock<Vec<CustomPreset>> = std::sync::OnceLock::new();

fn custom_presets() -> &'static [CustomPreset] {
    CUSTOM_PRESETS.get().map(Vec::as_slice).unwrap_or(&[])
}

/// Makes the operator's presets known to this process, once, at start-up.
pub fn install_custom_presets(presets: Vec<CustomPreset>) -> Result<(), String> {
    if presets.is_empty() && CUSTOM_PRESETS.get().is_none() {
        return Ok(());
    }
    if presets.len() > usize::from(u16::MAX) {
        return Err("too many presets".into());
    }
    let installed = CUSTOM_PRESETS.get_or_init(|| presets.clone());
    if *installed == presets { Ok(()) } else { Err("a different set of custom presets is already installed".into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for preset in Preset::ALL {
            assert_eq!(preset.name().parse::<Preset>().unwrap(), *preset);
            let json = serde_json::to_string(preset).unwrap();
            assert_eq!(json, format!("\"{}\"", preset.name()));
        }
        let err = "mp4; rm -rf /".parse::<Preset>().unwrap_err();
        assert!(err.to_string().contains("mp4-h264"));
    }

    #[test]
    fn presets_files_are_validated() {
        let good = r#"
            [[preset]]
            name = "mp4-hevc"
            file = "hevc.mp4"
            options = ["start", "max_height"]
            args = ["-map", "0:v:0", "-vf", "{scale}", "-c:v", "libx265", "-crf", "28", "-tag:v", "hvc1", "-f", "mp4"]
        "#;
        let presets = parse_presets_file(good).unwrap();
        assert_eq!(presets[0].name, "mp4-hevc");
        assert!(presets[0].needs_video && !presets[0].needs_audio);
        let bad_cases = [
            ("mp4-h264", "x.mp4", r#"["-c:v", "libx264"]"#),
            ("Bad Name", "x.mp4", r#"["-c:v", "libx264"]"#),
            ("ok", "../x.mp4", r#"["-c:v", "libx264"]"#),
            ("ok", "manifest.json", r#"["-c:v", "libx264"]"#),
            ("ok", "x.mp4", r#"["-i", "/etc/passwd"]"#),
            ("ok", "x.mp4", r#"["-vf", "movie=/etc/passwd"]"#),
            ("ok", "x.mp4", r#"["http://example.com/x"]"#),
            ("ok", "x.mp4", r#"["-f", "image2", "out%03d.png"]"#),
            ("ok", "x.mp4", r#"["-vf", "{input}"]"#),
            ("ok", "x.mp4", r#"["-filter_complex", "x"]"#),
            ("ok", "x.mp4", "[]"),
        ];
        for (name, file, args) in bad_cases {
            let text = format!("[[preset]]\nname = \"{name}\"\nfile = \"{file}\"\nargs = {args}\n");
            assert!(parse_presets_file(&text).is_err(), "{text}");
        }
        assert!(
            parse_presets_file(
                "[[preset]]\nname = \"x\"\nfile = \"x.mp4\"\nargs = [\"-c:v\", \"copy\"]\nshell = \"rm\"\n"
            )
            .is_err()
        );
    }

    #[test]
    fn file_names_are_distinct_and_typed() {
        let mut names: Vec<&str> = Preset::ALL.iter().map(|p| p.file_name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Preset::ALL.len());
        assert_eq!(Preset::Mp4H264.content_type(), "video/mp4");
        assert_eq!(Preset::Hls.content_type(), "application/vnd.apple.mpegurl");
        assert_eq!(content_type_of("hls/720p/segment_00001.ts"), "video/mp2t");
    }
}
