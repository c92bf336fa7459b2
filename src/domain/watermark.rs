//! A job's image watermark: the `watermark` setting and its ranges, what makes an uploaded
//! image acceptable, and the filter text that draws it.
//!
//! The picture is drawn once per job on the source's decoded picture, before any output
//! scales it, so every rung of every ladder carries it at the same size relative to its
//! width. Everything that costs per pixel of the image happens once: the image input is cut
//! to its first frame (`trim=end_frame=1`), scaled to its width on the source, given its
//! opacity (`colorchannelmixer=aa`), and `overlay` repeats that one frame for the whole
//! title. Only a fading watermark needs a picture per instant: its one prepared frame is
//! looped (`loop=loop=-1:size=1`, no new decode or scale) on a clock of [`FADE_RATE`] frames
//! per second of source time, through `fade` on the alpha plane.
//!
//! Times are the source's, in every command: the whole job's decode starts at zero, and a
//! split job's segment keeps the source's timestamps (`-copyts`), so the same `enable` and
//! `fade` times hold in both; a segment's loop starts on the clock's tick at or before its
//! first frame ([`Overlay::filter`]'s `from`), so its faded frames are the whole job's.

use serde::{Deserialize, Serialize};

use crate::domain::args::seconds;
use crate::domain::probe::MediaInfo;

/// The image's width over the video's width.
pub const WIDTH_RANGE: (f64, f64) = (0.01, 0.5);
/// The margin from the nearest edges, over the video's width.
pub const MARGIN_RANGE: (f64, f64) = (0.0, 0.2);
/// 0: invisible, 1: opaque (the image's own transparency still applies).
pub const OPACITY_RANGE: (f64, f64) = (0.0, 1.0);
/// Seconds of the fade in (from `start`) and of the fade out (to `end`).
pub const FADE_RANGE: (f64, f64) = (0.0, 5.0);
/// The latest `start` or `end` a job may name: a day.
pub const MAX_SECONDS: f64 = 86_400.0;
/// The largest image a worker reads.
pub const MAX_IMAGE_BYTES: u64 = 5 << 20;
/// The longest side of an accepted image, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 4096;
/// Frames per second of a fading watermark's picture (its fade moves in steps of 1/30 s).
pub const FADE_RATE: u32 = 30;
/// The decoders of a still picture ffmpeg reads from one file: PNG, JPEG, WebP.
const IMAGE_CODECS: &[&str] = &["png", "mjpeg", "webp"];
/// ffmpeg's demuxers of one such picture.
const IMAGE_FORMATS: &[&str] = &["png_pipe", "jpeg_pipe", "webp_pipe", "image2"];

/// `watermark` in a job: an image of the caller's uploads drawn over every video output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSettings {
    /// The image (PNG, JPEG or WebP, at most 5 MiB and 4096 px a side) among the caller's
    /// uploads.
    #[schema(example = "uploads/logo.png")]
    pub key: String,
    #[serde(default)]
    pub position: WatermarkPosition,
    /// The image's width relative to the video's width; its height keeps its aspect.
    #[serde(default = "default_width")]
    #[schema(minimum = 0.01, maximum = 0.5, default = 0.1)]
    pub width: f64,
    /// Distance from the nearest edges, relative to the video's width (unused at `center`).
    #[serde(default = "default_margin")]
    #[schema(minimum = 0.0, maximum = 0.2, default = 0.02)]
    pub margin: f64,
    /// 0 (invisible) to 1 (as the image is).
    #[serde(default = "default_opacity")]
    #[schema(minimum = 0.0, maximum = 1.0, default = 1.0)]
    pub opacity: f64,
    /// Seconds into the source where it appears (default: from the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 86400.0)]
    pub start: Option<f64>,
    /// Seconds into the source where it disappears (default: to the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 86400.0)]
    pub end: Option<f64>,
    /// Seconds of the fade in after `start` and of the fade out before `end` (0: none).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 5.0, default = 0.0)]
    pub fade: f64,
}

