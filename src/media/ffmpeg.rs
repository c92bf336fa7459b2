//! Running ffmpeg through ffmpeg-sidecar, with progress, a timeout, cancellation and
//! [`Bounds`].
//!
//! ffmpeg-sidecar is blocking (std threads reading ffmpeg's stderr), so its event loop runs on
//! a blocking thread and reports progress through a `watch` channel, while the async side races
//! it against the timeout, the cancellation token and the bounds. Whatever ends the race, the
//! process is killed and reaped when [`KillOnDrop`] goes out of scope, so no ffmpeg outlives
//! its job.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
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

/// Free bytes the scratch disk keeps under a running ffmpeg: below this it is stopped, before
/// the disk fills up under every other job of the worker.
pub const MIN_FREE_SCRATCH: u64 = 64 << 20;

/// How often the bounds are looked at besides each progress report.
const BOUNDS_CHECK: Duration = Duration::from_secs(1);

/// Limits a run may not pass, whatever its input says of itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bounds {
    /// Seconds of output (ffmpeg's progress time) after which the run is stopped: a source
    /// whose header understates its length, or states none, cannot make outputs longer.
    pub max_out_time: Option<f64>,
    /// A folder on the scratch disk: the run stops when the disk's free space falls below
    /// [`MIN_FREE_SCRATCH`].
    pub scratch: Option<PathBuf>,
}

impl Bounds {
    /// A run writing to the scratch disk that holds `folder`.
    pub fn on_scratch(folder: impl Into<PathBuf>) -> Self {
        Bounds { max_out_time: None, scratch: Some(folder.into()) }
    }

    /// The same, stopped once it has written `seconds` of output and a margin (5 %, at least
    /// five seconds: ffmpeg's outputs end on a frame or packet past the exact length).
    pub fn lasting(mut self, seconds: f64) -> Self {
        self.max_out_time = Some(seconds + (seconds * 0.05).max(5.0));
        self
    }

    /// The same, for an output whose timestamps start at `start` (kept from the source with
    /// `-copyts`), so its progress time does too.
    pub fn from(mut self, start: f64) -> Self {
        self.max_out_time = self.max_out_time.map(|limit| limit + start);
        self
    }

    /// Why the run must stop now, if it must.
    fn passed(&self, out_time: f64) -> Option<FfmpegError> {
        if let Some(limit) = self.max_out_time
            && out_time > limit
        {
            return Some(FfmpegError::Overran(limit));
        }
        let free = self.scratch.as_deref().and_then(|path| rustix::fs::statvfs(path).ok());
        if free.is_some_and(|s| s.f_bavail.saturating_mul(s.f_frsize) < MIN_FREE_SCRATCH) {
            return Some(FfmpegError::ScratchFull);
        }
        None
    }

    /// Returns once a bound is passed, looking at each progress report and every second.
    async fn watch(&self, mut progress: watch::Receiver<FfmpegProgress>) -> FfmpegError {
        if *self == Bounds::default() {
            return std::future::pending().await;
        }
        let mut ticker = tokio::time::interval(BOUNDS_CHECK);
        loop {
            tokio::select! {
                changed = progress.changed() => {
                    if changed.is_err() {
                        // Progress ended (ffmpeg is exiting): the disk is still watched.
                        ticker.tick().await;
                    }
                }
                _ = ticker.tick() => {}
            }
            let out_time = progress.borrow().out_time;
            if let Some(stop) = self.passed(out_time) {
                return stop;
            }
        }
    }
}

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
    /// Stopped at [`Bounds::max_out_time`]: the output would be longer than the source may be.
    #[error("ffmpeg was stopped after {0:.1} s of output, past the source's bound")]
    Overran(f64),
    /// Stopped as the scratch disk ran low ([`MIN_FREE_SCRATCH`]).
    #[error("ffmpeg was stopped: the scratch disk is nearly full")]
    ScratchFull,
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

/// Runs ffmpeg with `args` (never through a shell), publishing progress on `progress`, and
/// stops it when it passes `bounds`.
pub async fn run_ffmpeg(
    args: Vec<OsString>,
    timeout: Duration,
    cancel: &CancellationToken,
    progress: watch::Sender<FfmpegProgress>,
    bounds: &Bounds,
) -> Result<FfmpegRun, FfmpegError> {
    let started = Instant::now();
    let watched = progress.subscribe();
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
        stop = bounds.watch(watched) => return Err(stop),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_stop_long_outputs_and_a_full_disk() {
        let bounds = Bounds::default().lasting(10.0);
        assert_eq!(bounds.max_out_time, Some(15.0), "at least five seconds of margin");
        assert!(bounds.passed(15.0).is_none());
        assert!(matches!(bounds.passed(15.1), Some(FfmpegError::Overran(_))));
        assert_eq!(Bounds::default().lasting(1000.0).max_out_time, Some(1050.0));
        assert_eq!(Bounds::default().lasting(10.0).from(600.0).max_out_time, Some(615.0));
        let dir = tempfile::tempdir().unwrap();
        assert!(Bounds::on_scratch(dir.path()).passed(1e9).is_none(), "a roomy disk and no length bound");
    }
}
