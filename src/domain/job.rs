//! Jobs and the messages that carry them between queues.
//!
//! Three message shapes exist, all versioned JSON:
//! - on the ready queue, besides raw S3 events: [`JobMessage`] (published by the API, by
//!   `media-worker submit`, and by the worker itself for retries and recoveries);
//! - on the in-processing queue: [`LedgerEntry`], one per started attempt;
//! - on the dead-letter queue: the original body, with the reason in message attributes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::delivery::{CaptionTrack, Packaging, VideoCodec, validate_captions, validate_codecs};
use crate::domain::keys::{KeyError, validate_job_id, validate_key, validate_prefix};
use crate::domain::loudness::LoudnessSettings;
use crate::domain::per_title::QualityTarget;
use crate::domain::preset::Preset;
use crate::domain::qc::QcSettings;
use crate::domain::split::request::SplitRequest;
use crate::domain::watermark::WatermarkSettings;

pub mod repackage;
pub use repackage::{Repackage, RepackageError, repackaged_output};

/// Version written into every message; readers refuse versions they do not know.
pub const MESSAGE_VERSION: u32 = 1;

/// What to do: one source, one or more outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub job_id: String,
    pub source_key: String,
    pub outputs: Vec<OutputRequest>,
    /// The job's own folder (ending in `/`, never shared with another job): each attempt
    /// writes its files under `attempt-<n>/` in it, and the manifest goes next to those.
    pub output_dir: String,
    /// The exact write of the source this job transcodes: the download is pinned to it, and a
    /// source replaced under the job ends the job with `source_changed`.
    #[serde(default, skip_serializing_if = "SourcePin::is_empty")]
    pub source: SourcePin,
    /// A webhook endpoint told about this job's changes, besides the deployment's own
    /// endpoints (checked at submit time and again at every connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyTarget>,
    /// Whether and how a long source is encoded by many workers at once (default: the
    /// deployment's `MEDIA_SPLIT_MIN_DURATION` and `MEDIA_SEGMENT_DURATION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitRequest>,
    /// Where the source comes from when it was not uploaded: the worker fetches it into
    /// `source_key` (an [`IMPORTS_FOLDER`](crate::domain::keys::IMPORTS_FOLDER) key) before
    /// anything else, unless an earlier attempt already stored it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportSource>,
    /// Checks of the source before anything is encoded (`docs/qc.md`): a broken `fail` rule
    /// fails the job, a broken `warn` rule is reported in the manifest and the completed event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qc: Option<Box<QcSettings>>,
    /// Loudness normalisation (or only its measurement) of every output's audio, measured once
    /// over the whole source (`docs/api.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loudness: Option<LoudnessSettings>,
    /// A job that only packages: another completed job's `cmaf` renditions with more caption
    /// tracks, nothing encoded ([`Repackage`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repackage: Option<Box<Repackage>>,
    /// An image drawn over every video output, from the caller's uploads (`docs/api.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Box<WatermarkSettings>>,
}

/// A source to fetch from a URL (`input.url` in `POST /v1/jobs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSource {
    /// Checked when the job is submitted, and again (with every address and redirect) when a
    /// worker fetches it.
    pub url: String,
}

/// Longest URL a job may name (as a source or a webhook).
pub const MAX_URL_LENGTH: usize = 2048;

/// Where a job's notifications go (`notify` in `POST /v1/jobs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// An `https` URL; requests are signed with the deployment's webhook secret.
    #[schema(min_length = 9, max_length = 2048, example = "https://example.com/hooks/media")]
    pub url: String,
}

/// Which write of a source object a job is for (all optional: a job for "whatever is stored"
/// has none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePin {
    /// The ETag (without quotes) the object had when the job was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The S3 version id, on versioned buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Bytes, when known before the download (S3 events carry it): lets a worker decline a job
    /// its scratch disk cannot hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl SourcePin {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.version_id.is_none() && self.size.is_none()
    }
}

/// One requested output: a preset and the options it accepts (see
/// [`Preset::accepted_options`]). Anything else is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRequest {
    pub preset: Preset,
    /// Seconds into the source where the output starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<f64>,
    /// Seconds of source the output covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// Cap on the output's short side (height for landscape, width for portrait), in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
    /// Seconds into the source of a thumbnail (default: 10 % of the duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
    /// The HLS ladder made per title to reach this VMAF instead of fixed CRFs
    /// (`docs/per-title.md`); `hls` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityTarget>,
    /// The video codecs of a `cmaf` ladder, each a family of rungs (default: H.264 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codecs: Option<Vec<VideoCodec>>,
    /// How a `cmaf` ladder's files are laid out (default: segments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packaging: Option<Packaging>,
    /// Caption files among the caller's uploads, as WebVTT renditions of a `cmaf` ladder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captions: Option<Vec<CaptionTrack>>,
    /// Whether a `cmaf` ladder also carries the source's own text tracks (default: yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded_captions: Option<bool>,
}

