//! Inspecting a local file: in process for plain MP4/MOV (H.264 + AAC), ffprobe for the rest.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::domain::isobmff;
use crate::domain::probe::{MediaInfo, ProbeError};

#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    #[error("ffprobe could not be started: {0}")]
    Spawn(std::io::Error),
    #[error("ffprobe did not finish within {0:?}")]
    Timeout(Duration),
    /// ffprobe's description of the file passed [`MAX_PROBE_OUTPUT`]: a file built to flood
    /// whoever reads it (huge tags), stopped before it costs the worker its memory.
    #[error("ffprobe's description of the file passed {0} bytes")]
    Flooded(usize),
    /// ffprobe ran and could not read the file: it is not media it can decode.
    #[error("not a readable media file: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Invalid(#[from] ProbeError),
}

/// Which checks a probed file must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    /// A user's upload: playlists, reference formats and still images are refused.
    Source,
    /// A file the worker made.
    Output,
}

/// A `moov` larger than this (hours of samples' tables) is left to ffprobe.
const MAX_MOOV: u64 = 64 << 20;

/// Top-level boxes looked at before giving up on finding `moov`.
const MAX_TOP_LEVEL_BOXES: usize = 64;

/// Inspects `path`, reading local files only.
///
/// A plain MP4/MOV is read in process ([`isobmff`]), as ffprobe would describe it, and any
/// file that module declines goes to ffprobe: same answer, without a process start.
pub async fn probe(path: &Path, timeout: Duration, kind: Probed) -> Result<MediaInfo, ProbeFailure> {
    let file = path.to_path_buf();
    if let Ok(Some(info)) = tokio::task::spawn_blocking(move || in_process(&file)).await {
        tracing::debug!(path = %path.display(), "Probed in process.");
        return Ok(info);
    }
    ffprobe(path, timeout, kind).await
}

/// What ffprobe would say of a plain MP4/MOV, read in process (blocking file reads); `None`
/// for any file [`isobmff`] does not model.
pub fn in_process(path: &Path) -> Option<MediaInfo> {
    read_moov(path).and_then(|moov| isobmff::describe_moov(&moov))
}

/// The payload of the top-level `moov` box of an ISO-BMFF file (one starting with `ftyp`),
/// found by seeking from box header to box header; `None` for any other file, or one with
/// fragments (`moof`), whose samples are described outside `moov`.
fn read_moov(path: &Path) -> Option<Vec<u8>> {
    let mut file = std::fs::File::open(path).ok()?;
    let length = file.metadata().ok()?.len();
    let mut at = 0u64;
    let mut moov = None;
    for index in 0..MAX_TOP_LEVEL_BOXES {
        if at == length {
            return moov;
        }
        let mut header = [0u8; 16];
        file.seek(SeekFrom::Start(at)).ok()?;
        file.read_exact(&mut header[..8]).ok()?;
        let kind: [u8; 4] = header[4..8].try_into().ok()?;
        let (header_len, size) = match u32::from_be_bytes(header[..4].try_into().ok()?) {
            1 => {
                file.read_exact(&mut header[8..]).ok()?;
                (16, u64::from_be_bytes(header[8..].try_into().ok()?))
            }
            0 => (8, length - at),
            n => (8, u64::from(n)),
        };
        if size < header_len || at.checked_add(size)? > length || (index == 0 && &kind != b"ftyp") {
            return None;
        }
        match &kind {
            b"moov" if moov.is_none() && size - header_len <= MAX_MOOV => {
                let mut body = vec![0u8; usize::try_from(size - header_len).ok()?];
                file.read_exact(&mut body).ok()?;
                moov = Some(body);
            }
            b"moov" | b"moof" => return None,
            _ => {}
        }
        at += size;
    }
    None
}

/// The fields [`MediaInfo`] reads, and no others: of the tags, only `rotate` and the three a
/// subtitle stream is named by (`language`, `title`, `handler_name`: cut to a menu label's
/// length in [`MediaInfo`]), so a file's other metadata (comments, cover text; any size the
/// container allows) never reaches the worker.
const ENTRIES: &str = "format=format_name,duration\
    :stream=index,codec_type,codec_name,width,height,pix_fmt,avg_frame_rate,channels,sample_rate,duration\
    :stream_disposition=attached_pic,default,forced:stream_tags=rotate,language,title,handler_name\
    :stream_side_data=rotation";

