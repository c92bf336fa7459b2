//! Settings, read once at start-up from the environment (and `.env`).
//!
//! Every variable lives in one table, [`VARIABLES`], which is also what `--help` prints and what
//! `.env.example` mirrors, so the three cannot drift apart. Parsing is a pure function of a lookup
//! closure, so tests feed it a map instead of mutating the process environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::keys::KeyLayout;
use crate::domain::preset::{Preset, install_custom_presets, parse_presets_file};
use crate::domain::split::{SEGMENT_DURATION_RANGE, SplitSettings};

/// One documented environment variable.
pub struct Variable {
    pub name: &'static str,
    /// The default as a user would type it; empty when there is none.
    pub default: &'static str,
    pub help: &'static str,
}

/// Every variable the binaries read, besides the standard AWS ones (`AWS_REGION`,
/// `AWS_ENDPOINT_URL`, credentials), which go through aws-config's default chain untouched.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "MEDIA_BACKEND",
        default: "",
        help: "`aws` or `local`; default: `aws` when MEDIA_S3_BUCKET is set, else `local`",
    },
    Variable {
        name: "MEDIA_DATA_DIR",
        default: "./data",
        help: "local backend: folder holding the object store and the queue database",
    },
    Variable {
        name: "MEDIA_S3_BUCKET",
        default: "",
        help: "aws backend: bucket holding uploads, outputs and job status",
    },
    Variable {
        name: "MEDIA_S3_FORCE_PATH_STYLE",
        default: "false",
        help: "path-style S3 addressing (emulators, S3-compatible stores)",
    },
    Variable {
        name: "MEDIA_READY_QUEUE_URL",
        default: "",
        help: "aws backend: SQS queue receiving S3 events and job messages",
    },
    Variable {
        name: "MEDIA_PROCESSING_QUEUE_URL",
        default: "",
        help: "aws backend: SQS queue used as the in-processing ledger",
    },
    Variable {
        name: "MEDIA_DEAD_LETTER_QUEUE_URL",
        default: "",
        help: "aws backend: SQS queue for messages and jobs that cannot succeed",
    },
    Variable {
        name: "MEDIA_JOBS_TABLE",
        default: "",
        help: "aws backend: DynamoDB table of the job ledger (status records, their events, indexes)",
    },
    Variable { name: "MEDIA_UPLOAD_PREFIX", default: "uploads/", help: "key prefix whose new objects become jobs" },
    Variable {
        name: "MEDIA_OUTPUT_PREFIX",
        default: "outputs/",
        help: "key prefix under which outputs and manifests are written",
    },
    Variable {
        name: "MEDIA_DEFAULT_PRESETS",
        default: "mp4-h264",
        help: "comma-separated presets applied to uploads that arrive as plain S3 events",
    },
    Variable {
        name: "MEDIA_PRESETS_FILE",
        default: "",
        help: "TOML file of operator presets ([[preset]] name, file, args, options), validated at start-up",
    },
    Variable {
        name: "MEDIA_CONCURRENCY",
        default: "",
        help: "jobs run at once per worker; default: CPU count / 2, at least 1 (ffmpeg is multi-threaded)",
    },
    Variable {
        name: "MEDIA_PREFETCH",
        default: "1",
        help: "jobs taken beyond MEDIA_CONCURRENCY: they download, probe and upload while the others transcode, so no CPU waits on storage",
    },
    Variable {
        name: "MEDIA_POLL_SCHEDULE",
        default: "*/1 * * * * *",
        help: "cron (with seconds) waking the intake loop after a failed receive (it otherwise takes work as soon as a job permit is free)",
    },
    Variable {
        name: "MEDIA_REAPER_SCHEDULE",
        default: "*/15 * * * * *",
        help: "cron (with seconds) for sweeping the in-processing ledger",
    },
    Variable {
        name: "MEDIA_MAX_ATTEMPTS",
        default: "5",
        help: "attempts per job before it is failed and dead-lettered",
    },
    Variable {
        name: "MEDIA_JOB_TIMEOUT",
        default: "2h",
        help: "wall-clock limit of one attempt (humantime: 90s, 30m, 2h)",
    },
    Variable {
        name: "MEDIA_JOB_RETENTION",
        default: "90days",
        help: "how long a job's record is kept after it ended (its outputs are the bucket's to keep)",
    },
    Variable {
        name: "MEDIA_SHUTDOWN_GRACE",
        default: "100s",
        help: "on SIGTERM, how long running jobs may finish before they are stopped and requeued",
    },
    Variable {
        name: "MEDIA_HEARTBEAT_INTERVAL",
        default: "10s",
        help: "how often a running job refreshes its status object",
    },
    Variable {
        name: "MEDIA_HEARTBEAT_TIMEOUT",
        default: "60s",
        help: "a job whose heartbeat is older than this is presumed dead and recovered",
    },
    Variable {
        name: "MEDIA_RETRY_BASE_DELAY",
        default: "10s",
        help: "first retry delay; doubles per attempt, capped at 15 minutes. Also the wait before a job \
               declined for scratch space is offered again",
    },
    Variable {
        name: "MEDIA_VISIBILITY_TIMEOUT",
        default: "120s",
        help: "how long a received message stays hidden while it is moved to the ledger",
    },
    Variable {
        name: "MEDIA_MAX_RECEIVES",
        default: "10",
        help: "deliveries of a ready message before it is dead-lettered as `delivery_exhausted` (with its job failed); on SQS the queue's redrive maxReceiveCount, when lower, wins",
    },
    Variable {
        name: "MEDIA_SPLIT_MIN_DURATION",
        default: "10m",
        help: "sources at least this long (and at least two segments long) are encoded as segments by every free worker at once, then stitched; 0s turns splitting off",
    },
    Variable {
        name: "MEDIA_SEGMENT_DURATION",
        default: "60s",
        help: "seconds of source per segment of a split job (2s to 10m); a job may choose its own",
    },
    Variable {
        name: "MEDIA_DEAD_LETTER_SWEEP",
        default: "60s",
        help: "how often a worker looks for dead letters without a reason (moved by SQS's redrive) and fails their jobs",
    },
    Variable {
        name: "MEDIA_POLL_STALL_TIMEOUT",
        default: "120s",
        help: "worker /readyz turns unready when the poll loop has not completed a cycle for this long",
    },
    Variable {
        name: "MEDIA_MULTIPART_THRESHOLD",
        default: "64MiB",
        help: "outputs at least this large are uploaded in parts (bytes, or KiB/MiB/GiB)",
    },
    Variable {
        name: "MEDIA_MAX_SOURCE_SIZE",
        default: "50GiB",
        help: "larger sources fail with `source_too_large` before download",
    },
    Variable {
        name: "MEDIA_MAX_DURATION",
        default: "6h",
        help: "longer sources fail with `duration_too_long` before transcoding",
    },
    Variable {
        name: "MEDIA_MAX_PIXELS",
        default: "35389440",
        help: "sources with more pixels per frame (default 8192x4320) fail with `resolution_too_large`",
    },
    Variable {
        name: "MEDIA_IMPORT_TIMEOUT",
        default: "1h",
        help: "time limit of fetching a source from a URL (`input.url`), body included; a fetch cut short fails with `fetch_failed` and is retried",
    },
    Variable {
        name: "MEDIA_IMPORT_IDLE_TIMEOUT",
        default: "30s",
        help: "a URL import whose server sends nothing for this long fails with `fetch_failed` and is retried",
    },
    Variable {
        name: "MEDIA_IMPORT_ALLOW_LOOPBACK",
        default: "false",
        help: "DEVELOPMENT ONLY: allow importing sources over plain http:// from loopback addresses (127.0.0.0/8, ::1); private, link-local and metadata addresses stay refused",
    },
    Variable {
        name: "MEDIA_WORK_DIR",
        default: "",
        help: "scratch folder for sources and outputs; default: the system temp dir",
    },
    Variable {
        name: "MEDIA_WORKER_ID",
        default: "",
        help: "name of this worker in status, manifests and the ledger, which API clients see: no host \
               names or addresses. Default: an opaque `w-` id drawn at start (logged with the host name)",
    },
    Variable {
        name: "MEDIA_LOG_FORMAT",
        default: "text",
        help: "`text` or `json`; the level comes from RUST_LOG (default info)",
    },
    Variable {
        name: "MEDIA_METRICS_ADDR",
        default: "",
        help: "worker: address (e.g. 0.0.0.0:9090) serving /healthz, /readyz and Prometheus /metrics; off when unset",
    },
];

