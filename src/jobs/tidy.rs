//! What a job that ended leaves in its folder besides its result, cleared by whoever learns
//! that it ended: the run that ended it (or lost it to an ending), the reaper, the intake, the
//! dead-letter sweep, and the API when it cancels a job no run holds.
//!
//! Final states are never left, so this is safe at any time after the ending, any number of
//! times, from any number of processes at once; it is best effort (a failed delete is logged,
//! and the next caller tries again):
//! - `completed`: the manifest the status names and the completing attempt's files stay;
//!   every other attempt's files and the `split/` folder go;
//! - `failed`: the `split/` folder (a full copy of the source, in pieces) and any manifest go
//!   (no status can name a manifest of a failed job); what the attempts uploaded stays until
//!   its outputs are deleted;
//! - `cancelled`: everything in the folder goes.

use crate::domain::keys::split_dir;
use crate::domain::keys::{attempt_dir, manifest_key};
use crate::domain::status::{JobState, JobStatus};
use crate::storage::ObjectStore;

/// Clears what `status`, a final status, leaves behind (see the module); nothing for a job
/// that has not ended.
pub async fn after_end(storage: &dyn ObjectStore, status: &JobStatus) {
    let folder = status.job.output_dir.as_str();
    let doomed = match Doomed::of(status) {
        Some(doomed) => doomed,
        None => return,
    };
    let keys = match storage.list(folder).await {
        Ok(keys) => keys,
        Err(err) => {
            tracing::debug!(job_id = %status.job_id, error = %err, "Could not list an ended job's folder.");
            return;
        }
    };
    let mut removed = 0;
    for key in keys.iter().filter(|k| doomed.includes(k)) {
        match storage.delete(key).await {
            Ok(()) => removed += 1,
            Err(err) => tracing::debug!(key, error = %err, "Could not delete a file of an ended job."),
        }
    }
    if removed > 0 {
        tracing::info!(job_id = %status.job_id, state = ?status.state, removed, "Cleared an ended job's folder.");
    }
}

/// Which keys of the job's folder go.
enum Doomed {
    /// All but these two: the manifest, and the completing attempt's folder.
    AllBut {
        manifest: String,
        attempt: String,
    },
    /// Keys under this folder, and this one key.
    FolderAnd {
        folder: String,
        key: String,
    },
    All,
}

impl Doomed {
    fn of(status: &JobStatus) -> Option<Doomed> {
        let folder = status.job.output_dir.as_str();
        match status.state {
            JobState::Completed => Some(Doomed::AllBut {
                manifest: status.manifest_key.clone().unwrap_or_else(|| manifest_key(folder)),
                attempt: attempt_dir(folder, status.attempt),
            }),
            JobState::Failed => Some(Doomed::FolderAnd { folder: split_dir(folder), key: manifest_key(folder) }),
            JobState::Cancelled => Some(Doomed::All),
            JobState::Queued | JobState::Running | JobState::Retrying => None,
        }
    }

    fn includes(&self, key: &str) -> bool {
        match self {
            Doomed::AllBut { manifest, attempt } => key != manifest && !key.starts_with(attempt.as_str()),
            Doomed::FolderAnd { folder, key: one } => key.starts_with(folder.as_str()) || key == one,
            Doomed::All => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::sample_job;
    use crate::storage::local::LocalStorage;
    use chrono::Utc;

    const FILES: [&str; 6] = [
        "outputs/a.mp4/job-1/attempt-1/mp4-h264.mp4",
        "outputs/a.mp4/job-1/attempt-2/mp4-h264.mp4",
        "outputs/a.mp4/job-1/attempt-2/hls/master.m3u8",
        "outputs/a.mp4/job-1/split/piece-0.nut",
        "outputs/a.mp4/job-1/split/segment-0.progress",
        "outputs/a.mp4/job-1/manifest.json",
    ];

    async fn left_after(state: JobState) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf(), None).unwrap();
        for key in FILES {
            storage.put_bytes(key, b"x".to_vec(), "application/octet-stream").await.unwrap();
        }
        let mut status = JobStatus::queued(&sample_job(), 2, 3, Utc::now());
        status.state = state;
        after_end(&storage, &status).await;
        let mut left = storage.list("outputs/a.mp4/job-1/").await.unwrap();
        left.sort();
        left
    }

    #[tokio::test]
    async fn each_ending_keeps_what_it_should() {
        let all: Vec<String> = {
            let mut all: Vec<String> = FILES.iter().map(|s| s.to_string()).collect();
            all.sort();
            all
        };
        let sorted = |files: &[&str]| {
            let mut files: Vec<String> = files.iter().map(|s| s.to_string()).collect();
            files.sort();
            files
        };
        assert_eq!(left_after(JobState::Completed).await, sorted(&[FILES[1], FILES[2], FILES[5]]));
        assert_eq!(left_after(JobState::Failed).await, sorted(&[FILES[0], FILES[1], FILES[2]]));
        assert!(left_after(JobState::Cancelled).await.is_empty());
        assert_eq!(left_after(JobState::Retrying).await, all, "a job that goes on keeps everything");
    }
}
