//! The probe encodes of the per-title analysis: one window of the source, decoded once and
//! encoded into every rung still searched, each at its own CRF with the rung's final settings
//! (scale, x264 preset, rate cap, keyframe clock), so a probe predicts the ladder's encode.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::domain::args::{KEYFRAME_INTERVAL, fan_out, finish_block, seconds, source_frame_times, strings, x264};
use crate::domain::per_title::Window;

/// One rung of a probe: its short side, the CRF tried, its rate cap (kb/s), and its file.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRung {
    pub height: u32,
    pub crf: u32,
    pub cap_kbps: u32,
    pub file: PathBuf,
}

/// How much of the source a probe encodes before its window, and throws away: x264's first
/// group of pictures in a stream comes out worse than the same pictures inside a longer encode
/// (its rate control starts cold), so a probe that starts at its window under-predicts the
/// ladder. On the screen recording of the test set, 1 s windows at CRF 31 scored 96.1 to 96.6
/// alone and 98.7 to 99.1 inside the whole encode; after a lead-in of 0.25 s, with a keyframe at
/// the window as before, 98.5 to 98.7 (docs/quality.md). A quarter of a 1 s window's encode.
pub const LEAD_IN_SECONDS: f64 = 0.25;

/// The lead-in of a probe of `window`: [`LEAD_IN_SECONDS`], or less where the source starts
/// sooner before the window.
pub fn lead_in(window: &Window) -> f64 {
    window.start.clamp(0.0, LEAD_IN_SECONDS)
}

/// Where the window starts in a probe of it, in the probe's own time (its lead-in), a few
/// milliseconds early: the window's first frame may be timed a hair before it. The probe's
/// keyframe is forced from here, and its scores and packets count from here.
pub fn window_start_in_probe(window: &Window) -> f64 {
    (lead_in(window) - 0.005).max(0.0)
}

/// The part of the input a probe of `window` reads: its lead-in, then the window.
fn with_lead_in(window: &Window) -> [String; 4] {
    let lead = lead_in(window);
    ["-ss".into(), seconds(window.start - lead), "-t".into(), seconds(lead + window.duration)]
}

/// ffmpeg's argv (without the program name) encoding `window` of `source`, after its lead-in
/// ([`lead_in`]), into each rung's file, video only, as MP4. Keyframes are forced at the
/// window's start and every keyframe interval after it, as the window would start a segment.
pub fn probe_args(source: &Path, window: &Window, rungs: &[ProbeRung]) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file"]);
    args.extend(with_lead_in(window).map(OsString::from));
    args.push("-i".into());
    args.push(source.as_os_str().to_owned());
    let first_key = window_start_in_probe(window);
    let caps: Vec<Option<u32>> = rungs.iter().map(|r| Some(r.height)).collect();
    args.extend(strings(&["-filter_complex", &fan_out("0:v:0", &caps, "ps", "pv")]));
    for (i, rung) in rungs.iter().enumerate() {
        let mut block = strings(&["-map", &format!("[pv{i}]"), "-an", "-sn", "-dn", "-map_metadata", "-1"]);
        block.extend(x264(rung.crf, rung.cap_kbps));
        // Every decoded frame, as the ladder's rungs keep them, or the probe's frames would no
        // longer pair with the source's.
        block.extend(source_frame_times());
        let keys = format!("expr:gte(t,{first_key:.3}+n_forced*{KEYFRAME_INTERVAL})");
        block.extend(strings(&["-force_key_frames", &keys]));
        block.extend(strings(&["-f", "mp4"]));
        args.extend(finish_block(block, rung.file.clone().into_os_string()));
    }
    args
}

/// The pixel formats x264 encodes as they are: a window of a source in one of them can be
/// copied losslessly ([`window_copy_args`]); any other would be converted on the way.
pub const LOSSLESS_COPY_FORMATS: &[&str] = &[
    "yuv420p",
    "yuvj420p",
    "yuv422p",
    "yuvj422p",
    "yuv444p",
    "yuvj444p",
    "nv12",
    "nv16",
    "nv21",
    "yuv420p10le",
    "yuv422p10le",
    "yuv444p10le",
    "nv20le",
    "gray",
    "gray10le",
];