/// A setting that is missing or malformed; the message names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration error: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self { var, message: message.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Aws,
    Local,
}

/// What a source may be at most; anything larger fails permanently before transcoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    pub max_size: u64,
    pub max_duration: Duration,
    pub max_pixels: u64,
}

/// How sources named by URL are fetched: through the SSRF guard of [`crate::outbound`], with at
/// most [`MEDIA_MAX_SOURCE_SIZE`](SourceLimits::max_size) bytes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSettings {
    pub policy: crate::outbound::Policy,
    /// The whole fetch, body included.
    pub total_timeout: Duration,
    /// Longest silence of the server while the body streams.
    pub idle_timeout: Duration,
}

impl ImportSettings {
    /// Connecting gets at most this much of the fetch's time.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn guard(&self) -> crate::outbound::Guard {
        crate::outbound::Guard::new(self.policy)
    }

    pub fn limits(&self) -> crate::outbound::Limits {
        crate::outbound::Limits {
            connect: self.total_timeout.min(Self::CONNECT_TIMEOUT),
            total: self.total_timeout,
            read: Some(self.idle_timeout),
        }
    }
}

/// Where the AWS backend finds its resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    pub bucket: String,
    pub force_path_style: bool,
    pub ready_queue_url: String,
    pub processing_queue_url: String,
    pub dead_letter_queue_url: String,
    /// The job ledger's DynamoDB table.
    pub jobs_table: String,
}

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
    pub notify: crate::notify::NotifySettings,
    /// Which jobs are split into segments, and how long those are.
    pub split: SplitSettings,
    /// Sources fetched from a URL.
    pub import: ImportSettings,
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
        let env = Env { lookup: &lookup };
        let bucket = env.get("MEDIA_S3_BUCKET");
        let backend = match env.get("MEDIA_BACKEND").as_deref() {
            None => {
                if bucket.is_some() {
                    BackendKind::Aws
                } else {
                    BackendKind::Local
                }
            }
            Some("aws") => BackendKind::Aws,
            Some("local") => BackendKind::Local,
            Some(other) => {
                return Err(ConfigError::new("MEDIA_BACKEND", format!("expected `aws` or `local`, got `{other}`")));
            }
        };
        // Parsed whatever the backend, so a typo is caught before the day it matters.
        let force_path_style = env.parse_with("MEDIA_S3_FORCE_PATH_STYLE", parse_bool)?;
        let aws = match backend {
            BackendKind::Local => None,
            BackendKind::Aws => Some(AwsSettings {
                bucket: env.required("MEDIA_S3_BUCKET")?,
                force_path_style,
                ready_queue_url: env.required("MEDIA_READY_QUEUE_URL")?,
                processing_queue_url: env.required("MEDIA_PROCESSING_QUEUE_URL")?,
                dead_letter_queue_url: env.required("MEDIA_DEAD_LETTER_QUEUE_URL")?,
                jobs_table: env.required("MEDIA_JOBS_TABLE")?,
            }),
        };

        let upload_prefix = env.or_default("MEDIA_UPLOAD_PREFIX");
        let output_prefix = env.or_default("MEDIA_OUTPUT_PREFIX");
        let layout = KeyLayout::new(&upload_prefix, &output_prefix)
            .map_err(|e| ConfigError::new("MEDIA_UPLOAD_PREFIX / MEDIA_OUTPUT_PREFIX", e))?;

        // Operator presets are installed before any preset name is parsed, so defaults (and
        // messages) may name them.
        if let Some(path) = env.get("MEDIA_PRESETS_FILE") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new("MEDIA_PRESETS_FILE", format!("cannot read `{path}`: {e}")))?;
            let presets = parse_presets_file(&text)
                .map_err(|e| ConfigError::new("MEDIA_PRESETS_FILE", format!("`{path}`: {e}")))?;
            install_custom_presets(presets).map_err(|e| ConfigError::new("MEDIA_PRESETS_FILE", e))?;
        }
        let default_presets = env.parse_with("MEDIA_DEFAULT_PRESETS", |raw| {
            let presets = raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|name| name.parse::<Preset>().map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            if presets.is_empty() { Err("at least one preset is required".to_string()) } else { Ok(presets) }
        })?;

        let concurrency = match env.get("MEDIA_CONCURRENCY") {
            None => default_concurrency(),
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=256).contains(&n) => n,
                _ => {
                    return Err(ConfigError::new(
                        "MEDIA_CONCURRENCY",
                        format!("expected a whole number from 1 to 256, got `{raw}`"),
                    ));
                }
            },
        };

        let prefetch = env.parse_with("MEDIA_PREFETCH", |raw| match raw.parse::<usize>() {
            Ok(n) if n <= 64 => Ok(n),
            _ => Err(format!("expected a whole number from 0 to 64, got `{raw}`")),
        })?;
        let poll_schedule = env.parse_with("MEDIA_POLL_SCHEDULE", parse_cron)?;
        let reaper_schedule = env.parse_with("MEDIA_REAPER_SCHEDULE", parse_cron)?;
        let max_attempts = env.parse_with("MEDIA_MAX_ATTEMPTS", |raw| match raw.parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(format!("expected a whole number from 1 to 100, got `{raw}`")),
        })?;
        let job_timeout = env.parse_with("MEDIA_JOB_TIMEOUT", parse_duration)?;
        let job_retention = env.parse_with("MEDIA_JOB_RETENTION", parse_duration)?;
        if job_retention < Duration::from_secs(3600) {
            return Err(ConfigError::new("MEDIA_JOB_RETENTION", "must be at least 1h"));
        }
        let shutdown_grace = env.parse_with("MEDIA_SHUTDOWN_GRACE", parse_duration)?;
        let heartbeat_interval = env.parse_with("MEDIA_HEARTBEAT_INTERVAL", parse_duration)?;
        let heartbeat_timeout = env.parse_with("MEDIA_HEARTBEAT_TIMEOUT", parse_duration)?;
        if heartbeat_timeout < heartbeat_interval * 2 {
            return Err(ConfigError::new(
                "MEDIA_HEARTBEAT_TIMEOUT",
                "must be at least twice MEDIA_HEARTBEAT_INTERVAL, or live jobs would be taken for dead",
            ));
        }
        let retry_base_delay = env.parse_with("MEDIA_RETRY_BASE_DELAY", parse_duration)?;
        let visibility_timeout = env.parse_with("MEDIA_VISIBILITY_TIMEOUT", parse_duration)?;
        if visibility_timeout > Duration::from_secs(12 * 3600) {
            return Err(ConfigError::new("MEDIA_VISIBILITY_TIMEOUT", "SQS allows at most 12h"));
        }
        let max_receives = env.parse_with("MEDIA_MAX_RECEIVES", |raw| match raw.parse::<u32>() {
            Ok(n) if (2..=1000).contains(&n) => Ok(n),
            _ => Err(format!("expected a whole number from 2 to 1000, got `{raw}`")),
        })?;
        let dead_letter_sweep = env.parse_with("MEDIA_DEAD_LETTER_SWEEP", parse_duration)?;
        let poll_stall_timeout = env.parse_with("MEDIA_POLL_STALL_TIMEOUT", parse_duration)?;
        let multipart_threshold = env.parse_with("MEDIA_MULTIPART_THRESHOLD", parse_size)?;
        let limits = SourceLimits {
            max_size: env.parse_with("MEDIA_MAX_SOURCE_SIZE", parse_size)?,
            max_duration: env.parse_with("MEDIA_MAX_DURATION", parse_duration)?,
            max_pixels: env.parse_with("MEDIA_MAX_PIXELS", |raw| {
                raw.parse::<u64>().map_err(|_| format!("expected a whole number of pixels, got `{raw}`"))
            })?,
        };
        let work_dir = env.get("MEDIA_WORK_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        // ffmpeg's HLS and image muxers read `%` in output paths as patterns.
        if work_dir.to_string_lossy().contains('%') {
            return Err(ConfigError::new("MEDIA_WORK_DIR", "must not contain `%`"));
        }
        let worker_id = env.get("MEDIA_WORKER_ID").unwrap_or_else(default_worker_id);
        let json_logs = env.parse_with("MEDIA_LOG_FORMAT", |raw| match raw {
            "text" => Ok(false),
            "json" => Ok(true),
            other => Err(format!("expected `text` or `json`, got `{other}`")),
        })?;
        let metrics_addr = match env.get("MEDIA_METRICS_ADDR") {
            None => None,
            Some(raw) => Some(parse_socket_addr(&raw).map_err(|m| ConfigError::new("MEDIA_METRICS_ADDR", m))?),
        };

        let notify = crate::notify::NotifySettings::from_lookup(&lookup, backend == BackendKind::Aws)?;
        let segment_duration = env.parse_with("MEDIA_SEGMENT_DURATION", parse_duration)?.as_secs_f64();
        let (min, max) = SEGMENT_DURATION_RANGE;
        if !(min..=max).contains(&segment_duration) {
            return Err(ConfigError::new("MEDIA_SEGMENT_DURATION", "must be between 2s and 10m"));
        }
        let split = SplitSettings {
            min_duration: env.parse_with("MEDIA_SPLIT_MIN_DURATION", parse_duration)?.as_secs_f64(),
            segment_duration,
        };

        let import = ImportSettings {
            policy: crate::outbound::Policy {
                allow_loopback: env.parse_with("MEDIA_IMPORT_ALLOW_LOOPBACK", parse_bool)?,
            },
            total_timeout: env.parse_with("MEDIA_IMPORT_TIMEOUT", parse_duration)?,
            idle_timeout: env.parse_with("MEDIA_IMPORT_IDLE_TIMEOUT", parse_duration)?,
        };
        for (var, value) in
            [("MEDIA_IMPORT_TIMEOUT", import.total_timeout), ("MEDIA_IMPORT_IDLE_TIMEOUT", import.idle_timeout)]
        {
            if value.is_zero() {
                return Err(ConfigError::new(var, "must be longer than 0s"));
            }
        }

        Ok(Config {
            notify,
            split,
            import,
            backend,
            aws,
            data_dir: PathBuf::from(env.or_default("MEDIA_DATA_DIR")),
            layout,
            default_presets,
            concurrency,
            prefetch,
            poll_schedule,
            reaper_schedule,
            max_attempts,
            job_timeout,
            job_retention,
            shutdown_grace,
            heartbeat_interval,
            heartbeat_timeout,
            retry_base_delay,
            visibility_timeout,
            max_receives,
            dead_letter_sweep,
            poll_stall_timeout,
            multipart_threshold,
            limits,
            work_dir,
            worker_id,
            json_logs,
            metrics_addr,
        })
    }
}

