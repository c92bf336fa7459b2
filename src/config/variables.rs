//! The worker's table of variables: what `--help` prints and `.env.example` mirrors, with the
//! defaults parsing falls back on.

use super::table::Variable;

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
        name: "MEDIA_QUALITY_TARGET",
        default: "",
        help: "VMAF (70 to 99) an H.264 ladder (`hls`, `cmaf`) is made per title to reach when a job names no `quality`; empty: the fixed ladder",
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
