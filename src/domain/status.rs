//! The documents the worker writes next to the media: job status and the manifest.
//!
//! They derive `utoipa::ToSchema` because the API returns them as they are stored; the
//! schemas in `/openapi.json` then follow these definitions.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::error_code::{ErrorCode, UNKNOWN_CODE_MESSAGE};
use crate::domain::job::JobSpec;
use crate::domain::loudness::LoudnessReport;
use crate::domain::per_title::LadderDecision;
use crate::domain::preset::Preset;
use crate::domain::probe::MediaInfo;
use crate::domain::qc::QcReport;
use crate::domain::scoring::RenditionQuality;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Published, waiting for a worker.
    Queued,
    Running,
    /// An attempt failed (or its worker died) and the next attempt is on the ready queue.
    Retrying,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    /// Every state, for catalogues (`GET /v1/presets` tells clients which ones are terminal).
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed | JobState::Cancelled)
    }

    /// The state's name on the wire (its serde name).
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Queued,
    Downloading,
    /// The source is fetched from the job's URL (`input.url`) into storage; an attempt starts in
    /// `downloading` and moves here only when the file is not stored yet.
    Importing,
    Probing,
    /// The source is measured before encoding: the job's QC rules, and the sample encodes of a
    /// per-title ladder (only for jobs that ask for either).
    Analysing,
    /// A long source is cut into pieces that any worker can encode ([`crate::domain::split`]).
    Splitting,
    /// ffmpeg runs; for a split job, its segments are encoded, here and by other workers.
    Transcoding,
    /// A split job's segments are joined into its outputs.
    Stitching,
    /// Every video rendition is scored against the source (VMAF, PSNR, SSIM).
    Scoring,
    Uploading,
    Finalizing,
    Done,
}

/// A failure as users see it: a stable code, a sentence, and whether it was retried.
///
/// The sentence is the code's public one ([`public_message`]), never the cause itself: causes
/// carry SDK texts (account ids, role ARNs), scratch paths and ffmpeg log lines, and go to the
/// worker's log only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorInfo {
    /// An [`ErrorCode`]'s name; kept as text so a document written by a newer version, with a
    /// code this one does not know, still reads.
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl ErrorInfo {
    /// The error recorded for `code` (an [`ErrorCode`], or its name): its public sentence and
    /// nothing else.
    pub fn public(code: impl AsRef<str>, retryable: bool) -> Self {
        let code = code.as_ref();
        ErrorInfo { code: code.to_string(), message: public_message(code).to_string(), retryable }
    }

    /// A job whose message was delivered `receives` times without the job starting (the store
    /// or the ledger kept failing): it fails, for good, with `delivery_exhausted`.
    pub fn delivery_exhausted(receives: u32) -> Self {
        ErrorInfo {
            code: ErrorCode::DeliveryExhausted.into(),
            message: format!("the job's message was delivered {receives} times without the job starting"),
            retryable: false,
        }
    }

    /// The recorded code, if this worker knows it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }

    /// The error as clients may see it. A message that starts with its code's public sentence
    /// is kept (the lifecycle appends facts of its own, such as the attempt count); any other
    /// is replaced by that sentence, so documents written with a raw cause never leak it.
    pub fn redacted(&self) -> Self {
        let public = public_message(&self.code);
        let message = if self.message.starts_with(public) { self.message.clone() } else { public.to_string() };
        ErrorInfo { code: self.code.clone(), message, retryable: self.retryable }
    }
}

/// The one sentence clients see for a recorded code ([`ErrorCode::public_message`]). A code
/// this worker does not know gets a generic sentence; the code itself stays exact.
pub fn public_message(code: &str) -> &'static str {
    ErrorCode::parse(code).map_or(UNKNOWN_CODE_MESSAGE, ErrorCode::public_message)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub state: JobState,
    pub stage: Stage,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `jobs/<job_id>.json`: the one place to ask how a job is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub version: u32,
    /// How many changes the document has had: each accepted event adds one. Orders a job's
    /// notifications (their `sequence`).
    #[serde(default)]
    pub revision: u64,
    pub job_id: String,
    pub state: JobState,
    pub stage: Stage,
    /// Percent of the transcode done, 0 to 100.
    pub progress: f64,
    /// The attempt that is running, or that will run next when queued or retrying.
    pub attempt: u32,
    pub max_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The fencing token of the run that owns the job while it is `running`: a write from any
    /// other run is refused, so a stale attempt can never change a newer one's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// Set when the job was handed to its next attempt (retry, recovery, shutdown) and the
    /// message carrying that attempt is not yet known to be on the ready queue. The reaper
    /// republishes it if the handing-over process died in between.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handover_pending: bool,
    /// When the outputs of a completed job were deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_deleted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub job: JobSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    pub timeline: Vec<TimelineEntry>,
}

