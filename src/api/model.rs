//! Request and response bodies. Requests refuse unknown fields; outputs deserialize straight
//! into the domain's [`OutputRequest`], so options added there reach the worker unchanged.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::job::{NotifyTarget, OutputRequest};
use crate::domain::status::{ErrorInfo, JobState, Manifest, Stage, TimelineEntry};
use crate::notify::record::Deliveries;

/// Longest file name accepted (before sanitising; the key keeps at most 200 characters of it).
pub const MAX_FILE_NAME: usize = 1024;
/// Longest content type accepted.
pub const MAX_CONTENT_TYPE: usize = 255;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUploadRequest {
    /// The user's file name; only a sanitised last segment of it is kept in the key.
    #[schema(min_length = 1, max_length = 1024, example = "cat video.mov")]
    pub filename: String,
    /// Sent with the upload; it is part of the URL's signature.
    #[schema(
        min_length = 3,
        max_length = 255,
        pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        example = "video/quicktime"
    )]
    pub content_type: String,
    /// Expected size in bytes; refused early when above the limit.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub size: Option<u64>,
}

/// Where and how to upload one file.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadTicket {
    /// The key the file will have; use it in `POST /v1/jobs`.
    pub key: String,
    /// Always `PUT`.
    pub method: String,
    /// A presigned S3 URL (AWS backend) or the API's own signed URL (local backend).
    pub url: String,
    /// Headers to send with the upload exactly as given.
    pub headers: BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
    /// After the upload: `GET` it for the upload's job id (path relative to the API).
    pub upload_url: String,
}

/// An uploaded file, and the job its arrival started.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadInfo {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    /// The job made from the upload with the deployment's default presets (the id the worker
    /// derives from the upload's event). On S3 it is known once a worker has taken the upload:
    /// until then it is null; ask again. Always null for a caption file or an image (by its
    /// extension: `.srt`, `.vtt`, `.scc`, `.ass`, `.ssa`, `.png`, `.jpg`, `.jpeg`, `.webp`),
    /// which makes no job.
    pub job_id: Option<String>,
    /// Path of the job, relative to the API (null with `job_id`).
    pub status_url: Option<String>,
}

/// The source: exactly one of `key` and `url`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1, max_properties = 1)]
pub struct JobInput {
    /// A key under the upload prefix, as returned by `POST /v1/uploads`.
    #[serde(default)]
    #[schema(nullable = false, min_length = 1, max_length = 1024, example = "uploads/3f2a9c1b/cat video.mov")]
    pub key: Option<String>,
    /// A file to fetch: a worker streams it into the caller's uploads
    /// (`<upload prefix>imports/<job id>/<name>`), then transcodes it. `https` only; refused
    /// (422 `fetch_refused`) when the host resolves to a private, loopback, link-local or
    /// metadata address. The worker checks again at every connection and redirect (at most 5)
    /// and reads at most `MEDIA_MAX_SOURCE_SIZE` bytes; failures are `fetch_failed` (retried:
    /// 5xx, timeouts, resets) or `fetch_refused` (final: 4xx, a refused address, too large).
    #[serde(default)]
    #[schema(nullable = false, min_length = 9, max_length = 2048, example = "https://media.example.com/cat.mp4")]
    pub url: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    pub input: JobInput,
    /// 1 to 16 outputs with distinct presets.
    #[schema(min_items = 1, max_items = 16)]
    pub outputs: Vec<OutputRequest>,
    /// Folder for the outputs and the manifest: under the output prefix, ending in `/`.
    /// Default: `<output prefix><upload folder>/<file stem>/<job id>/`.
    #[serde(default)]
    #[schema(min_length = 2, max_length = 1024, example = "outputs/campaign-7/")]
    pub output_prefix: Option<String>,
    /// A webhook for this job's events (besides the deployment's endpoints), signed with the
    /// deployment's secret. Refused (422 `invalid_notify_url`) unless `https` and resolving to
    /// public addresses; 422 `notifications_disabled` when the deployment signs no webhooks.
    #[serde(default)]
    pub notify: Option<NotifyTarget>,
    /// Long sources are encoded as segments by many workers at once; this opts out
    /// (`{"enabled": false}`) or sets the segment length (`{"segment_duration": 30}`).
    #[serde(default)]
    pub split: Option<crate::domain::split::SplitRequest>,
    /// Checks of the source before anything is encoded: black, freeze, silence, interlacing,
    /// letterbox and loudness rules, each `warn` or `fail` (`docs/qc.md`).
    #[serde(default)]
    pub qc: Option<crate::domain::qc::QcSettings>,
    /// Loudness normalisation of every output's audio to an integrated target (LUFS) under a
    /// true-peak ceiling (dBTP), measured once over the whole source (EBU R128); `"mode":
    /// "measure"` only reports the measurement in the manifest (`docs/api.md`).
    #[serde(default)]
    pub loudness: Option<crate::domain::loudness::LoudnessSettings>,
    /// An image among the caller's uploads drawn over every video output, at a corner or the
    /// centre, sized relative to the video's width, with an opacity and an optional time window
    /// and fade (`docs/api.md`). A missing image, or another tenant's, is refused (422
    /// `watermark_not_found`); one the worker cannot use fails the job (`invalid_watermark`).
    #[serde(default)]
    pub watermark: Option<crate::domain::watermark::WatermarkSettings>,
}

