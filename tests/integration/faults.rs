//! Faults seen in production, against the real `media-worker` binary: sources that collide or
//! change under a job, identical re-uploads, S3 going away while SQS redelivers, a network that
//! silently drops packets, and a scratch disk that is too small.

use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use media_worker::domain::job::{JobMessage, JobSpec, OutputRequest};
use media_worker::domain::preset::Preset;
use media_worker::domain::status::{JobState, JobStatus};
use media_worker::jobs::Event;
use media_worker::queue::{Queue, SendOptions};

use crate::faults_support::{BlackHoleProxy, TinyScratch, closed_port_url, socket_addr};
use crate::require;
use crate::support::{Clip, Deployment, Kind, ffprobe, moto_endpoint, stream};
use crate::worker::{assert_mp4_h264, start_worker_until_transcoding, tools, upload_long_clip};

/// Every job made from `source_key`, oldest first.
async fn jobs_for_source(d: &Deployment, source_key: &str) -> Vec<JobStatus> {
    d.jobs_for_source(source_key).await
}

async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    crate::support::wait_until(what, limit, async || done().await.then_some(())).await
}

fn dims(path: &std::path::Path) -> (u64, u64) {
    let probe = ffprobe(path);
    let video = stream(&probe, "video").expect("video");
    (video["width"].as_u64().unwrap_or(0), video["height"].as_u64().unwrap_or(0))
}

/// `clip.mov` and `clip.mp4` in one folder: two jobs, two folders, each with its own outputs.
async fn same_stem_sources_never_share_outputs(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    let (mov, mp4) = (d.path("clip.mov"), d.path("clip.mp4"));
    Clip { format: "mov", ..Clip::default() }.make(&mov);
    Clip { width: 256, height: 144, ..Clip::default() }.make(&mp4);
    d.upload("uploads/trip/clip.mov", &mov).await;
    d.upload("uploads/trip/clip.mp4", &mp4).await;
    d.drain().await;

    let (a, b) =
        (d.status_for_source("uploads/trip/clip.mov").await, d.status_for_source("uploads/trip/clip.mp4").await);
    let (a, b) = (a.expect("a job for clip.mov"), b.expect("a job for clip.mp4"));
    assert_eq!((a.state, b.state), (JobState::Completed, JobState::Completed));
    assert_ne!(a.job.output_dir, b.job.output_dir);
    assert!(!a.job.output_dir.starts_with(&b.job.output_dir) && !b.job.output_dir.starts_with(&a.job.output_dir));
    for (status, want) in [(&a, (320, 240)), (&b, (256, 144))] {
        let manifest = d.json(status.manifest_key.as_deref().unwrap()).await;
        assert_eq!(manifest["source"]["key"], status.job.source_key.as_str());
        let output = d.download(manifest["outputs"][0]["key"].as_str().unwrap()).await;
        assert_eq!(dims(&output), want, "{}", status.job.source_key);
    }
}

/// The source is replaced while its first version transcodes: the first job ends with
/// `source_changed` and no manifest; the new write's own job makes the outputs, of the new bytes.
async fn a_source_replaced_mid_transcode(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    let key = upload_long_clip(&d).await;
    let mut worker = start_worker_until_transcoding(&d, key, "replaced", &[]).await;
    let second = d.path("second.mp4");
    Clip { width: 256, height: 144, ..Clip::default() }.make(&second);
    d.upload(key, &second).await;

    wait_until("both jobs to end", Duration::from_secs(120), async || {
        let jobs = jobs_for_source(&d, key).await;
        jobs.len() == 2 && jobs.iter().all(|s| s.state.is_terminal())
    })
    .await;
    worker.start_kill().ok();
    let log = std::fs::read_to_string(d.path("replaced.log")).unwrap_or_default();
    let jobs = jobs_for_source(&d, key).await;
    let (first, newer) = (&jobs[0], &jobs[1]);
    assert_eq!(first.state, JobState::Failed, "{log}");
    let error = first.error.as_ref().unwrap();
    assert_eq!((error.code.as_str(), error.retryable, first.attempt), ("source_changed", false, 1));
    assert!(d.storage().head(&format!("{}manifest.json", first.job.output_dir)).await.unwrap().is_none());

    assert_eq!(newer.state, JobState::Completed, "{log}");
    let manifest = d.json(newer.manifest_key.as_deref().unwrap()).await;
    let stored = d.storage().head(key).await.unwrap().unwrap();
    assert_eq!(
        manifest["source"]["etag"].as_str(),
        stored.etag.as_deref(),
        "the manifest names the bytes it transcoded"
    );
    let output = d.download(manifest["outputs"][0]["key"].as_str().unwrap()).await;
    assert_mp4_h264(&output, 256, 144, 2.0, true);
}