fn default_width() -> f64 {
    0.1
}

fn default_margin() -> f64 {
    0.02
}

fn default_opacity() -> f64 {
    1.0
}

/// Where the image sits on the picture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WatermarkPosition {
    TopLeft,
    TopRight,
    BottomLeft,
    #[default]
    BottomRight,
    Center,
}

impl WatermarkSettings {
    /// A setting with the defaults, for `key`.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            position: WatermarkPosition::default(),
            width: default_width(),
            margin: default_margin(),
            opacity: default_opacity(),
            start: None,
            end: None,
            fade: 0.0,
        }
    }

    /// Checks the numbers (the key is checked with the job's other keys).
    pub fn validate(&self) -> Result<(), String> {
        let within = |v: f64, (lo, hi): (f64, f64)| v.is_finite() && v >= lo && v <= hi;
        let ranges = [
            ("width", self.width, WIDTH_RANGE),
            ("margin", self.margin, MARGIN_RANGE),
            ("opacity", self.opacity, OPACITY_RANGE),
            ("fade", self.fade, FADE_RANGE),
            ("start", self.start.unwrap_or(0.0), (0.0, MAX_SECONDS)),
            ("end", self.end.unwrap_or(MAX_SECONDS), (0.0, MAX_SECONDS)),
        ];
        for (name, value, (lo, hi)) in ranges {
            if !within(value, (lo, hi)) {
                return Err(format!("`watermark.{name}` must be between {lo} and {hi}, got {value}"));
            }
        }
        if let Some(end) = self.end {
            let start = self.start.unwrap_or(0.0);
            if end <= start {
                return Err("`watermark.end` must come after `watermark.start`".into());
            }
            if 2.0 * self.fade > end - start {
                return Err("`watermark.fade` in and out must fit between `start` and `end`".into());
            }
        }
        Ok(())
    }

    /// The watermark as drawn on `media`'s picture; `None` for a source without video.
    pub fn overlay(&self, media: &MediaInfo) -> Option<Overlay> {
        let (width, _) = media.display_dimensions()?;
        let pixels = |share: f64| (f64::from(width) * share).round();
        Some(Overlay {
            position: self.position,
            width: pixels(self.width).max(1.0) as u32,
            margin: pixels(self.margin) as u32,
            opacity: self.opacity,
            start: self.start,
            end: self.end,
            fade: self.fade,
            fade_out_at: self.end.or(media.duration_seconds).map(|end| (end - self.fade).max(0.0)),
        })
    }
}

/// Why an uploaded image cannot be a watermark (its text names no path).
pub fn check_image(image: &MediaInfo) -> Result<(u32, u32), String> {
    let Some(video) = &image.video else { return Err("the file holds no picture".into()) };
    let format_ok = image.format.split(',').any(|f| IMAGE_FORMATS.contains(&f));
    if !format_ok || !IMAGE_CODECS.contains(&video.codec.as_str()) {
        return Err(format!("the file is {} ({}), not a PNG, JPEG or WebP picture", image.format, video.codec));
    }
    if image.video_streams != 1 || image.audio_streams != 0 {
        return Err("the file holds more than one picture".into());
    }
    if video.width > MAX_IMAGE_SIDE || video.height > MAX_IMAGE_SIDE {
        return Err(format!(
            "the picture is {}x{}, larger than {MAX_IMAGE_SIDE} pixels a side",
            video.width, video.height
        ));
    }
    Ok((video.width, video.height))
}

/// A watermark as one job draws it: the setting, in pixels of its source's picture. A split
/// job's record carries it, so every segment draws exactly what the whole job would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overlay {
    pub position: WatermarkPosition,
    /// The image's width on the source's picture (its height follows its aspect).
    pub width: u32,
    /// Pixels from the nearest edges.
    pub margin: u32,
    pub opacity: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<f64>,
    pub fade: f64,
    /// Where the fade out starts: `fade` before `end`, or before the source's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fade_out_at: Option<f64>,
}