/// The table of variables as `--help` shows it.
pub fn variables_help() -> String {
    let mut out = String::from("Environment (also read from .env):\n");
    for var in VARIABLES.iter().chain(crate::notify::NOTIFY_VARIABLES) {
        let default = if var.default.is_empty() { String::new() } else { format!(" [default: {}]", var.default) };
        out.push_str(&format!("  {}{}\n      {}\n", var.name, default, var.help));
    }
    out.push_str(
        "  AWS_REGION, AWS_ENDPOINT_URL, AWS_PROFILE, AWS_ACCESS_KEY_ID, ...\n      \
         standard AWS settings, read by the default credential and region chain (task roles on ECS)\n",
    );
    out
}

struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// The value, with blank values treated as unset.
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or_else(|| ConfigError::new(name, "is required for the aws backend"))
    }

    fn or_default(&self, name: &'static str) -> String {
        self.get(name).unwrap_or_else(|| default_of(name).to_string())
    }

    fn parse_with<T>(&self, name: &'static str, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        parse(&self.or_default(name)).map_err(|message| ConfigError::new(name, message))
    }
}

fn default_of(name: &str) -> &'static str {
    VARIABLES.iter().find(|v| v.name == name).map(|v| v.default).unwrap_or("")
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected true or false, got `{raw}`")),
    }
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|e| format!("expected a duration such as 30s or 5m, got `{raw}` ({e})"))
}

