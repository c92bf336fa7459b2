//! Scoring real footage with real ffmpeg: the clips and the oracle come from [`super::clips`].

use std::path::{Path, PathBuf};
use std::process::Command;

use super::clips::{clip, media_tools, oracle_ffmpeg};
use super::decoder::{MAX_LINE, decoder_args, read_log};
use super::packets::parse_packet;
use super::*;
use crate::domain::quality::{bitrate, per_second, summarise};

/// Encodes `source` into `out` with libx264 at `crf` (every frame kept with its time, as the
/// worker's MP4 presets do), with `extra` options before the codec's (a window, a scaler).
/// The `ultrafast` preset keeps the tests short; what scoring costs against the worker's own
/// encodes is `scripts/bench-quality`'s to measure.
fn encode(source: &Path, out: &Path, crf: u32, extra: &[&str]) -> PathBuf {
    let mut command = Command::new("ffmpeg");
    command.args(["-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-i"]).arg(source);
    command.args(["-map", "0:v:0"]).args(extra);
    command.args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-crf", &crf.to_string()]);
    command.args(["-fps_mode", "vfr", "-f", "mp4"]).arg(out);
    let output = command.output().unwrap();
    assert!(output.status.success(), "encode failed: {}", String::from_utf8_lossy(&output.stderr));
    out.to_path_buf()
}

