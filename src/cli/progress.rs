//! Following a job until it ends: a progress bar when stderr is a terminal, plain lines when it
//! is not (logs, CI, pipes).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::domain::status::{JobState, JobStatus, Stage};
use crate::jobs::JobStore;

/// How often the status document is read.
const POLL: Duration = Duration::from_millis(500);

/// How following a job ended.
pub enum Followed {
    Ended(Box<JobStatus>),
    /// The deadline passed first; the job goes on.
    TimedOut,
}

/// Shows the job's progress on stderr until it ends or `deadline` passes. `source_seconds`, the
/// source's length when known, turns the transcode rate into a speed in multiples of real time.
pub async fn follow(
    store: &JobStore,
    job_id: &str,
    deadline: Option<Instant>,
    source_seconds: Option<f64>,
) -> anyhow::Result<Followed> {
    let mut display = Display::new(source_seconds);
    loop {
        let status = match store.read(job_id).await {
            Ok(status) => status,
            Err(err) => {
                display.finish();
                return Err(err.into());
            }
        };
        display.update(status.as_ref(), Instant::now());
        if let Some(status) = status.filter(|s| s.state.is_terminal()) {
            display.finish();
            return Ok(Followed::Ended(Box::new(status)));
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            display.finish();
            return Ok(Followed::TimedOut);
        }
        let pause = deadline.map_or(POLL, |d| POLL.min(d.saturating_duration_since(now)));
        tokio::time::sleep(pause).await;
    }
}

/// Whether stderr can show a progress bar.
fn bar_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

struct Display {
    started: Instant,
    /// `None`: plain lines.
    bar: Option<ProgressBar>,
    last_line: String,
    rate: Rate,
    source_seconds: Option<f64>,
}