/// An upload completes, its outputs are deleted, the same bytes are uploaded again: that is a
/// new write, so a new job, which makes the outputs again.
async fn an_identical_reupload_is_a_new_job(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    let clip = d.path("clip.mp4");
    Clip::default().make(&clip);
    let key = "uploads/again/clip.mp4";
    d.upload(key, &clip).await;
    d.drain().await;
    let first = d.status_for_source(key).await.expect("the first job");
    assert_eq!(first.state, JobState::Completed);
    for object in d.storage().list(&first.job.output_dir).await.unwrap() {
        d.storage().delete(&object).await.unwrap();
    }
    d.store().apply(&first.job_id, &Event::OutputsDeleted { files: 2 }).await.unwrap();

    d.upload(key, &clip).await;
    d.drain().await;
    let jobs = jobs_for_source(&d, key).await;
    assert_eq!(jobs.len(), 2, "the re-upload is a job of its own");
    let second = &jobs[1];
    assert_ne!(second.job_id, first.job_id);
    assert_eq!(second.state, JobState::Completed);
    assert!(jobs[0].outputs_deleted_at.is_some());
    let output = d.download(&format!("{}attempt-1/mp4-h264.mp4", second.job.output_dir)).await;
    assert_mp4_h264(&output, 320, 240, 2.0, true);
}

