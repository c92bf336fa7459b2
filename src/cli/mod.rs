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
mod submit;
mod webhook;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use self::dead_letters::DeadLetterCommand;
use self::jobs::JobsArgs;
use self::ledger::LedgerCommand;
use self::output::CliError;
use self::webhook::WebhookCommand;
use crate::backend::{self, Backend};
use crate::config::{self, BackendKind, Config};
use crate::domain::job::OutputRequest;
use crate::domain::plan::{Decisions, plan, plan_with};
use crate::domain::preset::Preset;
use crate::domain::probe::MediaInfo;
use crate::domain::watermark::WatermarkSettings;
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
        /// A local image drawn as the job's watermark (with `--watermark-settings`).
        #[arg(long, value_name = "IMAGE", requires = "watermark_settings")]
        watermark: Option<PathBuf>,
        /// The job's `watermark` setting, as JSON (its `key` is not read).
        #[arg(long, value_name = "JSON", requires = "watermark")]
        watermark_settings: Option<String>,
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
        Command::Plan { file, presets, out, watermark, watermark_settings } => {
            let watermark = watermark.as_deref().zip(watermark_settings.as_deref());
            return print_plan(file, presets, out, watermark).await;
        }
        _ => {}
    }
    let backend = backend::connect(&config).await?;
    match command {
        Command::Presets { .. } | Command::Plan { .. } | Command::Completions { .. } | Command::Webhook(_) => {
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { drain, json } => run(config, backend, drain, json).await,
        Command::Submit { source, presets, wait, timeout } => {
            submit::submit_and_follow(&config, &backend, &source, presets, wait, timeout).await
        }
        Command::Status { job_id, follow, timeout } => {
            submit::status(&config, &backend, &job_id, follow, timeout).await
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

/// `plan`: the ffmpeg arguments and folders a file's presets would produce, as JSON.
async fn print_plan(
    file: &Path,
    presets: &[Preset],
    out: &Path,
    watermark: Option<(&Path, &str)>,
) -> anyhow::Result<ExitCode> {
    if !file.is_file() {
        return Err(CliError::NotFound(format!("{} is not a file", file.display())).into());
    }
    let media = probe(file, Duration::from_secs(60), Probed::Source).await?;
    let outputs: Vec<OutputRequest> = presets.iter().map(|&p| OutputRequest::new(p)).collect();
    let overlay = match watermark {
        Some((_, json)) => {
            let settings: WatermarkSettings = serde_json::from_str(json)?;
            settings.validate().map_err(anyhow::Error::msg)?;
            settings.overlay(&media)
        }
        None => None,
    };
    let image = watermark.map(|(image, _)| image);
    let decisions = Decisions { ladders: &[], audio_filter: None, watermark: overlay.as_ref().zip(image) };
    let plan = plan_with(&outputs, &media, file, out, &decisions)?;
    let args: Vec<String> = plan.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    output::emit(&serde_json::json!({"args": args, "folders": plan.folders}).to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// `run`: the worker, until a signal (or, with `drain`, until nothing is left), then its summary.
async fn run(config: Config, backend: Backend, drain: bool, json: bool) -> anyhow::Result<ExitCode> {
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

/// Each preset's ffmpeg arguments for a 60 s 1920x1080 source with audio.
fn print_presets(json: bool) -> anyhow::Result<()> {
    let sample = MediaInfo::sample(1920, 1080, 60.0);
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