impl Overlay {
    /// The same watermark on a timeline `by` seconds later than the source's: a split job's
    /// pieces, which the split pass shifts by the source's decoding delay (B-frames) so that no
    /// timestamp is negative. Its times then fall on the same frames as in the whole job.
    pub fn shifted(&self, by: f64) -> Overlay {
        // A fade in from the title's start starts at its first frame, now at `by`.
        let start = self.start.or((self.fade > 0.0).then_some(0.0)).map(|s| s + by);
        Overlay { start, end: self.end.map(|e| e + by), fade_out_at: self.fade_out_at.map(|f| f + by), ..self.clone() }
    }

    /// The filter chains drawing the image (input pad `image`, e.g. `1:v:0`) over the picture
    /// `main` into the pad `out`; `from`: the source time of the command's first frame (0 for
    /// a whole job, a segment's start), where a fading picture's clock starts.
    pub fn filter(&self, main: &str, image: &str, out: &str, from: f64) -> String {
        let mut picture = format!("[{image}]trim=end_frame=1,scale=w={}:h=-1,format=rgba", self.width);
        if self.opacity < 1.0 {
            picture.push_str(&format!(",colorchannelmixer=aa={:.3}", self.opacity));
        }
        let fading = self.fade > 0.0;
        if fading {
            // The clock's tick at or before the first frame, so no frame lacks the picture.
            let first = (from.max(0.0) * f64::from(FADE_RATE)).floor() as u64;
            let fade = seconds(self.fade);
            picture.push_str(&format!(",loop=loop=-1:size=1,setpts=(N+{first})/{FADE_RATE}/TB"));
            picture.push_str(&format!(",fade=t=in:st={}:d={fade}:alpha=1", seconds(self.start.unwrap_or(0.0))));
            if let Some(at) = self.fade_out_at {
                picture.push_str(&format!(",fade=t=out:st={}:d={fade}:alpha=1", seconds(at)));
            }
        }
        let m = self.margin;
        let (x, y) = match self.position {
            WatermarkPosition::TopLeft => (format!("{m}"), format!("{m}")),
            WatermarkPosition::TopRight => (format!("main_w-overlay_w-{m}"), format!("{m}")),
            WatermarkPosition::BottomLeft => (format!("{m}"), format!("main_h-overlay_h-{m}")),
            WatermarkPosition::BottomRight => (format!("main_w-overlay_w-{m}"), format!("main_h-overlay_h-{m}")),
            WatermarkPosition::Center => ("(main_w-overlay_w)/2".into(), "(main_h-overlay_h)/2".into()),
        };
        let mut draw = format!("[{main}][wmimg]overlay=x={x}:y={y}");
        match (self.start, self.end) {
            (Some(s), Some(e)) => draw.push_str(&format!(":enable='between(t,{},{})'", seconds(s), seconds(e))),
            (Some(s), None) => draw.push_str(&format!(":enable='gte(t,{})'", seconds(s))),
            (None, Some(e)) => draw.push_str(&format!(":enable='lte(t,{})'", seconds(e))),
            (None, None) => {}
        }
        if fading {
            // The looped picture never ends: the title's end ends the overlay.
            draw.push_str(":shortest=1");
        }
        format!("{picture}[wmimg];{draw}[{out}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(width: u32, height: u32, rotation: i32) -> MediaInfo {
        let mut media = MediaInfo::sample(width, height, 60.0).without_audio();
        if let Some(video) = media.video.as_mut() {
            video.rotation = rotation;
        }
        media
    }

    fn image(format: &str, codec: &str, width: u32, height: u32) -> MediaInfo {
        MediaInfo { format: format.into(), duration_seconds: None, ..media(width, height, 0) }.with_codec(codec)
    }

    impl MediaInfo {
        fn with_codec(mut self, codec: &str) -> Self {
            if let Some(v) = self.video.as_mut() {
                v.codec = codec.into();
            }
            self
        }
    }

    #[test]
    fn settings_are_range_checked() {
        let parse = |json: &str| {
            serde_json::from_str::<WatermarkSettings>(json).map_err(|e| e.to_string()).and_then(|s| s.validate())
        };
        let accepted = [
            r#"{"key":"uploads/logo.png"}"#,
            r#"{"key":"k","position":"top_left","width":0.5,"margin":0,"opacity":0,"fade":5,"start":0,"end":10}"#,
            r#"{"key":"k","width":0.01,"margin":0.2,"opacity":1,"start":2.5}"#,
            r#"{"key":"k","end":1,"fade":0.5}"#,
        ];
        for json in accepted {
            assert_eq!(parse(json), Ok(()), "{json}");
        }
        let refused = [
            r#"{"key":"k","width":0.009}"#,
            r#"{"key":"k","width":0.51}"#,
            r#"{"key":"k","margin":-0.01}"#,
            r#"{"key":"k","margin":0.21}"#,
            r#"{"key":"k","opacity":1.01}"#,
            r#"{"key":"k","fade":5.5}"#,
            r#"{"key":"k","start":-1}"#,
            r#"{"key":"k","end":86401}"#,
            r#"{"key":"k","start":5,"end":5}"#,
            r#"{"key":"k","start":5,"end":6,"fade":0.6}"#,
            r#"{"key":"k","position":"middle"}"#,
            r#"{"key":"k","args":"-f lavfi"}"#,
            r#"{"key":"k","width":"0.1,scale=1"}"#,
        ];
        for json in refused {
            assert!(parse(json).is_err(), "{json}");
        }
        let defaults: WatermarkSettings = serde_json::from_str(r#"{"key":"k"}"#).unwrap();
        assert_eq!(defaults, WatermarkSettings::new("k"));
        assert_eq!(defaults.position, WatermarkPosition::BottomRight);
    }

    #[test]
    fn sizes_are_relative_to_the_displayed_width() {
        let settings = WatermarkSettings { width: 0.12, margin: 0.03, ..WatermarkSettings::new("k") };
        let landscape = settings.overlay(&media(1920, 1080, 0)).unwrap();
        assert_eq!((landscape.width, landscape.margin), (230, 58));
        // A phone video's picture is rotated before the overlay: its displayed width counts.
        let portrait = settings.overlay(&media(1920, 1080, 90)).unwrap();
        assert_eq!((portrait.width, portrait.margin), (130, 32));
        assert_eq!(landscape.fade_out_at, Some(60.0));
        let audio_only = MediaInfo { video: None, ..media(0, 0, 0) };
        assert_eq!(settings.overlay(&audio_only), None);
    }

    #[test]
    fn the_filter_text_is_exact() {
        let at = |settings: WatermarkSettings, from: f64| {
            settings.overlay(&media(640, 360, 0)).unwrap().filter("0:v:0", "1:v:0", "wm", from)
        };
        let cases = [
            (
                WatermarkSettings::new("k"),
                0.0,
                "[1:v:0]trim=end_frame=1,scale=w=64:h=-1,format=rgba[wmimg];\
                 [0:v:0][wmimg]overlay=x=main_w-overlay_w-13:y=main_h-overlay_h-13[wm]",
            ),
            (
                WatermarkSettings {
                    position: WatermarkPosition::TopLeft,
                    opacity: 0.6,
                    start: Some(2.0),
                    end: Some(30.0),
                    ..WatermarkSettings::new("k")
                },
                0.0,
                "[1:v:0]trim=end_frame=1,scale=w=64:h=-1,format=rgba,colorchannelmixer=aa=0.600[wmimg];\
                 [0:v:0][wmimg]overlay=x=13:y=13:enable='between(t,2.000,30.000)'[wm]",
            ),
            (
                WatermarkSettings {
                    position: WatermarkPosition::Center,
                    width: 0.25,
                    start: Some(1.0),
                    end: Some(3.0),
                    fade: 0.5,
                    ..WatermarkSettings::new("k")
                },
                12.34,
                "[1:v:0]trim=end_frame=1,scale=w=160:h=-1,format=rgba,loop=loop=-1:size=1,setpts=(N+370)/30/TB,\
                 fade=t=in:st=1.000:d=0.500:alpha=1,fade=t=out:st=2.500:d=0.500:alpha=1[wmimg];\
                 [0:v:0][wmimg]overlay=x=(main_w-overlay_w)/2:y=(main_h-overlay_h)/2:\
                 enable='between(t,1.000,3.000)':shortest=1[wm]",
            ),
            (
                WatermarkSettings {
                    position: WatermarkPosition::BottomLeft,
                    start: Some(4.0),
                    fade: 1.0,
                    ..WatermarkSettings::new("k")
                },
                0.0,
                "[1:v:0]trim=end_frame=1,scale=w=64:h=-1,format=rgba,loop=loop=-1:size=1,setpts=(N+0)/30/TB,\
                 fade=t=in:st=4.000:d=1.000:alpha=1,fade=t=out:st=59.000:d=1.000:alpha=1[wmimg];\
                 [0:v:0][wmimg]overlay=x=13:y=main_h-overlay_h-13:enable='gte(t,4.000)':shortest=1[wm]",
            ),
            (
                WatermarkSettings {
                    position: WatermarkPosition::TopRight,
                    end: Some(9.0),
                    ..WatermarkSettings::new("k")
                },
                0.0,
                "[1:v:0]trim=end_frame=1,scale=w=64:h=-1,format=rgba[wmimg];\
                 [0:v:0][wmimg]overlay=x=main_w-overlay_w-13:y=13:enable='lte(t,9.000)'[wm]",
            ),
        ];
        for (settings, from, expected) in cases {
            assert_eq!(at(settings, from), expected);
        }
    }

    #[test]
    fn only_one_small_still_picture_is_accepted() {
        assert_eq!(check_image(&image("png_pipe", "png", 200, 100)), Ok((200, 100)));
        assert!(check_image(&image("jpeg_pipe", "mjpeg", 4096, 4096)).is_ok());
        assert!(check_image(&image("webp_pipe", "webp", 64, 64)).is_ok());
        assert!(check_image(&image("image2", "png", 64, 64)).is_ok());
        let refused = [
            image("gif", "gif", 64, 64),
            image("apng", "apng", 64, 64),
            image("png_pipe", "png", 4097, 10),
            image("png_pipe", "png", 10, 4097),
            image("mov,mp4,m4a,3gp,3g2,mj2", "h264", 64, 64),
            MediaInfo { video_streams: 2, ..image("png_pipe", "png", 64, 64) },
            MediaInfo { audio_streams: 1, ..image("png_pipe", "png", 64, 64) },
            MediaInfo { video: None, ..image("png_pipe", "png", 64, 64) },
        ];
        for info in refused {
            let err = check_image(&info).unwrap_err();
            assert!(!err.contains('/'), "{err}");
        }
    }

    #[test]
    fn a_shifted_overlay_moves_every_time() {
        let mut settings = WatermarkSettings::new("uploads/logo.png");
        settings.start = Some(3.0);
        settings.end = Some(9.0);
        settings.fade = 1.0;
        let overlay = settings.overlay(&media(1280, 720, 0)).unwrap();
        let shifted = overlay.shifted(0.08);
        assert_eq!((shifted.start, shifted.end, shifted.fade_out_at), (Some(3.08), Some(9.08), Some(8.08)));
        assert_eq!((shifted.width, shifted.fade), (overlay.width, overlay.fade));
        // A fade in from the title's start starts at the shifted first frame.
        let from_start = WatermarkSettings { start: None, end: None, ..settings };
        let shifted = from_start.overlay(&media(1280, 720, 0)).unwrap().shifted(0.08);
        assert_eq!(shifted.start, Some(0.08));
        assert_eq!(overlay.shifted(0.0), overlay);
    }
}