/// ffprobe's JSON of [`ENTRIES`] is a few hundred bytes per stream; past this much output the
/// file is built to flood its reader, and ffprobe is stopped.
pub const MAX_PROBE_OUTPUT: usize = 4 << 20;

/// Bytes of ffprobe's error output kept (its last line is the reason given).
const MAX_PROBE_ERRORS: usize = 64 << 10;

/// Runs ffprobe on `path`, reading at most [`MAX_PROBE_OUTPUT`] bytes of what it prints.
pub async fn ffprobe(path: &Path, timeout: Duration, kind: Probed) -> Result<MediaInfo, ProbeFailure> {
    probe_with("ffprobe", path, timeout, kind).await
}

/// [`ffprobe`], with the program named (tests stand in for ffprobe).
async fn probe_with(program: &str, path: &Path, timeout: Duration, kind: Probed) -> Result<MediaInfo, ProbeFailure> {
    let args = ["-v", "error", "-protocol_whitelist", "file", "-print_format", "json", "-show_entries", ENTRIES];
    let stdout = run_capped(program, &args, path, timeout).await?;
    let json = String::from_utf8_lossy(&stdout);
    Ok(match kind {
        Probed::Source => MediaInfo::from_ffprobe_json(&json)?,
        Probed::Output => MediaInfo::describe(&json)?,
    })
}

/// Frames of the video decoded to find closed captions: broadcast video carries caption data
/// (or its padding) in every frame, so the first second tells.
const CAPTION_FRAMES: &str = "%+#30";

/// Whether the first video stream of `path` carries CEA-608/708 captions in its SEI or user
/// data. Unlike the rest of a probe this decodes frames (the first [`CAPTION_FRAMES`]): the
/// captions ride in the frames, and ffprobe notes them only once it has decoded one.
pub async fn closed_captions(path: &Path, timeout: Duration) -> Result<bool, ProbeFailure> {
    let stdout = first_frames(path, CAPTION_FRAMES, "frame=key_frame:stream=closed_captions", timeout).await?;
    Ok(crate::domain::probe::has_closed_captions(&String::from_utf8_lossy(&stdout))?)
}

/// The first video frame of `path`: its presentation time as stored (the timeline a command
/// reading the file with `-copyts` sees) and the file's start time (which a command without it
/// subtracts, starting the input at zero), in seconds. `None` when it has no video frame.
pub async fn first_frame(path: &Path, timeout: Duration) -> Result<Option<(f64, f64)>, ProbeFailure> {
    let stdout = first_frames(path, "%+#1", "frame=pts_time:format=start_time", timeout).await?;
    let json: serde_json::Value = serde_json::from_slice(&stdout).unwrap_or_default();
    let seconds = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<f64>().ok());
    let first = json["frames"].get(0).and_then(|f| seconds(&f["pts_time"]));
    Ok(first.map(|pts| (pts, seconds(&json["format"]["start_time"]).unwrap_or(0.0))))
}

/// ffprobe's JSON of `entries` over the first video stream's first packets of `path`
/// (`interval`, e.g. `%+#30`): these entries need frames decoded, not just headers read.
async fn first_frames(path: &Path, interval: &str, entries: &str, timeout: Duration) -> Result<Vec<u8>, ProbeFailure> {
    let args = [
        "-v",
        "error",
        "-protocol_whitelist",
        "file",
        "-select_streams",
        "v:0",
        "-read_intervals",
        interval,
        "-show_entries",
        entries,
        "-print_format",
        "json",
    ];
    run_capped("ffprobe", &args, path, timeout).await
}

