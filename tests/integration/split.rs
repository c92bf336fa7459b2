//! Split and stitch: long sources encoded as segments by several workers, checked against the
//! same job encoded whole (frames, durations, joins, quality at each join), resumed after
//! `kill -9` and SIGTERM without encoding a finished segment twice, cancelled, and failed by
//! one bad segment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use media_worker::domain::keys::{failed_key, piece_key, record_key, split_dir};
use media_worker::domain::status::{JobState, JobStatus};
use media_worker::jobs::Event;
use media_worker::worker::Worker;
use serde_json::Value;

use crate::support::{Clip, Deployment, Kind, emulator, media_tools, wait_until};

fn tools(kind: Kind) -> bool {
    media_tools() && (kind == Kind::Local || emulator())
}

/// Split anything over 10 s into segments of about 4 s.
const SPLIT: [(&str, &str); 3] = [
    ("MEDIA_SPLIT_MIN_DURATION", "10s"),
    ("MEDIA_SEGMENT_DURATION", "4s"),
    ("MEDIA_DEFAULT_PRESETS", "mp4-h264,hls,thumbnail"),
];
const WHOLE: [(&str, &str); 2] =
    [("MEDIA_SPLIT_MIN_DURATION", "0s"), ("MEDIA_DEFAULT_PRESETS", "mp4-h264,hls,thumbnail")];
const FRAME: f64 = 1.0 / 25.0;

/// Video packets' (dts, pts) in decode order.
fn video_packets(path: &Path) -> Vec<(f64, f64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=dts_time,pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(',').map(|v| v.trim().parse::<f64>().ok());
            // ffprobe prints pts_time first, then dts_time.
            let pts = f.next()??;
            let dts = f.next()??;
            Some((dts, pts))
        })
        .collect()
}

/// Stream durations (video, audio) in seconds.
fn stream_durations(path: &Path) -> (f64, Option<f64>) {
    let probe = crate::support::ffprobe(path);
    let of = |kind: &str| {
        crate::support::stream(&probe, kind).and_then(|s| s["duration"].as_str()).and_then(|d| d.parse::<f64>().ok())
    };
    (of("video").unwrap_or_else(|| crate::support::duration(&probe)), of("audio"))
}

/// ffmpeg's complaints when decoding the whole file (empty when it decodes cleanly).
fn decode_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Per-frame PSNR (average of the planes) of `encoded` against `source`.
fn psnr_per_frame(encoded: &Path, source: &Path, scratch: &Path) -> Vec<f64> {
    let stats = scratch.join(format!("psnr-{}.log", uuid::Uuid::new_v4().simple()));
    let filter = format!("[0:v][1:v]psnr=stats_file={}", stats.display());
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(encoded)
        .arg("-i")
        .arg(source)
        .args(["-lavfi", &filter, "-f", "null", "-"])
        .status()
        .expect("ffmpeg psnr");
    assert!(status.success());
    std::fs::read_to_string(&stats)
        .expect("psnr stats")
        .lines()
        .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("psnr_avg:")).and_then(|v| v.parse().ok()))
        .collect()
}

/// The checks of a stitched output against the same output encoded whole from `source`.
fn assert_stitched_like_whole(stitched: &Path, whole: &Path, source: &Path, joins: &[f64], scratch: &Path) {
    let (split_packets, whole_packets) = (video_packets(stitched), video_packets(whole));
    assert_eq!(split_packets.len(), whole_packets.len(), "frame count of {}", stitched.display());
    assert!(
        split_packets.windows(2).all(|w| w[1].0 > w[0].0),
        "decode timestamps go back at a join in {}",
        stitched.display()
    );
    let (split_video, split_audio) = stream_durations(stitched);
    let (whole_video, _) = stream_durations(whole);
    assert!((split_video - whole_video).abs() <= FRAME + 1e-6, "video lasts {split_video} s, whole {whole_video} s");
    if let Some(audio) = split_audio {
        assert!((audio - split_video).abs() <= FRAME + 1e-6, "audio {audio} s against video {split_video} s");
    }
    assert_eq!(decode_errors(stitched), "", "decode errors in {}", stitched.display());

    // Quality around every join, against the whole encode's at the same frames.
    let split_psnr = psnr_per_frame(stitched, source, scratch);
    let whole_psnr = psnr_per_frame(whole, source, scratch);
    assert_eq!(split_psnr.len(), whole_psnr.len());
    for join in joins {
        let frame = (join / FRAME).round() as usize;
        let window = frame.saturating_sub(5)..(frame + 5).min(split_psnr.len());
        let mean = |v: &[f64]| v[window.clone()].iter().sum::<f64>() / window.len() as f64;
        let (split, whole) = (mean(&split_psnr), mean(&whole_psnr));
        assert!(split >= whole - 1.0, "PSNR around the join at {join} s: {split:.2} dB, whole {whole:.2} dB");
    }
}

