//! What a production deployment meets that a happy path does not: an operator's secrets in
//! front of tenants, a shutdown in the middle of a commit, a full scratch disk, a segment whose
//! ffmpeg keeps getting killed, a redrive run twice, a source built to flood the prober, a
//! source longer than it says, a message pointing at another job's folder.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use media_worker::domain::job::{JobMessage, JobSpec, OutputRequest};
use media_worker::domain::keys::manifest_key;
use media_worker::domain::keys::{record_key, split_dir};
use media_worker::domain::preset::Preset;
use media_worker::domain::split::{SegmentMessage, SegmentTask};
use media_worker::domain::status::{JobState, JobStatus};
use media_worker::queue::SendOptions;
use serde_json::{Value, json};

use crate::api::{ApiServer, TOKEN};
use crate::faults_support::{TinyScratch, closed_port_url};
use crate::require;
use crate::support::{Clip, Deployment, media_tools, receive_all, wait_until};

/// The webhook settings of a deployment whose endpoints are down (a closed port): every
/// delivery is attempted, recorded, and retried quickly until the schedule ends.
fn with_webhooks(d: &mut Deployment, operator_url: &str) {
    let secret = media_worker::notify::sign::Secret::generate();
    for (k, v) in [
        ("MEDIA_WEBHOOK_URLS", operator_url.to_string()),
        ("MEDIA_WEBHOOK_SECRET", secret),
        ("MEDIA_WEBHOOK_ALLOW_LOOPBACK", "true".into()),
        ("MEDIA_NOTIFY_PROGRESS_INTERVAL", "1h".into()),
        ("MEDIA_WEBHOOK_RETRY_SCHEDULE", "0s,10ms".into()),
    ] {
        d.vars.insert(k.to_string(), v);
    }
}

/// Runs `media-worker` with `args` on the deployment; its stdout, and whether it exited 0.
async fn cli(d: &Deployment, args: &[&str]) -> (String, bool) {
    let output = d.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).output().await.expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("--- media-worker {} ---\n{stderr}", args.join(" "));
    (String::from_utf8_lossy(&output.stdout).into_owned(), output.status.success())
}

/// The status of every job whose source is `source_key`.
async fn jobs_of(d: &Deployment, source_key: &str) -> Vec<JobStatus> {
    d.jobs_for_source(source_key).await
}

fn job(job_id: &str, source_key: &str, outputs: Vec<OutputRequest>) -> JobSpec {
    JobSpec {
        job_id: job_id.into(),
        source_key: source_key.into(),
        outputs,
        output_dir: format!("outputs/hardening/{job_id}/"),
        source: Default::default(),
        notify: None,
        split: None,
        import: None,
        qc: None,
        loudness: None,
        repackage: None,
        watermark: None,
    }
}

async fn submit(d: &Deployment, spec: &JobSpec) {
    d.queues().ready.send(&JobMessage::new(spec.clone(), 1).to_json(), SendOptions::default()).await.unwrap();
}

/// The worker process's peak resident memory, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the worker's /proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number of KiB")
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("a running worker").to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success(), "kill -TERM {pid}");
}

