//! The `media-worker` command line: the daemon, batch draining, submitting and following jobs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::backend::{self, Backend};
use crate::config::{self, BackendKind, Config};
use crate::domain::job::{JobSpec, OutputRequest, SourcePin, job_id_for_object, new_job_id};
use crate::domain::keys::{sanitize_file_name, validate_key};
use crate::domain::plan::plan;
use crate::domain::preset::Preset;
use crate::domain::probe::{AudioStream, MediaInfo, VideoStream};
use crate::domain::status::{JobState, JobStatus, Manifest};
use crate::jobs::{self, JobStore};
use crate::media::probe::{Probed, probe};
use crate::telemetry;
use crate::worker::{RunMode, Worker};

#[derive(Parser, Debug)]
#[command(name = "media-worker", version, about = "Transcodes media landing in S3 (or a local folder) with ffmpeg.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the worker (the default): poll, transcode, recover, until SIGTERM.
    Run {
        /// Exit 0 once the ready queue and the in-processing ledger are empty and no job runs.
        #[arg(long)]
        drain: bool,
    },
    /// Upload a local file under the upload prefix, or publish a job for an existing key.
    Submit {
        /// A local file to upload, or the key of an object already in storage.
        source: String,
        /// Presets to produce (repeatable); default: MEDIA_DEFAULT_PRESETS. With a local file,
        /// uploads get the default presets: upload first, then submit the key with --preset.
        #[arg(long = "preset", value_name = "NAME")]
        presets: Vec<Preset>,
        /// Follow the job until it ends, then print its manifest.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (e.g. 10m).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Print a job's status document.
    Status { job_id: String },
    /// List the presets with the exact ffmpeg arguments each runs.
    Presets,
    /// Probe a local file and print, as JSON, the ffmpeg argv a job with these presets would run.
    Plan {
        file: PathBuf,
        #[arg(long = "preset", value_name = "NAME", required = true)]
        presets: Vec<Preset>,
        /// Folder the outputs would be written to.
        #[arg(long, default_value = "out")]
        out: PathBuf,
    },
}