fn manifest_split(manifest: &Value) -> (u64, Vec<f64>) {
    let split = &manifest["split"];
    let joins = split["segment_timings"]
        .as_array()
        .expect("segment timings")
        .iter()
        .skip(1)
        .map(|t| t["start"].as_f64().expect("start"))
        .collect();
    (split["segments"].as_u64().expect("segments"), joins)
}

async fn completed(d: &Deployment, key: &str) -> (JobStatus, Value) {
    let status = d.status_for_source(key).await.unwrap_or_else(|| panic!("no job for {key}"));
    assert_eq!(status.state, JobState::Completed, "{status:#?}");
    let manifest = d.json(status.manifest_key.as_deref().expect("manifest key")).await;
    (status, manifest)
}

/// The same source, encoded whole and split: the stitched MP4 and HLS rung match the whole
/// ones frame for frame, join cleanly, and lose no quality at the joins. The source's keyframes
/// (every 2.44 s) are off the 4 s segment grid.
async fn stitched_outputs_match_the_whole_encode(kind: Kind) {
    crate::require!(tools(kind));
    let d = Deployment::new(kind).await;
    let source = d.path("source.mp4");
    Clip { seconds: 24.0, width: 640, height: 360, keyframe_interval: Some(61), ..Clip::default() }.make(&source);
    d.upload("uploads/whole/clip.mp4", &source).await;
    d.drain_with(&WHOLE).await;
    d.upload("uploads/split/clip.mp4", &source).await;
    let logs = d.drain_with(&SPLIT).await;

    let (_, whole_manifest) = completed(&d, "uploads/whole/clip.mp4").await;
    assert!(whole_manifest.get("split").is_none());
    let (status, manifest) = completed(&d, "uploads/split/clip.mp4").await;
    let (segments, joins) = manifest_split(&manifest);
    assert!(segments >= 4, "{manifest:#}");
    assert_eq!(joins.len() as u64, segments - 1);
    let stages: Vec<String> = status.timeline.iter().map(|e| format!("{:?}", e.stage)).collect();
    for stage in ["Splitting", "Transcoding", "Stitching", "Uploading"] {
        assert!(stages.iter().any(|s| s == stage), "{stage} missing from {stages:?}\n{logs}");
    }
    // What the job kept between workers is gone once it completed.
    assert!(d.storage().list(&split_dir(&status.job.output_dir)).await.unwrap().is_empty());

    for file in ["mp4-h264.mp4", "hls/360p/index.m3u8"] {
        let stitched = d.download(&d.output("uploads/split/clip.mp4", file).await).await;
        let whole = d.download(&d.output("uploads/whole/clip.mp4", file).await).await;
        if file.ends_with(".m3u8") {
            // A playlist is read with its segments beside it.
            let folder = |key: String| key.rsplit_once('/').map(|(f, _)| f.to_string()).unwrap_or_default();
            let stitched_dir = d
                .download_folder(&format!("{}/", folder(d.output("uploads/split/clip.mp4", file).await)), "split-hls")
                .await;
            let whole_dir = d
                .download_folder(&format!("{}/", folder(d.output("uploads/whole/clip.mp4", file).await)), "whole-hls")
                .await;
            assert_stitched_like_whole(
                &stitched_dir.join("index.m3u8"),
                &whole_dir.join("index.m3u8"),
                &source,
                &joins,
                d.dir.path(),
            );
        } else {
            assert_stitched_like_whole(&stitched, &whole, &source, &joins, d.dir.path());
        }
    }
    let master = String::from_utf8(
        d.storage().get_bytes(&d.output("uploads/split/clip.mp4", "hls/master.m3u8").await).await.unwrap().unwrap(),
    )
    .unwrap();
    let bandwidth: u64 = master
        .split(['\n', ','])
        .find_map(|a| a.strip_prefix("#EXT-X-STREAM-INF:BANDWIDTH=").or_else(|| a.strip_prefix("BANDWIDTH=")))
        .and_then(|v| v.parse().ok())
        .expect("bandwidth");
    assert!(bandwidth > 200_000, "the master playlist announces {bandwidth} b/s:\n{master}");
    d.assert_queues_empty(true).await;
}