/// A caller of `GET /v1/jobs/{id}` sees the delivery attempts to its job's own `notify` URL and
/// none to the deployment's `MEDIA_WEBHOOK_URLS`, whose path holds the operator's credential;
/// `media-worker deliveries` shows operators both.
#[tokio::test]
async fn operator_webhook_urls_are_not_shown_to_callers() {
    require!(media_tools());
    let mut d = Deployment::local().await;
    let down = closed_port_url();
    let operator = format!("{down}/services/T0000/B0000/operator-s3cret");
    with_webhooks(&mut d, &operator);
    let api = ApiServer::start_with(&d, &[]).await;
    let clip = d.path("clip.mp4");
    Clip::default().make(&clip);
    d.upload("uploads/hooks/clip.mp4", &clip).await;
    let mine = format!("{down}/my-hook");
    let request = json!({"input": {"key": "uploads/hooks/clip.mp4"}, "outputs": [{"preset": "thumbnail"}],
                         "notify": {"url": mine}});
    let (status, created) = api.json(reqwest::Method::POST, "/v1/jobs", Some(request)).await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap().to_string();
    d.drain().await;

    let (status, view) = api.json(reqwest::Method::GET, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!((status, view["state"].as_str()), (200, Some("completed")), "{view}");
    let attempts = view["deliveries"]["attempts"].as_array().expect("the job's own deliveries").clone();
    assert!(!attempts.is_empty(), "the job's own endpoint was tried: {view}");
    for attempt in &attempts {
        assert_eq!(attempt["endpoint"].as_str(), Some(mine.as_str()), "{attempt}");
    }
    let text = view.to_string();
    assert!(!text.contains("operator-s3cret") && !text.contains("/services/"), "the operator's URL leaked: {text}");

    let (out, ok) = cli(&d, &["deliveries", &job_id, "--json"]).await;
    assert!(ok, "{out}");
    let record: Value = serde_json::from_str(&out).expect("the delivery record");
    let audiences: Vec<(&str, &str)> = record["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["endpoint"].as_str().unwrap(), a["audience"].as_str().unwrap()))
        .collect();
    assert!(audiences.contains(&(operator.as_str(), "deployment")), "{audiences:?}");
    assert!(audiences.contains(&(mine.as_str(), "job")), "{audiences:?}");
}

/// The worker stores `completed` while the queue its events go to is stuck (its database
/// locked), and is told to stop with a 1 s grace right then: the manifest the status names
/// stays, and the events go out once the queue answers again.
#[tokio::test]
async fn a_completed_job_keeps_its_manifest_through_a_stuck_queue_and_a_shutdown() {
    require!(media_tools());
    let mut d = Deployment::local().await;
    with_webhooks(&mut d, &closed_port_url());
    let clip = d.path("clip.mp4");
    Clip { seconds: 4.0, ..Clip::default() }.make(&clip);
    let mut worker = d.spawn_worker("committer", &[("MEDIA_SHUTDOWN_GRACE", "1s")]);
    let key = "uploads/commit/clip.mp4";
    d.upload(key, &clip).await;
    wait_until("the job runs", Duration::from_secs(60), async || {
        d.status_for_source(key).await.filter(|s| s.state == JobState::Running)
    })
    .await;

    // Every write to the queue database waits behind this transaction.
    let db = rusqlite::Connection::open(Path::new(&d.vars["MEDIA_DATA_DIR"]).join("queue.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let completed = wait_until("the job completes", Duration::from_secs(120), async || {
        d.status_for_source(key).await.filter(|s| s.state.is_terminal())
    })
    .await;
    assert_eq!(completed.state, JobState::Completed, "{:?}", completed.error);
    sigterm(&worker);
    tokio::time::sleep(Duration::from_secs(2)).await;
    db.execute_batch("ROLLBACK").unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(60), worker.wait()).await.expect("the worker stops");
    assert!(exit.unwrap().success(), "{}", d.worker_log("committer"));

    let manifest = completed.manifest_key.clone().expect("a completed status names its manifest");
    assert_eq!(manifest, manifest_key(&completed.job.output_dir));
    let stored = d.json(&manifest).await;
    assert_eq!(stored["job_id"].as_str(), Some(completed.job_id.as_str()), "{stored}");
    assert_eq!(d.store().read(&completed.job_id).await.unwrap().map(|s| s.state), Some(JobState::Completed));
}

/// A job that does not fit the scratch disk *now* is offered again as a new message, so its
/// declines spend none of its receives: declined many more times than `MEDIA_MAX_RECEIVES`, it
/// runs once the space is free. One that cannot fit the disk at all fails at once, with
/// `source_too_large`.
#[tokio::test]
async fn declines_for_scratch_space_spend_no_deliveries() {
    require!(media_tools());
    let Some(disk) = TinyScratch::mount(160) else { return };
    let d = Deployment::local().await;
    let clip = d.path("clip.mp4");
    Clip { seconds: 3.0, ..Clip::default() }.make(&clip);
    // 110 of the 160 MiB taken: the job's estimate (twice the source, and 64 MiB) does not fit.
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 110 << 20]).unwrap();
    let scratch = disk.path().display().to_string();
    let settings = [("MEDIA_WORK_DIR", scratch.as_str()), ("MEDIA_MAX_RECEIVES", "2")];
    let mut worker = d.spawn_worker("cramped", &settings);
    d.upload("uploads/cramped/clip.mp4", &clip).await;
    wait_until("five declines", Duration::from_secs(60), async || {
        (d.worker_log("cramped").matches("Not enough scratch space").count() >= 5).then_some(())
    })
    .await;
    assert!(d.status_for_source("uploads/cramped/clip.mp4").await.is_none(), "a declined job did not start");
    std::fs::remove_file(&ballast).unwrap();
    let status = wait_until("the job ends", Duration::from_secs(120), async || {
        d.status_for_source("uploads/cramped/clip.mp4").await.filter(|s| s.state.is_terminal())
    })
    .await;
    assert_eq!(status.state, JobState::Completed, "{:?}", status.error);

    // Larger than the whole disk can ever hold: 50 MiB of source needs 164 MiB.
    let big = d.path("big.mp4");
    std::fs::write(&big, vec![7u8; 50 << 20]).unwrap();
    d.upload("uploads/cramped/big.mp4", &big).await;
    let failed = wait_until("the big job fails", Duration::from_secs(60), async || {
        d.status_for_source("uploads/cramped/big.mp4").await.filter(|s| s.state.is_terminal())
    })
    .await;
    assert_eq!(failed.error.map(|e| e.code), Some("source_too_large".to_string()));
    // The status is written before the message is dead-lettered: wait for the letter, then stop.
    wait_until("the big job's dead letter", Duration::from_secs(60), async || {
        let counts = d.queues().dead_letter.counts().await.expect("counts");
        (counts.total() > 0).then_some(())
    })
    .await;
    worker.start_kill().ok();
    worker.wait().await.ok();
    let letters = d.dead_letters().await;
    assert_eq!(letters.len(), 1, "only the job that can never fit: {letters:?}");
    assert_eq!(letters[0].attributes.get("reason").map(String::as_str), Some("source_too_large"));
}

