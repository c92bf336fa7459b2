//! Every error code the worker records or dead-letters, in one registry: each code knows its
//! wire name, whether a failure with it is retried, and the one sentence clients see for it.
//!
//! The codes are a contract: job statuses (`error.code`), notifications and the dead-letter
//! queue's `reason` attribute carry them, and docs/storage-layout.md ("Errors") lists them. A test
//! checks that table against [`ErrorCode::ALL`], so the two cannot drift apart.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The sentence for a code this worker does not know (a document written by a newer version).
pub const UNKNOWN_CODE_MESSAGE: &str = "the job failed; the operator's logs hold the cause";

/// Whether a failure with a code is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryability {
    /// Retried with back-off while attempts remain.
    Retried,
    /// Fails the job (or dead-letters the message) at once.
    Permanent,
    /// Depends on the failure: a segment that failed for a passing reason is retried, one
    /// that failed on bad input is not.
    Either,
}

/// Declares [`ErrorCode`] from one list of `Variant => "wire_name"`: the enum, [`ErrorCode::ALL`]
/// (in the list's order, the order of the docs' tables) and [`ErrorCode::as_str`], so a code is
/// named once.
macro_rules! error_codes {
    ($($variant:ident => $name:literal,)*) => {
        /// An error code. Serialised as its snake_case name (`source_not_found`), as it always was.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the docs' tables.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }
        }
    };
}

error_codes! {
    // What the source is or holds.
    SourceNotFound => "source_not_found",
    SourceChanged => "source_changed",
    SourceTooLarge => "source_too_large",
    DurationTooLong => "duration_too_long",
    DurationUnderstated => "duration_understated",
    ResolutionTooLarge => "resolution_too_large",
    MetadataTooLarge => "metadata_too_large",
    InvalidKey => "invalid_key",
    NotMedia => "not_media",
    UnsupportedInput => "unsupported_input",
    NoVideoStream => "no_video_stream",
    NoAudioStream => "no_audio_stream",
    InvalidOption => "invalid_option",
    QcFailed => "qc_failed",
    InvalidCaptions => "invalid_captions",
    PackageNotFound => "package_not_found",
    InvalidWatermark => "invalid_watermark",
    // The transcode and its outputs.
    TranscodeFailed => "transcode_failed",
    OutputConflict => "output_conflict",
    OutputTruncated => "output_truncated",
    // Imports from a URL.
    FetchRefused => "fetch_refused",
    FetchFailed => "fetch_failed",
    // Split jobs.
    SegmentFailed => "segment_failed",
    SplitFailed => "split_failed",
    // The worker and the services it uses.
    DeliveryExhausted => "delivery_exhausted",
    Timeout => "timeout",
    FfmpegKilled => "ffmpeg_killed",
    Resources => "resources",
    FfmpegUnavailable => "ffmpeg_unavailable",
    FfprobeUnavailable => "ffprobe_unavailable",
    Storage => "storage",
    Ledger => "ledger",
    Queue => "queue",
    Scratch => "scratch",
    ScratchFull => "scratch_full",
    WorkerLost => "worker_lost",
    Internal => "internal",
    // How an attempt ended without failing on its own.
    Cancelled => "cancelled",
    Superseded => "superseded",
    Interrupted => "interrupted",
    // Messages that are no job (dead-lettered at intake or by the reaper).
    NotJson => "not_json",
    UnknownMessage => "unknown_message",
    UnsupportedVersion => "unsupported_version",
    MalformedJob => "malformed_job",
    InvalidJob => "invalid_job",
    MalformedRecord => "malformed_record",
    MalformedLedgerEntry => "malformed_ledger_entry",
    JobMismatch => "job_mismatch",
    SegmentMismatch => "segment_mismatch",
}

use ErrorCode::*;

impl ErrorCode {
    /// Whether a failure with this code is tried again ([`Retryability::Either`]: the failure
    /// says).
    pub const fn retryability(self) -> Retryability {
        match self {
            SegmentFailed => Retryability::Either,
            SplitFailed | FetchFailed | OutputTruncated | Timeout | FfmpegKilled | Resources | FfmpegUnavailable
            | FfprobeUnavailable | Storage | Ledger | Queue | Scratch | ScratchFull | WorkerLost | Internal
            | Superseded | Interrupted => Retryability::Retried,
            _ => Retryability::Permanent,
        }
    }

    /// Whether a failure with this code is retried (a segment's failure: when it was passing).
    pub const fn is_retryable(self) -> bool {
        matches!(self.retryability(), Retryability::Retried | Retryability::Either)
    }

