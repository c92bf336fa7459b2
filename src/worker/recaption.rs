//! The attempt of a job that only packages ([`Repackage`]): a completed job's `cmaf` output,
//! as it is, with more caption tracks. Nothing is downloaded, probed, encoded or scored.
//!
//! 1. The completed job's manifest names its `cmaf` output's files; its `package.json` holds
//!    what the manifests were written from.
//! 2. Every file of that package but the manifests (and the caption files of tracks being
//!    replaced) is copied into this attempt's folder by the store itself: no media byte passes
//!    through the worker, and the completed job's files are left as they are.
//! 3. The new caption files are fetched and converted as a `cmaf` job's are, mapped to the time
//!    the package recorded; the package gains their renditions, and the HLS and DASH manifests
//!    are rendered again by the same writers.
//! 4. The manifest (the completed job's `cmaf` record, with this package's files) is written
//!    and the job completed, as any attempt's commit does.
//!
//! Every step writes only this attempt's folder and is the same when run again, so a retry or a
//! recovered attempt simply does it all again.

use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::commit::{Completed, write_manifest};
use super::transcode::millis;
use super::{Inner, JobError};
use crate::domain::cmaf::package::{PACKAGE_FILE, Package};
use crate::domain::error_code::ErrorCode;
use crate::domain::job::{JobMessage, Repackage};
use crate::domain::keys::{attempt_dir, manifest_key};
use crate::domain::plan::CMAF_FOLDER;
use crate::domain::preset::{Preset, content_type_of};
use crate::domain::status::{Manifest, OutputRecord, Stage, Timings};
use crate::jobs::Attempt;
use crate::storage::StorageError;

/// The completed job's `cmaf` output, as its manifest and `package.json` describe it.
struct Found {
    manifest: Manifest,
    record: OutputRecord,
    /// Its folder's key, ending in `/`.
    folder: String,
    package: Package,
}

/// Takes the tracks in the new tracks' languages out of `package` when the job replaces them;
/// without `replace`, a language the package has already is refused.
fn make_room(package: &mut Package, repackage: &Repackage) -> Result<(), JobError> {
    for track in &repackage.captions {
        match (package.has_language(&track.language), repackage.replace) {
            (true, false) => {
                let detail = format!("the package has a caption track in `{}` already", track.language);
                return Err(JobError::permanent_naming(ErrorCode::InvalidCaptions, detail.clone(), detail));
            }
            (true, true) => drop(package.remove_captions(&track.language)),
            (false, _) => {}
        }
    }
    Ok(())
}

/// Packages the completed job again with the new tracks, then commits and completes.
pub(super) async fn attempt(
    inner: &Inner,
    message: &JobMessage,
    repackage: &Repackage,
    tracker: &Attempt,
    dir: &Path,
    stop: &CancellationToken,
) -> Result<Completed, JobError> {
    let started = Instant::now();
    let mut timings = Timings::default();
    let Found { manifest: old, record, folder, mut package } = find(inner, repackage).await?;
    make_room(&mut package, repackage)?;

    // The new tracks, converted here, first: a caption file that cannot be read ends the job
    // before anything is copied.
    let clock = Instant::now();
    let local = dir.join("out").join(CMAF_FOLDER);
    tokio::fs::create_dir_all(&local).await.map_err(|e| JobError::scratch("create the package folder", &e))?;
    let prepared =
        super::captions::prepare_at(inner, &repackage.captions, &local, stop, package.caption_mpegts).await?;
    for caption in &prepared {
        package.add_caption(&caption.track.language, caption.track.label(), &caption.file);
    }
    super::cmaf::write_package(&local, &package).await?;
    timings.analysis_ms = millis(clock);

    let written = local_files(&local).await.map_err(|e| JobError::scratch("list the package", &e))?;

    tracker.stage(Stage::Uploading).await?;
    let clock = Instant::now();
    let target = format!("{}{CMAF_FOLDER}/", attempt_dir(&message.job.output_dir, message.attempt));
    let mut files = copy_package(inner, &record, &folder, &target, &package, &written).await?;
    for name in &written {
        let key = format!("{target}{name}");
        let stored = inner.storage.put_file(&key, &local.join(name), content_type_of(name)).await?;
        files.push((key, stored.size));
    }
    files.sort();
    timings.upload_ms = millis(clock);

    tracker.stage(Stage::Finalizing).await?;
    timings.total_ms = millis(started);
    let record = OutputRecord {
        key: format!("{target}master.m3u8"),
        files: files.iter().map(|(key, _)| key.clone()).collect(),
        size: files.iter().map(|(_, size)| size).sum(),
        speed: None,
        note: Some(format!("captions added to the package of job {}; renditions copied as they are", old.job_id)),
        ladder: None,
        ..record
    };
    let manifest = Manifest {
        version: 1,
        job_id: message.job.job_id.clone(),
        attempt: message.attempt,
        worker: inner.config.worker_id.clone(),
        run: Some(tracker.run_id().to_string()),
        completed_at: Utc::now(),
        source: old.source,
        outputs: vec![record],
        timings,
        split: None,
        quality_key: None,
        qc: None,
        loudness: None,
    };
    let key = manifest_key(&message.job.output_dir);
    let body =
        serde_json::to_vec_pretty(&manifest).map_err(|e| JobError::retryable(ErrorCode::Internal, e.to_string()))?;
    write_manifest(&inner.step_cx(), &key, &message.job.job_id, message.attempt, body).await?;
    tracker.complete(&key).await?;
    Ok(Completed { tidy: message.attempt > 1 })
}