/// The pids of the ffmpeg processes encoding segment `index` of a split job now.
fn segment_encoders(d: &Deployment, index: u32) -> Vec<u32> {
    // The deployment's own scratch folder: tests running beside this one have segments too.
    let scratch = d.dir.path().to_string_lossy().into_owned();
    let marker = format!("-s{index}-");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_ffmpeg = args.first().is_some_and(|a| a.ends_with("ffmpeg"));
        if is_ffmpeg && args.iter().any(|a| a.starts_with(&scratch) && a.contains(&marker) && a.ends_with("piece.nut"))
        {
            pids.push(pid);
        }
    }
    pids
}

/// One segment's ffmpeg is killed three times (a passing fault: the OOM killer, a noisy
/// neighbour) with `MEDIA_MAX_RECEIVES=3`: the segment is tried again with back-off, and the
/// job completes, as a job that is not split does.
#[tokio::test]
async fn a_passing_fault_in_one_segment_does_not_fail_the_job() {
    require!(media_tools());
    let d = Deployment::local().await;
    let source = d.path("film.mp4");
    Clip { seconds: 40.0, width: 1280, height: 720, keyframe_interval: Some(25), ..Clip::default() }.make(&source);
    let settings = [
        ("MEDIA_SPLIT_MIN_DURATION", "10s"),
        ("MEDIA_SEGMENT_DURATION", "5s"),
        ("MEDIA_MAX_RECEIVES", "3"),
        ("MEDIA_MAX_ATTEMPTS", "5"),
    ];
    let mut worker = d.spawn_worker("flaky", &settings);
    let key = "uploads/flaky/film.mp4";
    d.upload(key, &source).await;
    for kill in 1..=3 {
        let pids = wait_until(&format!("segment 3's encode, try {kill}"), Duration::from_secs(180), async || {
            Some(segment_encoders(&d, 2)).filter(|p| !p.is_empty())
        })
        .await;
        for pid in pids {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        wait_until("the killed encode to end", Duration::from_secs(30), async || {
            segment_encoders(&d, 2).is_empty().then_some(())
        })
        .await;
    }
    let status = wait_until("the job ends", Duration::from_secs(300), async || {
        d.status_for_source(key).await.filter(|s| s.state.is_terminal())
    })
    .await;
    let log = d.worker_log("flaky");
    assert_eq!(status.state, JobState::Completed, "{:?}\n{log}", status.error);
    assert!(log.matches("Segment failed; it will be tried again.").count() >= 3, "{log}");
    let manifest = d.json(&manifest_key(&status.job.output_dir)).await;
    assert_eq!(manifest["split"]["segments"].as_u64(), Some(8), "{manifest}");
    // Cleared right after the completion is stored.
    wait_until("the split folder is cleared", Duration::from_secs(30), async || {
        d.storage().list(&split_dir(&status.job.output_dir)).await.unwrap().is_empty().then_some(())
    })
    .await;
    worker.start_kill().ok();
    worker.wait().await.ok();
}

/// `dead-letters redrive --all` resubmits a failed job under an id derived from it; run again
/// after an interruption that left the dead letter in place, it makes no second job.
#[tokio::test]
async fn a_second_redrive_makes_no_second_job() {
    require!(media_tools());
    let d = Deployment::local().await;
    let not_media = d.path("notes.mp4");
    std::fs::write(&not_media, b"these are notes, not a video").unwrap();
    let key = "uploads/redrive/notes.mp4";
    d.upload(key, &not_media).await;
    d.drain().await;
    let failed = jobs_of(&d, key).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].error.as_ref().map(|e| e.code.as_str()), Some("not_media"));
    // What the redrive reads, kept to play the interruption: the letter still there after.
    let letter = receive_all(d.queues().dead_letter.as_ref()).await.pop().expect("one dead letter");
    d.queues().dead_letter.change_visibility(&letter.receipt, Duration::ZERO).await.unwrap();

    let (out, ok) = cli(&d, &["dead-letters", "redrive", "--all", "--json"]).await;
    assert!(ok, "{out}");
    let first: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(first[0]["action"], "resubmitted", "{first}");
    let new_id = first[0]["job_id"].as_str().unwrap().to_string();
    assert_eq!(d.queues().dead_letter.counts().await.unwrap().total(), 0, "the letter is gone");

    let mut options = SendOptions::default();
    for (name, value) in &letter.attributes {
        options = options.with_attribute(name, value.clone());
    }
    d.queues().dead_letter.send(&letter.body, options).await.unwrap();
    let (out, ok) = cli(&d, &["dead-letters", "redrive", "--all", "--json"]).await;
    assert!(ok, "{out}");
    let second: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (second[0]["action"].as_str(), second[0]["job_id"].as_str()),
        (Some("resubmitted"), Some(new_id.as_str()))
    );
    assert_eq!(jobs_of(&d, key).await.len(), 2, "the failed job and one redriven job");
    assert_eq!(d.queues().ready.counts().await.unwrap().total(), 1, "one message for the redriven job");
    assert_eq!(d.queues().dead_letter.counts().await.unwrap().total(), 0);
}

