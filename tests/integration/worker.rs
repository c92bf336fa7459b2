//! The worker end to end, as a separate `media-worker` process, on both backends: transcoding,
//! bad input, a `kill -9` mid-transcode, and a graceful shutdown mid-transcode.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use media_worker::domain::status::{JobState, JobStatus, Stage};
use media_worker::queue::SendOptions;

use crate::require;
use crate::support::{Clip, Deployment, Kind, duration, emulator, ffprobe, media_tools, stream};

pub(crate) fn tools(kind: Kind) -> bool {
    media_tools() && (kind == Kind::Local || emulator())
}

/// An S3 ObjectCreated event as S3 sends it, for a key already URL-encoded.
fn s3_event(bucket: &str, encoded_key: &str) -> String {
    serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-01-01T00:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket},
               "object": {"key": encoded_key, "size": 1234, "eTag": "0123456789abcdef", "sequencer": "0A1B2C3D4E5F"}}
    }]})
    .to_string()
}

/// Plays the whole file through ffmpeg's decoders: any error fails.
fn assert_decodes_cleanly(path: &Path) {
    let output = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && errors.trim().is_empty(),
        "{} does not decode cleanly: {errors}",
        path.display()
    );
}

/// Checks an `mp4-h264` output: H.264 High yuv420p + AAC, index up front, expected shape.
pub(crate) fn assert_mp4_h264(path: &Path, width: u64, height: u64, seconds: f64, audio: bool) {
    let probe = ffprobe(path);
    assert!(probe["format"]["format_name"].as_str().unwrap_or("").contains("mp4"), "{probe}");
    let video = stream(&probe, "video").expect("a video stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["profile"], "High");
    assert_eq!(video["pix_fmt"], "yuv420p");
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(width), Some(height)));
    match stream(&probe, "audio") {
        Some(a) => {
            assert!(audio, "unexpected audio stream");
            assert_eq!(a["codec_name"], "aac");
        }
        None => assert!(!audio, "the audio stream is missing"),
    }
    let got = duration(&probe);
    assert!((got - seconds).abs() < 0.3, "duration {got} s, expected {seconds} s");
    // +faststart: the index (moov) comes before the media data (mdat).
    let bytes = std::fs::read(path).expect("read output");
    let find = |tag: &[u8]| bytes.windows(4).position(|w| w == tag).expect("mp4 box");
    assert!(find(b"moov") < find(b"mdat"), "moov is not before mdat");
    assert_decodes_cleanly(path);
}

fn stages(status: &JobStatus) -> Vec<Stage> {
    status.timeline.iter().map(|e| e.stage).collect()
}

async fn end_to_end(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    let source = d.path("cat video.mov");
    Clip { seconds: 3.0, format: "mov", ..Clip::default() }.make(&source);
    d.upload("uploads/2024/cat video.mov", &source).await;

    d.drain().await;

    let status = d.status_for_source("uploads/2024/cat video.mov").await.expect("a job status");
    let dir = format!("outputs/2024/cat video.mov/{}/", status.job_id);
    assert_eq!(status.job.output_dir, dir, "the job's own folder");
    let output = d.download(&format!("{dir}attempt-1/mp4-h264.mp4")).await;
    assert_mp4_h264(&output, 320, 240, 3.0, true);

    assert_eq!(status.state, JobState::Completed);
    assert_eq!(status.attempt, 1);
    assert_eq!(status.progress, 100.0);
    assert_eq!(status.manifest_key, Some(format!("{dir}manifest.json")));
    for stage in [Stage::Downloading, Stage::Probing, Stage::Transcoding, Stage::Uploading, Stage::Done] {
        assert!(stages(&status).contains(&stage), "timeline lacks {stage:?}: {:?}", stages(&status));
    }

    let manifest = d.json(&format!("{dir}manifest.json")).await;
    assert_eq!(manifest["job_id"], status.job_id.as_str());
    assert_eq!(manifest["source"]["key"], "uploads/2024/cat video.mov");
    assert_eq!(manifest["source"]["video"]["codec"], "h264");
    assert_eq!(manifest["source"]["size"].as_u64(), Some(std::fs::metadata(&source).unwrap().len()));
    let out = &manifest["outputs"][0];
    assert_eq!(out["preset"], "mp4-h264");
    assert_eq!(out["key"], format!("{dir}attempt-1/mp4-h264.mp4"));
    assert_eq!(out["size"].as_u64(), Some(std::fs::metadata(&output).unwrap().len()));
    assert_eq!((out["video"]["width"].as_u64(), out["video"]["height"].as_u64()), (Some(320), Some(240)));
    assert_eq!(out["audio"]["codec"], "aac");
    assert!((out["duration_seconds"].as_f64().unwrap() - 3.0).abs() < 0.3);
    assert!(manifest["timings"]["total_ms"].as_u64().unwrap() > 0);

    // The output folder holds exactly the output, its scores and the manifest.
    let keys = d.storage().list("outputs/").await.unwrap();
    let files = ["attempt-1/mp4-h264.mp4", "attempt-1/quality.json", "manifest.json"];
    assert_eq!(keys, files.map(|f| format!("{dir}{f}")));
    assert_eq!(manifest["quality_key"], format!("{dir}attempt-1/quality.json"));
    assert!(out["quality"][0]["vmaf"]["mean"].as_f64().is_some_and(|v| v > 80.0), "{out}");
    d.assert_queues_empty(true).await;
    // No scratch files are left behind.
    let scratch = d.path("work/media-worker");
    let left: Vec<_> = std::fs::read_dir(&scratch).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "scratch folders left: {left:?}");
}

