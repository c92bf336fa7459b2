//! The preset catalogue: named, server-side output recipes.
//!
//! Users choose presets by name, with a few typed, range-checked options; they never contribute
//! ffmpeg arguments. How a job's presets become one ffmpeg command is in [`crate::domain::plan`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Preset {
    /// H.264 High (yuv420p) + AAC in MP4, index up front, at the source's size.
    #[serde(rename = "mp4-h264")]
    Mp4H264,
    /// The same, fitted to 1080 lines (the short side), never upscaled.
    #[serde(rename = "mp4-h264-1080")]
    Mp4H264_1080,
    #[serde(rename = "mp4-h264-720")]
    Mp4H264_720,
    #[serde(rename = "mp4-h264-480")]
    Mp4H264_480,
    /// An adaptive HLS ladder (1080/720/480/360, rungs at or below the source) from one decode.
    #[serde(rename = "hls")]
    Hls,
    /// A JPEG poster frame.
    #[serde(rename = "thumbnail")]
    Thumbnail,
    /// A sprite sheet of thumbnails plus WebVTT cues, for scrubbing previews in players.
    #[serde(rename = "storyboard")]
    Storyboard,
    /// A short animated GIF with a generated palette.
    #[serde(rename = "gif")]
    Gif,
    /// The first audio track as 192 kb/s MP3.
    #[serde(rename = "mp3")]
    Mp3,
    /// Stream copy into MP4 when the codecs allow; incompatible streams are transcoded.
    #[serde(rename = "remux-mp4")]
    RemuxMp4,
    /// VP9 + Opus in WebM.
    #[serde(rename = "webm-vp9")]
    WebmVp9,
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
}

const NONE: AcceptedOptions = AcceptedOptions { start: false, duration: false, max_height: false, time: false };
const TRIM_AND_SIZE: AcceptedOptions = AcceptedOptions { start: true, duration: true, max_height: true, time: false };

impl Preset {
    pub const ALL: &'static [Preset] = &[
        Preset::Mp4H264,
        Preset::Mp4H264_1080,
        Preset::Mp4H264_720,
        Preset::Mp4H264_480,
        Preset::Hls,
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
            Preset::Thumbnail => "thumbnail",
            Preset::Storyboard => "storyboard",
            Preset::Gif => "gif",
            Preset::Mp3 => "mp3",
            Preset::RemuxMp4 => "remux-mp4",
            Preset::WebmVp9 => "webm-vp9",
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
            Preset::Thumbnail => "thumbnail.jpg",
            Preset::Storyboard => "storyboard.vtt",
            Preset::Gif => "animation.gif",
            Preset::Mp3 => "audio.mp3",
            Preset::RemuxMp4 => "remux.mp4",
            Preset::WebmVp9 => "webm-vp9.webm",
        }
    }

    pub fn content_type(self) -> &'static str {
        content_type_of(self.file_name())
    }

    /// Whether a source without a video stream must be refused for this preset.
    pub fn needs_video(self) -> bool {
        !matches!(self, Preset::Mp3 | Preset::RemuxMp4)
    }

    /// Whether a source without an audio stream must be refused for this preset.
    pub fn needs_audio(self) -> bool {
        matches!(self, Preset::Mp3)
    }

    pub fn accepted_options(self) -> AcceptedOptions {
        match self {
            Preset::Mp4H264 | Preset::Mp4H264_1080 | Preset::Mp4H264_720 | Preset::Mp4H264_480 | Preset::WebmVp9 => {
                TRIM_AND_SIZE
            }
            Preset::Hls => AcceptedOptions { max_height: true, ..NONE },
            Preset::Thumbnail => AcceptedOptions { time: true, ..NONE },
            Preset::Gif | Preset::Mp3 => AcceptedOptions { start: true, duration: true, ..NONE },
            Preset::Storyboard | Preset::RemuxMp4 => NONE,
        }
    }
}

/// The content type stored with an output file, from its extension.
pub fn content_type_of(file: &str) -> &'static str {
    match file.rsplit('.').next().unwrap_or_default() {
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        "jpg" => "image/jpeg",
        "gif" => "image/gif",
        "mp3" => "audio/mpeg",
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
        Preset::ALL.iter().copied().find(|p| p.name() == name).ok_or_else(|| UnknownPreset {
            name: name.chars().take(64).collect(),
            known: Preset::ALL.iter().map(|p| p.name()).collect::<Vec<_>>().join(", "),
        })
    }
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
