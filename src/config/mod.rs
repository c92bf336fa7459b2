//! Settings, read once at start-up from the environment (and `.env`).
//!
//! Every variable lives in one table, [`VARIABLES`], which is also what `--help` prints and what
//! `.env.example` mirrors, so the three cannot drift apart. Parsing is a pure function of a lookup
//! closure, so tests feed it a map instead of mutating the process environment.
//!
//! Each group of settings has its own parser beside this file: the backend and its AWS
//! resources, what jobs are made of (layout, presets, splitting, source limits, URL imports),
//! the lifecycle's timing, and this process's own. [`table`] is what every table of settings
//! shares; notifications keep theirs in [`crate::notify::config`], read against it.

mod backend;
mod jobs;
mod process;
pub mod table;
mod timing;
mod variables;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use backend::{AwsSettings, BackendKind};
pub use jobs::{ImportSettings, SourceLimits};
pub use table::{ConfigError, Variable, parse_size, parse_socket_addr};
pub use variables::VARIABLES;

use crate::domain::keys::KeyLayout;
use crate::domain::preset::Preset;
use crate::domain::split::SplitSettings;
use crate::notify::config::{NOTIFY_VARIABLES, NotifySettings};
use table::Env;

#[derive(Debug, Clone)]
pub struct Config {
    pub backend: BackendKind,
    /// Present only for the AWS backend.
    pub aws: Option<AwsSettings>,
    pub data_dir: PathBuf,
    pub layout: KeyLayout,
    pub default_presets: Vec<Preset>,
    pub concurrency: usize,
    /// Jobs in flight beyond `concurrency` (only `concurrency` of them run ffmpeg at once).
    pub prefetch: usize,
    pub poll_schedule: String,
    pub reaper_schedule: String,
    pub max_attempts: u32,
    pub job_timeout: Duration,
    /// How long a job's ledger record stays after the job ended.
    pub job_retention: Duration,
    pub shutdown_grace: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub retry_base_delay: Duration,
    pub visibility_timeout: Duration,
    /// A ready message delivered this many times without starting its job is dead-lettered
    /// with a reason before SQS's redrive would move it without one.
    pub max_receives: u32,
    pub dead_letter_sweep: Duration,
    /// `/readyz` fails when the poll loop has been stuck this long.
    pub poll_stall_timeout: Duration,
    pub multipart_threshold: u64,
    /// Limits checked before any transcoding.
    pub limits: SourceLimits,
    pub work_dir: PathBuf,
    pub worker_id: String,
    pub json_logs: bool,
    /// Where the worker serves health and metrics, when set.
    pub metrics_addr: Option<SocketAddr>,
    /// Webhooks and their delivery (`notify`).
    pub notify: NotifySettings,
    /// Which jobs are split into segments, and how long those are.
    pub split: SplitSettings,
    /// Sources fetched from a URL.
    pub import: ImportSettings,
    /// The VMAF an HLS ladder is made per title to reach when its job names no `quality`
    /// (`MEDIA_QUALITY_TARGET`; none: the fixed ladder).
    pub quality_target: Option<crate::domain::per_title::QualityTarget>,
}

impl Config {
    /// Reads the process environment, after loading `.env` if there is one.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is worth a warning but not a refusal.
        if let Err(err) = dotenvy::dotenv()
            && !err.not_found()
        {
            eprintln!("warning: .env could not be read: {err}");
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses settings from any lookup (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup, VARIABLES);
        let (backend, aws) = backend::parse(&env)?;
        let (layout, default_presets) = jobs::layout_and_presets(&env)?;
        let process = process::parse(&env)?;
        let timing = timing::parse(&env)?;
        let multipart_threshold = env.parse_with("MEDIA_MULTIPART_THRESHOLD", parse_size)?;
        let limits = jobs::limits(&env)?;
        let notify = NotifySettings::from_lookup(&lookup, backend == BackendKind::Aws)?;
        let split = jobs::split(&env)?;
        let import = jobs::import(&env)?;
        let quality_target = jobs::quality_target(&env)?;
        Ok(Config {
            quality_target,
            notify,
            split,
            import,
            backend,
            aws,
            data_dir: PathBuf::from(env.or_default("MEDIA_DATA_DIR")),
            layout,
            default_presets,
            concurrency: process.concurrency,
            prefetch: process.prefetch,
            poll_schedule: timing.poll_schedule,
            reaper_schedule: timing.reaper_schedule,
            max_attempts: timing.max_attempts,
            job_timeout: timing.job_timeout,
            job_retention: timing.job_retention,
            shutdown_grace: timing.shutdown_grace,
            heartbeat_interval: timing.heartbeat_interval,
            heartbeat_timeout: timing.heartbeat_timeout,
            retry_base_delay: timing.retry_base_delay,
            visibility_timeout: timing.visibility_timeout,
            max_receives: timing.max_receives,
            dead_letter_sweep: timing.dead_letter_sweep,
            poll_stall_timeout: timing.poll_stall_timeout,
            multipart_threshold,
            limits,
            work_dir: process.work_dir,
            worker_id: process.worker_id,
            json_logs: process.json_logs,
            metrics_addr: process.metrics_addr,
        })
    }
}

