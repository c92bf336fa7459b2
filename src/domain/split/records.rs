//! The records that make a split job resumable, and the segment messages on the ready queue.
//! Where each record is stored is [`crate::domain::keys`]'s.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Rendition;
use crate::domain::job::MESSAGE_VERSION;
use crate::domain::status::ErrorInfo;
use crate::domain::watermark::Overlay;

/// Version of the split records and segment messages.
pub const SPLIT_VERSION: u32 = 1;

/// One piece of the source: its index and the source times it covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Piece {
    pub index: u32,
    pub start: f64,
    pub end: f64,
}

/// `split/split.json`: written once per job (create-only) by the run that split the source;
/// later attempts reuse it, so finished segments stay valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRecord {
    pub version: u32,
    /// The source write the pieces were cut from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_etag: Option<String>,
    pub segment_duration: f64,
    pub pieces: Vec<Piece>,
    pub renditions: Vec<Rendition>,
    /// The job's watermark as every segment draws it (its image: [`watermark_key`](crate::domain::keys::watermark_key)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Overlay>,
    pub worker: String,
    pub split_ms: u64,
}

/// `split/segment-<n>.done.json`: segment `n` is encoded and stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentDone {
    pub version: u32,
    pub index: u32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// When the encode itself began (after the download and the wait for a transcode slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encode_started_at: Option<DateTime<Utc>>,
    pub encode_ms: u64,
    /// Bytes of every rendition of the segment.
    pub bytes: u64,
}

/// `split/segment-<n>.failed.json`: segment `n` cannot be encoded; the job fails naming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentFailed {
    pub version: u32,
    pub index: u32,
    pub error: ErrorInfo,
}

/// A segment to encode, on the ready queue: `{"version": 1, "segment": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentMessage {
    pub version: u32,
    pub segment: SegmentTask,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentTask {
    pub job_id: String,
    /// The job's folder, where its `split/` records are. Checked against the job's status
    /// before anything is read or written there: a message is no authority on where to write.
    pub output_dir: String,
    pub index: u32,
    pub count: u32,
    /// Tries of this segment that failed for a passing reason, within the job's attempt;
    /// each is offered again after a back-off, until `MEDIA_MAX_ATTEMPTS` tries.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tries: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl SegmentMessage {
    pub fn new(task: SegmentTask) -> Self {
        Self { version: MESSAGE_VERSION, segment: task }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain owned data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The segment as people read it: `segment 3 of 10`.
pub fn describe(task: &SegmentTask) -> String {
    format!("segment {} of {}", task.index + 1, task.count)
}
