//! The job state machine: every change of `jobs/<id>.json` is an [`Event`] applied by
//! [`apply`], a pure function of the stored status, the event and the time.
//!
//! ```text
//!                submit / start(no status)
//!                          │
//!   ┌────────── queued ◀───┴──────────────────────────────┐ interrupt (shutdown: same attempt)
//!   │ cancel      │ start (attempt n, run r)               │
//!   │             ▼                                        │
//!   │          running(n, r) ── heartbeat / stage ─────────┤
//!   │             │  │  │                                  │
//!   │             │  │  └─ retry / recover ──▶ retrying(n+1) ── start ──▶ running(n+1, r')
//!   │             │  └──── fail / last retry / last recover ──▶ failed
//!   │             └─ stage finalizing ── complete ──▶ completed ── outputs deleted ──▶ completed
//!   └──────────────────────────────────────────────────────▶ cancelled
//! ```
//!
//! Invariants every accepted event keeps:
//! - A final state (`completed`, `failed`, `cancelled`) is never left; only an
//!   "outputs deleted" mark may follow `completed`.
//! - While `running`, only the run named in the status (its fencing token) may change it, except
//!   the canceller and the reaper (which needs the same run id and a stale heartbeat).
//! - An attempt number never goes down; a message of an older attempt can never start.
//! - A job is never `running` without its run having sent its ledger entry first, so every
//!   running job has a reaper-visible record, and a start is refused while another run owns it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::error_code::ErrorCode;
use crate::domain::job::JobSpec;
use crate::domain::status::{ErrorInfo, JobState, JobStatus, Stage};

/// One change someone wants to make to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The API or the CLI made the job (its message is already published).
    Submit { job: JobSpec, max_attempts: u32 },
    /// A worker took a delivery of attempt `attempt` and will run it as `run`.
    Start { job: JobSpec, attempt: u32, run: String, worker: String, max_attempts: u32 },
    /// The run is alive; stores its progress.
    Heartbeat { run: String, progress: f64 },
    /// The run entered these stages, in order, at these times (several when stages shorter
    /// than the run's write delay are recorded together).
    Stage { run: String, stages: Vec<StageMark>, progress: f64 },
    /// The run's manifest is written (after `Stage(Finalizing)`).
    Complete { run: String, manifest_key: String },
    /// The run failed with a retryable error: the next attempt after `delay`, or failed when
    /// this was the last attempt.
    Retry { run: String, error: ErrorInfo, delay: Duration },
    /// The run failed for good.
    Fail { run: String, error: ErrorInfo },
    /// The run was stopped by its worker's shutdown: requeued, without using up an attempt.
    Interrupt { run: String, note: String },
    /// The reaper found the run silent for longer than `heartbeat_timeout`.
    Recover { run: String, heartbeat_timeout: Duration },
    /// A user cancelled the job.
    Cancel { note: String },
    /// A message of attempt `attempt` was delivered too often without being started.
    Exhausted { job: JobSpec, attempt: u32, error: ErrorInfo },
    /// The message of a handover (retry, recovery, shutdown) is on the ready queue.
    Published { attempt: u32 },
    /// The outputs of a completed job were deleted.
    OutputsDeleted { files: usize },
}

/// A stage a run entered, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct StageMark {
    pub stage: Stage,
    pub at: DateTime<Utc>,
}

impl StageMark {
    pub fn now(stage: Stage) -> Self {
        StageMark { stage, at: Utc::now() }
    }
}

impl Event {
    /// A short name for logs and refusals.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Submit { .. } => "submit",
            Event::Start { .. } => "start",
            Event::Heartbeat { .. } => "heartbeat",
            Event::Stage { .. } => "stage",
            Event::Complete { .. } => "complete",
            Event::Retry { .. } => "retry",
            Event::Fail { .. } => "fail",
            Event::Interrupt { .. } => "interrupt",
            Event::Recover { .. } => "recover",
            Event::Cancel { .. } => "cancel",
            Event::Exhausted { .. } => "exhausted",
            Event::Published { .. } => "published",
            Event::OutputsDeleted { .. } => "outputs_deleted",
        }
    }
}