/// Runs `program` with `args` and `path`, and returns what it printed: at most
/// [`MAX_PROBE_OUTPUT`] bytes, within `timeout`; its last error line when it fails.
async fn run_capped(program: &str, args: &[&str], path: &Path, timeout: Duration) -> Result<Vec<u8>, ProbeFailure> {
    let mut command = Command::new(program);
    command.args(args).arg(path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().map_err(ProbeFailure::Spawn)?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ProbeFailure::Spawn(std::io::Error::other("ffprobe's output pipes are missing")));
    };
    let run = async {
        // Both pipes at once: a child blocked on a full pipe never finishes. Past the cap of
        // its output, ffprobe is killed at once (it would block, and stderr never end).
        let out = async {
            let out = read_capped(stdout, MAX_PROBE_OUTPUT).await;
            if matches!(out, Ok(Capped::Cut(_))) {
                let _ = child.start_kill();
            }
            out
        };
        let (out, errors) = tokio::join!(out, read_tail(stderr, MAX_PROBE_ERRORS));
        let out = out.map_err(ProbeFailure::Spawn)?;
        let errors = errors.map_err(ProbeFailure::Spawn)?;
        let Capped::Whole(stdout) = out else { return Err(ProbeFailure::Flooded(MAX_PROBE_OUTPUT)) };
        let status = child.wait().await.map_err(ProbeFailure::Spawn)?;
        Ok((status, stdout, errors))
    };
    // On any early return (timeout, flood) the child is dropped, which kills it.
    let (status, stdout, stderr) =
        tokio::time::timeout(timeout, run).await.map_err(|_| ProbeFailure::Timeout(timeout))??;
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let reason = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("ffprobe failed").trim();
        // ffprobe echoes the path in its errors; the scratch path means nothing to users.
        let reason = reason.replace(&path.display().to_string(), "source");
        return Err(ProbeFailure::Unreadable(reason));
    }
    Ok(stdout)
}

/// What [`read_capped`] read.
#[derive(Debug, PartialEq, Eq)]
enum Capped {
    /// Everything, up to the end.
    Whole(Vec<u8>),
    /// The first `cap` bytes: there was more, left unread.
    Cut(Vec<u8>),
}

/// Reads `reader` to its end, or until it has given more than `cap` bytes.
async fn read_capped(reader: impl AsyncRead + Unpin, cap: usize) -> std::io::Result<Capped> {
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let mut bytes = Vec::new();
    reader.take(limit).read_to_end(&mut bytes).await?;
    if bytes.len() > cap {
        bytes.truncate(cap);
        return Ok(Capped::Cut(bytes));
    }
    Ok(Capped::Whole(bytes))
}

/// Reads `reader` to its end, keeping only its last `cap` bytes.
async fn read_tail(mut reader: impl AsyncRead + Unpin, cap: usize) -> std::io::Result<Vec<u8>> {
    let mut tail = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(tail);
        }
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > cap {
            tail.drain(..tail.len() - cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reading_stops_past_the_cap() {
        let small = read_capped(&b"hello"[..], 5).await.unwrap();
        assert_eq!(small, Capped::Whole(b"hello".to_vec()));
        let big = vec![b'x'; 1 << 20];
        let cut = read_capped(&big[..], 1000).await.unwrap();
        assert_eq!(cut, Capped::Cut(vec![b'x'; 1000]));
        let mut long = vec![b'a'; 100_000];
        long.extend_from_slice(b"last line");
        assert_eq!(read_tail(&long[..], 9).await.unwrap(), b"last line");
    }

    /// A prober that never stops talking is stopped at the cap, at once, not at the timeout.
    #[tokio::test]
    async fn a_flood_of_output_stops_the_prober() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let flood = dir.path().join("flood");
        std::fs::write(&flood, "#!/bin/sh\nexec yes '{\"format\": {\"tags\": \"flood\"}}'\n").unwrap();
        std::fs::set_permissions(&flood, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = std::time::Instant::now();
        let program = flood.to_str().unwrap();
        let result = probe_with(program, Path::new("source"), Duration::from_secs(60), Probed::Source).await;
        assert!(matches!(result, Err(ProbeFailure::Flooded(MAX_PROBE_OUTPUT))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(30), "stopped by the cap, not the timeout");
    }
}
