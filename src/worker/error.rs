//! How an attempt can fail, and what each failure means for the job.

use crate::domain::error_code::{ErrorCode, Retryability};
use crate::domain::probe::ProbeError;
use crate::domain::status::ErrorInfo;
use crate::jobs::AttemptError;
use crate::media::ffmpeg::FfmpegError;
use crate::media::probe::ProbeFailure;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Cannot succeed however often it is tried: failed and dead-lettered at once.
    #[error("{code}: {message}")]
    Permanent {
        code: ErrorCode,
        message: String,
        /// A fact clients may see after the code's public sentence (which segment failed).
        detail: Option<String>,
    },
    /// May succeed later: retried with back-off while attempts remain.
    #[error("{code}: {message}")]
    Retryable {
        code: ErrorCode,
        message: String,
        /// As for `Permanent`.
        detail: Option<String>,
    },
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

/// The constructors say whether a failure is retried; in debug builds (every test) they check
/// that against the code's documented [`Retryability`], so the registry and the call sites
/// cannot drift apart.
impl JobError {
    pub fn permanent(code: ErrorCode, message: impl Into<String>) -> Self {
        debug_assert!(code.retryability() != Retryability::Retried, "{code} is retried, not permanent");
        JobError::Permanent { code, message: message.into(), detail: None }
    }

    /// A permanent failure whose public sentence is followed by `detail` (no internals in it).
    pub fn permanent_naming(code: ErrorCode, detail: impl Into<String>, message: impl Into<String>) -> Self {
        debug_assert!(code.retryability() != Retryability::Retried, "{code} is retried, not permanent");
        JobError::Permanent { code, message: message.into(), detail: Some(detail.into()) }
    }

    pub fn retryable(code: ErrorCode, message: impl Into<String>) -> Self {
        debug_assert!(code.retryability() != Retryability::Permanent, "{code} is permanent, not retried");
        JobError::Retryable { code, message: message.into(), detail: None }
    }

    /// A retryable failure whose public sentence is followed by `detail`, as for
    /// [`JobError::permanent_naming`].
    pub fn retryable_naming(code: ErrorCode, detail: impl Into<String>, message: impl Into<String>) -> Self {
        debug_assert!(code.retryability() != Retryability::Permanent, "{code} is permanent, not retried");
        JobError::Retryable { code, message: message.into(), detail: Some(detail.into()) }
    }

    /// The error as recorded in the job status: its code's public sentence. The cause (this
    /// error's `Display`) goes to the worker's log only.
    pub fn info(&self) -> ErrorInfo {
        match self {
            JobError::Permanent { code, detail, .. } | JobError::Retryable { code, detail, .. } => {
                let mut info = ErrorInfo::public(code, matches!(self, JobError::Retryable { .. }));
                if let Some(detail) = detail {
                    info.message = format!("{}: {detail}", info.message);
                }
                info
            }
            JobError::Cancelled => ErrorInfo::public(ErrorCode::Cancelled, false),
            JobError::Superseded => ErrorInfo::public(ErrorCode::Superseded, true),
            JobError::Interrupted => ErrorInfo::public(ErrorCode::Interrupted, true),
        }
    }

    /// Failure of reading the job's source.
    pub fn from_source(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(key) => {
                JobError::permanent(ErrorCode::SourceNotFound, format!("the source `{key}` does not exist"))
            }
            other => JobError::from(other),
        }
    }

    /// A failure of the scratch disk: full (retryable elsewhere or later), or anything else.
    pub fn scratch(context: &str, err: &std::io::Error) -> Self {
        if is_disk_full(err) {
            JobError::retryable(ErrorCode::ScratchFull, format!("the scratch disk is full ({context})"))
        } else {
            JobError::retryable(ErrorCode::Scratch, format!("{context}: {err}"))
        }
    }
}

fn is_disk_full(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::StorageFull || err.raw_os_error() == Some(28)
}

/// Whether ffmpeg's log says it ran out of something the machine, not the input, lacks.
fn resource_failure(log: &str) -> Option<(ErrorCode, &'static str)> {
    if log.contains("No space left on device") {
        Some((ErrorCode::ScratchFull, "the scratch disk filled up during the transcode"))
    } else if log.contains("Cannot allocate memory") || log.contains("Out of memory") {
        Some((ErrorCode::Resources, "ffmpeg ran out of memory"))
    } else {
        None
    }
}