/// `POST /v1/jobs/{id}/captions`: caption tracks to add to a completed job's `cmaf` output.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCaptionsRequest {
    /// Caption files among your uploads (SubRip, WebVTT or SCC), each a new WebVTT rendition.
    #[schema(schema_with = crate::api::openapi::caption_tracks_schema)]
    pub captions: Vec<crate::domain::delivery::CaptionTrack>,
    /// Whether a track in a language the package has replaces that track; without it such a
    /// track is refused (422 `caption_language_exists`).
    #[serde(default)]
    pub replace: bool,
}

/// One job of a list: its status without the timeline and downloads.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobSummary {
    pub job_id: String,
    pub state: JobState,
    pub stage: Stage,
    /// Percent of the transcode done, 0 to 100.
    pub progress: f64,
    /// The attempt running, or the next one when queued or retrying.
    pub attempt: u32,
    pub max_attempts: u32,
    pub source_key: String,
    pub outputs: Vec<OutputRequest>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub error: Option<ErrorInfo>,
    /// Path of the job, relative to the API.
    pub status_url: String,
}

/// A page of the caller's jobs, the most recently created first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/jobs`: which page, and which jobs.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    /// Jobs per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the page before.
    #[param(min_length = 3, max_length = 100)]
    pub cursor: Option<String>,
    /// Only jobs in this state.
    pub state: Option<JobState>,
}

/// A job: its status document, with links, and download URLs once it completed.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// What a list shows of the job.
    #[serde(flatten)]
    pub summary: JobSummary,
    pub output_dir: String,
    /// The job's own webhook, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyTarget>,
    /// `GET /v1/jobs/{id}` only, when webhooks concern the job: every delivery attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Deliveries>,
    pub worker: Option<String>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub timeline: Vec<TimelineEntry>,
    /// Path relative to the API.
    pub events_url: String,
    /// When completed: the manifest as the worker wrote it.
    pub manifest: Option<Manifest>,
    /// When completed: a time-limited URL per output and for the manifest.
    pub downloads: Vec<Download>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Download {
    pub key: String,
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// What `DELETE /v1/jobs/{id}` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteOutcome {
    pub job_id: String,
    /// `cancelled` (the job was queued or running) or `outputs_deleted` (it had ended).
    pub action: String,
    /// The job's state after the request.
    pub state: JobState,
    /// Keys deleted (empty for a cancellation).
    pub deleted: Vec<String>,
}

/// `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// One Server-Sent Event of `GET /v1/jobs/{id}/events` (keep-alive comments aside).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobEvent {
    /// `status`; or `gone`, once, if the job's status disappeared.
    pub event: String,
    /// Counts the `status` events of the stream: 1, 2, ...
    pub id: Option<String>,
    /// For `status`: the job as `GET /v1/jobs/{id}` returns it, as JSON.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMultipartRequest {
    /// The user's file name; only a sanitised last segment of it is kept in the key.
    #[schema(min_length = 1, max_length = 1024, example = "cat video.mov")]
    pub filename: String,
    /// The object's content type.
    #[schema(
        min_length = 3,
        max_length = 255,
        pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        example = "video/quicktime"
    )]
    pub content_type: String,
    /// The file's size in bytes: refused early when above the limit; the parts' total is
    /// checked again on completion.
    #[schema(minimum = 1)]
    pub size: u64,
}

/// A multipart upload: PUT its parts to the URLs `POST .../parts/{n}` signs, then complete it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MultipartUpload {
    /// The key the file will have; pass it as `?key=` to every call of this upload.
    pub key: String,
    pub upload_id: String,
    /// A part size that fits the file in the allowed number of parts.
    pub part_size: u64,
    /// Every part but the last is at least this large.
    pub min_part_size: u64,
    pub max_part_size: u64,
    pub max_parts: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignPartRequest {
    /// The part's exact length: it is signed, so the store refuses a body of any other length.
    #[schema(minimum = 1, maximum = 5368709120_u64)]
    pub size: u64,
}

/// Where and how to upload one part.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedPart {
    pub part_number: u32,
    /// Always `PUT`.
    pub method: String,
    pub url: String,
    /// Headers to send with the part exactly as given (besides `Content-Length`).
    pub headers: BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

/// One stored part.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadedPart {
    pub part_number: u32,
    pub size: u64,
    /// As the part's PUT answered it (without quotes).
    pub etag: String,
}

/// The parts stored so far: after a dropped connection, upload the missing ones.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartList {
    pub key: String,
    pub upload_id: String,
    pub parts: Vec<UploadedPart>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteMultipartRequest {
    /// Every part of the file, in ascending order of number.
    #[schema(min_items = 1, max_items = 10000)]
    pub parts: Vec<PartRef>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartRef {
    #[schema(minimum = 1, maximum = 10000)]
    pub part_number: u32,
    /// The part's ETag, quoted or not.
    #[schema(min_length = 1, max_length = 128)]
    pub etag: String,
}