/// A source carrying eight 16 MiB tags: ffprobe is asked for the fields the worker reads only,
/// so the worker's memory stays flat and the job completes.
#[tokio::test]
async fn huge_tags_do_not_reach_the_worker() {
    require!(media_tools());
    let d = Deployment::local().await;
    let clip = d.path("clip.mp4");
    Clip { seconds: 3.0, ..Clip::default() }.make(&clip);
    let meta = d.path("meta.txt");
    let mut text = String::from(";FFMETADATA1\n");
    for i in 0..8 {
        text.push_str(&format!("tag{i}="));
        text.push_str(&"a".repeat(16 << 20));
        text.push('\n');
    }
    std::fs::write(&meta, text).unwrap();
    let tagged = d.path("tagged.mkv");
    let made = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(&clip)
        .arg("-i")
        .arg(&meta)
        .args(["-map_metadata", "1", "-c", "copy"])
        .arg(&tagged)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::remove_file(&meta).unwrap();
    assert!(std::fs::metadata(&tagged).unwrap().len() > 128 << 20, "the tags are in the file");

    let mut worker = d.spawn_worker("tagged", &[]);
    let pid = worker.id().unwrap();
    d.upload("uploads/tags/tagged.mkv", &tagged).await;
    let status = wait_until("the job ends", Duration::from_secs(120), async || {
        d.status_for_source("uploads/tags/tagged.mkv").await.filter(|s| s.state.is_terminal())
    })
    .await;
    let peak = peak_rss_kib(pid);
    worker.start_kill().ok();
    worker.wait().await.ok();
    assert_eq!(status.state, JobState::Completed, "{:?}", status.error);
    eprintln!("worker peak RSS: {} MiB", peak >> 10);
    assert!(peak < 256 << 10, "the worker peaked at {} MiB", peak >> 10);
}