/// The completed job's manifest, `cmaf` record and package description.
async fn find(inner: &Inner, repackage: &Repackage) -> Result<Found, JobError> {
    let gone =
        |why: &str| JobError::permanent(ErrorCode::PackageNotFound, format!("job `{}`: {why}", repackage.job_id));
    let key = manifest_key(&repackage.output_dir);
    let bytes = inner.storage.get_bytes(&key).await?.ok_or_else(|| gone("it has no manifest"))?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|_| gone("its manifest is unreadable"))?;
    if manifest.job_id != repackage.job_id {
        return Err(gone("its folder holds another job's manifest"));
    }
    let record = manifest.outputs.iter().find(|o| o.preset == Preset::Cmaf).cloned();
    let record = record.ok_or_else(|| gone("it has no cmaf output"))?;
    let folder =
        record.key.strip_suffix("master.m3u8").ok_or_else(|| gone("its cmaf output has no master playlist"))?;
    let described = inner.storage.get_bytes(&format!("{folder}{PACKAGE_FILE}")).await?;
    let described = described.ok_or_else(|| gone("its cmaf output has no package.json"))?;
    let package = Package::from_json(&described).map_err(|e| gone(&e.to_string()))?;
    Ok(Found { folder: folder.to_string(), manifest, record, package })
}

/// Copies the completed package's files into `target`, inside the store: every file of the
/// record under its folder but those written here (`written`: the manifests, the caption
/// playlists, the new tracks) and the caption files the package no longer names (a replaced
/// track's). Each copy's key and size.
async fn copy_package(
    inner: &Inner,
    record: &OutputRecord,
    folder: &str,
    target: &str,
    package: &Package,
    written: &[String],
) -> Result<Vec<(String, u64)>, JobError> {
    let mut copied = Vec::new();
    for key in &record.files {
        let Some(relative) = key.strip_prefix(folder) else { continue };
        let dropped = relative.starts_with("captions-") && !package.captions.iter().any(|c| c.vtt == relative);
        if dropped || written.iter().any(|w| w == relative) {
            continue;
        }
        let to = format!("{target}{relative}");
        match inner.storage.copy(key, &to).await {
            Ok(info) => copied.push((to, info.size)),
            Err(StorageError::NotFound(_)) => {
                return Err(JobError::permanent(
                    ErrorCode::PackageNotFound,
                    format!("the file `{key}` of the completed package is gone"),
                ));
            }
            Err(other) => return Err(other.into()),
        }
    }
    Ok(copied)
}

/// The names of the files in `folder` (the package's own files, all at its top).
async fn local_files(folder: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(folder).await?;
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_type().await?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}