/// A variable-frame-rate source (frames 40 or 80 ms apart) keeps every frame and its timing.
#[tokio::test]
async fn a_variable_frame_rate_source() {
    crate::require!(tools(Kind::Local));
    let d = Deployment::new(Kind::Local).await;
    let source = d.path("vfr.mp4");
    Clip {
        seconds: 16.0,
        width: 320,
        height: 240,
        keyframe_interval: Some(37),
        variable_frame_rate: true,
        ..Clip::default()
    }
    .make(&source);
    d.upload("uploads/whole/vfr.mp4", &source).await;
    d.drain_with(&WHOLE).await;
    d.upload("uploads/split/vfr.mp4", &source).await;
    d.drain_with(&SPLIT).await;
    let (_, manifest) = completed(&d, "uploads/split/vfr.mp4").await;
    let (segments, joins) = manifest_split(&manifest);
    assert!(segments >= 3, "{manifest:#}");
    let stitched = d.download(&d.output("uploads/split/vfr.mp4", "mp4-h264.mp4").await).await;
    let whole = d.download(&d.output("uploads/whole/vfr.mp4", "mp4-h264.mp4").await).await;
    assert_stitched_like_whole(&stitched, &whole, &source, &joins, d.dir.path());
    // Frame times are the source's: the same presentation times as the whole encode.
    let pts = |p: &Path| -> Vec<i64> {
        let mut t: Vec<i64> = video_packets(p).iter().map(|(_, pts)| (pts * 1000.0).round() as i64).collect();
        t.sort_unstable();
        t
    };
    assert_eq!(pts(&stitched), pts(&whole));
}

/// Starts a split-ready worker daemon logging to `<name>.log`.
fn start_worker(d: &Deployment, name: &str, extra: &[(&str, &str)]) -> tokio::process::Child {
    d.spawn_worker(name, &[SPLIT.as_slice(), extra].concat())
}

/// Segment encodes each worker log shows starting, by segment.
fn encodes_started(d: &Deployment, logs: &[&str]) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for name in logs {
        let log = d.worker_log(name);
        for line in log.lines().filter(|l| l.contains("Segment encode started.")) {
            let index = line
                .split("segment=")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u32>().ok())
                .expect("segment index in the log line");
            *counts.entry(index).or_insert(0) += 1;
        }
    }
    counts
}

/// Segments with a checkpoint.
async fn checkpointed(d: &Deployment, output_dir: &str) -> BTreeSet<u32> {
    let folder = split_dir(output_dir);
    d.storage()
        .list(&folder)
        .await
        .unwrap()
        .iter()
        .filter_map(|k| k.strip_prefix(&folder)?.strip_prefix("segment-")?.strip_suffix(".done.json")?.parse().ok())
        .collect()
}

/// A segment `worker` is encoding right now (its encode started, no checkpoint yet).
async fn encoding_on(d: &Deployment, output_dir: &str, worker: &str) -> Option<u32> {
    let done = checkpointed(d, output_dir).await;
    let started = encodes_started(d, &[worker]);
    started.keys().copied().find(|i| !done.contains(i))
}

