//! Running ffmpeg through ffmpeg-sidecar, with progress, a timeout and cancellation.
//!
//! ffmpeg-sidecar is blocking (std threads reading ffmpeg's stderr), so its event loop runs on
//! a blocking thread and reports progress through a `watch` channel, while the async side races
//! it against the timeout and the cancellation token. Whatever ends the race, the process is
//! killed and reaped when [`KillOnDrop`] goes out of scope, so no ffmpeg outlives its job.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ffmpeg_sidecar::child::FfmpegChild;
use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel};
use ffmpeg_sidecar::ffmpeg_time_duration::FfmpegTimeDuration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Lines of ffmpeg's error log kept for the error message.
const LOG_TAIL: usize = 12;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FfmpegProgress {
    /// Seconds of output written so far.
    pub out_time: f64,
    /// Multiples of real time.
    pub speed: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FfmpegRun {
    pub elapsed: Duration,
    /// ffmpeg's last reported speed, in multiples of real time.
    pub speed: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum FfmpegError {
    #[error("ffmpeg could not be started (is it installed?): {0}")]
    Spawn(String),
    #[error("ffmpeg did not finish within {0:?}")]
    Timeout(Duration),
    #[error("ffmpeg was stopped")]
    Cancelled,
    /// Killed from outside (the OOM killer, an operator): worth another attempt.
    #[error("ffmpeg was killed by signal {0}")]
    Signal(i32),
    #[error("ffmpeg exited with status {status}: {log}")]
    Failed { status: i32, log: String },
}

/// Kills and reaps the child when dropped, unless it already exited.
struct KillOnDrop(Arc<Mutex<FfmpegChild>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(mut child) = self.0.lock() {
            let inner = child.as_inner_mut();
            if matches!(inner.try_wait(), Ok(None)) {
                let _ = inner.kill();
                let _ = inner.wait();
            }
        }
    }
}

/// Runs ffmpeg with `args` (never through a shell), publishing progress on `progress`.
pub async fn run_ffmpeg(
    args: Vec<OsString>,
    timeout: Duration,
    cancel: &CancellationToken,
    progress: watch::Sender<FfmpegProgress>,
) -> Result<FfmpegRun, FfmpegError> {
    let started = Instant::now();
    let mut command = FfmpegCommand::new();
    command.args(&args);
    // ffmpeg-sidecar requires piped stdio; `-nostdin` in the argv keeps ffmpeg off stdin.
    let mut child = command.spawn().map_err(|e| FfmpegError::Spawn(e.to_string()))?;
    let events = child.iter().map_err(|e| FfmpegError::Spawn(e.to_string()))?;
    let child = Arc::new(Mutex::new(child));
    let guard = KillOnDrop(child.clone());

    let reader = tokio::task::spawn_blocking(move || {
        let mut log: VecDeque<String> = VecDeque::new();
        let mut speed = None;
        for event in events {
            match event {
                FfmpegEvent::Progress(p) => {
                    let out_time = FfmpegTimeDuration::from_str(&p.time).map(|t| t.as_seconds()).unwrap_or(0.0);
                    if p.speed > 0.0 {
                        speed = Some((f64::from(p.speed) * 100.0).round() / 100.0);
                    }
                    progress.send_replace(FfmpegProgress { out_time: out_time.max(0.0), speed });
                }
                FfmpegEvent::Log(LogLevel::Error | LogLevel::Fatal, line) => {
                    if log.len() == LOG_TAIL {
                        log.pop_front();
                    }
                    log.push_back(line.trim().to_string());
                }
                _ => {}
            }
        }
        (Vec::from(log), speed)
    });

    let (log, speed) = tokio::select! {
        joined = reader => joined.map_err(|e| FfmpegError::Spawn(format!("ffmpeg reader thread failed: {e}")))?,
        () = tokio::time::sleep(timeout) => return Err(FfmpegError::Timeout(timeout)),
        () = cancel.cancelled() => return Err(FfmpegError::Cancelled),
    };

    // stderr is closed, so the process has exited or is about to: reap it off the runtime.
    let waiter = child.clone();
    let status = tokio::task::spawn_blocking(move || match waiter.lock() {
        Ok(mut child) => child.as_inner_mut().wait().map_err(|e| e.to_string()),
        Err(_) => Err("ffmpeg handle poisoned".to_string()),
    })
    .await
    .map_err(|e| FfmpegError::Spawn(e.to_string()))?
    .map_err(FfmpegError::Spawn)?;
    drop(guard);

    if let Some(signal) = status.signal() {
        return Err(FfmpegError::Signal(signal));
    }
    if !status.success() {
        let log = if log.is_empty() { "no error output".to_string() } else { log.join(" | ") };
        return Err(FfmpegError::Failed { status: status.code().unwrap_or(-1), log });
    }
    Ok(FfmpegRun { elapsed: started.elapsed(), speed })
}
