//! The event contract, pure: which lifecycle transition is which event, and its payload.
//!
//! One transition makes at most one event, so an event is named by its job and the revision
//! of the status that transition stored: its id is derived from both (the same transition
//! always has the same id), and `sequence` (the revision) orders a job's events, which may
//! arrive out of order.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::domain::preset::Preset;
use crate::domain::qc::QcReport;
use crate::domain::status::{ErrorInfo, JobState, JobStatus, Manifest, Stage};
use crate::jobs::Event;

/// Version of the payload; a change that could break a receiver gets a new one.
pub const EVENT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum EventType {
    /// Submitted through the API or the CLI (jobs made from plain S3 uploads begin with
    /// `job.started`: they are known only once a worker takes them).
    #[serde(rename = "job.queued")]
    Queued,
    /// A worker started the job's first attempt (later attempts follow `job.retrying`).
    #[serde(rename = "job.started")]
    Started,
    /// Progress or stage changed; throttled.
    #[serde(rename = "job.progress")]
    Progress,
    /// An attempt failed with a retryable error (or its worker died); another follows.
    #[serde(rename = "job.retrying")]
    Retrying,
    #[serde(rename = "job.completed")]
    Completed,
    #[serde(rename = "job.failed")]
    Failed,
    #[serde(rename = "job.cancelled")]
    Cancelled,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        EventType::Queued,
        EventType::Started,
        EventType::Progress,
        EventType::Retrying,
        EventType::Completed,
        EventType::Failed,
        EventType::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Queued => "job.queued",
            EventType::Started => "job.started",
            EventType::Progress => "job.progress",
            EventType::Retrying => "job.retrying",
            EventType::Completed => "job.completed",
            EventType::Failed => "job.failed",
            EventType::Cancelled => "job.cancelled",
        }
    }
}

impl FromStr for EventType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            format!("unknown event type `{s}`; expected one of {}", names.join(", "))
        })
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notification, as webhooks, EventBridge (`detail`) and SNS carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NotificationEvent {
    /// Always 1 for this shape.
    pub version: u32,
    /// Unique per event, the same on every delivery of it (`webhook-id`): dedupe by it.
    #[schema(example = "msg_4f1c0e9a2b7d3c5e8f6a1b2c")]
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When the change happened.
    pub time: DateTime<Utc>,
    /// Orders the events of one job (higher is later); not contiguous.
    pub sequence: u64,
    pub data: EventData,
}

/// The job as it was right after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventData {
    pub job_id: String,
    pub state: JobState,
    pub stage: Stage,
    /// Percent, 0 to 100.
    pub progress: f64,
    pub attempt: u32,
    pub max_attempts: u32,
    pub source_key: String,
    pub output_dir: String,
    /// Failed, retrying: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Completed: the manifest's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    /// Completed: what was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<OutputSummary>>,
    /// Completed, for a job with QC rules: the verdict (`pass` or `warn`) and the findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qc: Option<QcReport>,
}

/// One output of a completed job, from its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutputSummary {
    pub preset: Preset,
    pub key: String,
    /// Bytes of all its files.
    pub size: u64,
    pub content_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_codec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_codec: Option<String>,
}

/// The event a transition that won its compare-and-swap makes, before throttling (every
/// heartbeat and stage change is a `Progress` candidate). `None` for changes receivers are not
/// told about (a shutdown requeue, a handover mark, deleted outputs).
pub fn event_type(event: &Event, before: Option<&JobStatus>, after: &JobStatus) -> Option<EventType> {
    match event {
        Event::Submit { .. } => Some(EventType::Queued),
        // The first attempt only: a job that never ran before. A requeued attempt (shutdown)
        // or a later attempt starts silently.
        Event::Start { .. } => {
            let ran = before.is_some_and(|b| b.timeline.iter().any(|e| e.state == JobState::Running));
            (!ran).then_some(EventType::Started)
        }
        Event::Heartbeat { .. } | Event::Stage { .. } => Some(EventType::Progress),
        Event::Complete { .. } => Some(EventType::Completed),
        Event::Retry { .. } | Event::Recover { .. } => match after.state {
            JobState::Retrying => Some(EventType::Retrying),
            JobState::Failed => Some(EventType::Failed),
            _ => None,
        },
        Event::Fail { .. } | Event::Exhausted { .. } => Some(EventType::Failed),
        Event::Cancel { .. } => Some(EventType::Cancelled),
        Event::Interrupt { .. } | Event::Published { .. } | Event::OutputsDeleted { .. } => None,
    }
}

/// The id of the event a job's revision made: `msg_` and 24 hex digits.
pub fn event_id(job_id: &str, revision: u64) -> String {
    let digest = Sha256::new().chain_update(job_id.as_bytes()).chain_update(b"\0").chain_update(revision.to_be_bytes());
    format!("msg_{}", hex::encode(&digest.finalize()[..12]))
}