fn request(reference: &Path, distorted: &Path, width: u32, height: u32, subsample: u32) -> ScoreRequest {
    ScoreRequest { subsample, ..ScoreRequest::new(reference, distorted, width, height) }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The first 2 s of a clip: short tests on real pictures.
const FIRST_SECONDS: Option<Window> = Some(Window { start: 0.0, duration: Some(2.0) });

/// A request scoring `distorted` against the first 2 s of `reference`.
fn against_first_seconds(reference: &Path, distorted: &Path, width: u32, height: u32, subsample: u32) -> ScoreRequest {
    ScoreRequest { reference_window: FIRST_SECONDS, ..request(reference, distorted, width, height, subsample) }
}

#[tokio::test]
async fn identical_inputs_score_at_the_top() {
    let (true, Some(bunny)) = (media_tools(), clip("bigbuckbunny.mp4")) else { return };
    let mut same = against_first_seconds(&bunny, &bunny, 1280, 720, 1);
    same.distorted_window = FIRST_SECONDS;
    let scores = score(&same).await.unwrap();
    assert_eq!((scores.frames_reference, scores.frames_distorted, scores.vmaf.len()), (50, 50, 50));
    // VMAF v0.6.1 gives identical pictures 100, less where there is little motion (97.4 at the
    // first frame, whose motion is 0): ffmpeg's libvmaf gives the same.
    assert!(mean(&scores.vmaf) >= 99.0, "identical pictures: {:?}", scores.vmaf);
    assert!(scores.vmaf.iter().all(|&v| v >= 97.0), "identical pictures: {:?}", scores.vmaf);
    assert!(scores.psnr_y.iter().all(|&p| p == 60.0), "libvmaf's cap for identical 8-bit pictures");
    assert!(scores.ssim.iter().all(|&s| (s - 1.0).abs() < 1e-9));
    assert_eq!(scores.times[..3], [0.0, 0.04, 0.08], "25 fps");
    assert_eq!((scores.model.as_str(), scores.width, scores.height), ("vmaf_v0.6.1", 1280, 720));
}

#[tokio::test]
async fn heavier_compression_scores_clearly_lower() {
    let (true, Some(bunny)) = (media_tools(), clip("bigbuckbunny.mp4")) else { return };
    let dir = tempfile::tempdir().unwrap();
    let good = encode(&bunny, &dir.path().join("crf23.mp4"), 23, &["-t", "2"]);
    let bad = encode(&bunny, &dir.path().join("crf45.mp4"), 45, &["-t", "2"]);
    let good = score(&against_first_seconds(&bunny, &good, 1280, 720, DEFAULT_SUBSAMPLE)).await.unwrap();
    let bad = score(&against_first_seconds(&bunny, &bad, 1280, 720, DEFAULT_SUBSAMPLE)).await.unwrap();
    let (good_vmaf, bad_vmaf) = (mean(&good.vmaf), mean(&bad.vmaf));
    eprintln!(
        "CRF 23: VMAF {good_vmaf:.2}, PSNR {:.2}; CRF 45: VMAF {bad_vmaf:.2}, PSNR {:.2}",
        mean(&good.psnr_y),
        mean(&bad.psnr_y)
    );
    assert!(good_vmaf > 85.0 && bad_vmaf < good_vmaf - 20.0, "CRF 23 {good_vmaf:.2}, CRF 45 {bad_vmaf:.2}");
    assert!(mean(&bad.psnr_y) < mean(&good.psnr_y) - 5.0);
    assert!(mean(&bad.ssim) < mean(&good.ssim));
    assert_eq!(good.vmaf.len(), 8, "every seventh of 50 frames: 0, 7, ..., 49");
    assert_eq!(good.subsample, DEFAULT_SUBSAMPLE);
}

#[tokio::test]
async fn a_small_rung_is_scored_upscaled_at_the_scoring_size() {
    let (true, Some(bunny)) = (media_tools(), clip("bigbuckbunny.mp4")) else { return };
    let dir = tempfile::tempdir().unwrap();
    let full = encode(&bunny, &dir.path().join("720.mp4"), 23, &["-t", "2"]);
    let small = encode(&bunny, &dir.path().join("360.mp4"), 23, &["-t", "2", "-vf", "scale=-2:360"]);
    let full = score(&against_first_seconds(&bunny, &full, 1280, 720, DEFAULT_SUBSAMPLE)).await.unwrap();
    let small = score(&against_first_seconds(&bunny, &small, 1280, 720, DEFAULT_SUBSAMPLE)).await.unwrap();
    let (full_vmaf, small_vmaf) = (mean(&full.vmaf), mean(&small.vmaf));
    eprintln!("720p: {full_vmaf:.2}, 360p upscaled to 720p: {small_vmaf:.2}");
    assert!(small_vmaf > 30.0 && small_vmaf < full_vmaf - 5.0, "720p {full_vmaf:.2}, 360p {small_vmaf:.2}");
    assert_eq!(small.frames_distorted, 50);
    let block = summarise(&small, bitrate(&[], 2.0, 2.0));
    assert_eq!(block.scored_at, "1280x720");
    assert_eq!(per_second(&small).len(), 2);
    assert_eq!(small.times[1], 0.28, "the eighth frame at 25 fps");
}

/// Renditions scored against one shared decode of the reference get the very scores each gets
/// alone; a rendition that cannot be decoded fails alone, and a request reading the reference
/// another way gets a decoder of its own.
#[tokio::test]
async fn renditions_sharing_one_reference_decode_score_as_alone() {
    let (true, Some(bunny)) = (media_tools(), clip("bigbuckbunny.mp4")) else { return };
    let dir = tempfile::tempdir().unwrap();
    let full = encode(&bunny, &dir.path().join("720.mp4"), 30, &["-t", "2"]);
    let small = encode(&bunny, &dir.path().join("360.mp4"), 23, &["-t", "2", "-vf", "scale=-2:360"]);
    let shorter = encode(&bunny, &dir.path().join("short.mp4"), 23, &["-t", "1.92"]);
    let broken = dir.path().join("broken.mp4");
    std::fs::write(&broken, b"not a video").unwrap();
    let requests: Vec<ScoreRequest> = [&full, &small, &broken, &shorter]
        .into_iter()
        .map(|distorted| against_first_seconds(&bunny, distorted, 1280, 720, DEFAULT_SUBSAMPLE))
        .chain([against_first_seconds(&bunny, &full, 1280, 720, 1)])
        .collect();
    let shared = score_many(&requests).await;
    assert_eq!(shared.len(), 5);
    assert!(matches!(shared[2], Err(QualityError::Decode { side: Side::Distorted, .. })), "{:?}", shared[2]);
    for i in [0, 1, 3, 4] {
        let alone = score(&requests[i]).await.unwrap();
        let together = shared[i].as_ref().unwrap();
        assert_eq!(together, &alone, "request {i}");
    }
    let short = shared[3].as_ref().unwrap();
    assert_eq!((short.frames_reference, short.frames_distorted), (50, 48));
    assert_eq!(shared[4].as_ref().unwrap().vmaf.len(), 50, "every frame: its own decoder");
    assert_ne!(shared[0].as_ref().unwrap().vmaf, shared[1].as_ref().unwrap().vmaf, "each rendition its own scores");
}

#[tokio::test]
async fn a_reference_window_lines_up_with_an_output_trimmed_the_same_way() {
    let (true, Some(bikes)) = (media_tools(), clip("bikes.mp4")) else { return };
    let dir = tempfile::tempdir().unwrap();
    // Trimmed as the worker trims (output options), from 3 s for 2 s.
    let trimmed = encode(&bikes, &dir.path().join("trim.mp4"), 18, &["-ss", "3.000", "-t", "2.000"]);
    let mut aligned = request(&bikes, &trimmed, 640, 272, 1);
    aligned.reference_window = Some(Window { start: 3.0, duration: Some(2.0) });
    let aligned = score(&aligned).await.unwrap();
    // The same output against the window starting 4 frames later.
    let mut shifted = request(&bikes, &trimmed, 640, 272, 1);
    shifted.reference_window = Some(Window { start: 3.16, duration: Some(2.0) });
    let shifted = score(&shifted).await.unwrap();
    let (aligned_vmaf, shifted_vmaf) = (mean(&aligned.vmaf), mean(&shifted.vmaf));
    eprintln!("aligned {aligned_vmaf:.2}, four frames off {shifted_vmaf:.2}");
    assert_eq!((aligned.frames_reference, aligned.frames_distorted), (50, 50));
    assert!(aligned_vmaf > 90.0, "{aligned_vmaf:.2}");
    assert!(shifted_vmaf < aligned_vmaf - 20.0, "{shifted_vmaf:.2}");
    assert!(aligned.times.last().is_some_and(|&t| (t - 1.96).abs() < 1e-6), "{:?}", aligned.times.last());
}

#[tokio::test]
async fn a_few_frames_of_difference_score_the_common_prefix() {
    let (true, Some(bikes)) = (media_tools(), clip("bikes.mp4")) else { return };
    let dir = tempfile::tempdir().unwrap();
    let short = encode(&bikes, &dir.path().join("short.mp4"), 23, &["-frames:v", "47"]);
    let much_shorter = encode(&bikes, &dir.path().join("shorter.mp4"), 23, &["-frames:v", "30"]);
    // Every frame, and every seventh (the decoders then pass only the frames around those).
    for (subsample, scored) in [(1, 47), (7, 7)] {
        let scores = score(&against_first_seconds(&bikes, &short, 640, 272, subsample)).await.unwrap();
        assert_eq!((scores.frames_reference, scores.frames_distorted, scores.vmaf.len()), (50, 47, scored));
        // The reference longer by far, then the distorted file.
        let error = score(&against_first_seconds(&bikes, &much_shorter, 640, 272, subsample)).await.unwrap_err();
        assert!(matches!(error, QualityError::FrameCounts { distorted: 30, .. }), "{error:?}");
        let mut swapped = request(&much_shorter, &bikes, 640, 272, subsample);
        swapped.distorted_window = FIRST_SECONDS;
        let error = score(&swapped).await.unwrap_err();
        let QualityError::FrameCounts { reference: 30, distorted } = error else { panic!("{error:?}") };
        assert!((39..=50).contains(&distorted), "stopped past the gap allowed: {distorted}");
    }
}

/// Passing only the frames around each scored one gives the very scores of libvmaf
/// subsampling every frame.
#[tokio::test]
async fn skipping_frames_in_the_decoders_changes_no_score() {
    let (true, Some(bunny)) = (media_tools(), clip("bigbuckbunny.mp4")) else { return };
    let dir = tempfile::tempdir().unwrap();
    let distorted = encode(&bunny, &dir.path().join("480.mp4"), 30, &["-t", "2", "-vf", "scale=-2:480"]);
    let request = against_first_seconds(&bunny, &distorted, 1280, 720, 7);
    let sparse = run_sampled(&request, Sampling::new(7)).await.unwrap();
    let every = run_sampled(&request, Sampling { step: 7, sparse: false }).await.unwrap();
    assert!(Sampling::new(7).sparse);
    assert_eq!(sparse.vmaf.len(), 8);
    assert_eq!(sparse, every);
    let indices: Vec<u32> = (0..9).map(|fed| Sampling::new(7).original(fed)).collect();
    assert_eq!(indices, [0, 1, 6, 7, 8, 13, 14, 15, 20]);
    assert_eq!(Sampling::new(3).original(5), 5, "a step of 3 passes every frame");
    // The distorted file's decoder passes the scored frames only: fed pictures 0, 3, 6, ...
    let scored: Vec<u32> = (0..9).filter(|&fed| Sampling::new(7).scored(fed)).collect();
    assert_eq!(scored, [0, 3, 6]);
    let distorted: Vec<u32> = (0..3).map(|read| Sampling::new(7).original_of(Side::Distorted, read)).collect();
    assert_eq!(distorted, [0, 7, 14]);
    assert_eq!(Sampling::new(7).distorted_select().as_deref(), Some("select='not(mod(n,7))'"));
    assert_eq!(Sampling::new(3).distorted_select(), None);
    assert!((0..5).all(|fed| Sampling::new(3).scored(fed)), "a step of 3 pairs every picture");
}

#[tokio::test]
async fn unreadable_inputs_are_typed_errors() {
    if !media_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(&garbage, vec![0x42u8; 100_000]).unwrap();
    let good = dir.path().join("good.mp4");
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=s=320x240:d=1"])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(output.status.success());
    let error = score(&request(&good, &garbage, 320, 240, 1)).await.unwrap_err();
    let QualityError::Decode { side: Side::Distorted, reason } = &error else { panic!("{error:?}") };
    assert!(!reason.contains(&*dir.path().to_string_lossy()), "no scratch paths in errors: {reason}");
    let missing = score(&request(&dir.path().join("nope.mp4"), &good, 320, 240, 1)).await.unwrap_err();
    assert!(matches!(missing, QualityError::Decode { side: Side::Reference, .. }), "{missing:?}");
    // Audio only: no video stream to map.
    let audio = dir.path().join("audio.m4a");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac"])
        .arg(&audio)
        .status()
        .unwrap();
    assert!(made.success());
    let no_video = score(&request(&good, &audio, 320, 240, 1)).await.unwrap_err();
    assert!(matches!(no_video, QualityError::Decode { side: Side::Distorted, .. }), "{no_video:?}");
    let invalid = score(&request(&good, &good, 0, 240, 1)).await.unwrap_err();
    assert!(matches!(invalid, QualityError::Invalid(_)));
    let mut tiny_timeout = request(&good, &good, 320, 240, 1);
    tiny_timeout.timeout = Duration::from_millis(1);
    assert!(matches!(score(&tiny_timeout).await, Err(QualityError::Timeout(_))));
}

#[tokio::test]
async fn packet_sizes_of_a_file_and_of_an_hls_rung() {
    let (true, Some(bikes)) = (media_tools(), clip("bikes.mp4")) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mp4 = encode(&bikes, &dir.path().join("out.mp4"), 23, &["-t", "4"]);
    let packets = packet_sizes(&mp4, Duration::from_secs(30)).await.unwrap();
    assert_eq!(packets.len(), 100, "4 s at 25 fps");
    let bytes: u64 = packets.iter().map(|p| p.1).sum();
    let file = std::fs::metadata(&mp4).unwrap().len();
    assert!(bytes < file && bytes > file * 9 / 10, "the video packets are nearly all of a video-only MP4");
    let summary = bitrate(&packets, 4.0, 2.0);
    assert!(summary.peak_kbps >= summary.average_kbps && summary.average_kbps > 50.0, "{summary:?}");

    // An HLS ladder's rung, read through its playlist of local TS segments.
    let rung = dir.path().join("hls").join("720p");
    std::fs::create_dir_all(&rung).unwrap();
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
        .arg(&bikes)
        .args(["-map", "0:v:0", "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod", "-hls_segment_filename"])
        .arg(rung.join("seg_%03d.ts"))
        .arg(rung.join("index.m3u8"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let packets = packet_sizes(&rung.join("index.m3u8"), Duration::from_secs(30)).await.unwrap();
    assert_eq!(packets.len(), 100, "every segment's packets");
    let first = packets.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let last = packets.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    assert!((last - first - 3.96).abs() < 0.01, "times run across the segments: {first}..{last}");

    let error = packet_sizes(&dir.path().join("missing.mp4"), Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(error, QualityError::Packets(_)), "{error:?}");
}

/// The per-title sample on a real file: its packets listed by ffprobe, the windows placed where
/// the source took the most bytes (`crate::domain::per_title::Complexity`).
#[tokio::test]
async fn sample_windows_go_where_the_source_took_the_most_bytes() {
    use crate::domain::per_title::{Complexity, SampleBudget, sample_windows};
    if !media_tools() {
        return;
    }
    // 12 s of a test pattern, with heavy temporal noise from 5 to 7 s, a keyframe every 2 s.
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("half-noisy.mp4");
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=s=320x240:r=25:d=12,noise=alls=40:allf=t:enable='between(t,5,7)'")
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-g", "50", "-pix_fmt", "yuv420p"])
        .arg(&source)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let packets = video_packets(&source, Duration::from_secs(30)).await.unwrap();
    assert_eq!(packets.len(), 300);
    assert_eq!(packets.iter().filter(|p| p.key).count(), 6, "a keyframe every 2 s");
    let complexity = Complexity::from_packets(packets.iter().map(|p| (p.time, p.bytes, p.key)));
    // Three windows of 1 s in shares of 0.6-4.2, 4.2-7.8 and 7.8-11.4 s: the middle share's
    // window lies wholly in the noise; the others, on the pattern alone, start their probe's
    // lead-in just after the keyframe nearest their share's centre (1.9 and 9.1 s): 2 and 8 s.
    let windows = sample_windows(12.0, &complexity, &SampleBudget::default());
    assert_eq!(windows.len(), 3, "{windows:?}");
    assert!(windows[1].start >= 5.0 && windows[1].start + windows[1].duration <= 7.0, "{windows:?}");
    assert_eq!((windows[0].start, windows[2].start), (2.251, 8.251), "{windows:?}");
    for window in [windows[0], windows[2]] {
        let wasted = complexity.decoded_before(window.start - 0.25).expect("keyframes listed");
        assert!(wasted < 0.002, "{window:?}: {wasted} s decoded before the lead-in");
    }
}

#[tokio::test]
async fn long_log_lines_are_skipped_whole() {
    let mut log = b"[Parsed_showinfo_1 @ 0x1] [info] n:   0 pts:      0 pts_time:0.5 pos: 1\n".to_vec();
    log.extend(vec![b'x'; MAX_LINE * 3]);
    log.extend(b"[Parsed_showinfo_1 @ 0x1] [info] n:   1 pts:   99 pts_time:99 pos: 1\n");
    log.extend(b"[in @ 0x2] [error] bad things\n[Parsed_showinfo_1 @ 0x1] [info] n:   1 pts: 1 pts_time:0.54 x\n");
    let read = read_log(&log[..]).await.unwrap();
    assert_eq!(read.times, [0.5, 0.54], "the line after the long one is part of it, and skipped");
    assert_eq!(read.errors, ["[in @ 0x2] [error] bad things"]);
    let packet = |line: &str| parse_packet(line).map(|p| (p.time, p.bytes, p.key));
    assert_eq!(packet("pts_time=0.040000|dts_time=0.000000|size=123|flags=__"), Some((0.04, 123, false)));
    assert_eq!(packet("pts_time=N/A|dts_time=1.5|size=7|flags=K_"), Some((1.5, 7, true)));
    assert!(packet("pts_time=N/A|dts_time=N/A|size=7").is_some_and(|p| p.0.is_nan() && !p.2));
    assert_eq!(
        packet("pts_time=1.4|dts_time=1.4|size=8129|flags=K__|"),
        Some((1.4, 8129, true)),
        "a trailing separator"
    );
    assert_eq!(parse_packet(""), None);
}

#[test]
fn decoder_argv_reads_local_files_and_takes_numbers_only() {
    let window = Some(Window { start: 1.5, duration: Some(2.0) });
    let args =
        decoder_args(Path::new("/s/-source.mp4"), window, (1280, 720), Sampling::new(7).select().as_deref(), Some(1));
    let argv: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
    assert_eq!(
        argv.join(" "),
        "-nostdin -hide_banner -nostats -loglevel level+info -protocol_whitelist file -threads 1 -ss 1.500 -t 2.000 \
         -i /s/-source.mp4 -map 0:v:0 -an -sn -dn \
         -vf showinfo=checksum=0,select='lt(mod(n+1,7),3)',scale=1280:720:flags=bicubic,format=yuv420p \
         -fps_mode passthrough -f rawvideo -"
    );
    let args = decoder_args(Path::new("in.mp4"), None, (640, 272), Sampling::new(3).select().as_deref(), None);
    let argv: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
    assert!(argv.contains(&"showinfo=checksum=0,scale=640:272:flags=bicubic,format=yuv420p"), "{argv:?}");
    let invalid = |window: Window| {
        let mut r = ScoreRequest::new("a", "b", 64, 64);
        r.reference_window = Some(window);
        validate(&r).is_err()
    };
    assert!(invalid(Window { start: f64::NAN, duration: None }));
    assert!(invalid(Window { start: -1.0, duration: None }));
    assert!(invalid(Window { start: 0.0, duration: Some(0.0) }));
    assert!(!invalid(Window { start: 0.0, duration: None }));
}

/// The raw yuv420p input options of `path` (pictures of `size`) for ffmpeg.
fn raw_input(path: &Path, size: &str) -> Vec<std::ffi::OsString> {
    ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", size, "-r", "25", "-i"]
        .map(Into::into)
        .into_iter()
        .chain([path.as_os_str().to_owned()])
        .collect()
}

/// Per frame scores of raw yuv420p pictures of `width`x`height` by an ffmpeg filter graph
/// (`[0:v]` distorted, `[1:v]` reference) whose filter writes its log to `log`.
fn run_graph(ffmpeg: &Path, reference: &Path, distorted: &Path, width: u32, height: u32, graph: &str) {
    let size = format!("{width}x{height}");
    let output = Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(raw_input(distorted, &size))
        .args(raw_input(reference, &size))
        .args(["-lavfi", graph, "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}: {}", ffmpeg.display(), String::from_utf8_lossy(&output.stderr));
}

/// libvmaf scores of the oracle ffmpeg (`libvmaf` filter) for raw yuv420p pictures of
/// `width`x`height`: per frame VMAF, luma PSNR and libvmaf's `float_ssim`.
fn oracle_scores(oracle: &Path, reference: &Path, distorted: &Path, width: u32, height: u32) -> Vec<[f64; 3]> {
    let log = reference.with_extension("json");
    let graph = format!(
        "[0:v][1:v]libvmaf=model=version=vmaf_v0.6.1:feature=name=psnr|name=float_ssim:n_threads=1:log_fmt=json:log_path={}",
        log.display()
    );
    run_graph(oracle, reference, distorted, width, height, &graph);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    let frames = json["frames"].as_array().unwrap();
    frames
        .iter()
        .map(|f| {
            let m = &f["metrics"];
            [m["vmaf"].as_f64().unwrap(), m["psnr_y"].as_f64().unwrap(), m["float_ssim"].as_f64().unwrap()]
        })
        .collect()
}

/// Per frame luma SSIM of ffmpeg's own `ssim` filter (the system's ffmpeg) on raw pictures.
fn ffmpeg_ssim(reference: &Path, distorted: &Path, width: u32, height: u32) -> Vec<f64> {
    let log = reference.with_extension("ssim.log");
    let graph = format!("[0:v][1:v]ssim=stats_file={}", log.display());
    run_graph(Path::new("ffmpeg"), reference, distorted, width, height, &graph);
    let text = std::fs::read_to_string(&log).unwrap();
    let y = |line: &str| line.split_whitespace().find_map(|f| f.strip_prefix("Y:")).unwrap().parse::<f64>().unwrap();
    text.lines().map(y).collect()
}

/// Our SSIM at full size (no shrinking) of every picture of two raw yuv420p files.
fn full_size_ssim(reference: &Path, distorted: &Path, width: u32, height: u32) -> Vec<f64> {
    let bytes = crate::media::vmaf::yuv420p_size(width, height).unwrap();
    let (a, b) = (std::fs::read(reference).unwrap(), std::fs::read(distorted).unwrap());
    let (w, h) = (width as usize, height as usize);
    a.chunks_exact(bytes)
        .zip(b.chunks_exact(bytes))
        .map(|(a, b)| crate::media::ssim::ssim_scaled(a, b, w, h, 1).unwrap())
        .collect()
}

/// The pictures our decoder gives libvmaf, written to a file (for the oracle to read the very
/// same pixels).
fn raw_pictures(source: &Path, out: &Path, width: u32, height: u32, window: Option<Window>) -> PathBuf {
    let mut args = decoder_args(source, window, (width, height), None, None);
    args.pop();
    let status = Command::new("ffmpeg").args(args).arg("-y").arg(out).status().unwrap();
    assert!(status.success());
    out.to_path_buf()
}

/// Our scores agree with ffmpeg's libvmaf filter (a static build from PyPI) on the same pixels:
/// within 0.5 VMAF on each clip's mean, and frame by frame within 1; our SSIM with ffmpeg's
/// `ssim` filter frame by frame.
#[tokio::test]
async fn scores_agree_with_ffmpeg_libvmaf() {
    let (true, Some(bunny), Some(bikes)) = (media_tools(), clip("bigbuckbunny.mp4"), clip("bikes.mp4")) else {
        return;
    };
    let Some(oracle) = oracle_ffmpeg() else { return };
    let dir = tempfile::tempdir().unwrap();
    // (reference, distorted, scoring size): a smaller rung upscaled, and a heavy compression.
    let bunny_480 = encode(&bunny, &dir.path().join("bunny480.mp4"), 28, &["-t", "2", "-vf", "scale=-2:480"]);
    let bikes_crf = encode(&bikes, &dir.path().join("bikes35.mp4"), 35, &["-t", "2"]);
    let window = FIRST_SECONDS;
    let cases = [(&bunny, bunny_480, 1280, 720), (&bikes, bikes_crf, 640, 272)];
    for (index, (reference, distorted, width, height)) in cases.into_iter().enumerate() {
        let mut ours = request(reference, &distorted, width, height, 1);
        ours.reference_window = window;
        let ours = score(&ours).await.unwrap();
        let ref_raw = raw_pictures(reference, &dir.path().join(format!("{index}-ref.yuv")), width, height, window);
        let dist_raw = raw_pictures(&distorted, &dir.path().join(format!("{index}-dist.yuv")), width, height, None);
        let theirs = oracle_scores(&oracle, &ref_raw, &dist_raw, width, height);
        let their_ssim = ffmpeg_ssim(&ref_raw, &dist_raw, width, height);
        assert_eq!((theirs.len(), their_ssim.len()), (ours.vmaf.len(), ours.vmaf.len()));
        let their_mean = mean(&theirs.iter().map(|f| f[0]).collect::<Vec<_>>());
        let our_mean = mean(&ours.vmaf);
        let worst = ours.vmaf.iter().zip(&theirs).map(|(a, b)| (a - b[0]).abs()).fold(0.0, f64::max);
        let psnr = ours.psnr_y.iter().zip(&theirs).map(|(a, b)| (a - b[1]).abs()).fold(0.0, f64::max);
        // Our SSIM against libvmaf's float_ssim (Gaussian windows, the same shrinking).
        let ssim = ours.ssim.iter().zip(&theirs).map(|(a, b)| (a - b[2]).abs()).fold(0.0, f64::max);
        let ssim_means = (mean(&ours.ssim), mean(&theirs.iter().map(|f| f[2]).collect::<Vec<_>>()));
        // The same arithmetic as ffmpeg's ssim filter, at full size.
        let full_size = full_size_ssim(&ref_raw, &dist_raw, width, height);
        let exact = full_size.iter().zip(&their_ssim).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        eprintln!(
            "{}: ours {our_mean:.3}, oracle {their_mean:.3}, worst frame {worst:.3}, PSNR {psnr:.4} dB, \
             SSIM {:.5} against float_ssim's {:.5} (worst frame {ssim:.4}), at full size against ffmpeg's {exact:.7}",
            reference.display(),
            ssim_means.0,
            ssim_means.1
        );
        assert!((our_mean - their_mean).abs() <= 0.5, "ours {our_mean:.3}, oracle {their_mean:.3}");
        assert!(worst <= 1.0 && psnr <= 0.01, "frame by frame: {worst} {psnr}");
        assert!((ssim_means.0 - ssim_means.1).abs() <= 0.01 && ssim <= 0.03, "SSIM: {ssim_means:?}, {ssim}");
        assert!(exact <= 1e-5, "full-size SSIM against ffmpeg's filter: {exact}");
    }
}

/// `scripts/test` fetches the same wheels ahead of the tests (scripts/lib.sh).
#[test]
fn the_scripts_fetch_the_pinned_wheels() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib.sh")).unwrap();
    for (package, version) in [super::clips::CLIPS, super::clips::ORACLE].map(|(p, v, _)| (p, v)) {
        assert!(lib.contains(&format!("{package}=={version}")), "scripts/lib.sh pins {package}=={version}");
    }
}

/// About two scored frames a second on short titles, odd, never a divisor-sharing step of a
/// 2 s GOP.
#[test]
fn the_subsample_step_follows_the_frame_rate() {
    let cases = [
        (None, DEFAULT_SUBSAMPLE),
        (Some(f64::NAN), DEFAULT_SUBSAMPLE),
        (Some(0.0), DEFAULT_SUBSAMPLE),
        (Some(10.0), 7),
        (Some(23.976), 11),
        (Some(25.0), 13),
        // 15 would land on the same 4 places of each 60-frame GOP.
        (Some(29.97), 13),
        (Some(30.0), 13),
        // 25 divides the 100-frame GOP.
        (Some(50.0), 23),
        (Some(59.94), 29),
        (Some(60.0), 31),
        (Some(240.0), 61),
    ];
    for (rate, step) in cases {
        assert_eq!(subsample_for(rate, None), step, "{rate:?} fps");
        assert_eq!(subsample_for(rate, Some(60.0)), step, "{rate:?} fps, 60 s");
    }
}

/// From a minute on, at least 120 scored frames, down to one a second from two minutes.
#[test]
fn longer_titles_score_fewer_frames_a_second() {
    let cases = [
        (25.0, 20.0, 13),
        (25.0, 90.0, 19),
        // 25 divides the 50-frame GOP.
        (25.0, 120.0, 23),
        (25.0, 3600.0, 23),
        (23.976, 3600.0, 23),
        // 31 would leave one second in 31 without a scored frame.
        (30.0, 3600.0, 29),
        (29.97, 3600.0, 29),
        (10.0, 79.5, 7),
        (10.0, 3600.0, 7),
        (60.0, 3600.0, 59),
        (50.0, f64::NAN, 23),
    ];
    for (rate, seconds, step) in cases {
        assert_eq!(subsample_for(Some(rate), Some(seconds)), step, "{rate} fps, {seconds} s");
    }
    assert_eq!(scored_per_second(Some(30.0)), 2.0);
    assert_eq!(scored_per_second(Some(100.0)), 1.2);
    assert_eq!(scored_per_second(Some(7200.0)), 1.0);
}
