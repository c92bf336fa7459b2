//! What a ready-queue message carries, as a type: an S3 event (uploads to make jobs of), a job
//! to start, or a split job's segment to encode. The intake and the dead-letter sweep match on
//! it; this module alone tells the kinds apart, by the body's shape:
//! - S3 event notifications (`{"Records": [...]}`), also wrapped in an SNS notification;
//!   EventBridge "Object Created" events; `s3:TestEvent`, which S3 sends when a notification is
//!   configured (ignored). Their records become jobs in [`crate::domain::event`];
//! - [`JobMessage`]s and [`SegmentMessage`]s, versioned JSON the worker and the API publish.
//!
//! Everything else is poison: it can never succeed, so it is dead-lettered with the reason.
//! Pure, so the table tests below pin every kind.

use serde_json::Value;

use crate::domain::error_code::ErrorCode;
use crate::domain::event::{EventContext, InvalidRecord, Parsed, parse_eventbridge, parse_records};
use crate::domain::job::{JobMessage, MESSAGE_VERSION, SpecError};
use crate::domain::keys::{validate_job_id, validate_prefix};
use crate::domain::split::{SegmentMessage, SegmentTask};

/// One ready-queue message, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadyMessage {
    /// An S3 event (direct, through SNS, from EventBridge, or S3's test event): one job per
    /// upload it names, and the records it dropped on purpose or could not use.
    S3Event {
        jobs: Vec<JobMessage>,
        /// Why records were dropped on purpose (test events, own outputs, ...), for the log.
        ignored: Vec<String>,
        /// Records that can never become a job: dead-lettered one by one.
        invalid: Vec<InvalidRecord>,
    },
    /// One attempt of one job (a submission, a retry, a recovery, a requeue).
    Job(Box<JobMessage>),
    /// One segment of a split job, offered by its coordinator.
    Segment(SegmentTask),
}

/// A whole message that cannot be understood.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PoisonError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is JSON but neither an S3 event nor a job message")]
    UnknownShape,
    #[error("unsupported job message version {0} (this worker reads version {MESSAGE_VERSION})")]
    UnsupportedVersion(u32),
    #[error("malformed job message: {0}")]
    MalformedJob(String),
    #[error("invalid job: {0}")]
    InvalidJob(SpecError),
}

impl PoisonError {
    /// The code for dead-letter attributes and logs.
    pub fn code(&self) -> ErrorCode {
        match self {
            PoisonError::NotJson(_) => ErrorCode::NotJson,
            PoisonError::UnknownShape => ErrorCode::UnknownMessage,
            PoisonError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            PoisonError::MalformedJob(_) => ErrorCode::MalformedJob,
            PoisonError::InvalidJob(_) => ErrorCode::InvalidJob,
        }
    }
}

impl ReadyMessage {
    /// Reads a body; poison (a body that can never succeed) is the error, with its reason.
    pub fn parse(body: &str, ctx: &EventContext<'_>) -> Result<ReadyMessage, PoisonError> {
        let value: Value = serde_json::from_str(body).map_err(|e| PoisonError::NotJson(e.to_string()))?;
        parse_value(value, ctx, 0)
    }

    /// The jobs it names: those of an S3 event, or the one of a job message.
    pub fn jobs(&self) -> &[JobMessage] {
        match self {
            ReadyMessage::S3Event { jobs, .. } => jobs,
            ReadyMessage::Job(job) => std::slice::from_ref(&**job),
            ReadyMessage::Segment(_) => &[],
        }
    }

    /// The jobs it names, owned.
    pub fn into_jobs(self) -> Vec<JobMessage> {
        match self {
            ReadyMessage::S3Event { jobs, .. } => jobs,
            ReadyMessage::Job(job) => vec![*job],
            ReadyMessage::Segment(_) => Vec::new(),
        }
    }
}

impl From<Parsed> for ReadyMessage {
    fn from(Parsed { jobs, ignored, invalid }: Parsed) -> ReadyMessage {
        ReadyMessage::S3Event { jobs, ignored, invalid }
    }
}

fn parse_value(value: Value, ctx: &EventContext<'_>, depth: u8) -> Result<ReadyMessage, PoisonError> {
    let Value::Object(map) = &value else { return Err(PoisonError::UnknownShape) };
    if map.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Parsed { ignored: vec!["s3:TestEvent".into()], ..Parsed::default() }.into());
    }
    if let Some(Value::Array(records)) = map.get("Records") {
        return Ok(parse_records(records, ctx).into());
    }
    // S3 -> SNS -> SQS: the S3 event is a JSON string inside the notification.
    if map.get("Type").and_then(Value::as_str) == Some("Notification") && depth == 0 {
        let inner = map.get("Message").and_then(Value::as_str).ok_or(PoisonError::UnknownShape)?;
        let inner: Value = serde_json::from_str(inner).map_err(|e| PoisonError::NotJson(e.to_string()))?;
        return parse_value(inner, ctx, depth + 1);
    }
    if map.get("source").and_then(Value::as_str) == Some("aws.s3") {
        return Ok(parse_eventbridge(&value, ctx).into());
    }
    if map.contains_key("segment") {
        return parse_segment_message(value).map(ReadyMessage::Segment);
    }
    if map.contains_key("job") || map.contains_key("version") {
        return parse_job_message(value).map(|job| ReadyMessage::Job(Box::new(job)));
    }
    Err(PoisonError::UnknownShape)
}