/// The longest source position an option may name: a day.
const MAX_SECONDS: f64 = 86_400.0;

pub use crate::domain::range::OptionRange;

/// The range of `option` (`start`, `duration`, `max_height`, `time`) for `preset`.
pub fn option_range(preset: Preset, option: &str) -> Option<OptionRange> {
    let seconds = |min, max| Some(OptionRange { min, max, integer: false });
    match option {
        "start" | "time" => seconds(0.0, MAX_SECONDS),
        "duration" if preset == Preset::Gif => seconds(1.0, 6.0),
        "duration" => seconds(0.1, MAX_SECONDS),
        "max_height" => Some(OptionRange { min: 144.0, max: 4320.0, integer: true }),
        _ => None,
    }
}

impl OutputRequest {
    /// An output with the preset's defaults.
    pub fn new(preset: Preset) -> Self {
        Self {
            preset,
            start: None,
            duration: None,
            max_height: None,
            time: None,
            quality: None,
            codecs: None,
            packaging: None,
            captions: None,
            embedded_captions: None,
        }
    }

    /// Checks that every option is one the preset accepts, and in range ([`option_range`]).
    pub fn validate(&self) -> Result<(), String> {
        let accepted = self.preset.accepted_options();
        let preset = self.preset;
        let check = |name: &str, value: Option<f64>, allowed: bool| -> Result<(), String> {
            let Some(v) = value else { return Ok(()) };
            if !allowed {
                return Err(format!("preset `{preset}` does not take the option `{name}`"));
            }
            match option_range(preset, name) {
                Some(OptionRange { min, max, integer: false }) if !v.is_finite() || v < min || v > max => {
                    Err(format!("`{name}` for `{preset}` must be between {min} and {max} seconds, got {v}"))
                }
                Some(OptionRange { min, max, integer: true }) if v < min || v > max => {
                    Err(format!("`{name}` must be between {min} and {max}, got {v}"))
                }
                _ => Ok(()),
            }
        };
        check("start", self.start, accepted.start)?;
        check("duration", self.duration, accepted.duration)?;
        check("time", self.time, accepted.time)?;
        check("max_height", self.max_height.map(f64::from), accepted.max_height)?;
        let refuse = |name: &str| Err(format!("preset `{preset}` does not take the option `{name}`"));
        if !accepted.packaging && self.packaging.is_some() {
            return refuse("packaging");
        }
        match &self.codecs {
            Some(_) if !accepted.codecs => return refuse("codecs"),
            Some(codecs) => validate_codecs(codecs)?,
            None => {}
        }
        if preset != Preset::Cmaf && self.embedded_captions.is_some() {
            return refuse("embedded_captions");
        }
        match &self.captions {
            Some(_) if preset != Preset::Cmaf => return refuse("captions"),
            Some(tracks) => {
                validate_captions(tracks)?;
                for track in tracks {
                    validate_key(&track.key).map_err(|e| format!("caption key: {e}"))?;
                }
            }
            None => {}
        }
        match &self.quality {
            Some(_) if !matches!(preset, Preset::Hls | Preset::Cmaf) => refuse("quality"),
            Some(_) if self.codecs.as_ref().is_some_and(|c| !c.contains(&VideoCodec::H264)) => {
                Err("`quality` sets the CRFs of a cmaf ladder's h264 rungs: `codecs` must include h264".into())
            }
            Some(target) => target.validate().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

/// Why a job spec cannot be run.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("invalid job id: {0}")]
    JobId(KeyError),
    #[error("invalid source key: {0}")]
    SourceKey(KeyError),
    #[error("invalid output folder: {0}")]
    OutputDir(KeyError),
    #[error("the output folder must end with '/' and lie outside the job status prefix")]
    OutputDirShape,
    #[error("a job needs 1 to 16 outputs with distinct presets")]
    Outputs,
    #[error("invalid output options: {0}")]
    Options(String),
    #[error("an imported source needs a URL of at most {MAX_URL_LENGTH} bytes and a key in an imports folder")]
    Import,
}

impl JobSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_job_id(&self.job_id).map_err(SpecError::JobId)?;
        validate_key(&self.source_key).map_err(SpecError::SourceKey)?;
        if !self.output_dir.ends_with('/') || self.output_dir.starts_with(crate::domain::keys::JOBS_PREFIX) {
            return Err(SpecError::OutputDirShape);
        }
        validate_prefix(&self.output_dir).map_err(SpecError::OutputDir)?;
        let mut presets: Vec<Preset> = self.outputs.iter().map(|o| o.preset).collect();
        presets.sort_by_key(|p| p.name());
        presets.dedup();
        if self.outputs.is_empty() || self.outputs.len() > 16 || presets.len() != self.outputs.len() {
            return Err(SpecError::Outputs);
        }
        for output in &self.outputs {
            output.validate().map_err(SpecError::Options)?;
        }
        if let Some(split) = &self.split {
            split.validate().map_err(SpecError::Options)?;
        }
        if let Some(qc) = &self.qc {
            qc.validate().map_err(|e| SpecError::Options(e.to_string()))?;
        }
        if let Some(loudness) = &self.loudness {
            loudness.validate().map_err(SpecError::Options)?;
        }
        if let Some(watermark) = &self.watermark {
            watermark.validate().map_err(SpecError::Options)?;
            validate_key(&watermark.key).map_err(|e| SpecError::Options(format!("watermark key: {e}")))?;
        }
        if let Some(import) = &self.import {
            // Some folder of the key is an imports folder (where it lies under the upload prefix
            // is the layout's business): the file's own upload event must make no job.
            let in_imports = self
                .source_key
                .match_indices('/')
                .any(|(at, _)| crate::domain::keys::starts_with_import_folder(&self.source_key[at + 1..]));
            if import.url.is_empty() || import.url.len() > MAX_URL_LENGTH || !in_imports {
                return Err(SpecError::Import);
            }
        }
        if let Some(repackage) = &self.repackage {
            repackage.validate(self).map_err(SpecError::Options)?;
        }
        Ok(())
    }

