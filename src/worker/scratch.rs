//! Scratch space: each attempt's own folder under `<MEDIA_WORK_DIR>/media-worker/`, the sweep
//! of folders left by killed workers, and the check that a job fits before it is taken.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::domain::job::JobMessage;

/// Scratch folders live here under the work dir.
const SCRATCH: &str = "media-worker";

/// Room kept free besides the estimate, for ffmpeg's logs, playlists and the file system.
const HEADROOM: u64 = 64 << 20;

/// What a job of a source this large may need on disk: the source, outputs as large as the
/// source (a remux, or a ladder of renditions of a small source), and headroom. Deliberately
/// generous: declining a job costs a few seconds on the queue; failing half-way costs an
/// attempt.
pub(super) fn estimated_need(source_size: u64) -> u64 {
    source_size.saturating_mul(2).saturating_add(HEADROOM)
}

/// Free bytes for an unprivileged writer in the file system holding the work dir (`None`
/// when the system cannot say).
pub(super) fn free_space(config: &Config) -> Option<u64> {
    let root = config.work_dir.join(SCRATCH);
    let probe = if root.exists() { root } else { config.work_dir.clone() };
    let stats = rustix::fs::statvfs(&probe).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Whether a job whose source has `source_size` bytes fits the scratch disk now; `true` when
/// either is unknown.
pub(super) fn fits(config: &Config, source_size: Option<u64>) -> bool {
    match (source_size, free_space(config)) {
        (Some(size), Some(free)) => free >= estimated_need(size),
        _ => true,
    }
}

/// A job's scratch folder, removed when the attempt ends (and, as a backstop, when dropped).
pub(super) struct ScratchDir {
    path: Option<PathBuf>,
}

impl ScratchDir {
    pub(super) async fn create(config: &Config, message: &JobMessage) -> anyhow::Result<Self> {
        Self::named(config, &format!("{}-a{}", message.job.job_id, message.attempt)).await
    }

    /// A folder whose name starts with `stem` (a job id, a segment), unique in this worker.
    pub(super) async fn named(config: &Config, stem: &str) -> anyhow::Result<Self> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{stem}-{}", &unique[..8]);
        let path = config.work_dir.join(SCRATCH).join(name);
        tokio::fs::create_dir_all(&path).await.map_err(|e| anyhow::anyhow!("create {}: {e}", path.display()))?;
        Ok(Self { path: Some(path) })
    }

    pub(super) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("."))
    }

    pub(super) async fn remove(mut self) {
        if let Some(path) = self.path.take()
            && let Err(err) = tokio::fs::remove_dir_all(&path).await
        {
            tracing::warn!(path = %path.display(), error = %err, "Could not remove a scratch folder.");
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// Removes scratch folders left by killed workers: any older than twice the job timeout
/// cannot belong to a running attempt.
pub(super) async fn sweep_stale(config: &Config) {
    let root = config.work_dir.join(SCRATCH);
    let Ok(mut entries) = tokio::fs::read_dir(&root).await else { return };
    let max_age = config.job_timeout.saturating_mul(2);
    while let Ok(Some(entry)) = entries.next_entry().await {
        let old = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if old {
            tracing::info!(path = %entry.path().display(), "Removing a stale scratch folder.");
            let _ = tokio::fs::remove_dir_all(entry.path()).await;
        }
    }
}