/// Two workers share a split job; one is killed with `kill -9` while it encodes a segment, the
/// other stopped with SIGTERM while it encodes one; a third finishes the job. No segment that
/// had its checkpoint is encoded again, and the outputs hold every frame.
async fn segments_survive_kill_and_sigterm(kind: Kind) {
    crate::require!(tools(kind));
    let d = Deployment::new(kind).await;
    let source = d.path("source.mp4");
    Clip { seconds: 40.0, width: 640, height: 360, keyframe_interval: Some(50), ..Clip::default() }.make(&source);
    let key = "uploads/long/film.mp4";
    d.upload(key, &source).await;
    let one_each = [("MEDIA_CONCURRENCY", "1"), ("MEDIA_PREFETCH", "1"), ("MEDIA_VISIBILITY_TIMEOUT", "4s")];
    let mut killed = start_worker(&d, "killed", &one_each);
    let stopped = start_worker(&d, "stopped", &[one_each.as_slice(), &[("MEDIA_SHUTDOWN_GRACE", "0s")]].concat());

    let status = wait_until("the job is split", Duration::from_secs(120), async || {
        let status = d.status_for_source(key).await?;
        d.storage().head(&record_key(&status.job.output_dir)).await.unwrap().map(|_| status)
    })
    .await;
    let dir = status.job.output_dir.clone();
    wait_until("a segment is encoding on the first worker after one finished", Duration::from_secs(120), async || {
        let done = checkpointed(&d, &dir).await;
        (!done.is_empty()).then_some(())?;
        encoding_on(&d, &dir, "killed").await
    })
    .await;
    killed.start_kill().expect("kill -9");
    killed.wait().await.unwrap();
    let done_before_kill = checkpointed(&d, &dir).await;

    wait_until("a segment is encoding on the second worker", Duration::from_secs(120), async || {
        encoding_on(&d, &dir, "stopped").await
    })
    .await;
    let pid = stopped.id().expect("pid").to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = tokio::time::timeout(Duration::from_secs(60), stopped.wait_with_output()).await.expect("exit").unwrap();
    assert!(exit.status.success(), "SIGTERM: {}", d.worker_log("stopped"));
    let done_before_stop = checkpointed(&d, &dir).await;

    let finisher = d.drain_with(&[SPLIT.as_slice(), &[("MEDIA_WORKER_ID", "finisher")]].concat()).await;
    std::fs::write(d.path("finisher.log"), &finisher).unwrap();
    let (_, manifest) = completed(&d, key).await;
    let (segments, _) = manifest_split(&manifest);
    let starts = encodes_started(&d, &["killed", "stopped", "finisher"]);
    for segment in done_before_kill.union(&done_before_stop) {
        assert_eq!(starts.get(segment), Some(&1), "segment {segment} was encoded again: {starts:?}");
    }
    assert_eq!(starts.len() as u64, segments, "every segment was encoded: {starts:?}");

    let stitched = d.download(&d.output(key, "mp4-h264.mp4").await).await;
    assert_eq!(video_packets(&stitched).len(), video_packets(&source).len(), "frame count");
    assert!(video_packets(&stitched).windows(2).all(|w| w[1].0 > w[0].0), "monotonic timestamps");
    let (video, audio) = stream_durations(&stitched);
    assert!((video - 40.0).abs() <= FRAME + 1e-6 && (audio.unwrap() - video).abs() <= FRAME + 1e-6);
    assert_eq!(decode_errors(&stitched), "");
    d.assert_queues_empty(true).await;
}

crate::on_both_backends!(stitched_outputs_match_the_whole_encode, segments_survive_kill_and_sigterm);

/// A worker driven one poll at a time, with the split settings.
fn stepped_worker(d: &Deployment) -> Worker {
    let mut config = d.config();
    config.split = media_worker::domain::split::SplitSettings { min_duration: 10.0, segment_duration: 4.0 };
    config.concurrency = 1;
    config.prefetch = 1;
    Worker::new(config, d.backend.clone())
}