/// A timeline longer than this keeps its first entries and its latest ones.
const MAX_TIMELINE: usize = 200;

impl JobStatus {
    pub fn queued(job: &JobSpec, attempt: u32, max_attempts: u32, now: DateTime<Utc>) -> Self {
        let mut status = JobStatus {
            version: 1,
            revision: 0,
            job_id: job.job_id.clone(),
            state: JobState::Queued,
            stage: Stage::Queued,
            progress: 0.0,
            attempt,
            max_attempts,
            worker: None,
            run: None,
            heartbeat_at: None,
            handover_pending: false,
            outputs_deleted_at: None,
            created_at: now,
            updated_at: now,
            job: job.clone(),
            manifest_key: None,
            error: None,
            timeline: Vec::new(),
        };
        status.push_timeline(now, None);
        status
    }

    /// Moves to a state and stage, recording the transition in the timeline when either changed
    /// or when there is a note to keep.
    pub fn transition(&mut self, state: JobState, stage: Stage, now: DateTime<Utc>, note: Option<String>) {
        let changed = self.state != state || self.stage != stage;
        self.state = state;
        self.stage = stage;
        self.updated_at = now;
        if changed || note.is_some() {
            self.push_timeline(now, note);
        }
    }

    fn push_timeline(&mut self, now: DateTime<Utc>, note: Option<String>) {
        if self.timeline.len() >= MAX_TIMELINE {
            self.timeline.remove(MAX_TIMELINE / 2);
        }
        self.timeline.push(TimelineEntry {
            at: now,
            state: self.state,
            stage: self.stage,
            attempt: self.attempt,
            worker: self.worker.clone(),
            note,
        });
    }

