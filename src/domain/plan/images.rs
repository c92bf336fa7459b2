//! The picture outputs' filters: the storyboard (a sprite sheet of thumbnails and the WebVTT
//! cues that point into it) and the GIF.

use crate::domain::args::seconds;
use crate::domain::job::OutputRequest;
use crate::domain::probe::MediaInfo;

/// Storyboard thumbnails: width in pixels, at most this many per sprite sheet, ten per row.
const STORYBOARD_WIDTH: u32 = 160;
const STORYBOARD_MAX_THUMBS: u32 = 100;
const STORYBOARD_COLUMNS: u32 = 10;

/// The sprite sheet filter and its WebVTT cues.
pub(super) fn storyboard(media: &MediaInfo) -> (String, String) {
    let duration = media.duration_seconds.unwrap_or(1.0).max(0.1);
    let interval = (duration / f64::from(STORYBOARD_MAX_THUMBS)).ceil().max(1.0);
    let count = ((duration / interval).ceil() as u32).clamp(1, STORYBOARD_MAX_THUMBS);
    let columns = count.min(STORYBOARD_COLUMNS);
    let rows = count.div_ceil(columns);
    let (w, h) = media.display_dimensions().unwrap_or((16, 9));
    let height = ((f64::from(STORYBOARD_WIDTH) * f64::from(h) / f64::from(w.max(1)) / 2.0).round() as u32 * 2).max(2);
    let filter = format!(
        "fps=1/{},scale={STORYBOARD_WIDTH}:{height},tile={columns}x{rows}",
        seconds(interval).trim_end_matches('0').trim_end_matches('.')
    );
    let mut vtt = String::from("WEBVTT\n\n");
    for i in 0..count {
        let start = f64::from(i) * interval;
        let end = (start + interval).min(duration);
        let (x, y) = ((i % columns) * STORYBOARD_WIDTH, (i / columns) * height);
        vtt.push_str(&format!(
            "{} --> {}\nstoryboard.jpg#xywh={x},{y},{STORYBOARD_WIDTH},{height}\n\n",
            vtt_time(start),
            vtt_time(end)
        ));
    }
    (filter, vtt)
}

fn vtt_time(seconds: f64) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// The GIF's filter: its clip (from `start`, 1 to 3 s unless `duration` says), at 12 fps and at
/// most 480 px wide, with a palette made for it.
pub(super) fn gif_filter(output: &OutputRequest, media: &MediaInfo) -> String {
    let duration = media.duration_seconds.unwrap_or(0.0);
    let start = output.start.unwrap_or(0.0);
    let length = output.duration.unwrap_or_else(|| (duration - start).clamp(1.0, 3.0));
    format!(
        "trim=start={}:duration={},setpts=PTS-STARTPTS,fps=12,scale=w='min(iw,480)':h=-2:flags=lanczos,\
         split[g0][g1];[g0]palettegen=stats_mode=diff[gp];[g1][gp]paletteuse=dither=bayer",
        seconds(start),
        seconds(length)
    )
}