/// Why an event was not applied. Losing a race is one of these, not an error: the loser stops
/// quietly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the job already ended ({0:?})")]
    Ended(JobState),
    #[error("a later attempt or another run owns the job")]
    Superseded,
    #[error("another run of the job is running")]
    InProgress,
    #[error("the running attempt was heard from recently")]
    Alive,
    #[error("the job is committing its outputs and can no longer be cancelled")]
    Finishing,
    #[error("there is no such job")]
    Missing,
    #[error("the job exists already")]
    Exists,
    #[error("the message does not match the stored job")]
    Mismatch,
    #[error("`{event}` does not apply to a {state:?} job")]
    NotNow { state: JobState, event: &'static str },
}

/// The status after `event`, or why it cannot happen. `current` is the stored status (`None`
/// when there is none).
pub fn apply(current: Option<&JobStatus>, event: &Event, now: DateTime<Utc>) -> Result<JobStatus, Refused> {
    let mut next = transition(current, event, now)?;
    next.revision = current.map_or(0, |c| c.revision) + 1;
    Ok(next)
}

fn transition(current: Option<&JobStatus>, event: &Event, now: DateTime<Utc>) -> Result<JobStatus, Refused> {
    let Some(current) = current else { return create(event, now) };
    // Final states are final; the only mark a completed job still takes is "outputs deleted".
    if current.state.is_terminal() {
        return ended(current, event, now);
    }
    match event {
        Event::Submit { .. } => Err(Refused::Exists),
        Event::Start { job, attempt, run, worker, max_attempts } => {
            if *job != current.job {
                return Err(Refused::Mismatch);
            }
            if current.state == JobState::Running {
                // The owner is alive, or the reaper will recover it from its ledger entry.
                return Err(Refused::InProgress);
            }
            if *attempt < current.attempt {
                return Err(Refused::Superseded);
            }
            let mut next = current.clone();
            next.attempt = *attempt;
            next.max_attempts = *max_attempts;
            start(&mut next, run, worker, now);
            Ok(next)
        }
        Event::Heartbeat { .. } | Event::Stage { .. } | Event::Complete { .. } => by_run(current, event, now),
        Event::Retry { .. } | Event::Fail { .. } | Event::Interrupt { .. } => run_ends(current, event, now),
        Event::Recover { run, heartbeat_timeout } => {
            owned_running(current, run, event)?;
            recover(current, *heartbeat_timeout, now)
        }
        Event::Cancel { .. } | Event::Exhausted { .. } | Event::Published { .. } | Event::OutputsDeleted { .. } => {
            from_outside(current, event, now)
        }
    }
}

/// An event on a job that ended.
fn ended(current: &JobStatus, event: &Event, now: DateTime<Utc>) -> Result<JobStatus, Refused> {
    match event {
        Event::OutputsDeleted { files } if current.state == JobState::Completed => {
            let mut next = current.clone();
            next.outputs_deleted_at = Some(now);
            next.transition(JobState::Completed, Stage::Done, now, Some(format!("{files} output file(s) deleted")));
            Ok(next)
        }
        Event::Submit { .. } => Err(Refused::Exists),
        _ => Err(Refused::Ended(current.state)),
    }
}

