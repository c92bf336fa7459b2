//! What a dead letter says about itself: why it is there, where it was dead-lettered, and
//! whether its job's status records the end. The worker writes it as the message's
//! attributes; its dead-letter sweep and the `dead-letters` command read them back as this
//! type, so the attribute names and values have one owner.
//!
//! The attributes are a flat map of strings, on SQS and on the local queue alike; the field
//! names below are the attribute names, and a value of `-` (the stand-in both queues send for
//! an empty value, which SQS refuses) reads as absent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The most characters of an error text a dead letter carries.
pub const MAX_ERROR_CHARS: usize = 1000;

/// A dead letter's attributes. Every field is optional when read: a message SQS's redrive
/// policy moved on its own carries none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The machine-readable code of why (`not_json`, `transcode_failed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The human-readable why, at most [`MAX_ERROR_CHARS`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The worker that dead-lettered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The job it is about, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Whether that job's status records how it ended; set with `job_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_state: Option<JobRecord>,
}

/// Where a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Origin {
    /// The intake: the ready message could not be read or its job could not start.
    Ready,
    /// A run: its job failed.
    Worker,
    /// The reaper: a dead worker's job had no attempts left.
    Reaper,
    /// The reaper: a ledger entry could not be read.
    Processing,
    /// SQS's redrive policy moved it, saying nothing (named so by the dead-letter sweep).
    Redrive,
    /// A name this version does not know, kept as it is.
    Other(String),
}

impl Origin {
    pub fn as_str(&self) -> &str {
        match self {
            Origin::Ready => "ready",
            Origin::Worker => "worker",
            Origin::Reaper => "reaper",
            Origin::Processing => "processing",
            Origin::Redrive => "redrive",
            Origin::Other(name) => name,
        }
    }
}

impl From<String> for Origin {
    fn from(name: String) -> Self {
        match name.as_str() {
            "ready" => Origin::Ready,
            "worker" => Origin::Worker,
            "reaper" => Origin::Reaper,
            "processing" => Origin::Processing,
            "redrive" => Origin::Redrive,
            _ => Origin::Other(name),
        }
    }
}

impl From<Origin> for String {
    fn from(origin: Origin) -> Self {
        origin.as_str().to_string()
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a dead letter's job has its end recorded in its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum JobRecord {
    /// The status says how the job ended.
    Recorded,
    /// The store was unreachable: the dead-letter sweep records the end later.
    Unrecorded,
    /// A value this version does not know, kept as it is.
    Other(String),
}

impl JobRecord {
    pub fn as_str(&self) -> &str {
        match self {
            JobRecord::Recorded => "recorded",
            JobRecord::Unrecorded => "unrecorded",
            JobRecord::Other(value) => value,
        }
    }
}

impl From<String> for JobRecord {
    fn from(value: String) -> Self {
        match value.as_str() {
            "recorded" => JobRecord::Recorded,
            "unrecorded" => JobRecord::Unrecorded,
            _ => JobRecord::Other(value),
        }
    }
}

impl From<JobRecord> for String {
    fn from(record: JobRecord) -> Self {
        record.as_str().to_string()
    }
}

impl DeadLetter {
    /// A dead letter with its reason (the code, and the text, cut to [`MAX_ERROR_CHARS`]).
    pub fn new(code: impl Into<String>, error: impl AsRef<str>, origin: Origin) -> Self {
        DeadLetter {
            reason: Some(code.into()),
            error: Some(error.as_ref().chars().take(MAX_ERROR_CHARS).collect()),
            origin: Some(origin),
            ..DeadLetter::default()
        }
    }

    /// Names the job it is about, and whether its status records the end.
    pub fn about_job(self, job_id: impl Into<String>, recorded: bool) -> Self {
        let job_state = if recorded { JobRecord::Recorded } else { JobRecord::Unrecorded };
        DeadLetter { job_id: Some(job_id.into()), job_state: Some(job_state), ..self }
    }

    /// Says which worker wrote it.
    pub fn by(self, worker: impl Into<String>) -> Self {
        DeadLetter { worker: Some(worker.into()), ..self }
    }

