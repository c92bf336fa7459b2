//! What a `cmaf` ladder delivers: which video codecs, each with its own ladder and encoder
//! settings, and how the files are laid out for the players.
//!
//! One set of fragmented MP4 (CMAF) files serves both HLS and DASH players. Each codec is a
//! family of rungs of its own: players choose the family they decode (the codec strings in the
//! playlists tell them), then a rung within it. HEVC and AV1 reach a given quality in fewer
//! bits than H.264, so their rungs have lower rate caps; H.264 stays for every other device.

use std::ffi::OsString;

use serde::{Deserialize, Serialize};

use crate::domain::args::{KEYFRAME_INTERVAL, strings};

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
        let crf = self.crf().to_string();
        let keyframes = format!("expr:gte(t,n_forced*{KEYFRAME_INTERVAL})");
        let (maxrate, bufsize) = (format!("{maxrate_kbps}k"), format!("{}k", maxrate_kbps * 2));
        match self {
            VideoCodec::H264 => strings(&[
                "-c:v",
                "libx264",
                "-preset",
                "fast",
                "-profile:v",
                "high",
                "-pix_fmt",
                "yuv420p",
                "-crf",
                &crf,
                "-maxrate",
                &maxrate,
                "-bufsize",
                &bufsize,
                "-force_key_frames:v",
                &keyframes,
            ]),
            // x265 opens its GOPs by default (a segment would then start with frames that need
            // the previous one), and makes forced keyframes non-IDR unless told.
            VideoCodec::Hevc => strings(&[
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
                "-force_key_frames:v",
                &keyframes,
                "-forced-idr",
                "1",
                "-x265-params",
                "log-level=error:open-gop=0",
                "-tag:v",
                "hvc1",
            ]),
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
    fn gop_follows_the_frame_rate() {
        assert_eq!(gop_frames(Some(30.0)), 60);
        assert_eq!(gop_frames(Some(29.97)), 60);
        assert_eq!(gop_frames(Some(23.976)), 48);
        assert_eq!(gop_frames(None), 50);
        assert_eq!(gop_frames(Some(f64::NAN)), 50);
        assert_eq!(gop_frames(Some(0.1)), 1);
    }

    #[test]
    fn codec_lists_are_short_and_distinct() {
        assert!(validate_codecs(&[VideoCodec::H264, VideoCodec::Av1]).is_ok());
        assert!(validate_codecs(&[]).is_err());
        assert!(validate_codecs(&[VideoCodec::H264, VideoCodec::H264]).is_err());
    }
}
