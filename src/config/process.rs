//! This process: how much it runs at once, where it keeps its scratch files, how it names
//! itself, logs, and serves its health.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::table::{ConfigError, Env, parse_count, parse_socket_addr};

pub(super) struct Process {
    pub concurrency: usize,
    pub prefetch: usize,
    pub work_dir: PathBuf,
    pub worker_id: String,
    pub json_logs: bool,
    pub metrics_addr: Option<SocketAddr>,
}

pub(super) fn parse(env: &Env) -> Result<Process, ConfigError> {
    let concurrency = match env.get("MEDIA_CONCURRENCY") {
        None => default_concurrency(),
        Some(raw) => parse_count(&raw, 1..=256).map_err(|m| ConfigError::new("MEDIA_CONCURRENCY", m))?,
    };
    let prefetch = env.parse_with("MEDIA_PREFETCH", |raw| parse_count(raw, 0..=64))?;
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
    Ok(Process { concurrency, prefetch, work_dir, worker_id, json_logs, metrics_addr })
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
