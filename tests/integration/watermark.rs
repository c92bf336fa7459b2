//! The job's image watermark through the worker, checked on the pixels: a flat grey source
//! (960x540) and a solid red PNG (100x50), drawn at 25 % of the width with a 5 % margin at
//! 60 % opacity from 3 s to 9 s with 1 s fades. Frames of the MP4 and of the HLS ladder's
//! 360p rung are decoded to RGB: the box lies where position, width and margin put it (within
//! 2 px, at the rung's scale), its colour is the 60 % blend, every other pixel is the grey,
//! nothing is drawn before `start` or after `end`, and the fades are part-way through. A split
//! job (2 s segments) draws the same thing at the same instants; an image that is no single
//! still picture fails its job with `invalid_watermark`. Local backend.

use std::path::{Path, PathBuf};
use std::process::Command;

use media_worker::domain::job::{JobMessage, JobSpec, OutputRequest};
use media_worker::domain::keys::KeyLayout;
use media_worker::domain::preset::Preset;
use media_worker::domain::split::SplitRequest;
use media_worker::domain::status::{JobState, JobStatus};
use media_worker::domain::watermark::WatermarkSettings;
use media_worker::queue::SendOptions;
use serde_json::json;

use crate::media::ffmpeg;
use crate::require;
use crate::support::{Deployment, Kind, emulator, media_tools};

/// Upload events make their own jobs of the deployment's default presets: a thumbnail only.
const CHEAP_DEFAULTS: (&str, &str) = ("MEDIA_DEFAULT_PRESETS", "thumbnail");
/// The source's grey, and the image's red, in RGB.
const GREY: f64 = 128.0;
const RED: [f64; 3] = [255.0, 0.0, 0.0];
const OPACITY: f64 = 0.6;

/// The watermark of every job here.
fn settings(key: &str) -> WatermarkSettings {
    serde_json::from_value(json!({
        "key": key, "position": "bottom_right", "width": 0.25, "margin": 0.05,
        "opacity": OPACITY, "start": 3.0, "end": 9.0, "fade": 1.0
    }))
    .expect("settings")
}

/// 12 s of flat grey at 960x540, 25 fps, a keyframe every second (so a split job can cut it).
fn grey_source(dir: &Path) -> PathBuf {
    let out = dir.join("grey.mp4");
    let source = "color=c=0x808080:s=960x540:r=25:d=12";
    ffmpeg(
        &["-f", "lavfi", "-i", source, "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p"],
        &out,
    );
    out
}

/// A solid red 100x50 PNG, and a two-frame GIF.
fn images(dir: &Path) -> (PathBuf, PathBuf) {
    let png = dir.join("logo.png");
    ffmpeg(&["-f", "lavfi", "-i", "color=c=red:s=100x50,format=rgba", "-frames:v", "1"], &png);
    let gif = dir.join("anim.gif");
    ffmpeg(&["-f", "lavfi", "-i", "testsrc=s=64x32:r=2:d=1", "-frames:v", "2"], &gif);
    (png, gif)
}

async fn submit(d: &Deployment, key: &str, id: &str, presets: &[Preset], image: &str, split: Option<SplitRequest>) {
    let layout = KeyLayout::new("uploads/", "outputs/").expect("layout");
    let job = JobSpec {
        output_dir: layout.job_dir(key, id),
        job_id: id.into(),
        source_key: key.into(),
        outputs: presets.iter().map(|p| OutputRequest::new(*p)).collect(),
        source: Default::default(),
        notify: None,
        split,
        import: None,
        qc: None,
        loudness: None,
        repackage: None,
        watermark: Some(Box::new(settings(image))),
    };
    job.validate().expect("a valid job");
    d.queues().ready.send(&JobMessage::new(job, 1).to_json(), SendOptions::default()).await.expect("send");
}

async fn status(d: &Deployment, id: &str) -> JobStatus {
    d.store().read(id).await.expect("read").unwrap_or_else(|| panic!("{id}: no status"))
}

/// The key of `file` among the outputs of completed job `id`.
async fn output(d: &Deployment, id: &str, file: &str) -> String {
    let status = status(d, id).await;
    assert_eq!(status.state, JobState::Completed, "{status:#?}");
    format!("{}attempt-{}/{file}", status.job.output_dir, status.attempt)
}

/// One decoded frame in RGB.
struct Frame {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Frame {
    /// The first frame at or after `t` seconds of `file`, `width` x `height`.
    fn at(file: &Path, t: f64, (width, height): (usize, usize)) -> Frame {
        let output = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-ss", &format!("{t:.3}"), "-i"])
            .arg(file)
            .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
            .output()
            .expect("ffmpeg");
        assert!(output.status.success(), "decoding {} at {t}", file.display());
        assert_eq!(output.stdout.len(), width * height * 3, "{} at {t}: not {width}x{height}", file.display());
        Frame { width, height, rgb: output.stdout }
    }

    fn pixel(&self, x: usize, y: usize) -> [f64; 3] {
        let i = (y * self.width + x) * 3;
        [f64::from(self.rgb[i]), f64::from(self.rgb[i + 1]), f64::from(self.rgb[i + 2])]
    }