    pub fn presets(&self) -> impl Iterator<Item = Preset> + '_ {
        self.outputs.iter().map(|o| o.preset)
    }
}

/// A job on the ready queue, at a given attempt (1 for the first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    pub version: u32,
    pub job: JobSpec,
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

impl JobMessage {
    pub fn new(job: JobSpec, attempt: u32) -> Self {
        Self { version: MESSAGE_VERSION, job, attempt }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain owned data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The in-processing ledger's record of one started attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    pub version: u32,
    pub job: JobSpec,
    pub attempt: u32,
    /// The run that sent this entry: it owns the job only while the status names the same run.
    #[serde(default)]
    pub run: Option<String>,
    pub worker: String,
    pub started_at: DateTime<Utc>,
}

impl LedgerEntry {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A deterministic job id for one write of an S3 object (its version id or event sequencer), so
/// duplicate deliveries of one event map to one job, while every new write of the key, even of
/// the same bytes, is a new job.
pub fn job_id_for_object(bucket: &str, key: &str, write_tag: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [bucket, key, write_tag] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    format!("{EVENT_JOB_PREFIX}{}", hex::encode(&digest[..12]))
}

/// Job ids made from storage events start with this; ids of submitted jobs never do.
const EVENT_JOB_PREFIX: &str = "s3-";

/// A fresh random id for jobs published on request (CLI, API).
pub fn new_job_id() -> String {
    format!("job-{}", uuid::Uuid::new_v4().simple())
}

/// The id of the job a redrive makes of the failed job `failed_job_id`: derived, not drawn, so
/// redriving the same failed job again (a rerun after an interrupted redrive, a second dead
/// letter of the same job, a copy the dead-letter sweep made) finds the job already made and
/// makes no second one. A redriven job that fails in turn is redriven under an id of its own.
pub fn redriven_job_id(failed_job_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"redrive\0");
    hasher.update(failed_job_id.as_bytes());
    format!("job-{}", hex::encode(&hasher.finalize()[..16]))
}

/// Exponential back-off before attempt `next_attempt`: base, 2 x base, 4 x base, ... capped at
/// SQS's longest delivery delay (15 minutes).
pub fn retry_delay(base: Duration, next_attempt: u32) -> Duration {
    let exponent = next_attempt.saturating_sub(2).min(16);
    base.saturating_mul(1u32 << exponent).min(Duration::from_secs(900))
}

/// A one-output job (`job-1`, `uploads/a.mp4` to `mp4-h264`) for tests across the crate.
#[cfg(test)]
pub(crate) fn sample_job() -> JobSpec {
    JobSpec {
        job_id: "job-1".into(),
        source_key: "uploads/a.mp4".into(),
        outputs: vec![OutputRequest::new(Preset::Mp4H264)],
        output_dir: "outputs/a.mp4/job-1/".into(),
        source: SourcePin::default(),
        notify: None,
        split: None,
        import: None,
        qc: None,
        loudness: None,
        repackage: None,
        watermark: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        sample_job()
    }

    #[test]
    fn job_ids_are_deterministic_per_object_version() {
        let a = job_id_for_object("bucket", "uploads/a.mov", "etag1");
        assert_eq!(a, job_id_for_object("bucket", "uploads/a.mov", "etag1"));
        assert_ne!(a, job_id_for_object("bucket", "uploads/a.mov", "etag2"));
        assert_ne!(a, job_id_for_object("bucket2", "uploads/a.mov", "etag1"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(job_id_for_object("ab", "c", "x"), job_id_for_object("a", "bc", "x"));
        assert!(validate_job_id(&a).is_ok());
        assert!(validate_job_id(&new_job_id()).is_ok());
    }

    #[test]
    fn a_redrive_names_its_job_after_the_failed_one() {
        let id = redriven_job_id("s3-1b43ae7c81fbc2e11d6017c5");
        assert_eq!(id, redriven_job_id("s3-1b43ae7c81fbc2e11d6017c5"));
        assert_ne!(id, redriven_job_id("s3-1b43ae7c81fbc2e11d6017c6"));
        assert_ne!(redriven_job_id(&id), id, "a redriven job's own redrive is another job");
        assert!(crate::domain::keys::validate_job_id(&id).is_ok(), "{id}");
    }

    #[test]
    fn retry_delays_grow_and_cap() {
        let base = Duration::from_secs(10);
        assert_eq!(retry_delay(base, 2), Duration::from_secs(10));
        assert_eq!(retry_delay(base, 3), Duration::from_secs(20));
        assert_eq!(retry_delay(base, 4), Duration::from_secs(40));
        assert_eq!(retry_delay(base, 40), Duration::from_secs(900));
    }

    #[test]
    fn specs_are_validated() {
        assert!(spec().validate().is_ok());
        let mut bad = spec();
        bad.output_dir = "jobs/".into();
        assert_eq!(bad.validate(), Err(SpecError::OutputDirShape));
        let mut bad = spec();
        bad.outputs.push(OutputRequest::new(Preset::Mp4H264));
        assert_eq!(bad.validate(), Err(SpecError::Outputs));
        let mut bad = spec();
        bad.source_key = "uploads/../../etc/passwd".into();
        assert!(matches!(bad.validate(), Err(SpecError::SourceKey(_))));
    }

    #[test]
    fn output_options_are_typed_and_range_checked() {
        let ok = |json: &str| {
            serde_json::from_str::<OutputRequest>(json).map_err(|e| e.to_string()).and_then(|o| o.validate())
        };
        assert!(ok(r#"{"preset":"gif","start":2,"duration":4}"#).is_ok());
        assert!(ok(r#"{"preset":"thumbnail","time":12.5}"#).is_ok());
        assert!(ok(r#"{"preset":"mp4-h264-720","max_height":360,"start":1,"duration":5}"#).is_ok());
        assert!(ok(r#"{"preset":"cmaf","embedded_captions":false}"#).is_ok());
        let refused = [
            r#"{"preset":"hls","embedded_captions":true}"#,
            r#"{"preset":"cmaf","embedded_captions":"yes"}"#,
            r#"{"preset":"gif","duration":10}"#,
            r#"{"preset":"gif","duration":0.5}"#,
            r#"{"preset":"thumbnail","start":1}"#,
            r#"{"preset":"mp4-h264","max_height":100000}"#,
            r#"{"preset":"mp4-h264","start":-1}"#,
            r#"{"preset":"storyboard","time":1}"#,
            r#"{"preset":"mp4-h264","args":"-f lavfi"}"#,
            r#"{"preset":"mp4-h264","start":"1; rm"}"#,
            r#"{"preset":"remux-mp4","max_height":720}"#,
        ];
        for json in refused {
            assert!(ok(json).is_err(), "{json}");
        }
        let mut job = spec();
        job.outputs = vec![OutputRequest { duration: Some(99.0), ..OutputRequest::new(Preset::Gif) }];
        assert!(matches!(job.validate(), Err(SpecError::Options(_))));
    }

    #[test]
    fn job_messages_round_trip_and_default_the_attempt() {
        let msg = JobMessage::new(spec(), 3);
        let back: JobMessage = serde_json::from_str(&msg.to_json()).unwrap();
        assert_eq!(back, msg);
        let json = r#"{"version":1,"job":{"job_id":"j","source_key":"uploads/a","outputs":[{"preset":"mp4-h264"}],"output_dir":"outputs/a/"}}"#;
        assert_eq!(serde_json::from_str::<JobMessage>(json).unwrap().attempt, 1);
    }
}