    /// The one sentence clients see for this code: never the cause itself, which may carry SDK
    /// texts (account ids, role ARNs), scratch paths and ffmpeg log lines.
    pub const fn public_message(self) -> &'static str {
        match self {
            SourceNotFound => "the source file does not exist",
            SourceChanged => {
                "the source was replaced or deleted after this job was made; the new write has its own job"
            }
            SourceTooLarge => "the source is larger than this deployment accepts",
            DurationTooLong => "the source lasts longer than this deployment accepts",
            DurationUnderstated => "the source plays longer than its header says it lasts",
            ResolutionTooLarge => "the source has more pixels per frame than this deployment accepts",
            MetadataTooLarge => "the source carries more metadata than this deployment reads",
            InvalidKey => "a key of the job is not valid",
            NotMedia => "the source is not a media file ffmpeg can read",
            UnsupportedInput => "the source is a playlist or reference file; upload the media itself",
            NoVideoStream => "the source has no video stream, which a requested preset needs",
            NoAudioStream => "the source has no audio stream, which a requested preset needs",
            InvalidOption => "an output option does not fit this source",
            QcFailed => "the source failed the job's quality checks",
            InvalidCaptions => {
                "a caption file of the job is missing, too large, or not SubRip, WebVTT or SCC, or a text track of the source cannot be converted"
            }
            PackageNotFound => {
                "the completed job's cmaf package is gone, or has no package.json to extend; nothing was packaged"
            }
            InvalidWatermark => {
                "the watermark image is missing, too large, or not one PNG, JPEG or WebP picture of at most 4096 pixels a side"
            }
            TranscodeFailed => "ffmpeg could not transcode the source",
            OutputConflict => "the job's output folder holds another job's manifest",
            FetchRefused => "the source URL was refused",
            FetchFailed => "the source URL could not be fetched; it will be tried again",
            SegmentFailed => "a segment of the split job could not be encoded",
            SplitFailed => "the source could not be cut into segments; the job is retried",
            DeliveryExhausted => "the job's message was delivered too often without the job starting",
            Timeout => "the job took longer than this deployment allows",
            FfmpegKilled => "ffmpeg was stopped from outside; the job is retried",
            Resources => "the worker ran out of memory; the job is retried",
            FfmpegUnavailable | FfprobeUnavailable => "the worker could not start ffmpeg; the job is retried",
            Storage => "storage did not answer; the job is retried",
            Ledger => "the job ledger did not answer; the job is retried",
            Scratch | ScratchFull => "the worker's scratch disk failed; the job is retried",
            WorkerLost => "the worker stopped responding",
            Cancelled => "the job was cancelled",
            Superseded => "a later attempt took over the job",
            Interrupted => "the worker shut down; the job is requeued",
            // Causes only the operator's logs can tell.
            OutputTruncated | Queue | Internal => UNKNOWN_CODE_MESSAGE,
            NotJson => "the message is not JSON",
            UnknownMessage => "the message is neither an S3 event nor a job message",
            UnsupportedVersion => "the job message has a version this worker does not read",
            MalformedJob => "the job message does not describe a job",
            InvalidJob => "the job is not valid",
            MalformedRecord => "an S3 record of the message is malformed",
            MalformedLedgerEntry => "an in-processing entry of the job ledger is unreadable",
            JobMismatch => "the message names an existing job but describes it differently",
            SegmentMismatch => "the segment message names a folder that is not its job's",
        }
    }

    /// The code of a wire name, if this worker knows it.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> String {
        code.as_str().to_string()
    }
}

impl AsRef<str> for ErrorCode {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl FromStr for ErrorCode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::parse(s).ok_or_else(|| format!("unknown error code `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error tables of docs/storage-layout.md: (codes of the row, retryable cell, sentence cell).
    fn documented() -> Vec<(Vec<String>, String, String)> {
        let doc = include_str!("../../docs/storage-layout.md");
        let start = doc.find("\n## Errors\n").expect("docs/storage-layout.md has an Errors section");
        let section = &doc[start + 1..];
        let section = &section[..section[1..].find("\n## ").map_or(section.len(), |end| end + 1)];
        section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
                assert_eq!(cells.len(), 4, "a row of code, retryable, meaning and sentence: {line}");
                let codes = cells[0].split('`').skip(1).step_by(2).map(str::to_string).collect();
                (codes, cells[1].to_string(), cells[3].to_string())
            })
            .collect()
    }

    #[test]
    fn the_docs_table_lists_every_code_as_the_registry_knows_it() {
        let rows = documented();
        let mut seen = Vec::new();
        for (codes, retryable, sentence) in &rows {
            for name in codes {
                let code = ErrorCode::parse(name)
                    .unwrap_or_else(|| panic!("docs/storage-layout.md lists unknown code `{name}`"));
                assert!(!seen.contains(&code), "`{name}` is listed twice");
                seen.push(code);
                let documented = match code.retryability() {
                    Retryability::Retried => retryable.starts_with("yes") && !retryable.contains("no"),
                    Retryability::Permanent => retryable == "no",
                    Retryability::Either => retryable.starts_with("yes") && retryable.contains("no"),
                };
                assert!(
                    documented,
                    "`{name}`: the docs say retryable `{retryable}`, the registry {:?}",
                    code.retryability()
                );
                assert_eq!(sentence, code.public_message(), "`{name}`'s public sentence");
            }
        }
        for code in ErrorCode::ALL {
            assert!(seen.contains(code), "`{code}` is missing from docs/storage-layout.md's error tables");
        }
    }

    #[test]
    fn codes_keep_their_wire_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), *code);
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(*code));
            assert!(!code.public_message().is_empty());
        }
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "every code once in ALL");
        assert_eq!(ErrorCode::parse("new_code"), None);
        assert!(ErrorCode::Storage.is_retryable() && ErrorCode::SegmentFailed.is_retryable());
        assert!(!ErrorCode::NotMedia.is_retryable() && !ErrorCode::DeliveryExhausted.is_retryable());
    }
}
