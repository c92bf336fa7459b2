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

/// Room for a job on this worker's scratch disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Room {
    /// It fits now (or its size or the disk's is unknown).
    Now,
    /// Not now, but the disk is large enough once other jobs free their space.
    Later { need: u64, free: u64 },
    /// Larger than the whole disk: it can never run here, nor, the workers of a deployment
    /// being alike, on any other worker.
    Never { need: u64, capacity: u64 },
}

/// Whether a job whose source has `source_size` bytes fits the scratch disk.
pub(super) fn room(config: &Config, source_size: Option<u64>) -> Room {
    let Some(size) = source_size else { return Room::Now };
    let Some(disk) = disk(config) else { return Room::Now };
    room_on(disk, estimated_need(size))
}

fn room_on(disk: Disk, need: u64) -> Room {
    if need > disk.capacity {
        Room::Never { need, capacity: disk.capacity }
    } else if need > disk.free {
        Room::Later { need, free: disk.free }
    } else {
        Room::Now
    }
}

/// Warns, at start, when this worker's scratch disk cannot hold the job of a source as large
/// as `MEDIA_MAX_SOURCE_SIZE` allows: such jobs fail as `source_too_large` at intake.
pub(super) fn check_capacity(config: &Config) {
    let largest = config.limits.max_size;
    if let Room::Never { need, capacity } = room(config, Some(largest)) {
        tracing::warn!(
            max_source_bytes = largest,
            need_bytes = need,
            scratch_bytes = capacity,
            "The scratch disk is smaller than the jobs MEDIA_MAX_SOURCE_SIZE allows need; \
             sources above about half the disk fail as source_too_large."
        );
    }
}

/// The scratch file system's size and free bytes, for an unprivileged writer.
#[derive(Debug, Clone, Copy)]
struct Disk {
    capacity: u64,
    free: u64,
}

fn disk(config: &Config) -> Option<Disk> {
    let root = config.work_dir.join(SCRATCH);
    let probe = if root.exists() { root } else { config.work_dir.clone() };
    let stats = rustix::fs::statvfs(&probe).ok()?;
    Some(Disk {
        capacity: stats.f_blocks.saturating_mul(stats.f_frsize),
        free: stats.f_bavail.saturating_mul(stats.f_frsize),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_fits_now_later_or_never() {
        let disk = Disk { capacity: 1000, free: 300 };
        assert_eq!(room_on(disk, 300), Room::Now);
        assert_eq!(room_on(disk, 301), Room::Later { need: 301, free: 300 });
        assert_eq!(room_on(disk, 1000), Room::Later { need: 1000, free: 300 });
        assert_eq!(room_on(disk, 1001), Room::Never { need: 1001, capacity: 1000 });
    }
}