    /// Whether the attempt's worker was heard from within `timeout`.
    pub fn heartbeat_is_fresh(&self, now: DateTime<Utc>, timeout: Duration) -> bool {
        let Some(beat) = self.heartbeat_at else { return false };
        let age = now.signed_duration_since(beat);
        age.num_milliseconds() < i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceRecord {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub size: u64,
    #[serde(flatten)]
    pub media: MediaInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputRecord {
    pub preset: Preset,
    /// The file to open: the MP4, the master playlist, the WebVTT cues, ...
    pub key: String,
    /// Every file of this output, `key` included (HLS segments, the storyboard's sprite).
    #[serde(default)]
    pub files: Vec<String>,
    /// Bytes of all its files.
    pub size: u64,
    pub content_type: String,
    /// ffmpeg's speed for this output, in multiples of real time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// What the plan decided (HLS rungs, remux copy or transcode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The main file's shape (the sprite sheet's, for a storyboard).
    #[serde(flatten)]
    pub media: MediaInfo,
    /// Each video rendition scored against the source (an HLS ladder: each rung, largest
    /// first); per-second series are in the attempt's `quality.json`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<RenditionQuality>,
    /// What the per-title analysis chose for this HLS ladder (jobs with a quality target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ladder: Option<LadderDecision>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timings {
    pub download_ms: u64,
    pub probe_ms: u64,
    /// The source's QC pass and a per-title ladder's probes, before the encode.
    #[serde(default)]
    pub analysis_ms: u64,
    pub transcode_ms: u64,
    /// Scoring every video rendition against the source.
    #[serde(default)]
    pub scoring_ms: u64,
    pub upload_ms: u64,
    pub total_ms: u64,
}

/// `<output_dir>/manifest.json`, written last: its presence means the job completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Manifest {
    pub version: u32,
    pub job_id: String,
    pub attempt: u32,
    pub worker: String,
    /// The run that wrote it. It is the job's record once the job's status is `completed`
    /// naming it; a run that wrote it but could not complete takes it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    pub completed_at: DateTime<Utc>,
    pub source: SourceRecord,
    pub outputs: Vec<OutputRecord>,
    pub timings: Timings,
    /// How a split job was encoded; absent for a job encoded whole on one worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitSummary>,
    /// The key of `quality.json`: every scored rendition's VMAF per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_key: Option<String>,
    /// The job's QC rules as measured on the source: a job with findings to warn of completes
    /// with them here (a failing one does not complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qc: Option<QcReport>,
    /// The source's loudness as measured for the job's `loudness` setting, and what was done
    /// to every output's audio (`docs/api.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loudness: Option<LoudnessReport>,
}

/// A split job's segments: how many, and who encoded each in how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SplitSummary {
    pub segments: u32,
    /// The requested length; segments start on source keyframes, so they vary around it.
    pub segment_duration: f64,
    /// The stream-copy pass that cut the source (0 when an earlier attempt did it).
    pub split_ms: u64,
    /// Encoding the whole source's audio, and the outputs made whole (thumbnail, GIF, ...).
    pub alongside_ms: u64,
    /// From the pieces being stored to the last segment's checkpoint.
    pub segments_ms: u64,
    /// Joining the segments and muxing the audio, by stream copy.
    pub stitch_ms: u64,
    pub segment_timings: Vec<SegmentTiming>,
    /// The job's other tasks (`split`, `audio`, `whole`, `stitch`): where and when each ran,
    /// so the head and the tail of the job can be read, and a fleet modelled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskTiming>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SegmentTiming {
    pub index: u32,
    /// Source seconds the segment covers.
    pub start: f64,
    pub end: f64,
    pub worker: String,
    pub encode_ms: u64,
    /// When its encode began (after its piece was downloaded and a transcode slot was free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When its checkpoint was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// One task of a split job other than its segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskTiming {
    /// `split` (the pass that cuts the source), `audio` (the whole source's audio), `whole`
    /// (the outputs made from the whole source) or `stitch`.
    pub task: String,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobSpec {
        crate::domain::job::sample_job()
    }

    #[test]
    fn a_state_s_name_is_its_wire_name() {
        for state in JobState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    #[test]
    fn transitions_are_recorded_once() {
        let t0 = Utc::now();
        let mut status = JobStatus::queued(&job(), 1, 5, t0);
        status.transition(JobState::Running, Stage::Downloading, t0, None);
        status.transition(JobState::Running, Stage::Downloading, t0, None);
        status.transition(JobState::Running, Stage::Transcoding, t0, None);
        let stages: Vec<Stage> = status.timeline.iter().map(|e| e.stage).collect();
        assert_eq!(stages, vec![Stage::Queued, Stage::Downloading, Stage::Transcoding]);
    }

    #[test]
    fn heartbeat_freshness() {
        let now = Utc::now();
        let mut status = JobStatus::queued(&job(), 1, 5, now);
        assert!(!status.heartbeat_is_fresh(now, Duration::from_secs(60)));
        status.heartbeat_at = Some(now - chrono::Duration::seconds(30));
        assert!(status.heartbeat_is_fresh(now, Duration::from_secs(60)));
        assert!(!status.heartbeat_is_fresh(now, Duration::from_secs(10)));
    }

    #[test]
    fn errors_show_their_code_public_sentence_only() {
        let raw = ErrorInfo {
            code: "storage".into(),
            message: "service error: AccessDenied arn:aws:iam::123456789012:role/worker /var/scratch/j1".into(),
            retryable: true,
        };
        let shown = raw.redacted();
        assert_eq!(shown.message, public_message("storage"));
        assert!(!shown.message.contains("arn:") && !shown.message.contains("/var/"), "{shown:?}");
        assert_eq!(ErrorInfo::public("storage", true), shown);
        let counted = ErrorInfo { message: format!("{} (after 3 attempts)", public_message("timeout")), ..raw.clone() };
        let counted = ErrorInfo { code: "timeout".into(), ..counted };
        assert_eq!(counted.redacted(), counted, "the lifecycle's own suffix is kept");
        assert_eq!(ErrorInfo { code: "new_code".into(), ..raw }.redacted().message, public_message("anything"));
    }

    #[test]
    fn status_round_trips_as_json() {
        let status = JobStatus::queued(&job(), 1, 5, Utc::now());
        let back: JobStatus = serde_json::from_slice(&status.to_json()).unwrap();
        assert_eq!(back, status);
        let text = String::from_utf8(status.to_json()).unwrap();
        assert!(text.contains("\"state\": \"queued\""));
    }
}