/// The job ledger (DynamoDB) is unreachable while SQS keeps redelivering the upload's event:
/// the worker dead-letters it with `delivery_exhausted` before the queue's own redrive would
/// (and cannot record the job yet); once the ledger is back, the dead-letter sweep fails the
/// job with that reason. A message SQS's redrive moved by itself (no reason at all) gets the
/// same treatment.
async fn redrive_under_a_ledger_outage(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    let sqs = d.sqs.clone().expect("sqs client");
    let urls = (d.vars["MEDIA_READY_QUEUE_URL"].clone(), d.vars["MEDIA_DEAD_LETTER_QUEUE_URL"].clone());
    let dlq_arn = crate::support::queue_arn(&sqs, &urls.1).await;
    let policy = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}).to_string();
    sqs.set_queue_attributes()
        .queue_url(&urls.0)
        .attributes(QueueAttributeName::RedrivePolicy, policy)
        .send()
        .await
        .unwrap();

    let clip = d.path("clip.mp4");
    Clip::default().make(&clip);
    let key = "uploads/outage/clip.mp4";
    d.upload(key, &clip).await;
    let ledger_down = closed_port_url();
    let log = std::fs::File::create(d.path("outage.log")).unwrap();
    let mut outage = d
        .command(&["run"])
        .env("AWS_ENDPOINT_URL_DYNAMODB", &ledger_down)
        .env("MEDIA_VISIBILITY_TIMEOUT", "1s")
        .env("MEDIA_WORKER_ID", "outage")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let dead_letter = &d.queues().dead_letter;
    wait_until("the event to be dead-lettered", Duration::from_secs(90), async || {
        dead_letter.counts().await.unwrap().total() > 0
    })
    .await;
    outage.start_kill().ok();
    outage.wait().await.ok();
    let log = std::fs::read_to_string(d.path("outage.log")).unwrap_or_default();
    // At least once: a redelivery (1 s visibility) that overtakes the worker's slow failing
    // ledger calls is dead-lettered again, as the same job.
    let letters = dead_letter.receive(10, Duration::ZERO, Duration::from_secs(1)).await.unwrap();
    assert!(!letters.is_empty(), "{log}");
    for letter in &letters {
        assert!(letter.body.contains("clip.mp4"), "{}", letter.body);
        assert_eq!(letter.attributes.get("reason").map(String::as_str), Some("delivery_exhausted"), "{log}");
        assert_eq!(letter.attributes.get("job_state").map(String::as_str), Some("unrecorded"));
        dead_letter.change_visibility(&letter.receipt, Duration::ZERO).await.unwrap();
    }
    assert!(d.status_for_source(key).await.is_none(), "the ledger was down: nothing could be recorded");

    // A message the queue's redrive moved on its own: no attributes at all.
    let moved_key = "uploads/outage/moved.mp4";
    d.upload(moved_key, &clip).await;
    let ready = &d.queues().ready;
    let moved = wait_for_message(ready.as_ref(), moved_key).await;
    dead_letter.send(&moved, SendOptions::default()).await.unwrap();

    let logs = d.drain_with(&[("MEDIA_DEAD_LETTER_SWEEP", "1s")]).await;
    for source in [key, moved_key] {
        let status = d.status_for_source(source).await.unwrap_or_else(|| panic!("no job for {source}: {logs}"));
        assert_eq!(status.state, JobState::Failed, "{source}: {logs}");
        assert_eq!(status.error.as_ref().map(|e| e.code.as_str()), Some("delivery_exhausted"));
    }
    let letters = crate::support::receive_all(dead_letter.as_ref()).await;
    for file in ["clip.mp4", "moved.mp4"] {
        assert!(letters.iter().any(|l| l.body.contains(file)), "no dead letter for {file}");
    }
    for letter in &letters {
        assert_eq!(letter.attributes.get("reason").map(String::as_str), Some("delivery_exhausted"));
        assert_eq!(letter.attributes.get("job_state").map(String::as_str), Some("recorded"));
    }
}

/// Takes the upload event of `key` off the ready queue; returns its body.
async fn wait_for_message(queue: &dyn Queue, key: &str) -> String {
    // Stores differ in how much of the key they percent-encode; the file name is plain.
    let encoded = key.rsplit('/').next().unwrap_or(key);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for message in queue.receive(10, Duration::from_secs(1), Duration::from_secs(60)).await.unwrap() {
            if message.body.contains(encoded) {
                queue.delete(&message.receipt).await.unwrap();
                return message.body;
            }
        }
        assert!(Instant::now() < deadline, "no event for {key}");
    }
}

/// A network path that silently drops every packet for 25 s (no reset, no data): the worker's
/// calls time out, are retried on fresh connections, and work resumes once the path heals.
async fn a_black_hole_between_worker_and_emulator(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    let proxy = BlackHoleProxy::start(socket_addr(&moto_endpoint())).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = std::fs::File::create(d.path("holed.log")).unwrap();
    let _worker = d
        .command(&["run"])
        .env("AWS_ENDPOINT_URL", proxy.url())
        .env("MEDIA_WORKER_ID", "holed")
        .env("MEDIA_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let clip = d.path("clip.mp4");
    Clip::default().make(&clip);
    d.upload("uploads/net/before.mp4", &clip).await;
    let done = async |key: &str| d.status_for_source(key).await.is_some_and(|s| s.state == JobState::Completed);
    wait_until("the first job", Duration::from_secs(60), async || done("uploads/net/before.mp4").await).await;

    proxy.black_hole(Duration::from_secs(25));
    let holed_at = Instant::now();
    d.upload("uploads/net/during.mp4", &clip).await;
    // Well past the window plus one timed-out try of the long poll, it must have recovered.
    wait_until("the job uploaded during the outage", Duration::from_secs(120), async || {
        done("uploads/net/during.mp4").await
    })
    .await;
    let log = std::fs::read_to_string(d.path("holed.log")).unwrap_or_default();
    assert!(holed_at.elapsed() >= Duration::from_secs(20), "the job finished through a dead path?\n{log}");
    assert!(proxy.connections().swallowed + proxy.connections().frozen > 0, "the outage hit the worker");
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "ready again after the outage");
    eprintln!(
        "recovered {:.1} s after the path went dark: {:?}",
        holed_at.elapsed().as_secs_f64(),
        proxy.connections()
    );
}