pub async fn main() -> ExitCode {
    let command = Cli::command().after_help(config::variables_help());
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.json_logs);
    match dispatch(cli, config).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    let command = cli.command.unwrap_or(Command::Run { drain: false });
    match &command {
        Command::Presets => {
            print_presets();
            return Ok(ExitCode::SUCCESS);
        }
        Command::Plan { file, presets, out } => {
            let media = probe(file, Duration::from_secs(60), Probed::Source).await?;
            let outputs: Vec<OutputRequest> = presets.iter().map(|&p| OutputRequest::new(p)).collect();
            let plan = plan(&outputs, &media, file, out)?;
            let args: Vec<String> = plan.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
            println!("{}", serde_json::json!({"args": args, "folders": plan.folders}));
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let backend = backend::connect(&config).await?;
    match command {
        Command::Presets | Command::Plan { .. } => Ok(ExitCode::SUCCESS),
        Command::Run { drain } => {
            let worker = Worker::new(config, backend.storage, backend.queues);
            let mode = if drain { RunMode::Drain } else { RunMode::Daemon };
            let summary = worker.run(mode, telemetry::shutdown_signal()).await?;
            if drain {
                println!(
                    "drained: {} completed, {} failed, {} retried, {} dead-lettered, {} duplicates skipped",
                    summary.completed, summary.failed, summary.retried, summary.dead_lettered, summary.skipped
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit { source, presets, wait, timeout } => {
            let job_id = match submit(&config, &backend, &source, presets).await? {
                Submitted::Job(job_id) => job_id,
                Submitted::Upload { key, .. } if !wait => {
                    // On S3 the job id derives from the upload's event: known once a worker has
                    // taken the upload (`GET /v1/uploads/{key}` of the API tells it then).
                    println!("upload {key}");
                    eprintln!("the job's id is assigned when a worker takes the upload; add --wait to follow it");
                    return Ok(ExitCode::SUCCESS);
                }
                Submitted::Upload { key, etag } => find_job_of_write(&backend, &key, &etag).await?,
            };
            println!("job {job_id}");
            if wait { follow(&config, &backend, &job_id, timeout).await } else { Ok(ExitCode::SUCCESS) }
        }
        Command::Status { job_id } => match JobStore::new(backend.storage.clone()).read(&job_id).await? {
            Some(status) => {
                println!("{}", String::from_utf8_lossy(&status.to_json()));
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("error: no job `{job_id}`");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// Prints each preset's ffmpeg arguments for a 60 s 1920x1080 source with audio.
fn print_presets() {
    let sample = MediaInfo {
        format: "mov,mp4,m4a,3gp,3g2,mj2".into(),
        duration_seconds: Some(60.0),
        video: Some(VideoStream {
            codec: "h264".into(),
            width: 1920,
            height: 1080,
            pix_fmt: Some("yuv420p".into()),
            frame_rate: Some(30.0),
            rotation: 0,
        }),
        audio: Some(AudioStream { codec: "aac".into(), channels: Some(2), sample_rate: Some(48000) }),
        video_streams: 1,
        audio_streams: 1,
    };
    println!("Each preset's ffmpeg arguments, for a 60 s 1920x1080 H.264/AAC source.");
    println!("A job with several outputs runs them as output blocks of one command (one decode).\n");
    for &preset in Preset::ALL {
        let output = OutputRequest::new(preset);
        match plan(std::slice::from_ref(&output), &sample, Path::new("<source>"), Path::new("<out>")) {
            Ok(plan) => {
                let args: Vec<String> = plan.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
                println!("{preset}\n  ffmpeg {}\n", args.join(" "));
            }
            Err(err) => println!("{preset}\n  ({err})\n"),
        }
    }
}

/// Uploads a file (the upload event makes the job) or publishes a job for a key; returns the
/// job id either way.
/// What `submit` made: a job, or (a file uploaded to S3) an upload whose job a worker names.
enum Submitted {
    Job(String),
    Upload { key: String, etag: String },
}

async fn submit(config: &Config, backend: &Backend, source: &str, presets: Vec<Preset>) -> anyhow::Result<Submitted> {
    let path = Path::new(source);
    if path.is_file() {
        if !presets.is_empty() {
            bail!("--preset applies to keys already in storage: upload the file first, then submit its key");
        }
        return upload(config, backend, path).await;
    }
    validate_key(source).with_context(|| format!("`{source}` is neither a local file nor a valid key"))?;
    if backend.storage.head(source).await?.is_none() {
        bail!("`{source}` is neither a local file nor an object in storage");
    }
    let presets = if presets.is_empty() { config.default_presets.clone() } else { presets };
    let mut outputs: Vec<OutputRequest> = Vec::new();
    for preset in presets {
        if !outputs.iter().any(|o| o.preset == preset) {
            outputs.push(OutputRequest::new(preset));
        }
    }
    let head = backend.storage.head(source).await?.with_context(|| format!("`{source}` vanished"))?;
    let job_id = new_job_id();
    let job = JobSpec {
        output_dir: config.layout.job_dir(source, &job_id),
        job_id,
        source_key: source.to_string(),
        outputs,
        source: SourcePin { etag: head.etag, version_id: None, size: Some(head.size) },
    };
    job.validate()?;
    let store = JobStore::new(backend.storage.clone());
    jobs::submit(&store, backend.queues.ready.as_ref(), &job, config.max_attempts).await?;
    Ok(Submitted::Job(job.job_id))
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
        return Ok(Submitted::Job(job_id_for_object(&backend.bucket, &key, &etag)));
    }
    // On S3 the job id comes from the event's sequencer, which only the event carries.
    Ok(Submitted::Upload { key, etag })
}

/// The job a worker made from one write of `key` (matched by its ETag), waiting for it.
async fn find_job_of_write(backend: &Backend, key: &str, etag: &str) -> anyhow::Result<String> {
    let store = JobStore::new(backend.storage.clone());
    let started = Instant::now();
    eprintln!("waiting for a worker to take the upload...");
    loop {
        if let Some(status) = jobs::job_of_write(&store, key, etag).await? {
            return Ok(status.job_id);
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("no worker took the upload of `{key}` within 10 minutes");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Prints progress until the job ends; prints the manifest when it completed.
async fn follow(
    config: &Config,
    backend: &Backend,
    job_id: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let store = JobStore::new(backend.storage.clone());
    let mut last_line = String::new();
    loop {
        if let Some(limit) = timeout
            && started.elapsed() > limit
        {
            eprintln!("error: job {job_id} did not end within {limit:?}");
            return Ok(ExitCode::FAILURE);
        }
        let status = store.read(job_id).await?;
        let line = match &status {
            None => "waiting for a worker".to_string(),
            Some(s) => {
                format!("{:?} / {:?} {:.0}% (attempt {})", s.state, s.stage, s.progress, s.attempt).to_lowercase()
            }
        };
        if line != last_line {
            eprintln!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
            last_line = line;
        }
        if let Some(status) = status.filter(|s| s.state.is_terminal()) {
            return report(config, backend, &status).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn report(config: &Config, backend: &Backend, status: &JobStatus) -> anyhow::Result<ExitCode> {
    match status.state {
        JobState::Completed => {
            let key = status.manifest_key.clone().context("a completed job without a manifest key")?;
            let bytes = backend.storage.get_bytes(&key).await?.context("the manifest is missing")?;
            println!("{}", String::from_utf8_lossy(&bytes));
            let manifest: Manifest = serde_json::from_slice(&bytes).context("the manifest is malformed")?;
            eprintln!("{}", summarize(config, &key, &manifest));
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            let error = status.error.as_ref().map(|e| format!("{}: {}", e.code, e.message)).unwrap_or_default();
            eprintln!("job {} ended {:?}: {error}", status.job_id, status.state);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A few lines for people: where the outputs are and where the time went.
fn summarize(config: &Config, manifest_key: &str, manifest: &Manifest) -> String {
    let place = |key: &str| match config.backend {
        BackendKind::Local => object_path(config, key).display().to_string(),
        BackendKind::Aws => {
            let bucket = config.aws.as_ref().map(|a| a.bucket.as_str()).unwrap_or_default();
            format!("s3://{bucket}/{key}")
        }
    };
    let t = &manifest.timings;
    let mut lines = vec![format!(
        "job {} completed in {:.1} s (download {:.1} s, probe {:.1} s, transcode {:.1} s, upload {:.1} s)",
        manifest.job_id,
        t.total_ms as f64 / 1000.0,
        t.download_ms as f64 / 1000.0,
        t.probe_ms as f64 / 1000.0,
        t.transcode_ms as f64 / 1000.0,
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

/// Where the local backend keeps an object, for printing paths users can open.
pub fn object_path(config: &Config, key: &str) -> PathBuf {
    config.data_dir.join("storage").join(key)
}