/// The event for `status`, with the outputs of `manifest` when completed.
pub fn build(kind: EventType, status: &JobStatus, manifest: Option<&Manifest>) -> NotificationEvent {
    let outputs = manifest.filter(|_| kind == EventType::Completed).map(|m| {
        m.outputs
            .iter()
            .map(|o| OutputSummary {
                preset: o.preset,
                key: o.key.clone(),
                size: o.size,
                content_type: o.content_type.clone(),
                duration_seconds: o.media.duration_seconds,
                width: o.media.video.as_ref().map(|v| v.width),
                height: o.media.video.as_ref().map(|v| v.height),
                video_codec: o.media.video.as_ref().map(|v| v.codec.clone()),
                audio_codec: o.media.audio.as_ref().map(|a| a.codec.clone()),
            })
            .collect()
    });
    NotificationEvent {
        version: EVENT_VERSION,
        id: event_id(&status.job_id, status.revision),
        kind,
        time: status.updated_at,
        sequence: status.revision,
        data: EventData {
            job_id: status.job_id.clone(),
            state: status.state,
            stage: status.stage,
            progress: status.progress,
            attempt: status.attempt,
            max_attempts: status.max_attempts,
            source_key: status.job.source_key.clone(),
            output_dir: status.job.output_dir.clone(),
            error: status.error.as_ref().map(ErrorInfo::redacted),
            manifest_key: status.manifest_key.clone().filter(|_| kind == EventType::Completed),
            outputs,
            qc: manifest.filter(|_| kind == EventType::Completed).and_then(|m| m.qc.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::machine::apply;
    use std::time::Duration;

    fn err() -> ErrorInfo {
        ErrorInfo { code: "storage".into(), message: "x".into(), retryable: true }
    }

    /// Runs events from no status and returns the event type each accepted one makes.
    fn types(events: &[Event]) -> Vec<Option<EventType>> {
        let mut status: Option<JobStatus> = None;
        let mut out = Vec::new();
        for event in events {
            let Ok(next) = apply(status.as_ref(), event, Utc::now()) else { continue };
            out.push(event_type(event, status.as_ref(), &next));
            status = Some(next);
        }
        out
    }

    fn start(attempt: u32, run: &str) -> Event {
        Event::Start {
            job: crate::domain::job::sample_job(),
            attempt,
            run: run.into(),
            worker: "w".into(),
            max_attempts: 2,
        }
    }

    #[test]
    fn each_lifecycle_path_makes_its_events() {
        use EventType::*;
        let submit = Event::Submit { job: crate::domain::job::sample_job(), max_attempts: 2 };
        let stage = |run: &str, stage| Event::Stage {
            run: run.into(),
            stages: vec![crate::jobs::machine::StageMark::now(stage)],
            progress: 50.0,
        };
        // Submitted, requeued by a shutdown, restarted, retried, failed at the last attempt.
        let got = types(&[
            submit.clone(),
            start(1, "r1"),
            Event::Interrupt { run: "r1".into(), note: "shutdown".into() },
            start(1, "r2"),
            Event::Heartbeat { run: "r2".into(), progress: 10.0 },
            Event::Retry { run: "r2".into(), error: err(), delay: Duration::ZERO },
            Event::Published { attempt: 2 },
            start(2, "r3"),
            Event::Retry { run: "r3".into(), error: err(), delay: Duration::ZERO },
        ]);
        assert_eq!(
            got,
            vec![Some(Queued), Some(Started), None, None, Some(Progress), Some(Retrying), None, None, Some(Failed)]
        );
        // From an S3 event (no submit), to completion.
        let got = types(&[
            start(1, "r1"),
            stage("r1", Stage::Finalizing),
            Event::Complete { run: "r1".into(), manifest_key: "m".into() },
            Event::OutputsDeleted { files: 1 },
        ]);
        assert_eq!(got, vec![Some(Started), Some(Progress), Some(Completed), None]);
        let got = types(&[submit, Event::Cancel { note: "c".into() }]);
        assert_eq!(got, vec![Some(Queued), Some(Cancelled)]);
        // The reaper: retrying, then failed.
        let recover = |run: &str| Event::Recover { run: run.into(), heartbeat_timeout: Duration::ZERO };
        let got = types(&[start(1, "r1"), recover("r1"), start(2, "r2"), recover("r2")]);
        assert_eq!(got, vec![Some(Started), Some(Retrying), None, Some(Failed)]);
    }

    #[test]
    fn payload_and_ids() {
        let job = crate::domain::job::sample_job();
        let mut status = apply(None, &Event::Submit { job, max_attempts: 3 }, Utc::now()).unwrap();
        let event = build(EventType::Queued, &status, None);
        assert_eq!(event.sequence, 1);
        assert_eq!(event.id, event_id("job-1", 1));
        assert!(event.id.starts_with("msg_") && event.id.len() == 28);
        assert_ne!(event.id, event_id("job-1", 2));
        assert_ne!(event.id, event_id("job-2", 1));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "job.queued");
        assert_eq!(json["data"]["state"], "queued");
        assert!(json["data"].get("outputs").is_none());
        // The manifest key appears on completion only.
        status.manifest_key = Some("outputs/m.json".into());
        assert!(build(EventType::Progress, &status, None).data.manifest_key.is_none());
        assert_eq!("job.failed".parse::<EventType>(), Ok(EventType::Failed));
        assert!("job.nope".parse::<EventType>().is_err());
    }
}