/// A raw H.264 stream says nothing of its length: the transcode stops at `MEDIA_MAX_DURATION`
/// (and a margin) and the job fails `duration_too_long`, with no output kept.
#[tokio::test]
async fn a_source_without_a_length_cannot_run_past_the_limit() {
    require!(media_tools());
    let d = Deployment::local().await;
    let raw = d.path("stream.h264");
    let made = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=25:duration=60")
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-f", "h264"])
        .arg(&raw)
        .status()
        .unwrap();
    assert!(made.success());
    d.upload("uploads/raw/stream.h264", &raw).await;
    let logs = d.drain_with(&[("MEDIA_MAX_DURATION", "20s")]).await;
    let status = d.status_for_source("uploads/raw/stream.h264").await.expect("a job");
    assert_eq!(status.error.as_ref().map(|e| e.code.as_str()), Some("duration_too_long"), "{logs}");
    let left = d.storage().list(&status.job.output_dir).await.unwrap();
    assert!(left.is_empty(), "nothing kept: {left:?}");
}

/// Worker ids default to an opaque id, never the host name, in status and manifest alike.
#[tokio::test]
async fn tenants_see_an_opaque_worker_id() {
    require!(media_tools());
    let d = Deployment::local().await;
    let clip = d.path("clip.mp4");
    Clip::default().make(&clip);
    d.upload("uploads/opaque/clip.mp4", &clip).await;
    let logs = d.drain().await;
    let status = d.status_for_source("uploads/opaque/clip.mp4").await.unwrap();
    let worker = status.worker.clone().expect("a worker id");
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
    let opaque = worker.len() == 14 && worker.starts_with("w-") && worker[2..].bytes().all(|b| b.is_ascii_hexdigit());
    assert!(opaque, "{worker}");
    assert!(host.is_empty() || !worker.contains(&host), "{worker}");
    let manifest = d.json(&manifest_key(&status.job.output_dir)).await;
    assert_eq!(manifest["worker"].as_str(), Some(worker.as_str()));
    assert!(logs.contains(&format!("host={host}")) || host.is_empty(), "operators find the host in the log");
}

/// A manifest is no authority on what may be signed: a file it lists outside its job's folder
/// gets no download URL. A segment message naming a folder that is not its job's is
/// dead-lettered, and nothing is written there.
#[tokio::test]
async fn downloads_and_segments_keep_to_the_jobs_folder() {
    require!(media_tools());
    let d = Deployment::local().await;
    let api = ApiServer::start_with(&d, &[]).await;
    let clip = d.path("clip.mp4");
    Clip::default().make(&clip);
    d.upload("uploads/own/clip.mp4", &clip).await;
    d.upload("uploads/other/secret.mp4", &clip).await;
    d.drain().await;
    let status = d.status_for_source("uploads/own/clip.mp4").await.unwrap();
    let key = manifest_key(&status.job.output_dir);
    let mut manifest = d.json(&key).await;
    manifest["outputs"][0]["files"].as_array_mut().unwrap().push(json!("uploads/other/secret.mp4"));
    d.storage().put_bytes(&key, serde_json::to_vec(&manifest).unwrap(), "application/json").await.unwrap();
    let (code, view) = api.json(reqwest::Method::GET, &format!("/v1/jobs/{}", status.job_id), None).await;
    assert_eq!(code, 200, "{view}");
    let downloads: Vec<&str> =
        view["downloads"].as_array().unwrap().iter().map(|d| d["key"].as_str().unwrap()).collect();
    assert!(!downloads.is_empty());
    assert!(downloads.iter().all(|k| k.starts_with(&status.job.output_dir)), "{downloads:?}");

    let elsewhere = "outputs/elsewhere/";
    let task =
        SegmentTask { job_id: status.job_id.clone(), output_dir: elsewhere.into(), index: 0, count: 2, tries: 0 };
    d.queues().ready.send(&SegmentMessage::new(task).to_json(), SendOptions::default()).await.unwrap();
    d.drain().await;
    assert!(d.storage().list(elsewhere).await.unwrap().is_empty(), "nothing written where the message pointed");
    let reasons: Vec<String> =
        d.dead_letters().await.iter().filter_map(|l| l.attributes.get("reason").cloned()).collect();
    assert_eq!(reasons, vec!["segment_mismatch".to_string()]);
    let _ = TOKEN;
}

