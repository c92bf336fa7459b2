//! The ffmpeg processes that decode a scoring's inputs to raw pictures, and the reading of
//! ffmpeg's and ffprobe's output: capped lines, showinfo's frame times, the last errors.

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use super::{QualityError, ScoreRequest, Side, Window};

/// Longest line of a tool's output that is read; longer ones (a file's huge tags echoed in the
/// log) are skipped whole, so they can neither flood memory nor pass for another line.
pub(super) const MAX_LINE: usize = 8 << 10;

/// Error lines of a decoder kept for the error message.
const LOG_TAIL: usize = 8;

/// One ffmpeg decoding an input to raw pictures on its stdout.
pub(super) struct Decoder {
    pub(super) side: Side,
    /// The input's path as ffmpeg echoes it in errors (replaced there: it means nothing to users).
    path: String,
    child: Child,
    stdout: ChildStdout,
    /// Reads the log: the decoded frames' times and the last error lines.
    log: tokio::task::JoinHandle<std::io::Result<Log>>,
}

#[derive(Debug, Default)]
pub(super) struct Log {
    pub(super) times: Vec<f64>,
    pub(super) errors: Vec<String>,
}

/// `program` with `args` (never through a shell), its output and log piped, killed when
/// dropped.
pub(super) fn spawn_piped(
    program: &'static str,
    args: Vec<OsString>,
) -> Result<(Child, ChildStdout, ChildStderr), QualityError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| QualityError::Spawn { program, source })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let source = std::io::Error::other(format!("{program}'s pipes are missing"));
        return Err(QualityError::Spawn { program, source });
    };
    Ok((child, stdout, stderr))
}

impl Decoder {
    pub(super) fn spawn(
        side: Side,
        path: &Path,
        window: Option<Window>,
        request: &ScoreRequest,
        select: Option<&str>,
        threads: Option<u32>,
    ) -> Result<Self, QualityError> {
        let size = (request.width, request.height);
        let (child, stdout, stderr) = spawn_piped("ffmpeg", decoder_args(path, window, size, select, threads))?;
        let log = tokio::spawn(read_log(BufReader::new(stderr)));
        Ok(Decoder { side, path: path.display().to_string(), child, stdout, log })
    }

    /// Fills `buffer` with the next picture; false at the end of the stream.
    pub(super) async fn next(&mut self, buffer: &mut [u8]) -> Result<bool, QualityError> {
        read_picture(&mut self.stdout, buffer).await.map_err(QualityError::Pipe)
    }

    /// Waits for ffmpeg to exit (its output was read to the end) and returns the frames'
    /// times; a failed run is a [`QualityError::Decode`] with ffmpeg's last error.
    pub(super) async fn finish(mut self) -> Result<Vec<f64>, QualityError> {
        let status = self.child.wait().await.map_err(QualityError::Pipe)?;
        let log = self.log.await.map_err(|e| QualityError::Thread(e.to_string()))?.map_err(QualityError::Pipe)?;
        if !status.success() {
            let reason = failure(status, &log.errors).replace(&self.path, "input");
            return Err(QualityError::Decode { side: self.side, reason });
        }
        Ok(log.times)
    }
}

/// The decoder's argv. ffmpeg's log is read for errors and for the time of each decoded frame
/// (`showinfo`, without its checksums, before any `select`: it sees every frame). `threads`
/// bounds the decoder's threads (ffmpeg's default: one per core and one more).
pub(super) fn decoder_args(
    path: &Path,
    window: Option<Window>,
    (width, height): (u32, u32),
    select: Option<&str>,
    threads: Option<u32>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> =
        ["-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info", "-protocol_whitelist", "file"]
            .map(OsString::from)
            .to_vec();
    if let Some(threads) = threads {
        args.extend(["-threads".into(), threads.to_string().into()]);
    }
    if let Some(window) = window {
        args.extend(["-ss".into(), format!("{:.3}", window.start).into()]);
        if let Some(duration) = window.duration {
            args.extend(["-t".into(), format!("{duration:.3}").into()]);
        }
    }
    args.extend(["-i".into(), path.as_os_str().to_owned()]);
    let mut filter = String::from("showinfo=checksum=0,");
    if let Some(select) = select {
        filter.push_str(select);
        filter.push(',');
    }
    filter.push_str(&format!("scale={width}:{height}:flags=bicubic,format=yuv420p"));
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
pub(super) async fn read_log(mut reader: impl AsyncBufRead + Unpin) -> std::io::Result<Log> {
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
pub(super) async fn read_line(reader: &mut (impl AsyncBufRead + Unpin), line: &mut Vec<u8>) -> std::io::Result<bool> {
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
