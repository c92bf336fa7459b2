//! Submitting a job (a key, a local file, or an upload to follow) and following a job to its
//! end (`submit`, `status`), with the exit code its outcome makes.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::jobs;
use super::output::{self, CliError};
use super::progress::{self, Followed};
use crate::backend::Backend;
use crate::config::{BackendKind, Config};
use crate::domain::job::{job_id_for_object, new_job_id};
use crate::domain::keys::{sanitize_file_name, validate_key};
use crate::domain::preset::Preset;
use crate::domain::status::{JobState, JobStatus, Manifest};
use crate::jobs::{self as lifecycle, IfExists, NewJob, SubmitError, Submitter};
use crate::media::probe::{Probed, probe};

/// `submit`: a job (or an upload), then, with `wait`, its progress until it ends.
pub(super) async fn submit_and_follow(
    config: &Config,
    backend: &Backend,
    source: &str,
    presets: Vec<Preset>,
    wait: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let submitted = submit(config, backend, source, presets).await?;
    let source_seconds = match &submitted {
        Submitted::Job { from_file: true, .. } | Submitted::Upload { .. } if wait => {
            source_seconds(Path::new(source)).await
        }
        _ => None,
    };
    let job_id = match submitted {
        Submitted::Job { job_id, .. } if !wait => {
            output::emit(&job_id)?;
            return Ok(ExitCode::SUCCESS);
        }
        Submitted::Job { job_id, .. } => job_id,
        Submitted::Upload { key, .. } if !wait => {
            // On S3 the job id derives from the upload's event: known once a worker has
            // taken the upload (`GET /v1/uploads/{key}` of the API tells it then).
            output::emit(&key)?;
            eprintln!("the upload's job id is assigned when a worker takes it; add --wait to follow it");
            return Ok(ExitCode::SUCCESS);
        }
        Submitted::Upload { key, etag } => match find_job_of_write(config, backend, &key, &etag, deadline).await? {
            Some(job_id) => job_id,
            None => return Ok(ExitCode::from(output::TIMEOUT)),
        },
    };
    eprintln!("job {job_id}");
    let store = crate::notify::job_store(config, backend);
    match progress::follow(&store, &job_id, deadline, source_seconds).await? {
        Followed::Ended(status) => report(config, backend, &status).await,
        Followed::TimedOut => Ok(timed_out(&job_id, timeout)),
    }
}

