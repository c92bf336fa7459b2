//! How an attempt can fail, and what each failure means for the job.

use crate::domain::probe::ProbeError;
use crate::domain::status::ErrorInfo;
use crate::media::ffmpeg::FfmpegError;
use crate::media::probe::ProbeFailure;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Cannot succeed however often it is tried: failed and dead-lettered at once.
    #[error("{code}: {message}")]
    Permanent { code: &'static str, message: String },
    /// May succeed later: retried with back-off while attempts remain.
    #[error("{code}: {message}")]
    Retryable { code: &'static str, message: String },
    /// A user cancelled the job.
    #[error("the job was cancelled")]
    Cancelled,
    /// The reaper gave the job to a later attempt (this worker was presumed dead).
    #[error("a later attempt took over the job")]
    Superseded,
    /// The worker is shutting down; the job is requeued without counting as a failure.
    #[error("the worker is shutting down")]
    Interrupted,
}

impl JobError {
    pub fn permanent(code: &'static str, message: impl Into<String>) -> Self {
        JobError::Permanent { code, message: message.into() }
    }

    pub fn retryable(code: &'static str, message: impl Into<String>) -> Self {
        JobError::Retryable { code, message: message.into() }
    }

    /// The error as recorded in the job status.
    pub fn info(&self) -> ErrorInfo {
        match self {
            JobError::Permanent { code, message } => {
                ErrorInfo { code: code.to_string(), message: message.clone(), retryable: false }
            }
            JobError::Retryable { code, message } => {
                ErrorInfo { code: code.to_string(), message: message.clone(), retryable: true }
            }
            JobError::Cancelled => ErrorInfo { code: "cancelled".into(), message: self.to_string(), retryable: false },
            JobError::Superseded => ErrorInfo { code: "superseded".into(), message: self.to_string(), retryable: true },
            JobError::Interrupted => {
                ErrorInfo { code: "interrupted".into(), message: self.to_string(), retryable: true }
            }
        }
    }

    /// Failure of reading the job's source.
    pub fn from_source(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(key) => {
                JobError::permanent("source_not_found", format!("the source `{key}` does not exist"))
            }
            other => JobError::from(other),
        }
    }
}

impl From<StorageError> for JobError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::InvalidKey { .. } => JobError::permanent("invalid_key", err.to_string()),
            StorageError::NotFound(_) => JobError::retryable("storage", err.to_string()),
            StorageError::Other(e) => JobError::retryable("storage", format!("{e:#}")),
        }
    }
}

impl From<ProbeFailure> for JobError {
    fn from(err: ProbeFailure) -> Self {
        match err {
            ProbeFailure::Spawn(_) => JobError::retryable("ffprobe_unavailable", err.to_string()),
            ProbeFailure::Timeout(_) => JobError::retryable("timeout", err.to_string()),
            ProbeFailure::Unreadable(_)
            | ProbeFailure::Invalid(ProbeError::NoStreams | ProbeError::BadJson(_) | ProbeError::StillImage(_)) => {
                JobError::permanent("not_media", err.to_string())
            }
            ProbeFailure::Invalid(ProbeError::ReferenceFormat(_)) => {
                JobError::permanent("unsupported_input", err.to_string())
            }
        }
    }
}

impl From<FfmpegError> for JobError {
    fn from(err: FfmpegError) -> Self {
        match err {
            FfmpegError::Spawn(_) => JobError::retryable("ffmpeg_unavailable", err.to_string()),
            FfmpegError::Timeout(_) => JobError::retryable("timeout", err.to_string()),
            FfmpegError::Signal(_) => JobError::retryable("ffmpeg_killed", err.to_string()),
            FfmpegError::Failed { .. } => JobError::permanent("transcode_failed", err.to_string()),
            // The caller knows why it stopped ffmpeg and replaces this.
            FfmpegError::Cancelled => JobError::Interrupted,
        }
    }
}
