//! The job lifecycle under races, on both backends: every interleaving that used to lose or
//! mix work, driven deterministically through the store and the steppable worker.

use std::time::{Duration, Instant};

use media_worker::domain::job::{JobMessage, JobSpec};
use media_worker::domain::status::{ErrorInfo, JobState, Stage};
use media_worker::jobs::{Applied, Attempt, AttemptError, Event, JobStore, Refused};
use media_worker::queue::SendOptions;
use media_worker::worker::Worker;

use crate::require;
use crate::support::{Clip, Deployment, Kind, emulator, media_tools};

fn backend(kind: Kind) -> bool {
    kind == Kind::Local || emulator()
}

fn spec(job_id: &str) -> JobSpec {
    JobSpec {
        job_id: job_id.into(),
        source_key: "uploads/a.mp4".into(),
        outputs: vec![media_worker::domain::job::OutputRequest::new(media_worker::domain::preset::Preset::Mp4H264)],
        output_dir: format!("outputs/a.mp4/{job_id}/"),
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

async fn start(store: &JobStore, job: &JobSpec, attempt: u32, run: &str, max_attempts: u32) -> Attempt {
    match Attempt::start(store, job, attempt, run, &format!("worker-{run}"), max_attempts).await.expect("store") {
        Ok(attempt) => attempt,
        Err(refused) => panic!("start {run} refused: {refused}"),
    }
}

fn lost(result: Result<impl std::fmt::Debug, AttemptError>) -> Refused {
    match result {
        Err(AttemptError::Lost(reason)) => reason,
        other => panic!("expected the run to have lost the job, got {other:?}"),
    }
}

/// A slow attempt wakes up after the reaper gave its job to a newer one: none of its writes,
/// not even a completion, lands.
async fn a_stale_attempt_never_changes_a_newer_one(kind: Kind) {
    require!(backend(kind));
    let d = Deployment::new(kind).await;
    let store = d.store();
    let job = spec("stale");
    let slow = start(&store, &job, 1, "r1", 3).await;
    slow.stage(Stage::Transcoding).await.unwrap();
    // The reaper found r1 silent (a zero timeout makes any heartbeat stale).
    let recover = Event::Recover { run: "r1".into(), heartbeat_timeout: Duration::ZERO };
    let Applied::Done { status, .. } = store.apply("stale", &recover).await.unwrap() else { panic!("recover refused") };
    assert_eq!((status.state, status.attempt, status.handover_pending), (JobState::Retrying, 2, true));
    let newer = start(&store, &job, 2, "r2", 3).await;
    newer.stage(Stage::Transcoding).await.unwrap();

    assert_eq!(lost(slow.heartbeat().await), Refused::Superseded);
    assert_eq!(lost(slow.stage(Stage::Finalizing).await), Refused::Superseded);
    assert_eq!(lost(slow.complete("outputs/a.mp4/stale/manifest.json").await), Refused::Superseded);
    let error = ErrorInfo { code: "storage".into(), message: "x".into(), retryable: true };
    assert_eq!(lost(slow.retry(error, Duration::ZERO).await), Refused::Superseded);
    // A late duplicate of attempt 1's message cannot start either.
    let late = Attempt::start(&store, &job, 1, "r3", "w", 3).await.unwrap();
    assert!(matches!(late, Err(Refused::InProgress)), "{:?}", late.err());

    newer.stage(Stage::Finalizing).await.unwrap();
    let done = newer.complete("outputs/a.mp4/stale/manifest.json").await.unwrap();
    assert_eq!((done.state, done.attempt, done.run.as_deref()), (JobState::Completed, 2, Some("r2")));
    assert_eq!(store.read("stale").await.unwrap(), Some(done));
}

/// The reaper fails the last attempt while its slow worker heartbeats at the same instant:
/// whichever write lands first, the job ends failed and stays failed.
async fn the_reaper_failing_the_last_attempt_beats_a_slow_heartbeat(kind: Kind) {
    require!(backend(kind));
    let d = Deployment::new(kind).await;
    let store = d.store();
    for round in 0..5 {
        let id = format!("last-{round}");
        let slow = start(&store, &spec(&id), 1, "r1", 1).await;
        let recover = Event::Recover { run: "r1".into(), heartbeat_timeout: Duration::ZERO };
        let (reaped, beat) = tokio::join!(store.apply(&id, &recover), slow.heartbeat());
        let reaped = reaped.unwrap();
        assert!(matches!(&reaped, Applied::Done { status, .. } if status.state == JobState::Failed), "{reaped:?}");
        // The heartbeat either landed before the failure, or lost to it; never after it.
        if let Err(err) = beat {
            assert!(matches!(err, AttemptError::Lost(Refused::Ended(JobState::Failed))), "{err:?}");
        }
        assert_eq!(lost(slow.heartbeat().await), Refused::Ended(JobState::Failed));
        let status = store.read(&id).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Failed);
        assert_eq!(status.error.map(|e| e.code), Some("worker_lost".into()));
    }
}

/// A cancel and a completion at the same instant: exactly one wins, and the loser changes
/// nothing.
async fn cancel_racing_completion_has_one_winner(kind: Kind) {
    require!(backend(kind));
    let d = Deployment::new(kind).await;
    let store = d.store();
    let (mut cancels, mut completions) = (0, 0);
    for round in 0..8 {
        let id = format!("race-{round}");
        let run = start(&store, &spec(&id), 1, "r1", 3).await;
        run.stage(Stage::Uploading).await.unwrap();
        let cancel = Event::Cancel { note: "cancel requested".into() };
        let finish = async {
            run.stage(Stage::Finalizing).await?;
            run.complete(&format!("outputs/a.mp4/{id}/manifest.json")).await
        };
        let (cancelled, completed) = tokio::join!(store.apply(&id, &cancel), finish);
        let final_state = store.read(&id).await.unwrap().unwrap().state;
        match (cancelled.unwrap(), completed) {
            (Applied::Done { .. }, Err(AttemptError::Lost(Refused::Ended(JobState::Cancelled)))) => {
                assert_eq!(final_state, JobState::Cancelled);
                cancels += 1;
            }
            (Applied::Refused { reason, .. }, Ok(status)) => {
                assert!(matches!(reason, Refused::Finishing | Refused::Ended(JobState::Completed)), "{reason}");
                assert_eq!((status.state, final_state), (JobState::Completed, JobState::Completed));
                completions += 1;
            }
            (cancelled, completed) => panic!("both or neither won: {cancelled:?} / {completed:?}"),
        }
    }
    eprintln!("cancel won {cancels} times, completion {completions} times");
}

/// Eight copies of one message start at the same instant: exactly one run owns the job.
async fn concurrent_starts_have_one_winner(kind: Kind) {
    require!(backend(kind));
    let d = Deployment::new(kind).await;
    let store = d.store();
    let job = spec("crowd");
    let starts = (0..8).map(|i| {
        let (store, job) = (store.clone(), job.clone());
        tokio::spawn(async move { Attempt::start(&store, &job, 1, &format!("r{i}"), "w", 3).await })
    });
    let mut winners = 0;
    for start in starts {
        match start.await.unwrap().unwrap() {
            Ok(_) => winners += 1,
            Err(refused) => assert_eq!(refused, Refused::InProgress),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(store.read("crowd").await.unwrap().unwrap().state, JobState::Running);
}

/// Two workers receive copies of one job message at the same instant: exactly one runs ffmpeg,
/// the job completes once, and the other copy is dropped.
async fn two_workers_one_message_one_transcode(kind: Kind) {
    require!(media_tools() && backend(kind));
    let d = Deployment::new(kind).await;
    let source = d.path("clip.mp4");
    Clip::default().make(&source);
    let key = "elsewhere/clip.mp4";
    d.upload(key, &source).await;
    let job = JobSpec {
        job_id: "twice".into(),
        source_key: key.into(),
        outputs: vec![media_worker::domain::job::OutputRequest::new(media_worker::domain::preset::Preset::Mp4H264)],
        output_dir: "outputs/elsewhere/clip.mp4/twice/".into(),
        source: Default::default(),
        notify: None,
        split: None,
        import: None,
        qc: None,
        loudness: None,
        repackage: None,
        watermark: None,
    };
    let message = JobMessage::new(job, 1).to_json();
    for _ in 0..2 {
        d.queues().ready.send(&message, SendOptions::default()).await.unwrap();
    }
    let config = |name: &str| {
        let mut config = d.config();
        config.worker_id = name.into();
        config.concurrency = 1;
        config
    };
    let first = Worker::new(config("first"), d.backend.clone());
    let second = Worker::new(config("second"), d.backend.clone());
    let (a, b) = tokio::join!(first.poll_once(), second.poll_once());
    // (On S3 the bucket's s3:TestEvent is received too.)
    assert!(a.unwrap() + b.unwrap() >= 2, "both copies were received");
    let deadline = Instant::now() + Duration::from_secs(120);
    while first.running() + second.running() > 0 {
        assert!(Instant::now() < deadline, "the job never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (one, two) = (first.summary(), second.summary());
    assert_eq!(one.started + two.started, 1, "exactly one ffmpeg run: {one:?} {two:?}");
    assert_eq!(one.skipped + two.skipped, 1, "the other copy was dropped");
    assert_eq!(one.completed + two.completed, 1);
    let status = d.store().read("twice").await.unwrap().unwrap();
    assert_eq!(status.state, JobState::Completed);
    assert_eq!(status.timeline.iter().filter(|e| e.state == JobState::Completed).count(), 1);
    assert_eq!(d.queues().ready.counts().await.unwrap().total(), 0);
}

/// Short stages cost no write of their own: they are written together, each with the time it
/// was entered, by the next write (here `Finalizing`, which is written at once), or by the
/// worker once a stage has lasted `STAGE_WRITE_DELAY`.
async fn short_stages_are_written_together(kind: Kind) {
    require!(backend(kind));
    let d = Deployment::new(kind).await;
    let store = d.store();
    let run = start(&store, &spec("stages"), 1, "r1", 3).await;
    for stage in [Stage::Probing, Stage::Transcoding, Stage::Uploading] {
        run.stage(stage).await.unwrap();
    }
    assert_eq!(store.read("stages").await.unwrap().unwrap().stage, Stage::Downloading, "nothing written yet");
    run.stage_settled().await;
    run.flush().await.unwrap();
    assert_eq!(store.read("stages").await.unwrap().unwrap().stage, Stage::Uploading);
    run.stage(Stage::Finalizing).await.unwrap();
    let status = store.read("stages").await.unwrap().unwrap();
    let stages: Vec<Stage> = status.timeline.iter().map(|e| e.stage).collect();
    assert_eq!(
        stages,
        [Stage::Queued, Stage::Downloading, Stage::Probing, Stage::Transcoding, Stage::Uploading, Stage::Finalizing]
    );
    assert!(status.timeline.windows(2).all(|w| w[0].at <= w[1].at), "{:?}", status.timeline);
    // A run that ends (here by failing) writes what it had not yet.
    let run = start(&store, &spec("stages-failed"), 1, "r1", 1).await;
    run.stage(Stage::Probing).await.unwrap();
    let error = ErrorInfo { code: "not_media".into(), message: "x".into(), retryable: false };
    let failed = run.fail(error).await.unwrap();
    assert!(failed.timeline.iter().any(|e| e.stage == Stage::Probing), "{:?}", failed.timeline);
}

crate::on_both_backends!(
    short_stages_are_written_together,
    a_stale_attempt_never_changes_a_newer_one,
    the_reaper_failing_the_last_attempt_beats_a_slow_heartbeat,
    cancel_racing_completion_has_one_winner,
    concurrent_starts_have_one_winner,
    two_workers_one_message_one_transcode,
);

/// `/readyz` reports a poll loop that stopped completing cycles (a call that stopped answering
/// would do that): not live once `MEDIA_POLL_STALL_TIMEOUT` passes without a cycle, live again
/// after one.
#[tokio::test]
async fn a_stalled_poll_loop_is_reported() {
    let d = Deployment::new(Kind::Local).await;
    let mut config = d.config();
    config.poll_stall_timeout = Duration::from_millis(300);
    let worker = Worker::new(config, d.backend.clone());
    assert!(worker.poll_loop_is_live(), "a worker that just started counts as live");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!worker.poll_loop_is_live());
    // Something to receive, so the cycle does not long-poll an empty queue.
    let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#;
    d.queues().ready.send(test_event, SendOptions::default()).await.unwrap();
    worker.poll_once().await.unwrap();
    assert!(worker.poll_loop_is_live());
}