/// What the running run says while it works: it lives, it entered stages, it completed.
fn by_run(current: &JobStatus, event: &Event, now: DateTime<Utc>) -> Result<JobStatus, Refused> {
    let mut next = current.clone();
    match event {
        Event::Heartbeat { run, progress } => {
            owned_running(current, run, event)?;
            next.progress = clamp_progress(*progress);
            next.heartbeat_at = Some(now);
            next.updated_at = now;
        }
        Event::Stage { run, stages, progress } => {
            owned_running(current, run, event)?;
            next.progress = clamp_progress(*progress);
            next.heartbeat_at = Some(now);
            for mark in stages {
                // Times stay in order and never in the future, whatever the writer's clock.
                let floor = next.timeline.last().map_or(mark.at, |e| e.at);
                next.transition(JobState::Running, mark.stage, mark.at.min(now).max(floor), None);
            }
            next.updated_at = now;
        }
        Event::Complete { run, manifest_key } => {
            owned_running(current, run, event)?;
            if current.stage != Stage::Finalizing {
                return Err(Refused::NotNow { state: current.state, event: event.name() });
            }
            next.progress = 100.0;
            next.error = None;
            next.manifest_key = Some(manifest_key.clone());
            next.transition(JobState::Completed, Stage::Done, now, None);
        }
        _ => return Err(Refused::NotNow { state: current.state, event: event.name() }),
    }
    Ok(next)
}

/// How the running run ends other than completed: retried, failed, or requeued.
fn run_ends(current: &JobStatus, event: &Event, now: DateTime<Utc>) -> Result<JobStatus, Refused> {
    let mut next = current.clone();
    match event {
        Event::Retry { run, error, delay } => {
            owned_running(current, run, event)?;
            if current.attempt >= current.max_attempts {
                let mut error = error.clone();
                error.message = format!("{} (after {} attempts)", error.message, current.attempt);
                fail(&mut next, error, None, now);
            } else {
                let note = format!("retry in {}", humantime::format_duration(*delay));
                hand_over(&mut next, JobState::Retrying, current.attempt + 1, Some(error.clone()), note, now);
            }
        }
        Event::Fail { run, error } => {
            owned_running(current, run, event)?;
            fail(&mut next, error.clone(), None, now);
        }
        Event::Interrupt { run, note } => {
            owned_running(current, run, event)?;
            hand_over(&mut next, JobState::Queued, current.attempt, None, note.clone(), now);
        }
        _ => return Err(Refused::NotNow { state: current.state, event: event.name() }),
    }
    Ok(next)
}

/// The reaper's recovery of a run it found silent (already checked to own the job): the next
/// attempt, or failed with `worker_lost` after the last.
fn recover(current: &JobStatus, heartbeat_timeout: Duration, now: DateTime<Utc>) -> Result<JobStatus, Refused> {
    if current.heartbeat_is_fresh(now, heartbeat_timeout) {
        return Err(Refused::Alive);
    }
    let mut next = current.clone();
    let worker = current.worker.clone().unwrap_or_else(|| "?".into());
    let silent =
        current.heartbeat_at.map(|beat| now.signed_duration_since(beat).num_seconds().max(0)).unwrap_or_default();
    let note = format!("worker {worker} was silent for {silent}s");
    if current.attempt >= current.max_attempts {
        let error = ErrorInfo {
            code: ErrorCode::WorkerLost.into(),
            message: format!(
                "the worker stopped responding during attempt {} of {}, the last allowed",
                current.attempt, current.max_attempts
            ),
            retryable: false,
        };
        fail(&mut next, error, Some(note), now);
    } else {
        let error = ErrorInfo { code: ErrorCode::WorkerLost.into(), message: note.clone(), retryable: true };
        hand_over(&mut next, JobState::Retrying, current.attempt + 1, Some(error), format!("recovered: {note}"), now);
    }
    Ok(next)
}

/// What others do to a job that has not ended: a user cancels it, an undeliverable message
/// fails it, a handover's message is published.
fn from_outside(current: &JobStatus, event: &Event, now: DateTime<Utc>) -> Result<JobStatus, Refused> {
    let mut next = current.clone();
    match event {
        Event::Cancel { note } => {
            if current.state == JobState::Running && current.stage == Stage::Finalizing {
                return Err(Refused::Finishing);
            }
            let stage = current.stage;
            next.handover_pending = false;
            next.transition(JobState::Cancelled, stage, now, Some(note.clone()));
        }
        Event::Exhausted { attempt, error, .. } => {
            if current.state == JobState::Running {
                return Err(Refused::InProgress);
            }
            if *attempt < current.attempt {
                return Err(Refused::Superseded);
            }
            fail(&mut next, error.clone(), None, now);
        }
        Event::Published { attempt } => {
            if !current.handover_pending || current.attempt != *attempt || current.state == JobState::Running {
                return Err(Refused::NotNow { state: current.state, event: event.name() });
            }
            next.handover_pending = false;
            next.updated_at = now;
        }
        _ => return Err(Refused::NotNow { state: current.state, event: event.name() }),
    }
    Ok(next)
}