impl Display {
    fn new(source_seconds: Option<f64>) -> Self {
        let bar = bar_wanted().then(|| {
            let style = ProgressStyle::with_template(
                "{spinner:.green} [{elapsed_precise}] {prefix:<11} [{bar:30.cyan/blue}] {pos:>3}%  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stderr()).with_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Display { started: Instant::now(), bar, last_line: String::new(), rate: Rate::default(), source_seconds }
    }

    fn update(&mut self, status: Option<&JobStatus>, now: Instant) {
        if let Some(s) = status {
            self.rate.observe(s, now);
        }
        let (speed, eta) = self.rate.estimate(now);
        let speed = speed.map(|percent_per_second| match self.source_seconds {
            Some(seconds) => format!("{:.1}x", percent_per_second / 100.0 * seconds),
            None => format!("{percent_per_second:.1}%/s"),
        });
        let eta = eta.map(|eta| format!("ETA {}", clock(eta)));
        match &self.bar {
            Some(bar) => {
                let (stage, percent, note) = match status {
                    None => ("waiting", 0.0, "for a worker to take the job".to_string()),
                    Some(s) => (stage_name(s), s.progress, describe(s, speed.as_deref(), eta.as_deref())),
                };
                bar.set_prefix(stage);
                bar.set_position(percent.clamp(0.0, 100.0) as u64);
                bar.set_message(note);
            }
            None => {
                // A line per change of state, stage or progress: ETAs alone change every poll.
                let line = match status {
                    None => "waiting for a worker to take the job".to_string(),
                    Some(s) => {
                        format!(
                            "{}: {} {:.0}% (attempt {})",
                            JobState::as_str(s.state),
                            stage_name(s),
                            s.progress,
                            s.attempt
                        )
                    }
                };
                if line != self.last_line {
                    let extra: Vec<&str> = [speed.as_deref(), eta.as_deref()].into_iter().flatten().collect();
                    let extra = if extra.is_empty() { String::new() } else { format!(", {}", extra.join(", ")) };
                    eprintln!("[{:>6.1}s] {line}{extra}", self.started.elapsed().as_secs_f64());
                    self.last_line = line;
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The bar's message: what the job waits for, or how fast it goes.
fn describe(s: &JobStatus, speed: Option<&str>, eta: Option<&str>) -> String {
    let mut parts: Vec<String> = Vec::new();
    match s.state {
        JobState::Queued | JobState::Retrying => parts.push("waiting for a worker".into()),
        _ => parts.extend([speed, eta].into_iter().flatten().map(str::to_string)),
    }
    if s.attempt > 1 {
        parts.push(format!("attempt {}/{}", s.attempt, s.max_attempts));
    }
    parts.join(", ")
}

fn stage_name(s: &JobStatus) -> &'static str {
    if s.state == JobState::Retrying {
        return "retrying";
    }
    match s.stage {
        Stage::Queued => "queued",
        Stage::Downloading => "downloading",
        Stage::Importing => "importing",
        Stage::Probing => "probing",
        Stage::Analysing => "analysing",
        Stage::Splitting => "splitting",
        Stage::Stitching => "stitching",
        Stage::Transcoding => "transcoding",
        Stage::Scoring => "scoring",
        Stage::Uploading => "uploading",
        Stage::Finalizing => "finalizing",
        Stage::Done => "done",
    }
}

/// `m:ss`, or `h:mm:ss` from an hour on; rounded up, so a job still running never shows 0:00
/// left for long.
fn clock(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The transcode's rate, from the progress the heartbeats store (every
/// `MEDIA_HEARTBEAT_INTERVAL`), measured since the attempt began transcoding.
#[derive(Default)]
struct Rate {
    attempt: u32,
    /// The first progress seen while transcoding, and the latest change of it.
    first: Option<(Instant, f64)>,
    last: Option<(Instant, f64)>,
}

impl Rate {
    fn observe(&mut self, s: &JobStatus, now: Instant) {
        if s.attempt != self.attempt || s.state != JobState::Running || s.stage != Stage::Transcoding {
            // A new attempt starts over; outside the transcode there is no rate to tell.
            *self = Rate { attempt: s.attempt, ..Rate::default() };
            return;
        }
        match self.last {
            None => {
                self.first = Some((now, s.progress));
                self.last = Some((now, s.progress));
            }
            Some((_, p)) if s.progress > p => self.last = Some((now, s.progress)),
            Some(_) => {}
        }
    }

    /// Percent per second, and the time left (counting down between two heartbeats).
    fn estimate(&self, now: Instant) -> (Option<f64>, Option<Duration>) {
        let (Some((t0, p0)), Some((t1, p1))) = (self.first, self.last) else { return (None, None) };
        let seconds = t1.saturating_duration_since(t0).as_secs_f64();
        if seconds <= 0.0 || p1 <= p0 {
            return (None, None);
        }
        let rate = (p1 - p0) / seconds;
        let left = ((100.0 - p1) / rate - now.saturating_duration_since(t1).as_secs_f64()).max(0.0);
        (Some(rate), Duration::try_from_secs_f64(left).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::{JobSpec, OutputRequest};
    use crate::domain::preset::Preset;

    fn status(state: JobState, stage: Stage, progress: f64, attempt: u32) -> JobStatus {
        let job = JobSpec {
            job_id: "job-1".into(),
            source_key: "uploads/a.mp4".into(),
            outputs: vec![OutputRequest::new(Preset::Mp4H264)],
            output_dir: "outputs/a.mp4/job-1/".into(),
            source: Default::default(),
            notify: None,
            split: None,
            import: None,
            qc: None,
            loudness: None,
            repackage: None,
            watermark: None,
        };
        let mut s = JobStatus::queued(&job, attempt, 5, chrono::Utc::now());
        s.state = state;
        s.stage = stage;
        s.progress = progress;
        s
    }

    #[test]
    fn the_rate_counts_from_the_start_of_the_transcode_and_the_eta_counts_down() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut rate = Rate::default();
        rate.observe(&status(JobState::Running, Stage::Downloading, 0.0, 1), at(0));
        assert_eq!(rate.estimate(at(1)), (None, None));
        rate.observe(&status(JobState::Running, Stage::Transcoding, 0.0, 1), at(2));
        rate.observe(&status(JobState::Running, Stage::Transcoding, 20.0, 1), at(12));
        let (speed, eta) = rate.estimate(at(12));
        assert_eq!(speed, Some(2.0));
        assert_eq!(eta, Some(Duration::from_secs(40)));
        // Between heartbeats the same progress is read again: the ETA goes on counting down.
        rate.observe(&status(JobState::Running, Stage::Transcoding, 20.0, 1), at(17));
        assert_eq!(rate.estimate(at(17)).1, Some(Duration::from_secs(35)));
        // A retry starts over.
        rate.observe(&status(JobState::Running, Stage::Transcoding, 5.0, 2), at(30));
        assert_eq!(rate.estimate(at(30)), (None, None));
    }

    #[test]
    fn clocks_and_descriptions() {
        assert_eq!(clock(Duration::from_secs(75)), "1:15");
        assert_eq!(clock(Duration::from_millis(200)), "0:01");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
        let waiting = status(JobState::Retrying, Stage::Queued, 0.0, 2);
        assert_eq!(stage_name(&waiting), "retrying");
        assert_eq!(describe(&waiting, Some("2.0x"), None), "waiting for a worker, attempt 2/5");
        let running = status(JobState::Running, Stage::Transcoding, 40.0, 1);
        assert_eq!(describe(&running, Some("2.0x"), Some("ETA 0:30")), "2.0x, ETA 0:30");
    }
}