/// Every ending clears a split job's `split/` folder: a job cancelled while it waits for its
/// next attempt (no run to do it), and a job whose worker died on its last attempt (the reaper
/// fails it).
#[tokio::test]
async fn every_ending_clears_the_split_folder() {
    require!(media_tools());
    let d = Deployment::local().await;
    let api = ApiServer::start_with(&d, &[]).await;
    let clip = d.path("clip.mp4");
    Clip::default().make(&clip);
    d.upload("uploads/ends/clip.mp4", &clip).await;

    // Queued, with what an earlier attempt left (its pieces): cancelled through the API.
    let request = json!({"input": {"key": "uploads/ends/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}]});
    let (code, created) = api.json(reqwest::Method::POST, "/v1/jobs", Some(request)).await;
    assert_eq!(code, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap();
    let folder = created["output_dir"].as_str().unwrap().to_string();
    d.storage().put_bytes(&record_key(&folder), b"{}".to_vec(), "application/json").await.unwrap();
    d.storage().put_bytes(&format!("{}piece-0.nut", split_dir(&folder)), vec![0; 64], "video/x-nut").await.unwrap();
    let (code, cancelled) = api.json(reqwest::Method::DELETE, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!((code, cancelled["state"].as_str()), (202, Some("cancelled")), "{cancelled}");
    assert!(d.storage().list(&folder).await.unwrap().is_empty(), "the cancelled job's folder is cleared");

    // Its worker killed on the last attempt: the reaper fails it, and clears its folder.
    let long = d.path("long.mp4");
    Clip { seconds: 30.0, width: 640, height: 360, keyframe_interval: Some(25), ..Clip::default() }.make(&long);
    let spec = job("dies", "uploads/ends/long.mp4", vec![OutputRequest::new(Preset::Mp4H264)]);
    d.upload(&spec.source_key, &long).await;
    submit(&d, &spec).await;
    let settings = [
        ("MEDIA_SPLIT_MIN_DURATION", "10s"),
        ("MEDIA_SEGMENT_DURATION", "5s"),
        ("MEDIA_MAX_ATTEMPTS", "1"),
        ("MEDIA_CONCURRENCY", "1"),
    ];
    let mut doomed = d.spawn_worker("doomed", &settings);
    wait_until("the job is split", Duration::from_secs(120), async || {
        d.storage().head(&record_key(&spec.output_dir)).await.unwrap()
    })
    .await;
    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();
    d.drain_with(&settings).await;
    let ended = d.store().read("dies").await.unwrap().unwrap();
    assert_eq!(ended.error.as_ref().map(|e| e.code.as_str()), Some("worker_lost"), "{ended:?}");
    let left = d.storage().list(&split_dir(&spec.output_dir)).await.unwrap();
    assert!(left.is_empty(), "the failed job's split folder is cleared: {left:?}");
}

/// Anonymous mode is never a default: without tokens `media-api` refuses to start, even on
/// loopback, naming the setting.
#[tokio::test]
async fn the_api_refuses_to_start_without_tokens_on_loopback() {
    let d = Deployment::local().await;
    let started = tokio::process::Command::new(env!("CARGO_BIN_EXE_media-api"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&d.vars)
        .env("MEDIA_API_ADDR", "127.0.0.1:0")
        .current_dir(d.path(""))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), started)
        .await
        .expect("media-api refuses to start rather than serving without tokens")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("MEDIA_API_TOKENS") && stderr.contains("MEDIA_API_ALLOW_ANONYMOUS"), "{stderr}");
}