    /// Reads a message's attributes; `-` is no value, and names it does not know are left out.
    pub fn from_attributes(attributes: &BTreeMap<String, String>) -> Self {
        let present: serde_json::Map<String, serde_json::Value> = attributes
            .iter()
            .filter(|(_, value)| value.as_str() != "-")
            .map(|(name, value)| (name.clone(), serde_json::Value::String(value.clone())))
            .collect();
        // Every field is an optional string: a map of strings always reads.
        serde_json::from_value(serde_json::Value::Object(present)).unwrap_or_default()
    }

    /// The message attributes that carry it.
    pub fn to_attributes(&self) -> BTreeMap<String, String> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map
                .into_iter()
                .filter_map(|(name, value)| match value {
                    serde_json::Value::String(value) => Some((name, value)),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    /// Whether it says everything the dead-letter sweep wants: a reason, and, when it names a
    /// job, that the job's status records the end. SQS's own redrives and letters written while
    /// the store was unreachable are not.
    pub fn is_complete(&self) -> bool {
        self.reason.is_some() && self.job_state.as_ref().is_none_or(|s| *s == JobRecord::Recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_attributes_are_the_ones_dead_letters_always_carried() {
        let letter = DeadLetter::new("transcode_failed", "ffmpeg said no", Origin::Worker)
            .about_job("job-1", true)
            .by("worker-a");
        let want = attributes(&[
            ("reason", "transcode_failed"),
            ("error", "ffmpeg said no"),
            ("origin", "worker"),
            ("worker", "worker-a"),
            ("job_id", "job-1"),
            ("job_state", "recorded"),
        ]);
        assert_eq!(letter.to_attributes(), want);
        assert_eq!(DeadLetter::from_attributes(&want), letter);
        let unrecorded = DeadLetter::new("delivery_exhausted", "x", Origin::Ready).about_job("j", false);
        assert_eq!(unrecorded.to_attributes().get("job_state").map(String::as_str), Some("unrecorded"));
        let poison = DeadLetter::new("not_json", "bad", Origin::Ready).by("w");
        assert_eq!(poison.to_attributes().len(), 4, "no job, no job attributes");
    }

    #[test]
    fn every_origin_reads_back_as_written() {
        for (name, origin) in [
            ("ready", Origin::Ready),
            ("worker", Origin::Worker),
            ("reaper", Origin::Reaper),
            ("processing", Origin::Processing),
            ("redrive", Origin::Redrive),
            ("elsewhere", Origin::Other("elsewhere".into())),
        ] {
            let read = DeadLetter::from_attributes(&attributes(&[("origin", name)]));
            assert_eq!(read.origin.as_ref(), Some(&origin), "{name}");
            assert_eq!(read.to_attributes().get("origin").map(String::as_str), Some(name), "{name}");
        }
    }

    #[test]
    fn what_a_letter_says_decides_whether_the_sweep_finishes_it() {
        let cases: [(&[(&str, &str)], bool); 6] = [
            (&[], false),
            (&[("reason", "not_json")], true),
            (&[("reason", "x"), ("job_id", "j"), ("job_state", "recorded")], true),
            (&[("reason", "x"), ("job_id", "j"), ("job_state", "unrecorded")], false),
            (&[("job_id", "j"), ("job_state", "recorded")], false),
            (&[("reason", "-"), ("error", "-")], false),
        ];
        for (pairs, complete) in cases {
            assert_eq!(DeadLetter::from_attributes(&attributes(pairs)).is_complete(), complete, "{pairs:?}");
        }
    }

    #[test]
    fn long_errors_are_cut_and_unknown_attributes_left_out() {
        let letter = DeadLetter::new("x", "é".repeat(MAX_ERROR_CHARS + 5), Origin::Worker);
        assert_eq!(letter.error.as_deref().map(|e| e.chars().count()), Some(MAX_ERROR_CHARS));
        let read = DeadLetter::from_attributes(&attributes(&[("reason", "x"), ("colour", "blue"), ("worker", "-")]));
        assert_eq!(read, DeadLetter { reason: Some("x".into()), ..DeadLetter::default() });
    }
}