/// `status`: a job's status document, or with `follow` its progress until it ends.
pub(super) async fn status(
    config: &Config,
    backend: &Backend,
    job_id: &str,
    follow: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let store = crate::notify::job_store(config, backend);
    let Some(status) = store.read(job_id).await? else {
        return Err(CliError::NotFound(format!("no job `{job_id}`")).into());
    };
    if !follow {
        output::emit(&String::from_utf8_lossy(&status.to_json()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    match progress::follow(&store, job_id, deadline, None).await? {
        Followed::Ended(status) => {
            output::emit(&String::from_utf8_lossy(&status.to_json()))?;
            Ok(ended(&status))
        }
        Followed::TimedOut => Ok(timed_out(job_id, timeout)),
    }
}

fn timed_out(job_id: &str, timeout: Option<Duration>) -> ExitCode {
    let limit = timeout.map(|t| humantime::format_duration(t).to_string()).unwrap_or_default();
    eprintln!("error: job {job_id} did not end within {limit}; it goes on (media-worker status {job_id} --follow)");
    ExitCode::from(output::TIMEOUT)
}

/// Tells how a followed job ended, on stderr; the exit code for it.
fn ended(status: &JobStatus) -> ExitCode {
    if status.state == JobState::Completed {
        eprintln!("job {} completed", status.job_id);
        return ExitCode::SUCCESS;
    }
    let state = jobs::json_name(&status.state);
    match &status.error {
        Some(e) => eprintln!("job {} {state}: {}: {}", status.job_id, e.code, e.message),
        None => eprintln!("job {} {state}", status.job_id),
    }
    ExitCode::from(output::JOB_FAILED)
}

/// The length of a local source, to tell the transcode's speed in multiples of real time; best
/// effort (ffprobe on a local file takes milliseconds).
async fn source_seconds(path: &Path) -> Option<f64> {
    if !path.is_file() {
        return None;
    }
    probe(path, Duration::from_secs(10), Probed::Source).await.ok()?.duration_seconds
}

/// What `submit` made: a job, or (a file uploaded to S3) an upload whose job a worker names.
enum Submitted {
    Job { job_id: String, from_file: bool },
    Upload { key: String, etag: String },
}

/// Uploads a file (the upload event makes the job) or publishes a job for a key.
async fn submit(config: &Config, backend: &Backend, source: &str, presets: Vec<Preset>) -> anyhow::Result<Submitted> {
    let path = Path::new(source);
    if path.is_file() {
        if !presets.is_empty() {
            return Err(CliError::Usage(
                "--preset applies to keys already in storage: upload the file first, then submit its key".into(),
            )
            .into());
        }
        return upload(config, backend, path).await;
    }
    if validate_key(source).is_err() {
        return Err(CliError::Usage(format!("`{source}` is neither a local file nor a valid key")).into());
    }
    let presets = if presets.is_empty() { config.default_presets.clone() } else { presets };
    let job = NewJob::new(&config.layout, new_job_id(), source.to_string(), NewJob::outputs_of(presets));
    let store = crate::notify::job_store(config, backend);
    match Submitter::new(&store, backend, config.max_attempts).submit(job, IfExists::FreshId).await {
        Ok(submitted) => Ok(Submitted::Job { job_id: submitted.status.job_id, from_file: false }),
        Err(SubmitError::SourceMissing(_)) => {
            Err(CliError::NotFound(format!("`{source}` is neither a local file nor an object in storage")).into())
        }
        Err(err) => Err(err.into()),
    }
}

async fn upload(config: &Config, backend: &Backend, path: &Path) -> anyhow::Result<Submitted> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let folder = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let key = config.layout.upload_key(&folder, &sanitize_file_name(&name));
    let content_type = "application/octet-stream";
    let stored = backend.storage.put_file(&key, path, content_type).await?;
    eprintln!("uploaded {} as {key} ({} bytes)", path.display(), stored.size);
    let etag = stored.etag.unwrap_or_default();
    if config.backend == BackendKind::Local {
        // The local store's event names the write by its ETag: the id the worker derives.
        let job_id = job_id_for_object(&backend.bucket, &key, &etag);
        return Ok(Submitted::Job { job_id, from_file: true });
    }
    // On S3 the job id comes from the event's sequencer, which only the event carries.
    Ok(Submitted::Upload { key, etag })
}

/// Without a deadline, how long to wait for a worker to take an upload.
const TAKE_UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// The job a worker made from one write of `key` (matched by its ETag), waiting for it; `None`
/// when no worker took the upload in time (said on stderr).
async fn find_job_of_write(
    config: &Config,
    backend: &Backend,
    key: &str,
    etag: &str,
    deadline: Option<Instant>,
) -> anyhow::Result<Option<String>> {
    let store = crate::notify::job_store(config, backend);
    let started = Instant::now();
    let deadline = deadline.unwrap_or(started + TAKE_UPLOAD_TIMEOUT);
    eprintln!("waiting for a worker to take the upload...");
    loop {
        if let Some(status) = lifecycle::job_of_write(&store, key, etag).await? {
            return Ok(Some(status.job_id));
        }
        let now = Instant::now();
        if now >= deadline {
            let waited = humantime::format_duration(Duration::from_secs(now.duration_since(started).as_secs()));
            eprintln!("error: no worker took the upload of `{key}` within {waited}; its job runs once one does");
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_secs(1).min(deadline.saturating_duration_since(now))).await;
    }
}

/// The result of `submit --wait`: the manifest on stdout when the job completed.
async fn report(config: &Config, backend: &Backend, status: &JobStatus) -> anyhow::Result<ExitCode> {
    if status.state != JobState::Completed {
        return Ok(ended(status));
    }
    let key = status.manifest_key.clone().context("a completed job without a manifest key")?;
    let bytes = backend.storage.get_bytes(&key).await?.context("the manifest is missing")?;
    let manifest: Manifest = serde_json::from_slice(&bytes).context("the manifest is malformed")?;
    output::emit(&String::from_utf8_lossy(&bytes))?;
    eprintln!("{}", summarize(config, &key, &manifest));
    Ok(ExitCode::SUCCESS)
}

/// A few lines for people: where the outputs are and where the time went.
fn summarize(config: &Config, manifest_key: &str, manifest: &Manifest) -> String {
    let place = |key: &str| match config.backend {
        BackendKind::Local => crate::storage::local::LocalStorage::file_in(&config.data_dir, key).display().to_string(),
        BackendKind::Aws => {
            let bucket = config.aws.as_ref().map(|a| a.bucket.as_str()).unwrap_or_default();
            format!("s3://{bucket}/{key}")
        }
    };
    let t = &manifest.timings;
    let mut lines = vec![format!(
        "job {} completed in {:.1} s (download {:.1} s, probe {:.1} s, {}transcode {:.1} s, scoring {:.1} s, upload {:.1} s)",
        manifest.job_id,
        t.total_ms as f64 / 1000.0,
        t.download_ms as f64 / 1000.0,
        t.probe_ms as f64 / 1000.0,
        if t.analysis_ms > 0 { format!("analysis {:.1} s, ", t.analysis_ms as f64 / 1000.0) } else { String::new() },
        t.transcode_ms as f64 / 1000.0,
        t.scoring_ms as f64 / 1000.0,
        t.upload_ms as f64 / 1000.0,
    )];
    for output in &manifest.outputs {
        let shape =
            output.media.video.as_ref().map(|v| format!("{}x{} {}", v.width, v.height, v.codec)).unwrap_or_default();
        let speed = output.speed.map(|s| format!(", {s:.1}x realtime")).unwrap_or_default();
        lines.push(format!("  {}: {} ({shape}, {} bytes{speed})", output.preset, place(&output.key), output.size));
    }
    lines.push(format!("  manifest: {}", place(manifest_key)));
    lines.join("\n")
}
