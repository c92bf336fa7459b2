//! What a job looks like to its caller: its status with links, and once it completed, its
//! manifest and a signed download per file of its own folder.

use std::time::Duration;

use chrono::Utc;

use super::status_path;
use crate::api::ApiState;
use crate::api::auth::{Signed, unix_now};
use crate::api::error::ApiResult;
use crate::api::model::{Download, JobSummary, JobView};
use crate::domain::status::{ErrorInfo, JobState, JobStatus, Manifest};

/// The API's view of a status: links, and for a completed job its manifest and downloads.
pub async fn job_view(state: &ApiState, status: JobStatus) -> ApiResult<JobView> {
    let (manifest, downloads) = match (status.state, status.manifest_key.as_deref()) {
        (JobState::Completed, Some(key)) => completed_outputs(state, &status, key).await?,
        _ => (None, Vec::new()),
    };
    let summary = summary(&status);
    Ok(JobView {
        events_url: format!("{}/events", summary.status_url),
        summary,
        output_dir: status.job.output_dir,
        notify: status.job.notify,
        deliveries: None,
        worker: status.worker,
        heartbeat_at: status.heartbeat_at,
        timeline: status.timeline,
        manifest,
        downloads,
    })
}

/// What `GET /v1/jobs` shows of a job, and `GET /v1/jobs/{id}` with more.
pub(super) fn summary(status: &JobStatus) -> JobSummary {
    JobSummary {
        job_id: status.job_id.clone(),
        state: status.state,
        stage: status.stage,
        progress: status.progress,
        attempt: status.attempt,
        max_attempts: status.max_attempts,
        source_key: status.job.source_key.clone(),
        outputs: status.job.outputs.clone(),
        created_at: status.created_at,
        updated_at: status.updated_at,
        error: status.error.as_ref().map(ErrorInfo::redacted),
        status_url: status_path(&status.job_id),
    }
}

/// The manifest and a download per output plus the manifest itself; nothing when the manifest
/// is gone (its outputs were deleted) or belongs to a later job of the same folder.
async fn completed_outputs(
    state: &ApiState,
    status: &JobStatus,
    key: &str,
) -> ApiResult<(Option<Manifest>, Vec<Download>)> {
    let job_id = status.job_id.as_str();
    let Some(bytes) = state.backend.storage.get_bytes(key).await? else { return Ok((None, Vec::new())) };
    let manifest: Manifest = match serde_json::from_slice(&bytes) {
        Ok(manifest) => manifest,
        Err(err) => {
            tracing::warn!(job_id, key, error = %err, "A manifest is unreadable.");
            return Ok((None, Vec::new()));
        }
    };
    if manifest.job_id != job_id {
        return Ok((None, Vec::new()));
    }
    let expiry = state.api.presign_expiry;
    let expires_at = Utc::now() + chrono::Duration::from_std(expiry).unwrap_or_else(|_| chrono::Duration::minutes(15));
    let mut downloads = Vec::new();
    let keys = download_keys(&manifest, key);
    // A manifest is no authority on what may be signed: only files of the job's own folder.
    let folder = status.job.output_dir.as_str();
    let (keys, foreign): (Vec<String>, Vec<String>) = keys.into_iter().partition(|k| k.starts_with(folder));
    if !foreign.is_empty() {
        tracing::warn!(job_id, folder, foreign = ?foreign, "A manifest lists files outside its job's folder; not signed.");
    }
    for output_key in &keys {
        let url = match state.backend.uploads.presign_get(output_key, expiry).await? {
            Some(url) => url,
            None => signed_download_url(state, output_key, expiry)?,
        };
        downloads.push(Download { key: output_key.to_string(), url, expires_at });
    }
    Ok((Some(manifest), downloads))
}

/// What a completed job's downloads are made of, before the job's folder is checked: every
/// output's main file and the files players or pages start from, the manifest, the sidecar.
fn download_keys(manifest: &Manifest, manifest_key: &str) -> Vec<String> {
    // Small multi-file outputs (a storyboard's sprite) get a URL per file; an HLS ladder gets
    // its master playlist only, and a CMAF ladder its DASH manifest besides: players resolve
    // segments relative to them, so serve streams from a CDN or a public path (see docs/api.md).
    manifest
        .outputs
        .iter()
        .flat_map(|o| {
            let small = o.files.len() <= MAX_FILES_PER_OUTPUT;
            let files: Vec<&str> =
                o.files.iter().map(String::as_str).filter(|f| *f != o.key && (small || is_entry_point(f))).collect();
            std::iter::once(o.key.as_str()).chain(files)
        })
        .chain(std::iter::once(manifest_key))
        // The quality sidecar (every rendition's VMAF per second), for the console's charts.
        .chain(manifest.quality_key.as_deref())
        .map(str::to_string)
        .collect()
}

/// Outputs with more files than this (HLS) list only their main file among the downloads, and
/// the other files players start from ([`is_entry_point`]).
const MAX_FILES_PER_OUTPUT: usize = 8;

/// A file a player starts from besides an output's main file: a CMAF ladder's DASH manifest.
fn is_entry_point(file: &str) -> bool {
    file.ends_with(".mpd")
}

fn signed_download_url(state: &ApiState, key: &str, expiry: Duration) -> ApiResult<String> {
    let expires = unix_now() + expiry.as_secs();
    let signature = state.signer.sign(&Signed { method: "GET", key, expires, content_type: None, length: None })?;
    Ok(format!("{}?expires={expires}&signature={signature}", state.key_url("files", key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_ladder_signs_its_entry_points_and_a_small_output_every_file() {
        let dir = "outputs/a/job-1/attempt-1/";
        let mut files: Vec<String> = ["h264-360p", "av1-360p", "audio"]
            .iter()
            .flat_map(|r| ["index.m3u8", "init.mp4", "segment_00001.m4s"].map(|f| format!("{dir}cmaf/{r}/{f}")))
            .collect();
        files.extend([format!("{dir}cmaf/master.m3u8"), format!("{dir}cmaf/manifest.mpd")]);
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "version": 1, "job_id": "job-1", "attempt": 1, "worker": "w", "completed_at": Utc::now(),
            "source": {"key": "uploads/a/clip.mp4", "size": 10, "format": "mov,mp4"},
            "outputs": [
                {"preset": "cmaf", "key": format!("{dir}cmaf/master.m3u8"), "files": files, "size": 1,
                 "content_type": "application/vnd.apple.mpegurl", "format": "hls"},
                {"preset": "storyboard", "key": format!("{dir}storyboard.vtt"),
                 "files": [format!("{dir}storyboard.vtt"), format!("{dir}storyboard.jpg")], "size": 1,
                 "content_type": "text/vtt", "format": "webvtt"}
            ],
            "timings": {"download_ms": 1, "probe_ms": 1, "transcode_ms": 1, "upload_ms": 1, "total_ms": 4}
        }))
        .expect("a manifest");
        let keys = download_keys(&manifest, "outputs/a/job-1/manifest.json");
        let expected = ["cmaf/master.m3u8", "cmaf/manifest.mpd", "storyboard.vtt", "storyboard.jpg"]
            .map(|f| format!("{dir}{f}"))
            .into_iter()
            .chain(["outputs/a/job-1/manifest.json".to_string()])
            .collect::<Vec<_>>();
        assert_eq!(keys, expected);
    }
}