/// Events that may create the status document.
fn create(event: &Event, now: DateTime<Utc>) -> Result<JobStatus, Refused> {
    match event {
        Event::Submit { job, max_attempts } => Ok(JobStatus::queued(job, 1, *max_attempts, now)),
        // A job from an S3 event (or one whose submitter died before writing its status).
        Event::Start { job, attempt, run, worker, max_attempts } => {
            let mut status = JobStatus::queued(job, *attempt, *max_attempts, now);
            start(&mut status, run, worker, now);
            Ok(status)
        }
        // The job never started: record its end, so it does not stay unknown.
        Event::Exhausted { job, attempt, error } => {
            let mut status = JobStatus::queued(job, *attempt, (*attempt).max(1), now);
            fail(&mut status, error.clone(), None, now);
            Ok(status)
        }
        _ => Err(Refused::Missing),
    }
}

fn start(status: &mut JobStatus, run: &str, worker: &str, now: DateTime<Utc>) {
    status.run = Some(run.to_string());
    status.worker = Some(worker.to_string());
    status.heartbeat_at = Some(now);
    status.handover_pending = false;
    status.progress = 0.0;
    status.error = None;
    status.manifest_key = None;
    status.transition(JobState::Running, Stage::Downloading, now, None);
}

/// Hands the job to attempt `attempt`, whose message is published right after this status is
/// stored (status first: a message never arrives before the status that allows it).
fn hand_over(
    status: &mut JobStatus,
    state: JobState,
    attempt: u32,
    error: Option<ErrorInfo>,
    note: String,
    now: DateTime<Utc>,
) {
    status.attempt = attempt;
    status.error = error;
    status.run = None;
    status.worker = None;
    status.heartbeat_at = None;
    status.progress = 0.0;
    status.handover_pending = true;
    status.transition(state, Stage::Queued, now, Some(note));
}

fn fail(status: &mut JobStatus, error: ErrorInfo, note: Option<String>, now: DateTime<Utc>) {
    status.error = Some(error);
    status.handover_pending = false;
    status.transition(JobState::Failed, Stage::Done, now, note);
}

/// Refuses unless the job is running under `run`.
fn owned_running(current: &JobStatus, run: &str, event: &Event) -> Result<(), Refused> {
    if current.run.as_deref() != Some(run) {
        return Err(Refused::Superseded);
    }
    if current.state != JobState::Running {
        return Err(Refused::NotNow { state: current.state, event: event.name() });
    }
    Ok(())
}