/// Polls until `done` holds.
async fn step_until(worker: &Worker, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        worker.poll_once().await.unwrap();
        worker.reap_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One segment that cannot be encoded fails the whole job, naming the segment; a cancelled job
/// stops its segments and keeps nothing.
#[tokio::test]
async fn a_bad_segment_fails_the_job_and_cancel_stops_every_segment() {
    crate::require!(tools(Kind::Local));
    let d = Deployment::new(Kind::Local).await;
    let source = d.path("source.mp4");
    Clip { seconds: 20.0, width: 320, height: 240, keyframe_interval: Some(50), ..Clip::default() }.make(&source);
    d.upload("uploads/bad/clip.mp4", &source).await;
    let worker = stepped_worker(&d);
    // The coordinator starts, splits and offers the segments; then piece 2 is spoiled.
    step_until(&worker, "the job is split", async || {
        let Some(status) = d.status_for_source("uploads/bad/clip.mp4").await else { return false };
        d.storage().head(&record_key(&status.job.output_dir)).await.unwrap().is_some()
    })
    .await;
    let status = d.status_for_source("uploads/bad/clip.mp4").await.unwrap();
    let dir = status.job.output_dir.clone();
    d.storage().put_bytes(&piece_key(&dir, 2), b"not a video".to_vec(), "video/x-nut").await.unwrap();
    step_until(&worker, "the job fails", async || {
        d.status_for_source("uploads/bad/clip.mp4").await.is_some_and(|s| s.state.is_terminal())
    })
    .await;
    let failed = d.status_for_source("uploads/bad/clip.mp4").await.unwrap();
    let error = failed.error.expect("error");
    assert_eq!((failed.state, error.code.as_str()), (JobState::Failed, "segment_failed"), "{error:?}");
    assert!(error.message.contains("segment 3 of"), "{}", error.message);
    step_until(&worker, "the worker is idle", async || worker.running() == 0 && worker.is_idle().await.unwrap()).await;
    assert!(d.storage().head(&failed_key(&dir, 2)).await.unwrap().is_none(), "split files are cleaned up");

    // Cancelled while its segments are queued: they are dropped, nothing is kept.
    d.upload("uploads/cancel/clip.mp4", &source).await;
    step_until(&worker, "the second job is split", async || {
        let Some(status) = d.status_for_source("uploads/cancel/clip.mp4").await else { return false };
        d.storage().head(&record_key(&status.job.output_dir)).await.unwrap().is_some()
    })
    .await;
    let status = d.status_for_source("uploads/cancel/clip.mp4").await.unwrap();
    d.store().apply(&status.job.job_id, &Event::Cancel { note: "cancel requested in a test".into() }).await.unwrap();
    step_until(&worker, "the worker is idle", async || worker.running() == 0 && worker.is_idle().await.unwrap()).await;
    let cancelled = d.status_for_source("uploads/cancel/clip.mp4").await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    let left = d.storage().list(&status.job.output_dir).await.unwrap();
    assert!(left.is_empty(), "a cancelled job keeps nothing: {left:?}");
    d.assert_queues_empty(false).await;
}

/// No serial head, a short tail: with one worker running one encode at a time, the worker
/// encodes its own job's first segment while the coordinator's audio is still running (the
/// audio holds no transcode slot); the last segment's worth of source is cut in a half and two
/// quarters; the manifest says where and when every task ran.
#[tokio::test]
async fn segments_start_beside_the_audio_and_the_tail_is_cut_finer() {
    crate::require!(tools(Kind::Local));
    let d = Deployment::new(Kind::Local).await;
    let source = d.path("long.mp4");
    Clip { seconds: 60.0, width: 320, height: 180, keyframe_interval: Some(25), ..Clip::default() }.make(&source);
    d.upload("uploads/split/long.mp4", &source).await;
    let settings = [
        ("MEDIA_SPLIT_MIN_DURATION", "10s"),
        ("MEDIA_SEGMENT_DURATION", "20s"),
        ("MEDIA_DEFAULT_PRESETS", "mp4-h264"),
        ("MEDIA_CONCURRENCY", "1"),
    ];
    let logs = d.drain_with(&settings).await;
    let (_, manifest) = completed(&d, "uploads/split/long.mp4").await;
    let split = &manifest["split"];
    let timings = split["segment_timings"].as_array().expect("segment timings");
    let starts: Vec<f64> = timings.iter().map(|t| t["start"].as_f64().expect("start")).collect();
    let expected = [0.0, 20.0, 40.0, 50.0, 55.0];
    assert_eq!(starts.len(), expected.len(), "{split:#}");
    for (start, want) in starts.iter().zip(expected) {
        // Cuts land on the first keyframe at or after each time: one every second here.
        assert!((start - want).abs() <= 1.0 + 1e-6, "pieces start at {starts:?}, asked for {expected:?}");
    }

    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time")).expect("RFC 3339");
    let tasks = split["tasks"].as_array().expect("tasks");
    let task =
        |name: &str| tasks.iter().find(|t| t["task"] == name).unwrap_or_else(|| panic!("no {name} in {split:#}"));
    let coordinator = task("split")["worker"].as_str().expect("worker");
    for name in ["audio", "stitch"] {
        assert_eq!(task(name)["worker"].as_str(), Some(coordinator), "{split:#}");
        assert!(at(&task(name)["started_at"]) <= at(&task(name)["finished_at"]));
    }
    assert!(tasks.iter().all(|t| t["task"] != "whole"), "no output is made whole: {split:#}");
    let first_encode = timings.iter().map(|t| at(&t["started_at"])).min().expect("an encode");
    let last_checkpoint = timings.iter().map(|t| at(&t["finished_at"])).max().expect("a checkpoint");
    assert!(timings.iter().all(|t| t["worker"].as_str() == Some(coordinator)), "{split:#}");
    assert!(
        first_encode < at(&task("audio")["finished_at"]),
        "the first segment waited for the audio: {split:#}\n{logs}"
    );
    assert!(at(&task("stitch")["started_at"]) >= last_checkpoint, "{split:#}");
}