async fn poison_and_edge_cases(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    let bucket = d.backend.bucket.clone();

    let unicode_key = "uploads/ünï cødé/日本 clip+1.mp4";
    let clip = d.path("clip.mp4");
    Clip { seconds: 2.0, width: 255, height: 143, ..Clip::default() }.make(&clip);
    d.upload(unicode_key, &clip).await;

    let notes = d.path("notes.txt");
    std::fs::write(&notes, "these are meeting notes, not a video\n".repeat(50)).unwrap();
    d.upload("uploads/notes.mp4", &notes).await;

    let podcast = d.path("podcast.m4a");
    Clip { video: false, format: "ipod", ..Clip::default() }.make(&podcast);
    d.upload("uploads/podcast.m4a", &podcast).await;

    let silent = d.path("silent.mp4");
    Clip { audio: false, ..Clip::default() }.make(&silent);
    d.upload("uploads/silent.mp4", &silent).await;

    let ready = &d.queues().ready;
    for body in [
        "this is not json".to_string(),
        r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-01T00:00:00Z","Bucket":"b"}"#.to_string(),
        s3_event(&bucket, "uploads/missing.mp4"),
        s3_event(&bucket, "outputs/x/mp4-h264.mp4"),
        s3_event(&bucket, "uploads/..%2F..%2Fetc%2Fpasswd"),
    ] {
        ready.send(&body, SendOptions::default()).await.unwrap();
    }

    d.drain().await;

    let good = d.status_for_source(unicode_key).await.expect("status of the unicode key");
    assert_eq!(good.state, JobState::Completed, "{:?}", good.error);
    let output = d.download(&d.output(unicode_key, "mp4-h264.mp4").await).await;
    // Odd dimensions are made even.
    assert_mp4_h264(&output, 254, 142, 2.0, true);

    let silent_status = d.status_for_source("uploads/silent.mp4").await.expect("status");
    assert_eq!(silent_status.state, JobState::Completed, "{:?}", silent_status.error);
    assert_mp4_h264(&d.download(&d.output("uploads/silent.mp4", "mp4-h264.mp4").await).await, 320, 240, 2.0, false);

    for (key, code) in [
        ("uploads/notes.mp4", "not_media"),
        ("uploads/podcast.m4a", "no_video_stream"),
        ("uploads/missing.mp4", "source_not_found"),
    ] {
        let status = d.status_for_source(key).await.unwrap_or_else(|| panic!("no status for {key}"));
        assert_eq!(status.state, JobState::Failed, "{key}");
        let error = status.error.as_ref().expect("an error");
        assert_eq!(error.code, code, "{key}: {}", error.message);
        assert!(!error.retryable);
        assert_eq!(status.attempt, 1, "permanent errors are not retried");
        let outputs = d.storage().list(&status.job.output_dir).await.unwrap();
        assert!(outputs.is_empty(), "{key} left outputs: {outputs:?}");
    }

    let mut reasons: Vec<String> =
        d.dead_letters().await.iter().map(|m| m.attributes.get("reason").cloned().unwrap_or_default()).collect();
    reasons.sort();
    assert_eq!(reasons, vec!["invalid_key", "no_video_stream", "not_json", "not_media", "source_not_found"]);
    d.assert_queues_empty(false).await;
}

