//! The `media-worker` command line: the daemon, batch draining, submitting and following jobs,
//! listing jobs, and the dead-letter queue.
//!
//! Output contract ([`output`]): stdout carries only a command's result (a JSON document, or a
//! list with one item per line, its id first), stderr carries progress and messages, and the
//! exit code says how it went: 0 done, 1 the job failed or was cancelled, 2 usage or settings,
//! 3 timed out, 4 not found, 5 any other error.

mod dead_letters;
mod jobs;
mod ledger;
mod output;
mod progress;
mod webhook;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use self::dead_letters::DeadLetterCommand;
use self::jobs::JobsArgs;
use self::ledger::LedgerCommand;
use self::output::CliError;
use self::progress::Followed;
use self::webhook::WebhookCommand;
use crate::backend::{self, Backend};
use crate::config::{self, BackendKind, Config};
use crate::domain::job::{OutputRequest, job_id_for_object, new_job_id};
use crate::domain::keys::{sanitize_file_name, validate_key};
use crate::domain::plan::plan;
use crate::domain::preset::Preset;
use crate::domain::probe::{AudioStream, MediaInfo, VideoStream};
use crate::domain::status::{JobState, JobStatus, Manifest};
use crate::jobs::{self as lifecycle, IfExists, NewJob, SubmitError, Submitter};
use crate::media::probe::{Probed, probe};
use crate::telemetry;
use crate::worker::{RunMode, Worker};

const EXIT_CODES: &str = "\
Exit codes:
  0  done (submit --wait, status --follow: the job completed)
  1  the job failed or was cancelled
  2  usage or configuration error
  3  --timeout passed before the job ended (the job goes on)
  4  not found (job, dead letter, object)
  5  any other error (storage or queue unreachable, ...)";

#[derive(Parser, Debug)]
#[command(
    name = "media-worker",
    version,
    about = "Transcodes media landing in S3 (or a local folder) with ffmpeg.",
    long_about = "Transcodes media landing in S3 (or a local folder) with ffmpeg.\n\n\
                  Results go to stdout (JSON documents, or one item per line), progress and \
                  messages to stderr."
)]
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
        /// With --drain: print the summary as JSON.
        #[arg(long, requires = "drain")]
        json: bool,
    },
    /// Upload a local file under the upload prefix, or publish a job for an existing key.
    ///
    /// Prints the job id; with --wait, follows the job and prints its manifest (JSON).
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
        /// With --wait: give up after this long (e.g. 10m); exit code 3.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "wait")]
        timeout: Option<Duration>,
    },
    /// Print a job's status document (JSON).
    Status {
        job_id: String,
        /// Follow the job until it ends, then print its final status document.
        #[arg(long)]
        follow: bool,
        /// With --follow: give up after this long (e.g. 10m); exit code 3.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "follow")]
        timeout: Option<Duration>,
    },
    /// List recent jobs from their status documents, the most recently created first.
    Jobs(JobsArgs),
    /// Every webhook delivery attempt of a job, to its own URL and the deployment's, with the
    /// endpoints that answered 410 Gone (the API shows a job's submitter only its own URL's).
    Deliveries {
        job_id: String,
        /// The delivery record as JSON instead of one line per attempt.
        #[arg(long)]
        json: bool,
    },
    /// Inspect the dead-letter queue, redrive or purge it.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// The job ledger: import what earlier versions kept under `jobs/` in the bucket.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Webhooks: check a captured request's signature, or make a secret.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// List the presets with the exact ffmpeg arguments each runs.
    Presets {
        /// A JSON array of {preset, args} instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Probe a local file and print, as JSON, the ffmpeg argv a job with these presets would run.
    Plan {
        file: PathBuf,
        #[arg(long = "preset", value_name = "NAME", required = true)]
        presets: Vec<Preset>,
        /// Folder the outputs would be written to.
        #[arg(long, default_value = "out")]
        out: PathBuf,
    },
    /// Print a shell completion script.
    ///
    /// For example: `media-worker completions bash > ~/.local/share/bash-completion/completions/media-worker`.
    Completions { shell: clap_complete::Shell },
}

pub async fn main() -> ExitCode {
    let command = Cli::command().after_help(format!("{}\n\n{EXIT_CODES}", config::variables_help()));
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    // Completions need no settings: they must work before any are made.
    if let Some(Command::Completions { shell }) = cli.command {
        return match completions(shell) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                output::code_of(&err)
            }
        };
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(output::USAGE);
        }
    };
    telemetry::init(config.json_logs);
    match dispatch(cli, config).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            output::code_of(&err)
        }
    }
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "media-worker", &mut script);
    output::emit(&String::from_utf8(script)?)
}