impl From<StorageError> for JobError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::InvalidKey { .. } => JobError::permanent(ErrorCode::InvalidKey, err.to_string()),
            StorageError::NotFound(_) => JobError::retryable(ErrorCode::Storage, err.to_string()),
            StorageError::Changed(key) => JobError::permanent(
                ErrorCode::SourceChanged,
                format!("`{key}` was replaced or deleted after this job was made; the new write has its own job"),
            ),
            StorageError::Other(e) => {
                // A download filling the scratch disk surfaces as a storage error.
                if e.chain().filter_map(|c| c.downcast_ref::<std::io::Error>()).any(is_disk_full) {
                    JobError::retryable(ErrorCode::ScratchFull, format!("the scratch disk is full: {e:#}"))
                } else {
                    JobError::retryable(ErrorCode::Storage, format!("{e:#}"))
                }
            }
        }
    }
}

impl From<crate::ledger::LedgerError> for JobError {
    fn from(err: crate::ledger::LedgerError) -> Self {
        JobError::retryable(ErrorCode::Ledger, err.to_string())
    }
}

impl From<AttemptError> for JobError {
    /// A run that lost its job stops: cancelled by a user, or superseded by a later attempt.
    fn from(err: AttemptError) -> Self {
        match err {
            AttemptError::Lost(_) if err.is_cancelled() => JobError::Cancelled,
            AttemptError::Lost(_) => JobError::Superseded,
            AttemptError::Ledger(e) => JobError::from(e),
        }
    }
}

impl From<ProbeFailure> for JobError {
    fn from(err: ProbeFailure) -> Self {
        match err {
            ProbeFailure::Spawn(_) => JobError::retryable(ErrorCode::FfprobeUnavailable, err.to_string()),
            ProbeFailure::Timeout(_) => JobError::retryable(ErrorCode::Timeout, err.to_string()),
            ProbeFailure::Unreadable(_)
            | ProbeFailure::Invalid(ProbeError::NoStreams | ProbeError::BadJson(_) | ProbeError::StillImage(_)) => {
                JobError::permanent(ErrorCode::NotMedia, err.to_string())
            }
            ProbeFailure::Invalid(ProbeError::ReferenceFormat(_)) => {
                JobError::permanent(ErrorCode::UnsupportedInput, err.to_string())
            }
            ProbeFailure::Flooded(_) => JobError::permanent(ErrorCode::MetadataTooLarge, err.to_string()),
        }
    }
}

impl From<FfmpegError> for JobError {
    /// Input problems are permanent; a full disk, exhausted memory or a kill from outside are
    /// not the input's fault and are retried (on this worker or another).
    fn from(err: FfmpegError) -> Self {
        match err {
            FfmpegError::Spawn(_) => JobError::retryable(ErrorCode::FfmpegUnavailable, err.to_string()),
            FfmpegError::Timeout(_) => JobError::retryable(ErrorCode::Timeout, err.to_string()),
            FfmpegError::Signal(_) => JobError::retryable(ErrorCode::FfmpegKilled, err.to_string()),
            // The length bound is the deployment's limit unless the caller knows better.
            FfmpegError::Overran(_) => JobError::permanent(ErrorCode::DurationTooLong, err.to_string()),
            FfmpegError::ScratchFull => JobError::retryable(ErrorCode::ScratchFull, err.to_string()),
            FfmpegError::Failed { ref log, .. } => match resource_failure(log) {
                Some((code, why)) => JobError::retryable(code, format!("{why}: {err}")),
                None => JobError::permanent(ErrorCode::TranscodeFailed, err.to_string()),
            },
            // The caller knows why it stopped ffmpeg and replaces this.
            FfmpegError::Cancelled => JobError::Interrupted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(err: JobError) -> (String, bool) {
        let info = err.info();
        (info.code, info.retryable)
    }

    #[test]
    fn resource_exhaustion_is_retryable_and_bad_input_is_not() {
        let failed = |log: &str| FfmpegError::Failed { status: 1, log: log.into() };
        let cases = [
            (failed("[out#0/mp4] Error writing trailer: No space left on device"), ("scratch_full", true)),
            (failed("av_malloc: Cannot allocate memory"), ("resources", true)),
            (failed("Invalid data found when processing input"), ("transcode_failed", false)),
            (FfmpegError::Signal(9), ("ffmpeg_killed", true)),
        ];
        for (err, (want, retryable)) in cases {
            assert_eq!(code(err.into()), (want.to_string(), retryable));
        }
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert_eq!(code(JobError::scratch("write", &full)), ("scratch_full".into(), true));
        let download = StorageError::Other(anyhow::Error::new(std::io::Error::from_raw_os_error(28)).context("copy"));
        assert_eq!(code(JobError::from_source(download)), ("scratch_full".into(), true));
        assert_eq!(code(JobError::from_source(StorageError::Changed("k".into()))), ("source_changed".into(), false));
    }
}
