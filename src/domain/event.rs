//! Turning S3's upload events into jobs, without I/O: S3 event notifications
//! (`{"Records": [...]}`, possibly several records per message; keys arrive URL-encoded with
//! `+` for space) and EventBridge "Object Created" events (keys not encoded). Which kind of body
//! a ready-queue message is, is told by [`crate::domain::ready`]; the local store writes the
//! same events ([`object_created_event`]).

use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::Value;

use crate::domain::error_code::ErrorCode;
use crate::domain::job::{JobMessage, JobSpec, OutputRequest, SourcePin, job_id_for_object};
use crate::domain::keys::{KeyError, KeyLayout, validate_key};
use crate::domain::preset::Preset;

/// What the parser needs to know about this deployment.
pub struct EventContext<'a> {
    pub layout: &'a KeyLayout,
    pub default_presets: &'a [Preset],
}

/// One S3 record that cannot become a job (the rest of its message still can).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRecord {
    pub code: ErrorCode,
    pub reason: String,
    /// The record's own JSON, kept for the dead-letter queue.
    pub record: String,
}

/// The uploads one S3 event names (direct, through SNS, or from EventBridge).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Parsed {
    pub jobs: Vec<JobMessage>,
    /// Why records were dropped on purpose (test events, own outputs, ...), for the log.
    pub ignored: Vec<String>,
    pub invalid: Vec<InvalidRecord>,
}

#[derive(Deserialize)]
struct S3Record {
    #[serde(rename = "eventName")]
    event_name: String,
    #[serde(rename = "eventTime")]
    event_time: Option<String>,
    s3: S3Entity,
}