/// Starts a daemon worker and waits until its job is transcoding.
/// Uploads a 10 s 640x360 clip, long enough to catch its worker mid-transcode.
pub(crate) async fn upload_long_clip(d: &Deployment) -> &'static str {
    let source = d.path("long.mp4");
    Clip { seconds: 10.0, width: 640, height: 360, ..Clip::default() }.make(&source);
    let key = "uploads/long.mp4";
    d.upload(key, &source).await;
    key
}

/// Starts a daemon worker (logging to `<name>.log`) and waits until its job is transcoding.
pub(crate) async fn start_worker_until_transcoding(
    d: &Deployment,
    source_key: &str,
    name: &str,
    extra_env: &[(&str, &str)],
) -> tokio::process::Child {
    let log = std::fs::File::create(d.path(&format!("{name}.log"))).unwrap();
    let mut cmd = d.command(&["run"]);
    cmd.envs(extra_env.iter().copied()).env("MEDIA_WORKER_ID", name).stdout(Stdio::null()).stderr(log);
    let child = cmd.spawn().expect("start worker");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = d.status_for_source(source_key).await
            && status.stage == Stage::Transcoding
        {
            return child;
        }
        assert!(Instant::now() < deadline, "the job never reached the transcoding stage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn crash_recovery(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    let key = upload_long_clip(&d).await;

    let mut first = start_worker_until_transcoding(&d, key, "first", &[]).await;
    first.start_kill().expect("kill -9");
    first.wait().await.unwrap();
    let orphaned = d.status_for_source(key).await.unwrap();
    assert_eq!((orphaned.state, orphaned.attempt), (JobState::Running, 1));

    let logs = d.drain_with(&[("MEDIA_WORKER_ID", "second")]).await;

    let status = d.status_for_source(key).await.unwrap();
    assert_eq!(status.state, JobState::Completed, "{logs}");
    assert_eq!(status.attempt, 2);
    assert!(
        status.timeline.iter().any(|e| e.note.as_deref().is_some_and(|n| n.contains("recovered"))),
        "{:#?}\n{logs}",
        status.timeline
    );
    let completions = status.timeline.iter().filter(|e| e.state == JobState::Completed).count();
    assert_eq!(completions, 1, "the job completed more than once");
    let manifest = d.json(status.manifest_key.as_deref().unwrap()).await;
    assert_eq!((manifest["attempt"].as_u64(), manifest["worker"].as_str()), (Some(2), Some("second")));
    assert_mp4_h264(&d.download(&d.output(key, "mp4-h264.mp4").await).await, 640, 360, 10.0, true);
    // Only the completing attempt's files are in the job's folder.
    let files = d.storage().list(&status.job.output_dir).await.unwrap();
    assert!(files.iter().all(|f| f.contains("/attempt-2/") || f.ends_with("/manifest.json")), "{files:?}");
    d.assert_queues_empty(true).await;
}

async fn graceful_shutdown(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    let key = upload_long_clip(&d).await;
    let child = start_worker_until_transcoding(&d, key, "stopping", &[("MEDIA_SHUTDOWN_GRACE", "0s")]).await;
    let pid = child.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.expect("exit").unwrap();
    let log = std::fs::read_to_string(d.path("stopping.log")).unwrap_or_default();
    assert!(exit.status.success(), "the worker did not exit 0 on SIGTERM: {log}");

    // Requeued as the same attempt: a shutdown does not use up an attempt.
    let requeued = d.status_for_source(key).await.unwrap();
    assert_eq!((requeued.state, requeued.attempt), (JobState::Queued, 1), "{log}");
    assert!(!requeued.handover_pending, "the requeued message was published");
    let manifest_key = format!("{}manifest.json", requeued.job.output_dir);
    assert!(d.storage().head(&manifest_key).await.unwrap().is_none());

    d.drain().await;
    let done = d.status_for_source(key).await.unwrap();
    assert_eq!((done.state, done.attempt), (JobState::Completed, 1));
    assert_mp4_h264(&d.download(&d.output(key, "mp4-h264.mp4").await).await, 640, 360, 10.0, true);
    d.assert_queues_empty(true).await;
}

crate::on_both_backends!(end_to_end, poison_and_edge_cases, crash_recovery, graceful_shutdown);