/// The table of variables as `--help` shows it (the worker's, then notifications').
pub fn variables_help() -> String {
    let mut out = String::from("Environment (also read from .env):\n");
    out.push_str(&table::help(VARIABLES));
    out.push_str(&table::help(NOTIFY_VARIABLES));
    out.push_str(
        "  AWS_REGION, AWS_ENDPOINT_URL, AWS_PROFILE, AWS_ACCESS_KEY_ID, ...\n      \
         standard AWS settings, read by the default credential and region chain (task roles on ECS)\n",
    );
    out
}

/// This machine's name, for operators' logs only.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Drift check for a table of variables: each is in `.env.example` as `# NAME=default` (a line
/// that starts so when there is no default) and in the `--help` text given.
#[cfg(test)]
pub(crate) fn assert_documented(table: &[Variable], help: &str) {
    let example = include_str!("../../.env.example");
    for var in table {
        let line = format!("# {}={}", var.name, var.default);
        let found = if var.default.is_empty() {
            example.lines().any(|l| l.starts_with(&line))
        } else {
            example.lines().any(|l| l.trim_end() == line)
        };
        assert!(found, "missing from .env.example: {line}");
        assert!(help.contains(var.name), "missing from --help: {}", var.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_to_the_local_backend_without_a_bucket() {
        let cfg = config(&[]).unwrap();
        assert_eq!(cfg.backend, BackendKind::Local);
        assert_eq!(cfg.layout.upload_prefix(), "uploads/");
        assert_eq!(cfg.default_presets, vec![Preset::Mp4H264]);
        assert_eq!(cfg.job_timeout, Duration::from_secs(7200));
        assert!(cfg.concurrency >= 1);
        assert_eq!(cfg.metrics_addr, None);
        let cfg = config(&[("MEDIA_METRICS_ADDR", "127.0.0.1:9090")]).unwrap();
        assert_eq!(cfg.metrics_addr, Some("127.0.0.1:9090".parse().unwrap()));
    }

    #[test]
    fn a_bucket_selects_aws_and_requires_the_queues() {
        let err = config(&[("MEDIA_S3_BUCKET", "b")]).unwrap_err();
        assert_eq!(err.var, "MEDIA_READY_QUEUE_URL");
        let cfg = config(&[
            ("MEDIA_S3_BUCKET", "b"),
            ("MEDIA_READY_QUEUE_URL", "r"),
            ("MEDIA_PROCESSING_QUEUE_URL", "p"),
            ("MEDIA_DEAD_LETTER_QUEUE_URL", "d"),
            ("MEDIA_JOBS_TABLE", "t"),
            ("MEDIA_S3_FORCE_PATH_STYLE", "true"),
        ])
        .unwrap();
        assert_eq!(cfg.backend, BackendKind::Aws);
        assert!(cfg.aws.unwrap().force_path_style);
    }

    #[test]
    fn malformed_values_name_their_variable() {
        let cases = [
            ("MEDIA_CONCURRENCY", "zero"),
            ("MEDIA_CONCURRENCY", "0"),
            ("MEDIA_JOB_TIMEOUT", "soon"),
            ("MEDIA_JOB_RETENTION", "5m"),
            ("MEDIA_POLL_SCHEDULE", "* * *"),
            ("MEDIA_MAX_ATTEMPTS", "-1"),
            ("MEDIA_DEFAULT_PRESETS", "mp4-h264,nonsense"),
            ("MEDIA_BACKEND", "gcs"),
            ("MEDIA_MULTIPART_THRESHOLD", "12 parsecs"),
            ("MEDIA_S3_FORCE_PATH_STYLE", "maybe"),
            ("MEDIA_MAX_DURATION", "forever"),
            ("MEDIA_MAX_PIXELS", "8k"),
            ("MEDIA_WORK_DIR", "/tmp/100%"),
            ("MEDIA_METRICS_ADDR", "localhost"),
        ];
        for (var, value) in cases {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{value}");
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn every_variable_is_in_env_example_with_its_default() {
        assert_documented(VARIABLES, &variables_help());
    }

    #[test]
    fn every_variable_is_in_the_help_text() {
        let help = variables_help();
        for var in VARIABLES {
            assert!(help.contains(var.name));
        }
    }
}