impl S3Record {
    /// Some S3-compatible stores (moto among them) announce a completed multipart upload twice:
    /// as `ObjectCreated:CompleteMultipartUpload` and as `ObjectCreated:Put`, a millisecond
    /// apart and without a sequencer, so the event time would make two jobs of one write. A
    /// `Put` cannot have a multipart ETag (`<md5>-<parts>`), so such a record, when it carries
    /// nothing that names the write, is the echo and is dropped; the completion makes the job.
    fn is_multipart_echo(&self) -> bool {
        let object = &self.s3.object;
        let unnamed = object.sequencer.as_deref().is_none_or(str::is_empty)
            && object.version_id.as_deref().is_none_or(|v| v.is_empty() || v == "null");
        let multipart_etag = object.e_tag.as_deref().is_some_and(|tag| {
            tag.trim_matches('"').rsplit_once('-').is_some_and(|(_, parts)| parts.parse::<u32>().is_ok())
        });
        self.event_name == "ObjectCreated:Put" && unnamed && multipart_etag
    }
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: S3Bucket,
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Bucket {
    name: String,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
    #[serde(rename = "eTag", alias = "etag")]
    e_tag: Option<String>,
    sequencer: Option<String>,
    #[serde(rename = "versionId", alias = "version-id")]
    version_id: Option<String>,
    size: Option<u64>,
}

/// The jobs of an S3 event notification's `Records`.
pub fn parse_records(records: &[Value], ctx: &EventContext<'_>) -> Parsed {
    let mut parsed = Parsed::default();
    if records.is_empty() {
        parsed.ignored.push("an event with no records".into());
    }
    for raw in records {
        let invalid = |code: ErrorCode, reason: String| InvalidRecord { code, reason, record: raw.to_string() };
        let record: S3Record = match serde_json::from_value(raw.clone()) {
            Ok(r) => r,
            Err(e) => {
                parsed.invalid.push(invalid(ErrorCode::MalformedRecord, format!("malformed S3 record: {e}")));
                continue;
            }
        };
        if !record.event_name.starts_with("ObjectCreated:") {
            parsed.ignored.push(format!("event {} is not an object creation", record.event_name));
            continue;
        }
        if record.is_multipart_echo() {
            parsed.ignored.push("a `Put` echo of a multipart completion, which has its own record".into());
            continue;
        }
        let Some(key) = decode_event_key(&record.s3.object.key) else {
            parsed.invalid.push(invalid(ErrorCode::InvalidKey, "the key is not valid URL-encoded UTF-8".into()));
            continue;
        };
        match object_to_job(&record.s3.bucket.name, key, &record.s3.object, record.event_time.as_deref(), ctx) {
            Ok(Some(job)) => parsed.jobs.push(job),
            Ok(None) => parsed.ignored.push("a key outside the upload prefix, or the worker's own write".into()),
            Err(e) => parsed.invalid.push(invalid(ErrorCode::InvalidKey, format!("invalid key: {e}"))),
        }
    }
    parsed
}

/// The job of an EventBridge \"Object Created\" event.
pub fn parse_eventbridge(value: &Value, ctx: &EventContext<'_>) -> Parsed {
    let mut parsed = Parsed::default();
    if value.get("detail-type").and_then(Value::as_str) != Some("Object Created") {
        parsed.ignored.push("an EventBridge event other than Object Created".into());
        return parsed;
    }
    let detail = value.get("detail").cloned().unwrap_or(Value::Null);
    let time = value.get("time").and_then(Value::as_str);
    let bucket = detail.pointer("/bucket/name").and_then(Value::as_str).map(str::to_string);
    let object: Option<S3Object> = detail.get("object").cloned().and_then(|o| serde_json::from_value(o).ok());
    match (bucket, object) {
        (Some(bucket), Some(object)) => match object_to_job(&bucket, object.key.clone(), &object, time, ctx) {
            Ok(Some(job)) => parsed.jobs.push(job),
            Ok(None) => parsed.ignored.push("a key outside the upload prefix, or the worker's own write".into()),
            Err(e) => parsed.invalid.push(InvalidRecord {
                code: ErrorCode::InvalidKey,
                reason: format!("invalid key: {e}"),
                record: value.to_string(),
            }),
        },
        _ => parsed.invalid.push(InvalidRecord {
            code: ErrorCode::MalformedRecord,
            reason: "EventBridge event without bucket name or object key".into(),
            record: value.to_string(),
        }),
    }
    parsed
}

/// Encodes a key as S3 does in event notifications (form encoding): space becomes `+`, `/` and
/// `A-Za-z0-9-_.~` stay, every other byte becomes `%XX`.
pub fn encode_event_key(key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        match b {
            b' ' => out.push('+'),
            b'/' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            _ if b.is_ascii_alphanumeric() => out.push(char::from(b)),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
    out
}

/// The `ObjectCreated:Put` notification S3 sends for one write (the local store sends it for
/// its uploads) of `size` bytes with ETag `etag` (unquoted). `sequencer` names the write: the
/// job id derives from it.
pub fn object_created_event(
    bucket: &str,
    key: &str,
    size: u64,
    etag: Option<&str>,
    sequencer: &str,
    at: std::time::SystemTime,
) -> String {
    use chrono::{DateTime, SecondsFormat, Utc};
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "local",
            "eventTime": DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true),
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": { "name": bucket },
                "object": {
                    "key": encode_event_key(key),
                    "size": size,
                    "eTag": etag.unwrap_or_default(),
                    "sequencer": sequencer,
                }
            }
        }]
    })
    .to_string()
}

/// S3 encodes event keys as in a form: `+` is a space and everything else may be `%XX`
/// (real S3 keeps `/`, some emulators encode it as `%2F`; both decode the same).
pub fn decode_event_key(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8().ok().map(|k| k.into_owned())
}

/// Extensions of the files a job reads beside its source (caption files, watermark images):
/// stored among the uploads, they make no job of the default presets, which would only fail
/// `not_media` (a still picture is no source either).
const ASSET_EXTENSIONS: &[&str] = &["srt", "vtt", "scc", "ass", "ssa", "png", "jpg", "jpeg", "webp"];

/// Whether a write of `key` among the uploads makes a job of the default presets: every one but
/// a caption file or an image ([`ASSET_EXTENSIONS`], by the name's extension, any case).
pub fn makes_default_job(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    !extension.is_some_and(|e| ASSET_EXTENSIONS.contains(&e.as_str()))
}