fn check_version(value: &Value) -> Result<(), PoisonError> {
    let version = value.get("version").and_then(Value::as_u64).unwrap_or(0);
    if version != u64::from(MESSAGE_VERSION) {
        return Err(PoisonError::UnsupportedVersion(u32::try_from(version).unwrap_or(u32::MAX)));
    }
    Ok(())
}

fn parse_job_message(value: Value) -> Result<JobMessage, PoisonError> {
    check_version(&value)?;
    let message: JobMessage = serde_json::from_value(value).map_err(|e| PoisonError::MalformedJob(e.to_string()))?;
    message.job.validate().map_err(PoisonError::InvalidJob)?;
    if message.attempt == 0 {
        return Err(PoisonError::MalformedJob("attempt must be at least 1".into()));
    }
    Ok(message)
}

fn parse_segment_message(value: Value) -> Result<SegmentTask, PoisonError> {
    check_version(&value)?;
    let message: SegmentMessage =
        serde_json::from_value(value).map_err(|e| PoisonError::MalformedJob(e.to_string()))?;
    let task = message.segment;
    validate_job_id(&task.job_id).map_err(|e| PoisonError::InvalidJob(SpecError::JobId(e)))?;
    validate_prefix(&task.output_dir).map_err(|e| PoisonError::InvalidJob(SpecError::OutputDir(e)))?;
    if task.index >= task.count {
        return Err(PoisonError::MalformedJob(format!("segment {} of {} does not exist", task.index, task.count)));
    }
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::{JobSpec, OutputRequest};
    use crate::domain::keys::KeyLayout;
    use crate::domain::preset::Preset;
    use crate::domain::split::SegmentMessage;

    fn job(id: &str) -> JobMessage {
        JobMessage::new(
            JobSpec {
                job_id: id.into(),
                source_key: "uploads/cat.mov".into(),
                outputs: vec![OutputRequest::new(Preset::Mp4H264)],
                output_dir: format!("outputs/{id}/"),
                source: Default::default(),
                notify: None,
                split: None,
                import: None,
                qc: None,
                loudness: None,
                repackage: None,
                watermark: None,
            },
            1,
        )
    }

    fn s3_record(key: &str) -> String {
        format!(
            r#"{{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"media"}},"object":{{"key":"{key}","size":10,"eTag":"abc","sequencer":"01"}}}}}}"#
        )
    }

    #[test]
    fn every_kind_of_body_is_named() {
        let layout = KeyLayout::new("uploads/", "outputs/").unwrap();
        let ctx = EventContext { layout: &layout, default_presets: &[Preset::Mp4H264] };
        let segment =
            SegmentTask { job_id: "j1".into(), output_dir: "outputs/j1/".into(), index: 0, count: 2, tries: 0 };
        let segment_body =
            serde_json::to_string(&SegmentMessage { version: job("x").version, segment: segment.clone() }).unwrap();
        let one = format!(r#"{{"Records":[{}]}}"#, s3_record("uploads/cat.mov"));
        let two = format!(r#"{{"Records":[{},{}]}}"#, s3_record("uploads/a.mov"), s3_record("uploads/b.mov"));
        let sns = serde_json::json!({"Type": "Notification", "Message": one}).to_string();
        let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"media"}"#;
        let cases: Vec<(&str, String, &str, usize)> = vec![
            ("a job message", job("j1").to_json(), "job", 1),
            ("a segment message", segment_body, "segment", 0),
            ("an S3 event with one upload", one.clone(), "event", 1),
            ("an S3 event with two uploads", two, "event", 2),
            ("an S3 event through SNS", sns, "event", 1),
            ("S3's test event", test_event.into(), "event", 0),
        ];
        for (what, body, want, jobs) in cases {
            let parsed = ReadyMessage::parse(&body, &ctx).unwrap_or_else(|e| panic!("{what}: {e}"));
            let got = match &parsed {
                ReadyMessage::S3Event { .. } => "event",
                ReadyMessage::Job(_) => "job",
                ReadyMessage::Segment(_) => "segment",
            };
            assert_eq!(got, want, "{what}");
            assert_eq!(parsed.jobs().len(), jobs, "{what}");
            assert_eq!(parsed.clone().into_jobs().len(), jobs, "{what}");
        }
        match ReadyMessage::parse(&job("j1").to_json(), &ctx) {
            Ok(ReadyMessage::Job(message)) => assert_eq!(*message, job("j1")),
            other => panic!("a job message: {other:?}"),
        }
        let body = serde_json::to_string(&SegmentMessage { version: job("x").version, segment: segment.clone() });
        assert_eq!(ReadyMessage::parse(&body.unwrap(), &ctx), Ok(ReadyMessage::Segment(segment)));
        match ReadyMessage::parse(test_event, &ctx) {
            Ok(ReadyMessage::S3Event { ignored, invalid, .. }) => assert!(!ignored.is_empty() && invalid.is_empty()),
            other => panic!("a test event: {other:?}"),
        }
    }

    #[test]
    fn poison_is_the_error() {
        let layout = KeyLayout::new("uploads/", "outputs/").unwrap();
        let ctx = EventContext { layout: &layout, default_presets: &[Preset::Mp4H264] };
        for (body, code) in
            [("not json", "not_json"), ("[1]", "unknown_message"), (r#"{"hello":1}"#, "unknown_message")]
        {
            assert_eq!(ReadyMessage::parse(body, &ctx).map(|_| ()).map_err(|e| e.code().as_str()), Err(code), "{body}");
        }
    }
}