/// Whether a source of pixel format `pix_fmt` (ffprobe's name) can be copied losslessly.
pub fn copies_losslessly(pix_fmt: Option<&str>) -> bool {
    pix_fmt.is_some_and(|f| LOSSLESS_COPY_FORMATS.contains(&f))
}

/// ffmpeg's argv (without the program name) copying `window` of `source`'s first video stream
/// into `file` losslessly (x264 at QP 0, its fastest preset, every frame with its time): the
/// probes of every round and their scoring read the copy instead of seeking into the source,
/// which decodes from the keyframe before the window each time (up to a whole long GOP).
pub fn window_copy_args(source: &Path, window: &Window, file: &Path) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file"]);
    args.extend(with_lead_in(window).map(OsString::from));
    args.push("-i".into());
    args.push(source.as_os_str().to_owned());
    args.extend(strings(&["-map", "0:v:0", "-an", "-sn", "-dn", "-map_metadata", "-1"]));
    args.extend(strings(&["-c:v", "libx264", "-preset", "ultrafast", "-qp", "0"]));
    args.extend(source_frame_times());
    args.extend(strings(&["-f", "mp4"]));
    args.push(file.as_os_str().to_owned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_decode_feeds_every_rung_at_its_own_crf() {
        let rungs = [
            ProbeRung { height: 720, crf: 27, cap_kbps: 2800, file: "/s/p-720.mp4".into() },
            ProbeRung { height: 360, crf: 23, cap_kbps: 800, file: "/s/p-360.mp4".into() },
        ];
        let args = probe_args(Path::new("/s/source.mov"), &Window { start: 12.5, duration: 2.0 }, &rungs);
        let text: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let line = text.join(" ");
        assert!(
            line.starts_with("-hide_banner -nostdin -y -protocol_whitelist file -ss 12.250 -t 2.250 -i /s/source.mov"),
            "a lead-in of 0.25 s: {line}"
        );
        assert!(line.contains("-force_key_frames expr:gte(t,0.245+n_forced*2)"), "{line}");
        assert_eq!(text.iter().filter(|a| *a == "-i").count(), 1, "one decode");
        assert!(line.contains("-map [pv0] -an -sn -dn -map_metadata -1 -c:v libx264 -preset fast"));
        assert!(line.contains("-crf 27 -maxrate 2800k -bufsize 5600k"));
        assert!(line.contains("-crf 23 -maxrate 800k -bufsize 1600k -fps_mode vfr -enc_time_base:v 1/90000"));
        assert!(line.ends_with("-f mp4 /s/p-360.mp4"));
    }

    #[test]
    fn a_window_is_copied_losslessly_in_the_formats_x264_keeps() {
        let window = Window { start: 12.5, duration: 1.0 };
        let args = window_copy_args(Path::new("/s/source.mov"), &window, Path::new("/s/w0.mp4"));
        let line: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            line.join(" "),
            "-hide_banner -nostdin -y -protocol_whitelist file -ss 12.250 -t 1.250 -i /s/source.mov -map 0:v:0 \
             -an -sn -dn -map_metadata -1 -c:v libx264 -preset ultrafast -qp 0 -fps_mode vfr -enc_time_base:v 1/90000 -f mp4 /s/w0.mp4"
        );
        assert!(copies_losslessly(Some("yuv420p")) && copies_losslessly(Some("yuv422p10le")));
        assert!(!copies_losslessly(Some("rgb24")) && !copies_losslessly(Some("yuv420p12le")));
        assert!(!copies_losslessly(None));
    }

    #[test]
    fn the_lead_in_is_what_the_source_has_before_the_window() {
        assert_eq!(lead_in(&Window { start: 12.5, duration: 1.0 }), LEAD_IN_SECONDS);
        assert_eq!(lead_in(&Window { start: 0.1, duration: 1.0 }), 0.1);
        let rungs = [ProbeRung { height: 360, crf: 23, cap_kbps: 800, file: "/s/p.mp4".into() }];
        let args = probe_args(Path::new("/s/w0.mp4"), &Window { start: 0.0, duration: 3.4 }, &rungs);
        let line = args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
        assert!(line.contains("-ss 0.000 -t 3.400 -i /s/w0.mp4"), "{line}");
        assert!(line.contains("-force_key_frames expr:gte(t,0.000+n_forced*2)"), "{line}");
    }
}