fn object_to_job(
    bucket: &str,
    key: String,
    object: &S3Object,
    event_time: Option<&str>,
    ctx: &EventContext<'_>,
) -> Result<Option<JobMessage>, KeyError> {
    if ctx.layout.is_own_write(&key) || !ctx.layout.is_upload(&key) || key.ends_with('/') || !makes_default_job(&key) {
        return Ok(None);
    }
    validate_key(&key)?;
    // The version id or the sequencer identifies the write: a duplicate delivery of one event
    // maps to one job, every new write of the key (even of the same bytes) to a new one. For
    // events that carry neither (some S3-compatible stores), the event time with the ETag: the
    // same for every delivery of one event, different for a later write.
    let unquote = |tag: &str| tag.trim_matches('"').to_string();
    let write_tag = match (object.version_id.as_deref(), object.sequencer.as_deref()) {
        (Some(version), _) if !version.is_empty() && version != "null" => unquote(version),
        (_, Some(sequencer)) if !sequencer.is_empty() => sequencer.to_string(),
        _ => format!("{}@{}", object.e_tag.as_deref().map(unquote).unwrap_or_default(), event_time.unwrap_or_default()),
    };
    let job_id = job_id_for_object(bucket, &key, &write_tag);
    let job = JobSpec {
        output_dir: ctx.layout.job_dir(&key, &job_id),
        job_id,
        outputs: ctx.default_presets.iter().map(|&preset| OutputRequest::new(preset)).collect(),
        source: SourcePin {
            etag: object.e_tag.as_deref().map(unquote).filter(|t| !t.is_empty()),
            version_id: object.version_id.as_deref().map(unquote).filter(|v| !v.is_empty() && v != "null"),
            size: object.size,
        },
        source_key: key,
        notify: None,
        split: None,
        import: None,
        qc: None,
        loudness: None,
        repackage: None,
        watermark: None,
    };
    Ok(Some(JobMessage::new(job, 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ready::{PoisonError, ReadyMessage};

    /// A body read as the ready queue reads it ([`ReadyMessage::parse`]), its jobs as one list.
    fn parse(body: &str) -> Result<Parsed, PoisonError> {
        let layout = KeyLayout::new("uploads/", "outputs/").unwrap();
        let ctx = EventContext { layout: &layout, default_presets: &[Preset::Mp4H264] };
        Ok(match ReadyMessage::parse(body, &ctx)? {
            ReadyMessage::S3Event { jobs, ignored, invalid } => Parsed { jobs, ignored, invalid },
            ReadyMessage::Job(job) => Parsed { jobs: vec![*job], ..Parsed::default() },
            ReadyMessage::Segment(segment) => panic!("a segment: {segment:?}"),
        })
    }

    fn s3_event(keys: &[&str]) -> String {
        let records: Vec<Value> = keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": "media"}, "object": {"key": k, "size": 10, "eTag": "abc", "sequencer": "01"}}
                })
            })
            .collect();
        serde_json::json!({ "Records": records }).to_string()
    }

    #[test]
    fn caption_files_and_images_make_no_default_job() {
        let parsed = parse(&s3_event(&[
            "uploads/a/talk.en.srt",
            "uploads/a/LOGO.PNG",
            "uploads/a/cues.vtt",
            "uploads/a/clip.mp4",
            "uploads/a/noext",
        ]))
        .unwrap();
        let keys: Vec<&str> = parsed.jobs.iter().map(|j| j.job.source_key.as_str()).collect();
        assert_eq!(keys, ["uploads/a/clip.mp4", "uploads/a/noext"]);
        for key in ["x.scc", "x.ass", "x.ssa", "x.jpg", "x.JPEG", "x.webp", "dir.png/x.srt"] {
            assert!(!makes_default_job(key), "{key}");
        }
        for key in ["x.mov", "x.mkv", "srt", "x.png/clip.mp4", "x.m4a"] {
            assert!(makes_default_job(key), "{key}");
        }
    }

    #[test]
    fn event_keys_are_decoded() {
        let cases = [
            ("uploads/2024/cat+video.mov", "uploads/2024/cat video.mov"),
            ("uploads%2F2024%2Fcat+video.mov", "uploads/2024/cat video.mov"),
            ("uploads/a%2Bb.mp4", "uploads/a+b.mp4"),
            ("uploads/%C3%BCn%C3%AFc%C3%B8d%C3%A9.mkv", "uploads/ünïcødé.mkv"),
            ("uploads/%E6%97%A5%E6%9C%AC.mp4", "uploads/日本.mp4"),
        ];
        for (raw, expected) in cases {
            assert_eq!(decode_event_key(raw).as_deref(), Some(expected), "{raw}");
        }
        assert_eq!(decode_event_key("uploads/%FF.mp4"), None);
    }

    #[test]
    fn event_keys_are_form_encoded() {
        let cases = [
            ("uploads/2024/cat video.mov", "uploads/2024/cat+video.mov"),
            ("uploads/a+b.mp4", "uploads/a%2Bb.mp4"),
            ("uploads/ünï.mkv", "uploads/%C3%BCn%C3%AF.mkv"),
            ("uploads/a-b_c.d~e(1)&%.mp4", "uploads/a-b_c.d~e%281%29%26%25.mp4"),
        ];
        for (key, encoded) in cases {
            assert_eq!(encode_event_key(key), encoded);
            assert_eq!(decode_event_key(encoded).as_deref(), Some(key));
        }
    }

    #[test]
    fn an_encoded_event_is_parsed_back_into_its_job() {
        let at = std::time::SystemTime::now();
        let body = object_created_event("local", "uploads/a b+c.mp4", 7, Some("7-abc-1"), "7-abc-1", at);
        let job = parse(&body).unwrap().jobs.remove(0).job;
        assert_eq!(job.source_key, "uploads/a b+c.mp4");
        assert_eq!(job.job_id, job_id_for_object("local", "uploads/a b+c.mp4", "7-abc-1"));
        assert_eq!(job.source.etag.as_deref(), Some("7-abc-1"));
    }

    #[test]
    fn an_s3_event_becomes_a_job_with_a_deterministic_id() {
        let parsed = parse(&s3_event(&["uploads/2024/cat+video.mov"])).unwrap();
        assert_eq!(parsed.jobs.len(), 1);
        let job = &parsed.jobs[0];
        assert_eq!(job.attempt, 1);
        assert_eq!(job.job.source_key, "uploads/2024/cat video.mov");
        assert_eq!(job.job.output_dir, format!("outputs/2024/cat video.mov/{}/", job.job.job_id));
        assert_eq!(job.job.outputs, vec![OutputRequest::new(Preset::Mp4H264)]);
        assert_eq!(job.job.job_id, parse(&s3_event(&["uploads/2024/cat+video.mov"])).unwrap().jobs[0].job.job_id);
        // The download is pinned to the write the event announced.
        assert_eq!(job.job.source, SourcePin { etag: Some("abc".into()), version_id: None, size: Some(10) });
    }

    #[test]
    fn every_write_is_a_job_and_every_delivery_of_one_write_the_same_job() {
        let event = |etag: &str, sequencer: &str, version: Option<&str>| {
            let mut object =
                serde_json::json!({"key": "uploads/a.mp4", "size": 10, "eTag": etag, "sequencer": sequencer});
            if let Some(version) = version {
                object["versionId"] = version.into();
            }
            let body = serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "media"}, "object": object}}]});
            parse(&body.to_string()).unwrap().jobs.remove(0).job
        };
        let first = event("same-bytes", "0001", None);
        assert_eq!(first, event("same-bytes", "0001", None), "a duplicate delivery is the same job");
        let again = event("same-bytes", "0002", None);
        assert_ne!(first.job_id, again.job_id, "the same bytes written again are a new job");
        assert_ne!(first.output_dir, again.output_dir);
        // Without a sequencer or version id, the event time tells writes apart.
        let timed = |time: &str| {
            let body = serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put", "eventTime": time,
                "s3": {"bucket": {"name": "media"}, "object": {"key": "uploads/a.mp4", "size": 10, "eTag": "e"}}}]});
            parse(&body.to_string()).unwrap().jobs.remove(0).job.job_id
        };
        assert_eq!(timed("2026-01-01T00:00:00.000Z"), timed("2026-01-01T00:00:00.000Z"));
        assert_ne!(timed("2026-01-01T00:00:00.000Z"), timed("2026-01-01T00:00:05.000Z"));
        // A multipart completion announced twice (moto): one job, from the completion.
        let record = |name: &str, time: &str| {
            serde_json::json!({"eventName": name, "eventTime": time, "s3": {"bucket": {"name": "media"},
                "object": {"key": "uploads/a.mp4", "size": 10, "eTag": "\"0a1b-12\""}}})
        };
        let body = serde_json::json!({"Records": [
            record("ObjectCreated:Put", "2026-01-01T00:00:00.441Z"),
            record("ObjectCreated:CompleteMultipartUpload", "2026-01-01T00:00:00.442Z"),
        ]});
        let both = parse(&body.to_string()).unwrap();
        assert_eq!((both.jobs.len(), both.ignored.len()), (1, 1), "{:?}", both.ignored);
        let versioned = event("same-bytes", "0003", Some("v7"));
        assert_eq!(versioned.job_id, event("other", "0009", Some("v7")).job_id, "the version id names the write");
        assert_eq!(versioned.source.version_id.as_deref(), Some("v7"));
    }

    #[test]
    fn several_records_make_several_jobs() {
        let parsed = parse(&s3_event(&["uploads/a.mp4", "uploads/b.mp4", "outputs/a/mp4-h264.mp4"])).unwrap();
        assert_eq!(parsed.jobs.len(), 2);
        assert_eq!(parsed.ignored.len(), 1);
    }

    #[test]
    fn ignored_and_invalid_records() {
        let cases: &[(&str, usize, usize, usize)] = &[
            // body, jobs, ignored, invalid
            (r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"media"}"#, 0, 1, 0),
            (r#"{"Records":[]}"#, 0, 1, 0),
            (
                r#"{"Records":[{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"m"},"object":{"key":"uploads/a"}}}]}"#,
                0,
                1,
                0,
            ),
            (
                r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"m"},"object":{"key":"uploads/"}}}]}"#,
                0,
                1,
                0,
            ),
            (
                r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"m"},"object":{"key":"jobs/x.json"}}}]}"#,
                0,
                1,
                0,
            ),
            (
                r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"m"},"object":{"key":"elsewhere/x.mp4"}}}]}"#,
                0,
                1,
                0,
            ),
            (
                r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"m"},"object":{"key":"uploads/..%2F..%2Fetc%2Fpasswd"}}}]}"#,
                0,
                0,
                1,
            ),
            (
                r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"m"},"object":{"key":"uploads/a%00b"}}}]}"#,
                0,
                0,
                1,
            ),
            (r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#, 0, 0, 1),
        ];
        for (body, jobs, ignored, invalid) in cases {
            let parsed = parse(body).unwrap();
            assert_eq!(
                (parsed.jobs.len(), parsed.ignored.len(), parsed.invalid.len()),
                (*jobs, *ignored, *invalid),
                "{body}"
            );
        }
    }

    #[test]
    fn poison_bodies_are_typed() {
        let cases = [
            ("this is not json", "not_json"),
            ("", "not_json"),
            ("[1,2,3]", "unknown_message"),
            (r#"{"hello":"world"}"#, "unknown_message"),
            (r#"{"version":9,"job":{}}"#, "unsupported_version"),
            (r#"{"version":1,"job":{"job_id":"j"}}"#, "malformed_job"),
            (
                r#"{"version":1,"job":{"job_id":"j","source_key":"uploads/a","outputs":[{"preset":"evil"}],"output_dir":"outputs/a/"}}"#,
                "malformed_job",
            ),
            (
                r#"{"version":1,"job":{"job_id":"../j","source_key":"uploads/a","outputs":[{"preset":"mp4-h264"}],"output_dir":"outputs/a/"}}"#,
                "invalid_job",
            ),
            (
                r#"{"version":1,"attempt":0,"job":{"job_id":"j","source_key":"uploads/a","outputs":[{"preset":"mp4-h264"}],"output_dir":"outputs/a/"}}"#,
                "malformed_job",
            ),
        ];
        for (body, code) in cases {
            assert_eq!(parse(body).unwrap_err().code().as_str(), code, "{body}");
        }
    }

    #[test]
    fn sns_wrapped_and_eventbridge_events() {
        let sns = serde_json::json!({"Type": "Notification", "Message": s3_event(&["uploads/x.mp4"])}).to_string();
        assert_eq!(parse(&sns).unwrap().jobs.len(), 1);
        let eb = r#"{"version":"0","source":"aws.s3","detail-type":"Object Created",
            "detail":{"bucket":{"name":"m"},"object":{"key":"uploads/a b.mp4","etag":"e","sequencer":"1"}}}"#;
        let parsed = parse(eb).unwrap();
        assert_eq!(parsed.jobs[0].job.source_key, "uploads/a b.mp4");
    }

    #[test]
    fn job_messages_pass_through() {
        let body = r#"{"version":1,"attempt":2,"job":{"job_id":"job-1","source_key":"uploads/a.mp4","outputs":[{"preset":"mp4-h264"}],"output_dir":"outputs/a/"}}"#;
        let parsed = parse(body).unwrap();
        assert_eq!(parsed.jobs[0].attempt, 2);
        assert_eq!(parsed.jobs[0].job.job_id, "job-1");
    }
}