/// A scratch disk too small for a job: with the source's size known, the job can never fit
/// this worker (the workers of a deployment being alike, nor any other) and fails at once as
/// `source_too_large` without spending an attempt; with it unknown, the transcode runs out of
/// space, which is a retryable `scratch_full`, never a permanent `transcode_failed`. (A job that
/// fits the disk but not its free space *now* waits: `hardening::declines_for_scratch_space`.)
async fn a_tiny_scratch_disk(kind: Kind) {
    require!(tools(kind));
    let Some(tiny) = TinyScratch::mount(1) else { return };
    let d = Deployment::new(kind).await;
    let clip = d.path("clip.mp4");
    Clip { seconds: 6.0, audio: false, ..Clip::default() }.make(&clip);
    let scratch = tiny.path().display().to_string();

    // Known size (the upload's event carries it): larger than the whole disk.
    d.upload("uploads/tiny/clip.mp4", &clip).await;
    d.drain_with(&[("MEDIA_WORK_DIR", scratch.as_str())]).await;
    let status = d.status_for_source("uploads/tiny/clip.mp4").await.expect("the job's status");
    let error = status.error.clone().expect("an error");
    assert_eq!((status.state, error.code.as_str()), (JobState::Failed, "source_too_large"), "{}", error.message);
    assert!(status.timeline.iter().all(|e| e.state != JobState::Running), "it never started");
    let letters = d.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attributes.get("reason").map(String::as_str), Some("source_too_large"));

    // Unknown size: a GIF larger than the disk.
    d.upload("elsewhere/clip.mp4", &clip).await;
    let job = JobSpec {
        job_id: "too-big".into(),
        source_key: "elsewhere/clip.mp4".into(),
        outputs: vec![OutputRequest { duration: Some(6.0), ..OutputRequest::new(Preset::Gif) }],
        output_dir: "outputs/elsewhere/clip.mp4/too-big/".into(),
        source: Default::default(),
        notify: None,
        split: None,
        import: None,
        qc: None,
        loudness: None,
        repackage: None,
        watermark: None,
    };
    d.queues().ready.send(&JobMessage::new(job, 1).to_json(), SendOptions::default()).await.unwrap();
    let logs = d.drain_with(&[("MEDIA_WORK_DIR", scratch.as_str())]).await;
    let status = d.store().read("too-big").await.unwrap().expect("the job's status");
    assert_eq!(status.state, JobState::Failed, "{logs}");
    let error = status.error.unwrap();
    assert_eq!((error.code.as_str(), error.retryable), ("scratch_full", true), "{}", error.message);
    assert_eq!(status.attempt, 3, "retried until attempts ran out");
}

crate::on_both_backends!(
    same_stem_sources_never_share_outputs,
    a_source_replaced_mid_transcode,
    an_identical_reupload_is_a_new_job
);

mod aws_only {
    use crate::support::Kind;

    #[tokio::test]
    async fn redrive_under_a_ledger_outage() {
        super::redrive_under_a_ledger_outage(Kind::Aws).await;
    }

    #[tokio::test]
    async fn a_black_hole_between_worker_and_emulator() {
        super::a_black_hole_between_worker_and_emulator(Kind::Aws).await;
    }
}

#[tokio::test]
async fn a_tiny_scratch_disk_on_the_local_backend() {
    a_tiny_scratch_disk(Kind::Local).await;
}
