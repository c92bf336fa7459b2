//! Measuring a source's loudness for the job's `loudness` setting: one ffmpeg pass over its
//! first audio stream through `ebur128` and `loudnorm`'s first pass
//! ([`measure_filter`](crate::domain::loudness::measure_filter)). The log is read line by line:
//! the QC parser takes `ebur128`'s summary, and only the end is kept for `loudnorm`'s
//! ([`parse_loudnorm`](crate::domain::loudness::parse_loudnorm)), so memory stays bounded
//! however long the source.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::domain::args::strings;
use crate::domain::loudness::{LoudnessMeasurement, LoudnessSettings, measure_filter, measurement, parse_loudnorm};
use crate::domain::qc::Loudness;
use crate::media::ffmpeg::FfmpegError;
use crate::media::qc::run_logged;

/// Lines of the log kept: the summary (a dozen lines) and ffmpeg's last words before it.
const LOG_TAIL: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum LoudnessError {
    /// ffmpeg could not be started, ran too long, was killed or failed on the source.
    #[error(transparent)]
    Ffmpeg(#[from] FfmpegError),
    /// ffmpeg finished, but its log holds no summary this worker can read.
    #[error("the loudness pass printed no usable summary: {0}")]
    Unmeasured(String),
}

/// The measuring pass's argv (without the program): the first audio stream only, no video
/// decoded, nothing written.
pub fn measure_args(settings: &LoudnessSettings, input: &Path) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-nostats", "-protocol_whitelist", "file", "-i"]);
    args.push(input.as_os_str().to_owned());
    args.extend(strings(&["-map", "0:a:0", "-vn", "-sn", "-dn", "-af", &measure_filter(settings)]));
    args.extend(strings(&["-f", "null", "-"]));
    args
}

/// Measures `input` (a local file with an audio stream), stopped after `timeout`. Dropping the
/// future kills ffmpeg.
pub async fn measure(
    settings: &LoudnessSettings,
    input: &Path,
    timeout: Duration,
) -> Result<LoudnessMeasurement, LoudnessError> {
    let (ebur128, log) = run("ffmpeg", measure_args(settings, input), input, timeout).await?;
    let ebur128 = ebur128.ok_or_else(|| LoudnessError::Unmeasured("no ebur128 summary".into()))?;
    let loudnorm = parse_loudnorm(&log).map_err(LoudnessError::Unmeasured)?;
    Ok(measurement(&ebur128, loudnorm))
}

/// `ebur128`'s measures of `input`'s first audio stream through `filter` (a decided loudness
/// filter, to see what it reaches before any encoder).
pub async fn measure_filtered(filter: &str, input: &Path, timeout: Duration) -> Result<Loudness, LoudnessError> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-nostats", "-protocol_whitelist", "file", "-i"]);
    args.push(input.as_os_str().to_owned());
    let chain = format!("{filter},ebur128=peak=true:framelog=verbose");
    args.extend(strings(&["-map", "0:a:0", "-vn", "-sn", "-dn", "-af", &chain, "-f", "null", "-"]));
    let (ebur128, _) = run("ffmpeg", args, input, timeout).await?;
    ebur128.ok_or_else(|| LoudnessError::Unmeasured("no ebur128 summary".into()))
}

/// Runs `program` with `args` (never through a shell): `ebur128`'s summary, and the end of the
/// log (where `loudnorm` prints its measurement).
async fn run(
    program: &str,
    args: Vec<OsString>,
    input: &Path,
    timeout: Duration,
) -> Result<(Option<Loudness>, String), FfmpegError> {
    let (measured, tail) = run_logged(program, args, input, timeout, LOG_TAIL).await?;
    Ok((measured.loudness, tail.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::loudness::LoudnessMode;

    const SETTINGS: LoudnessSettings =
        LoudnessSettings { target: -16.0, true_peak: -1.0, mode: LoudnessMode::Normalize };

    #[test]
    fn argv_reads_only_the_first_audio_stream_of_a_local_file() {
        let args: Vec<String> =
            measure_args(&SETTINGS, Path::new("/s/-i x")).iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args.join(" "),
            "-hide_banner -nostdin -nostats -protocol_whitelist file -i /s/-i x -map 0:a:0 -vn -sn -dn -af \
             aformat=channel_layouts=stereo,ebur128=peak=true:framelog=verbose,loudnorm=I=-16.0:TP=-2.5:LRA=20.0:\
             print_format=json -f null -"
        );
        assert_eq!(args[6], "/s/-i x", "the path stays one argument");
    }

    /// A real pass: a mono 997 Hz tone peaking at -14 dBFS, spread over two channels by
    /// ffmpeg's default matrix (-3 dB each, as `-ac 2` does in the outputs): peaks at -17 dBTP,
    /// -20 dB RMS a channel, two channels add 3 LU: -17 LUFS.
    #[tokio::test]
    async fn measures_a_tone_and_fails_on_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let tone = dir.path().join("tone.wav");
        let made = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
            .arg("sine=frequency=997:duration=4:sample_rate=48000,volume=1.6")
            .arg(&tone)
            .status();
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            assert!(made.as_ref().is_ok_and(|s| s.success()), "ffmpeg must run in CI");
        } else if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: ffmpeg is not installed");
            return;
        }
        let m = measure(&SETTINGS, &tone, Duration::from_secs(30)).await.unwrap();
        let (i, tp) = (m.integrated, m.true_peak);
        assert!((i - -17.0).abs() < 0.3, "integrated {i}");
        assert!((tp - -17.0).abs() < 0.3, "true peak {tp}");
        let loudnorm = m.loudnorm.integrated.unwrap();
        assert!((loudnorm - i).abs() < 0.5, "loudnorm's meter {loudnorm}");

        let broken = dir.path().join("broken.wav");
        std::fs::write(&broken, b"RIFF nonsense").unwrap();
        let err = measure(&SETTINGS, &broken, Duration::from_secs(30)).await.unwrap_err();
        assert!(matches!(err, LoudnessError::Ffmpeg(FfmpegError::Failed { .. })), "{err}");
        assert!(!err.to_string().contains(dir.path().to_str().unwrap()), "{err}");
    }
}