async fn dispatch(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    let command = cli.command.unwrap_or(Command::Run { drain: false, json: false });
    match &command {
        Command::Webhook(webhook) => return webhook::run(webhook, &config),
        Command::Presets { json } => {
            print_presets(*json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Plan { file, presets, out } => {
            if !file.is_file() {
                return Err(CliError::NotFound(format!("{} is not a file", file.display())).into());
            }
            let media = probe(file, Duration::from_secs(60), Probed::Source).await?;
            let outputs: Vec<OutputRequest> = presets.iter().map(|&p| OutputRequest::new(p)).collect();
            let plan = plan(&outputs, &media, file, out)?;
            let args: Vec<String> = plan.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
            output::emit(&serde_json::json!({"args": args, "folders": plan.folders}).to_string())?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let backend = backend::connect(&config).await?;
    match command {
        Command::Presets { .. } | Command::Plan { .. } | Command::Completions { .. } | Command::Webhook(_) => {
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { drain, json } => {
            let worker = Worker::new(config, backend);
            let mode = if drain { RunMode::Drain } else { RunMode::Daemon };
            let summary = worker.run(mode, telemetry::shutdown_signal()).await?;
            if drain && json {
                output::emit_json(&serde_json::json!({
                    "completed": summary.completed,
                    "failed": summary.failed,
                    "retried": summary.retried,
                    "dead_lettered": summary.dead_lettered,
                    "duplicates_skipped": summary.skipped,
                }))?;
            } else if drain {
                output::emit(&format!(
                    "drained: {} completed, {} failed, {} retried, {} dead-lettered, {} duplicates skipped",
                    summary.completed, summary.failed, summary.retried, summary.dead_lettered, summary.skipped
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit { source, presets, wait, timeout } => {
            let deadline = timeout.map(|t| Instant::now() + t);
            let submitted = submit(&config, &backend, &source, presets).await?;
            let source_seconds = match &submitted {
                Submitted::Job { from_file: true, .. } | Submitted::Upload { .. } if wait => {
                    source_seconds(Path::new(&source)).await
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
                Submitted::Upload { key, etag } => {
                    match find_job_of_write(&config, &backend, &key, &etag, deadline).await? {
                        Some(job_id) => job_id,
                        None => return Ok(ExitCode::from(output::TIMEOUT)),
                    }
                }
            };
            eprintln!("job {job_id}");
            let store = crate::notify::job_store(&config, &backend);
            match progress::follow(&store, &job_id, deadline, source_seconds).await? {
                Followed::Ended(status) => report(&config, &backend, &status).await,
                Followed::TimedOut => Ok(timed_out(&job_id, timeout)),
            }
        }
        Command::Status { job_id, follow, timeout } => {
            let store = crate::notify::job_store(&config, &backend);
            let Some(status) = store.read(&job_id).await? else {
                return Err(CliError::NotFound(format!("no job `{job_id}`")).into());
            };
            if !follow {
                output::emit(&String::from_utf8_lossy(&status.to_json()))?;
                return Ok(ExitCode::SUCCESS);
            }
            let deadline = timeout.map(|t| Instant::now() + t);
            match progress::follow(&store, &job_id, deadline, None).await? {
                Followed::Ended(status) => {
                    output::emit(&String::from_utf8_lossy(&status.to_json()))?;
                    Ok(ended(&status))
                }
                Followed::TimedOut => Ok(timed_out(&job_id, timeout)),
            }
        }
        Command::Jobs(args) => {
            jobs::run(&crate::notify::job_store(&config, &backend), &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Deliveries { job_id, json } => {
            jobs::deliveries(&crate::notify::job_store(&config, &backend), &job_id, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger(command) => ledger::run(&command, &config, &backend).await,
        Command::DeadLetters(command) => {
            // SQS answers a short receive with a sample of the queue: wait a second for a fuller one.
            let wait = if config.backend == BackendKind::Aws { Duration::from_secs(1) } else { Duration::ZERO };
            let queue = backend.queues.dead_letter.clone();
            let cx = dead_letters::Deps { config: &config, backend: &backend, queue, wait };
            dead_letters::run(&command, &cx).await
        }
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

/// Each preset's ffmpeg arguments for a 60 s 1920x1080 source with audio.
fn print_presets(json: bool) -> anyhow::Result<()> {
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
    let mut text = String::from(
        "Each preset's ffmpeg arguments, for a 60 s 1920x1080 H.264/AAC source.\n\
         A job with several outputs runs them as output blocks of one command (one decode).\n\n",
    );
    let mut items = Vec::new();
    for &preset in Preset::ALL {
        let output = OutputRequest::new(preset);
        match plan(std::slice::from_ref(&output), &sample, Path::new("<source>"), Path::new("<out>")) {
            Ok(plan) => {
                let args: Vec<String> = plan.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
                text.push_str(&format!("{preset}\n  ffmpeg {}\n\n", args.join(" ")));
                items.push(serde_json::json!({"preset": preset, "args": args}));
            }
            Err(err) => {
                text.push_str(&format!("{preset}\n  ({err})\n\n"));
                items.push(serde_json::json!({"preset": preset, "error": err.to_string()}));
            }
        }
    }
    if json { output::emit_json(&serde_json::Value::Array(items)) } else { output::emit(text.trim_end()) }
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
    match Submitter::new(&store, backend, config.max_attempts).submit(job, IfExists::Keep).await {
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
