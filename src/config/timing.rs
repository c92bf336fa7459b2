//! The clock of the job lifecycle: when loops wake, how often a job may be tried and for how
//! long, and when a silent job or message is taken for lost.

use std::time::Duration;

use super::table::{ConfigError, Env, parse_count, parse_cron, parse_duration};

/// Parsed together because some bound others (a heartbeat timeout against its interval).
pub(super) struct Timing {
    pub poll_schedule: String,
    pub reaper_schedule: String,
    pub max_attempts: u32,
    pub job_timeout: Duration,
    pub job_retention: Duration,
    pub shutdown_grace: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub retry_base_delay: Duration,
    pub visibility_timeout: Duration,
    pub max_receives: u32,
    pub dead_letter_sweep: Duration,
    pub poll_stall_timeout: Duration,
}

pub(super) fn parse(env: &Env) -> Result<Timing, ConfigError> {
    let poll_schedule = env.parse_with("MEDIA_POLL_SCHEDULE", parse_cron)?;
    let reaper_schedule = env.parse_with("MEDIA_REAPER_SCHEDULE", parse_cron)?;
    let max_attempts = env.parse_with("MEDIA_MAX_ATTEMPTS", |raw| parse_count(raw, 1..=100))?;
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
    Ok(Timing {
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
        max_receives: env.parse_with("MEDIA_MAX_RECEIVES", |raw| parse_count(raw, 2..=1000))?,
        dead_letter_sweep: env.parse_with("MEDIA_DEAD_LETTER_SWEEP", parse_duration)?,
        poll_stall_timeout: env.parse_with("MEDIA_POLL_STALL_TIMEOUT", parse_duration)?,
    })
}
