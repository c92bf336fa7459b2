//! What a ready-queue message carries, as a type: an S3 event (uploads to make jobs of), a job
//! to start, or a split job's segment to encode. The intake and the dead-letter sweep match on
//! it instead of reading the kind off which fields of a parse came back filled.
//!
//! The bodies themselves are read by [`crate::domain::event::parse_ready_message`]; this module
//! only names what it found. Pure, so the table test below pins every kind.

use serde_json::Value;

use crate::domain::event::{EventContext, InvalidRecord, Parsed, PoisonError, parse_ready_message};
use crate::domain::job::JobMessage;
use crate::domain::split::SegmentTask;

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
    Job(JobMessage),
    /// One segment of a split job, offered by its coordinator.
    Segment(SegmentTask),
}

impl ReadyMessage {
    /// Reads a body; poison (a body that can never succeed) is the error, with its reason.
    pub fn parse(body: &str, ctx: &EventContext<'_>) -> Result<ReadyMessage, PoisonError> {
        let parsed = parse_ready_message(body, ctx)?;
        Ok(Self::from_parsed(kind(body), parsed))
    }

    fn from_parsed(kind: Kind, parsed: Parsed) -> ReadyMessage {
        let Parsed { mut jobs, mut segments, ignored, invalid } = parsed;
        match kind {
            Kind::Segment if segments.len() == 1 => ReadyMessage::Segment(segments.remove(0)),
            Kind::Job if jobs.len() == 1 => ReadyMessage::Job(jobs.remove(0)),
            _ => ReadyMessage::S3Event { jobs, ignored, invalid },
        }
    }

    /// The jobs it names: those of an S3 event, or the one of a job message.
    pub fn jobs(&self) -> &[JobMessage] {
        match self {
            ReadyMessage::S3Event { jobs, .. } => jobs,
            ReadyMessage::Job(job) => std::slice::from_ref(job),
            ReadyMessage::Segment(_) => &[],
        }
    }

    /// The jobs it names, owned.
    pub fn into_jobs(self) -> Vec<JobMessage> {
        match self {
            ReadyMessage::S3Event { jobs, .. } => jobs,
            ReadyMessage::Job(job) => vec![job],
            ReadyMessage::Segment(_) => Vec::new(),
        }
    }
}

/// The kind of body, by the keys [`parse_ready_message`] reads it by; anything that is not a job
/// or a segment message is taken for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Event,
    Job,
    Segment,
}

fn kind(body: &str) -> Kind {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) else { return Kind::Event };
    let event = map.get("Event").and_then(Value::as_str) == Some("s3:TestEvent")
        || map.get("Records").is_some_and(Value::is_array)
        || map.get("Type").and_then(Value::as_str) == Some("Notification")
        || map.get("source").and_then(Value::as_str) == Some("aws.s3");
    if event {
        Kind::Event
    } else if map.contains_key("segment") {
        Kind::Segment
    } else {
        Kind::Job
    }
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
            Ok(ReadyMessage::Job(message)) => assert_eq!(message, job("j1")),
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