/// Bytes, optionally with a binary unit: `1048576`, `64MiB`, `5GiB`.
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("expected a size such as 64MiB, got `{raw}`"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        _ => return Err(format!("unknown unit in `{raw}`; use B, KiB, MiB or GiB")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("`{raw}` is too large"))
}

/// An `ip:port` to listen on (`0.0.0.0:9090`, `127.0.0.1:0`, `[::]:9090`).
pub fn parse_socket_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse().map_err(|_| format!("expected an address such as 0.0.0.0:9090, got `{raw}`"))
}

/// Checks the shape of a cron expression with a seconds field; the scheduler parses it for real.
fn parse_cron(raw: &str) -> Result<String, String> {
    let fields = raw.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!("expected a cron expression with a seconds field (6 fields), got `{raw}`"));
    }
    Ok(raw.to_string())
}

fn default_concurrency() -> usize {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (cpus / 2).max(1)
}

/// An opaque id, new at every start. Not the host name: on EC2 and ECS that is an internal
/// address, and worker ids reach API clients (status, timeline, manifest). The worker logs
/// its id with its host name at start, for operators.
fn default_worker_id() -> String {
    format!("w-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// This machine's name, for operators' logs only.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Drift check for a table of variables: each is in `.env.example` as `# NAME=default` (a line
/// that starts so when there is no default) and in the `--help` text given.
#[cfg(test)]
pub(crate) fn assert_documented(table: &[Variable], help: &str) {
    let example = include_str!("../.env.example");
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
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("5GiB"), Ok(5 << 30));
        assert!(parse_size("MiB").is_err());
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