    /// The bounding box (x0, y0, x1, y1, inclusive) of the pixels whose red is at least
    /// halfway from the grey to `red`; `None` when there are none.
    fn red_box(&self, red: f64) -> Option<(usize, usize, usize, usize)> {
        let threshold = (GREY + red) / 2.0;
        let mut found: Option<(usize, usize, usize, usize)> = None;
        for y in 0..self.height {
            for x in 0..self.width {
                if self.pixel(x, y)[0] >= threshold {
                    found = Some(match found {
                        None => (x, y, x, y),
                        Some((a, b, c, d)) => (a.min(x), b.min(y), c.max(x), d.max(y)),
                    });
                }
            }
        }
        found
    }

    /// The largest difference from the grey of any channel of any pixel farther than `pad`
    /// pixels from `area` (x0, y0, x1, y1).
    fn outside(&self, area: (usize, usize, usize, usize), pad: usize) -> f64 {
        let (x0, y0, x1, y1) = area;
        let mut worst: f64 = 0.0;
        for y in 0..self.height {
            for x in 0..self.width {
                let near = x + pad >= x0 && x <= x1 + pad && y + pad >= y0 && y <= y1 + pad;
                if !near {
                    worst = self.pixel(x, y).iter().fold(worst, |w, c| w.max((c - GREY).abs()));
                }
            }
        }
        worst
    }
}

/// The colour `alpha` of the red over the grey gives.
fn blend(alpha: f64) -> [f64; 3] {
    [0, 1, 2].map(|c| RED[c] * alpha + GREY * (1.0 - alpha))
}

/// The box at `scale` of the source (960x540): 240x120 at a 48 px margin, bottom right.
fn expected_box(scale: f64) -> (f64, f64, f64, f64) {
    let (w, h, m) = (240.0 * scale, 120.0 * scale, 48.0 * scale);
    let (vw, vh) = (960.0 * scale, 540.0 * scale);
    (vw - w - m, vh - h - m, vw - m - 1.0, vh - m - 1.0)
}

/// The red at the box's centre of `file` at `t`.
fn centre_red(file: &Path, t: f64, size: (usize, usize), scale: f64) -> f64 {
    let (x0, y0, x1, y1) = expected_box(scale);
    Frame::at(file, t, size).pixel(((x0 + x1) / 2.0) as usize, ((y0 + y1) / 2.0) as usize)[0]
}

/// The red at the box's centre of every frame of a 960x540 `file`.
fn centre_series(file: &Path) -> Vec<u8> {
    let (x0, y0, x1, y1) = expected_box(1.0);
    let crop = format!("crop=2:2:{}:{}", ((x0 + x1) / 2.0) as u32, ((y0 + y1) / 2.0) as u32);
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(file)
        .args(["-vf", &crop, "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
        .output()
        .expect("ffmpeg");
    assert!(output.status.success(), "decoding {}", file.display());
    output.stdout.chunks(12).map(|frame| frame[0]).collect()
}

/// Every check of one output, `size` pixels at `scale` of the source.
fn assert_watermarked(what: &str, file: &Path, size: (usize, usize), scale: f64) {
    let full = Frame::at(file, 6.0, size);
    let found = full.red_box(blend(OPACITY)[0]).unwrap_or_else(|| panic!("{what}: no watermark at 6 s"));
    let want = expected_box(scale);
    eprintln!("{what}: box {found:?}, expected {want:?}");
    let near = |a: usize, b: f64| (a as f64 - b).abs() <= 2.0;
    assert!(
        near(found.0, want.0) && near(found.1, want.1) && near(found.2, want.2) && near(found.3, want.3),
        "{what}: box {found:?}, expected {want:?}"
    );
    let centre = full.pixel((found.0 + found.2) / 2, (found.1 + found.3) / 2);
    let expected = blend(OPACITY);
    eprintln!("{what}: colour {centre:?}, expected {expected:?}");
    for c in 0..3 {
        assert!((centre[c] - expected[c]).abs() <= 6.0, "{what}: colour {centre:?}, expected {expected:?}");
    }
    let stray = full.outside(found, 4);
    assert!(stray <= 4.0, "{what}: a pixel outside the box differs from the grey by {stray}");
    for t in [1.0, 2.8, 9.3, 11.0] {
        let frame = Frame::at(file, t, size);
        assert_eq!(frame.red_box(blend(OPACITY)[0]), None, "{what}: watermark at {t} s");
        let stray = frame.outside((0, 0, 0, 0), 0);
        assert!(stray <= 4.0, "{what}: a pixel at {t} s differs from the grey by {stray}");
    }
    // Half-way through each fade: clearly drawn, clearly not at full opacity.
    for t in [3.5, 8.5] {
        let red = centre_red(file, t, size, scale);
        eprintln!("{what}: red {red} at {t} s");
        assert!(red > GREY + 15.0 && red < expected[0] - 15.0, "{what}: red {red} at {t} s is no fade");
    }
}

/// The MP4 and the 360p HLS rung of a whole job carry the box where the setting puts it, at
/// its opacity, inside its window, fading in and out.
async fn drawn_where_and_when_asked(kind: Kind) {
    require!(media_tools(), kind == Kind::Local || emulator());
    let d = Deployment::new(kind).await;
    let source = grey_source(d.dir.path());
    let (png, _) = images(d.dir.path());
    d.upload("uploads/wm/grey.mp4", &source).await;
    d.upload("uploads/wm/logo.png", &png).await;
    submit(&d, "uploads/wm/grey.mp4", "wm-whole", &[Preset::Mp4H264, Preset::Hls], "uploads/wm/logo.png", None).await;
    d.drain_with(&[CHEAP_DEFAULTS]).await;

    let mp4 = d.download(&output(&d, "wm-whole", "mp4-h264.mp4").await).await;
    assert_watermarked("mp4", &mp4, (960, 540), 1.0);
    let rung = d.download_folder(&output(&d, "wm-whole", "hls/360p/").await, "wm-hls").await;
    assert_watermarked("hls 360p", &rung.join("index.m3u8"), (640, 360), 2.0 / 3.0);
}

// On both backends: the image is read from the store (pinned to the checked write).
crate::on_both_backends!(drawn_where_and_when_asked);

/// A split job's segments draw the watermark in source time: the stitched MP4 matches the
/// whole job's frame for frame at the box's centre, across segment joins and both fades.
#[tokio::test]
async fn a_split_job_draws_the_same_watermark_at_the_same_instants() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let source = grey_source(d.dir.path());
    let (png, _) = images(d.dir.path());
    d.upload("uploads/wm/grey.mp4", &source).await;
    d.upload("uploads/wm/logo.png", &png).await;
    let split = SplitRequest { enabled: true, segment_duration: Some(2.0) };
    submit(&d, "uploads/wm/grey.mp4", "wm-split", &[Preset::Mp4H264], "uploads/wm/logo.png", Some(split)).await;
    let off = SplitRequest { enabled: false, segment_duration: None };
    submit(&d, "uploads/wm/grey.mp4", "wm-unsplit", &[Preset::Mp4H264], "uploads/wm/logo.png", Some(off)).await;
    d.drain_with(&[("MEDIA_SPLIT_MIN_DURATION", "10s"), CHEAP_DEFAULTS]).await;

    let manifest = d.json(status(&d, "wm-split").await.manifest_key.as_deref().expect("manifest")).await;
    let segments = manifest["split"]["segments"].as_u64().unwrap_or(0);
    assert!(segments >= 4, "not split: {manifest:#}");
    let split = d.download(&output(&d, "wm-split", "mp4-h264.mp4").await).await;
    let whole = d.download(&output(&d, "wm-unsplit", "mp4-h264.mp4").await).await;
    assert_watermarked("split mp4", &split, (960, 540), 1.0);
    // Frame by frame (the stitched file's timeline starts where its segments' did), across
    // segment joins and both fades.
    let (split, whole) = (centre_series(&split), centre_series(&whole));
    assert_eq!(split.len(), whole.len(), "frames: split {}, whole {}", split.len(), whole.len());
    assert_eq!(split.len(), 300);
    for (n, (a, b)) in split.iter().zip(&whole).enumerate() {
        assert!(a.abs_diff(*b) <= 4, "frame {n}: red {a} split, {b} whole");
    }
}

/// A text file named `.png` and a two-frame GIF fail their jobs, permanently, with
/// `invalid_watermark`, and the status names no path.
#[tokio::test]
async fn an_image_that_is_no_single_picture_fails_the_job() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let source = grey_source(d.dir.path());
    let (_, gif) = images(d.dir.path());
    let text = d.dir.path().join("notes.png");
    std::fs::write(&text, "not a picture\n").unwrap();
    d.upload("uploads/bad/grey.mp4", &source).await;
    d.upload("uploads/bad/notes.png", &text).await;
    d.upload("uploads/bad/anim.gif", &gif).await;
    submit(&d, "uploads/bad/grey.mp4", "wm-text", &[Preset::Mp4H264_480], "uploads/bad/notes.png", None).await;
    submit(&d, "uploads/bad/grey.mp4", "wm-gif", &[Preset::Mp4H264_480], "uploads/bad/anim.gif", None).await;
    submit(&d, "uploads/bad/grey.mp4", "wm-none", &[Preset::Mp4H264_480], "uploads/bad/missing.png", None).await;
    d.drain_with(&[CHEAP_DEFAULTS]).await;
    for id in ["wm-text", "wm-gif", "wm-none"] {
        let status = status(&d, id).await;
        assert_eq!(status.state, JobState::Failed, "{id}: {status:#?}");
        let error = status.error.as_ref().expect("an error");
        assert_eq!(error.code, "invalid_watermark", "{id}: {error:?}");
        let text = serde_json::to_string(error).unwrap();
        assert!(!text.contains("uploads/") && !text.contains("/tmp"), "{id}: {text}");
    }
}
