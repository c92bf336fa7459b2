//! Running ffprobe on a local file.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

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

/// Inspects `path`, reading local files only.
pub async fn probe(path: &Path, timeout: Duration, kind: Probed) -> Result<MediaInfo, ProbeFailure> {
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
