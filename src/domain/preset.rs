//! Named, server-side presets and the exact ffmpeg argv each produces.
//!
//! Users choose a preset by name; they never contribute ffmpeg arguments. The only paths in the
//! argv are the worker's own scratch files, and the input is read with a protocol whitelist of
//! `file` alone, so a crafted source cannot make ffmpeg open URLs.

use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Preset {
    /// H.264 High (yuv420p) + AAC in MP4 with the index up front: plays in every browser and phone.
    #[serde(rename = "mp4-h264")]
    Mp4H264,
}

/// A preset name that the catalogue does not have.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("unknown preset `{name}` (known: {known})")]
pub struct UnknownPreset {
    pub name: String,
    pub known: String,
}

impl Preset {
    pub const ALL: &'static [Preset] = &[Preset::Mp4H264];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Mp4H264 => "mp4-h264",
        }
    }

    /// File name of this preset's output inside the job's output folder.
    pub fn file_name(self) -> String {
        format!("{}.{}", self.name(), self.extension())
    }

    pub fn extension(self) -> &'static str {
        match self {
            Preset::Mp4H264 => "mp4",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Preset::Mp4H264 => "video/mp4",
        }
    }

    /// Whether a source without a video stream must be refused for this preset.
    pub fn needs_video(self) -> bool {
        match self {
            Preset::Mp4H264 => true,
        }
    }

    /// The full ffmpeg argv (without the program name) turning `input` into `output`.
    pub fn ffmpeg_args(self, input: &Path, output: &Path) -> Vec<OsString> {
        let mut args = input_args(input);
        let rest: &[&str] = match self {
            Preset::Mp4H264 => &[
                "-map",
                "0:v:0",
                // The trailing `?` makes audio optional: a silent source yields a video-only MP4.
                "-map",
                "0:a:0?",
                "-c:v",
                "libx264",
                "-preset",
                "fast",
                "-profile:v",
                "high",
                "-pix_fmt",
                "yuv420p",
                "-crf",
                "23",
                // H.264 in yuv420p needs even dimensions; rotation metadata is applied by ffmpeg's
                // default autorotate before this filter runs.
                "-vf",
                "scale=trunc(iw/2)*2:trunc(ih/2)*2",
                "-c:a",
                "aac",
                "-b:a",
                "128k",
                "-ac",
                "2",
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
            ],
        };
        args.extend(rest.iter().map(OsString::from));
        args.push(output.as_os_str().to_owned());
        args
    }
}

/// Arguments shared by every preset: no prompts, no stdin, local files only.
fn input_args(input: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> =
        ["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file", "-i"].iter().map(OsString::from).collect();
    args.push(input.as_os_str().to_owned());
    args
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
    fn mp4_h264_argv_is_exact() {
        let args = Preset::Mp4H264.ffmpeg_args(Path::new("/tmp/job/source"), Path::new("/tmp/job/mp4-h264.mp4"));
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args.join(" "),
            "-hide_banner -nostdin -y -protocol_whitelist file -i /tmp/job/source \
             -map 0:v:0 -map 0:a:0? -c:v libx264 -preset fast -profile:v high -pix_fmt yuv420p -crf 23 \
             -vf scale=trunc(iw/2)*2:trunc(ih/2)*2 -c:a aac -b:a 128k -ac 2 -movflags +faststart -f mp4 \
             /tmp/job/mp4-h264.mp4"
        );
    }

    #[test]
    fn hostile_paths_stay_single_arguments() {
        // A path that looks like options is still one argv entry after `-i`, never split or parsed.
        let args = Preset::Mp4H264.ffmpeg_args(Path::new("/tmp/-f lavfi -i x"), Path::new("/tmp/o.mp4"));
        let i = args.iter().position(|a| a == "-i").unwrap();
        assert_eq!(args[i + 1], "/tmp/-f lavfi -i x");
    }

    #[test]
    fn names_round_trip() {
        for preset in Preset::ALL {
            assert_eq!(preset.name().parse::<Preset>().unwrap(), *preset);
            let json = serde_json::to_string(preset).unwrap();
            assert_eq!(json, format!("\"{}\"", preset.name()));
        }
        let err = "mp4; rm -rf /".parse::<Preset>().unwrap_err();
        assert!(err.to_string().contains("mp4-h264"));
        assert_eq!(Preset::Mp4H264.file_name(), "mp4-h264.mp4");
    }
}
