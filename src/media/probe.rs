//! Inspecting a local file: in process for plain MP4/MOV (H.264 + AAC), ffprobe for the rest.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::domain::isobmff;
use crate::domain::probe::{MediaInfo, ProbeError};

#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    #[error("ffprobe could not be started: {0}")]
    Spawn(std::io::Error),
    #[error("ffprobe did not finish within {0:?}")]
    Timeout(Duration),
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

/// Runs ffprobe on `path`.
pub async fn ffprobe(path: &Path, timeout: Duration, kind: Probed) -> Result<MediaInfo, ProbeFailure> {
    let mut command = Command::new("ffprobe");
    command
        .args(["-v", "error", "-protocol_whitelist", "file", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(path)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| ProbeFailure::Timeout(timeout))?
        .map_err(ProbeFailure::Spawn)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("ffprobe failed").trim();
        // ffprobe echoes the path in its errors; the scratch path means nothing to users.
        let reason = reason.replace(&path.display().to_string(), "source");
        return Err(ProbeFailure::Unreadable(reason));
    }
    let json = String::from_utf8_lossy(&output.stdout);
    Ok(match kind {
        Probed::Source => MediaInfo::from_ffprobe_json(&json)?,
        Probed::Output => MediaInfo::describe(&json)?,
    })
}