fn clamp_progress(percent: f64) -> f64 {
    if percent.is_finite() { (percent * 10.0).round().clamp(0.0, 1000.0) / 10.0 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn job() -> JobSpec {
        crate::domain::job::sample_job()
    }

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    fn start_ev(attempt: u32, run: &str) -> Event {
        Event::Start { job: job(), attempt, run: run.into(), worker: format!("w-{run}"), max_attempts: 3 }
    }

    fn err(code: &str) -> ErrorInfo {
        ErrorInfo { code: code.into(), message: format!("{code} happened"), retryable: true }
    }

    /// Applies events in order from no status, each at second `i`, and returns every outcome.
    fn run(events: &[Event]) -> (Option<JobStatus>, Vec<Result<JobState, Refused>>) {
        let mut status: Option<JobStatus> = None;
        let mut outcomes = Vec::new();
        for (i, event) in events.iter().enumerate() {
            match apply(status.as_ref(), event, t(i as i64)) {
                Ok(next) => {
                    outcomes.push(Ok(next.state));
                    status = Some(next);
                }
                Err(refused) => outcomes.push(Err(refused)),
            }
        }
        (status, outcomes)
    }

    fn running(run_id: &str) -> JobStatus {
        apply(None, &start_ev(1, run_id), t(0)).unwrap()
    }

    fn at_stage(mut status: JobStatus, stage: Stage) -> JobStatus {
        let run = status.run.clone().unwrap();
        status = apply(
            Some(&status),
            &Event::Stage { run, stages: vec![StageMark { stage, at: t(1) }], progress: 50.0 },
            t(1),
        )
        .unwrap();
        status
    }

    #[test]
    fn submit_then_start_then_complete() {
        let (status, outcomes) = run(&[
            Event::Submit { job: job(), max_attempts: 3 },
            start_ev(1, "r1"),
            Event::Stage {
                run: "r1".into(),
                stages: vec![StageMark { stage: Stage::Transcoding, at: t(1) }],
                progress: 10.0,
            },
            Event::Heartbeat { run: "r1".into(), progress: 55.55 },
            Event::Stage {
                run: "r1".into(),
                stages: vec![StageMark { stage: Stage::Finalizing, at: t(1) }],
                progress: 100.0,
            },
            Event::Complete { run: "r1".into(), manifest_key: "outputs/a.mp4/job-1/manifest.json".into() },
        ]);
        use JobState::*;
        assert_eq!(outcomes, vec![Ok(Queued), Ok(Running), Ok(Running), Ok(Running), Ok(Running), Ok(Completed)]);
        let status = status.unwrap();
        assert_eq!(status.progress, 100.0);
        assert_eq!(status.revision, 6, "one revision per accepted event");
        assert_eq!(status.manifest_key.as_deref(), Some("outputs/a.mp4/job-1/manifest.json"));
        let stages: Vec<Stage> = status.timeline.iter().map(|e| e.stage).collect();
        assert_eq!(stages, vec![Stage::Queued, Stage::Downloading, Stage::Transcoding, Stage::Finalizing, Stage::Done]);
    }

    #[test]
    fn stages_written_together_keep_their_order_and_times() {
        let status = running("r1");
        let stages = vec![
            StageMark { stage: Stage::Probing, at: t(2) },
            StageMark { stage: Stage::Transcoding, at: t(3) },
            // A writer's clock ahead of the store's: clamped to the time of the write.
            StageMark { stage: Stage::Uploading, at: t(9) },
        ];
        let next = apply(Some(&status), &Event::Stage { run: "r1".into(), stages, progress: 40.0 }, t(5)).unwrap();
        let tail: Vec<(Stage, DateTime<Utc>)> =
            next.timeline.iter().rev().take(3).rev().map(|e| (e.stage, e.at)).collect();
        assert_eq!(tail, vec![(Stage::Probing, t(2)), (Stage::Transcoding, t(3)), (Stage::Uploading, t(5))]);
        assert_eq!((next.stage, next.updated_at, next.heartbeat_at), (Stage::Uploading, t(5), Some(t(5))));
    }

    /// Every event on every state: which are accepted, and what each refusal is.
    #[test]
    fn transition_table() {
        let queued = apply(None, &Event::Submit { job: job(), max_attempts: 3 }, t(0)).unwrap();
        let run_r1 = running("r1");
        let finalizing = at_stage(running("r1"), Stage::Finalizing);
        let retrying = apply(
            Some(&run_r1),
            &Event::Retry { run: "r1".into(), error: err("storage"), delay: Duration::from_secs(5) },
            t(1),
        )
        .unwrap();
        let completed = apply(
            Some(&finalizing),
            &Event::Complete { run: "r1".into(), manifest_key: "outputs/m.json".into() },
            t(2),
        )
        .unwrap();
        let failed = apply(Some(&run_r1), &Event::Fail { run: "r1".into(), error: err("not_media") }, t(2)).unwrap();
        let cancelled = apply(Some(&queued), &Event::Cancel { note: "x".into() }, t(1)).unwrap();

        let events = [
            Event::Submit { job: job(), max_attempts: 3 },
            start_ev(1, "r2"),
            Event::Heartbeat { run: "r1".into(), progress: 1.0 },
            Event::Stage {
                run: "r1".into(),
                stages: vec![StageMark { stage: Stage::Probing, at: t(1) }],
                progress: 1.0,
            },
            Event::Complete { run: "r1".into(), manifest_key: "m".into() },
            Event::Retry { run: "r1".into(), error: err("e"), delay: Duration::ZERO },
            Event::Fail { run: "r1".into(), error: err("e") },
            Event::Interrupt { run: "r1".into(), note: "n".into() },
            Event::Recover { run: "r1".into(), heartbeat_timeout: TIMEOUT },
            Event::Cancel { note: "n".into() },
            Event::Exhausted { job: job(), attempt: 1, error: err("delivery_exhausted") },
            Event::Published { attempt: 2 },
            Event::OutputsDeleted { files: 1 },
        ];
        use JobState::*;
        use Refused::*;
        let nn = |state, event| Err(NotNow { state, event });
        // One row per state, one column per event above. `Ok` is the state after.
        type Row<'a> = (&'a str, &'a JobStatus, Vec<Result<JobState, Refused>>);
        // A final state refuses everything; only a completed job takes "outputs deleted".
        let ended = |state: JobState| {
            let mut row = vec![Err(Exists)];
            row.extend(std::iter::repeat_n(Err(Ended(state)), events.len() - 2));
            row.push(if state == Completed { Ok(Completed) } else { Err(Ended(state)) });
            row
        };
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("queued", &queued, vec![
                Err(Exists), Ok(Running), Err(Superseded), Err(Superseded), Err(Superseded), Err(Superseded),
                Err(Superseded), Err(Superseded), Err(Superseded), Ok(Cancelled), Ok(Failed),
                nn(Queued, "published"), nn(Queued, "outputs_deleted"),
            ]),
            ("running r1", &run_r1, vec![
                Err(Exists), Err(InProgress), Ok(Running), Ok(Running), nn(Running, "complete"), Ok(Retrying),
                Ok(Failed), Ok(Queued), Ok(Retrying), Ok(Cancelled), Err(InProgress),
                nn(Running, "published"), nn(Running, "outputs_deleted"),
            ]),
            ("finalizing r1", &finalizing, vec![
                Err(Exists), Err(InProgress), Ok(Running), Ok(Running), Ok(Completed), Ok(Retrying),
                Ok(Failed), Ok(Queued), Ok(Retrying), Err(Finishing), Err(InProgress),
                nn(Running, "published"), nn(Running, "outputs_deleted"),
            ]),
            ("retrying 2", &retrying, vec![
                Err(Exists), Err(Superseded), Err(Superseded), Err(Superseded), Err(Superseded), Err(Superseded),
                Err(Superseded), Err(Superseded), Err(Superseded), Ok(Cancelled), Err(Superseded),
                Ok(Retrying), nn(Retrying, "outputs_deleted"),
            ]),
            ("completed", &completed, ended(Completed)),
            ("failed", &failed, ended(Failed)),
            ("cancelled", &cancelled, ended(Cancelled)),
        ];
        // Recover needs a silent worker: evaluate the table far enough in the future.
        let later = t(3600);
        for (name, status, expected) in table {
            assert_eq!(expected.len(), events.len(), "row {name}");
            for (event, want) in events.iter().zip(expected) {
                let got = apply(Some(status), event, later).map(|s| s.state);
                assert_eq!(got, want, "{name} + {}", event.name());
            }
        }
        // From nothing: submit, start and exhausted create; everything else needs a status.
        for event in &events {
            let got = apply(None, event, later).map(|s| s.state);
            let want = match event {
                Event::Submit { .. } => Ok(Queued),
                Event::Start { .. } => Ok(Running),
                Event::Exhausted { .. } => Ok(Failed),
                _ => Err(Missing),
            };
            assert_eq!(got, want, "none + {}", event.name());
        }
    }

    #[test]
    fn a_stale_attempt_can_never_change_a_newer_one() {
        // r1 runs attempt 1, goes silent; the reaper recovers; r2 runs attempt 2. Every write of
        // r1 after that is refused, including a completion and a heartbeat.
        let (status, outcomes) = run(&[
            start_ev(1, "r1"),
            Event::Recover { run: "r1".into(), heartbeat_timeout: Duration::ZERO },
            Event::Published { attempt: 2 },
            start_ev(2, "r2"),
            Event::Heartbeat { run: "r1".into(), progress: 90.0 },
            Event::Stage {
                run: "r1".into(),
                stages: vec![StageMark { stage: Stage::Finalizing, at: t(1) }],
                progress: 100.0,
            },
            Event::Complete { run: "r1".into(), manifest_key: "m".into() },
            Event::Retry { run: "r1".into(), error: err("e"), delay: Duration::ZERO },
            // A duplicate of attempt 1's message arrives late.
            start_ev(1, "r3"),
        ]);
        use JobState::*;
        assert_eq!(
            outcomes,
            vec![
                Ok(Running),
                Ok(Retrying),
                Ok(Retrying),
                Ok(Running),
                Err(Refused::Superseded),
                Err(Refused::Superseded),
                Err(Refused::Superseded),
                Err(Refused::Superseded),
                Err(Refused::InProgress),
            ]
        );
        let status = status.unwrap();
        assert_eq!((status.attempt, status.run.as_deref()), (2, Some("r2")));
        // And once r2 completes, r1's stale start of attempt 1 (or 2) cannot restart it.
        let done = at_stage(status, Stage::Finalizing);
        let done = apply(Some(&done), &Event::Complete { run: "r2".into(), manifest_key: "m".into() }, t(20)).unwrap();
        assert_eq!(apply(Some(&done), &start_ev(2, "r4"), t(21)), Err(Refused::Ended(Completed)));
    }

    #[test]
    fn the_reaper_failing_the_last_attempt_beats_a_slow_heartbeat() {
        let mut status = running("r1");
        status.attempt = 3; // the last of 3
        let failed =
            apply(Some(&status), &Event::Recover { run: "r1".into(), heartbeat_timeout: TIMEOUT }, t(120)).unwrap();
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(failed.error.as_ref().map(|e| e.code.as_str()), Some("worker_lost"));
        // The slow worker wakes up: its heartbeat may not bring the job back to running.
        let beat = apply(Some(&failed), &Event::Heartbeat { run: "r1".into(), progress: 50.0 }, t(121));
        assert_eq!(beat, Err(Refused::Ended(JobState::Failed)));
        // A fresh heartbeat keeps the reaper away.
        let fresh = apply(Some(&status), &Event::Heartbeat { run: "r1".into(), progress: 10.0 }, t(100)).unwrap();
        let recover = apply(Some(&fresh), &Event::Recover { run: "r1".into(), heartbeat_timeout: TIMEOUT }, t(120));
        assert_eq!(recover, Err(Refused::Alive));
    }

    #[test]
    fn cancel_and_completion_race_has_one_winner() {
        let finalizing = at_stage(running("r1"), Stage::Finalizing);
        // Completion first: the cancel is refused.
        let completed =
            apply(Some(&finalizing), &Event::Complete { run: "r1".into(), manifest_key: "m".into() }, t(2)).unwrap();
        assert_eq!(
            apply(Some(&completed), &Event::Cancel { note: "c".into() }, t(3)),
            Err(Refused::Ended(JobState::Completed))
        );
        // Cancel while committing is refused; cancel before that wins, and the completion
        // of the same run is then refused.
        assert_eq!(apply(Some(&finalizing), &Event::Cancel { note: "c".into() }, t(2)), Err(Refused::Finishing));
        let uploading = at_stage(running("r1"), Stage::Uploading);
        let cancelled = apply(Some(&uploading), &Event::Cancel { note: "c".into() }, t(2)).unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled);
        let stage = Event::Stage {
            run: "r1".into(),
            stages: vec![StageMark { stage: Stage::Finalizing, at: t(1) }],
            progress: 100.0,
        };
        assert_eq!(apply(Some(&cancelled), &stage, t(3)), Err(Refused::Ended(JobState::Cancelled)));
    }

    #[test]
    fn retries_use_attempts_and_shutdowns_do_not() {
        let retry = |run: &str| Event::Retry { run: run.into(), error: err("storage"), delay: Duration::from_secs(1) };
        let (status, outcomes) = run(&[
            start_ev(1, "r1"),
            Event::Interrupt { run: "r1".into(), note: "requeued: the worker shut down".into() },
            start_ev(1, "r2"),
            retry("r2"),
            start_ev(2, "r3"),
            retry("r3"),
            start_ev(3, "r4"),
            retry("r4"),
        ]);
        use JobState::*;
        assert_eq!(
            outcomes,
            vec![
                Ok(Running),
                Ok(Queued),
                Ok(Running),
                Ok(Retrying),
                Ok(Running),
                Ok(Retrying),
                Ok(Running),
                Ok(Failed)
            ]
        );
        let status = status.unwrap();
        assert_eq!(status.attempt, 3);
        let error = status.error.unwrap();
        assert_eq!(error.code, "storage");
        assert!(error.message.ends_with("(after 3 attempts)"), "{}", error.message);
    }

    #[test]
    fn handovers_are_pending_until_published() {
        let retrying = apply(
            Some(&running("r1")),
            &Event::Retry { run: "r1".into(), error: err("e"), delay: Duration::ZERO },
            t(1),
        )
        .unwrap();
        assert!(retrying.handover_pending);
        assert_eq!((retrying.run.as_deref(), retrying.worker.as_deref()), (None, None));
        // A stale acknowledgement is refused; the right one clears the mark.
        assert!(apply(Some(&retrying), &Event::Published { attempt: 1 }, t(2)).is_err());
        let published = apply(Some(&retrying), &Event::Published { attempt: 2 }, t(2)).unwrap();
        assert!(!published.handover_pending);
        assert!(apply(Some(&published), &Event::Published { attempt: 2 }, t(3)).is_err());
        // The message may also be taken before the acknowledgement lands: start clears it too.
        let started = apply(Some(&retrying), &start_ev(2, "r2"), t(2)).unwrap();
        assert!(!started.handover_pending);
    }

    #[test]
    fn a_message_for_another_job_spec_is_refused() {
        let queued = apply(None, &Event::Submit { job: job(), max_attempts: 3 }, t(0)).unwrap();
        let mut other = job();
        other.output_dir = "outputs/elsewhere/".into();
        let event = Event::Start { job: other, attempt: 1, run: "r".into(), worker: "w".into(), max_attempts: 3 };
        assert_eq!(apply(Some(&queued), &event, t(1)), Err(Refused::Mismatch));
    }

    #[test]
    fn exhausted_deliveries_fail_only_jobs_nobody_runs() {
        let exhausted = |attempt| Event::Exhausted { job: job(), attempt, error: err("delivery_exhausted") };
        assert_eq!(apply(Some(&running("r1")), &exhausted(1), t(1)), Err(Refused::InProgress));
        let retrying = apply(
            Some(&running("r1")),
            &Event::Retry { run: "r1".into(), error: err("e"), delay: Duration::ZERO },
            t(1),
        )
        .unwrap();
        assert_eq!(apply(Some(&retrying), &exhausted(1), t(2)), Err(Refused::Superseded));
        let failed = apply(Some(&retrying), &exhausted(2), t(2)).unwrap();
        assert_eq!(failed.error.map(|e| e.code), Some("delivery_exhausted".into()));
    }

    #[test]
    fn progress_is_clamped_and_rounded() {
        assert_eq!(clamp_progress(55.55), 55.6);
        assert_eq!(clamp_progress(-3.0), 0.0);
        assert_eq!(clamp_progress(250.0), 100.0);
        assert_eq!(clamp_progress(f64::NAN), 0.0);
    }
}
