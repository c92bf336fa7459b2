//! Webhooks end to end: a receiver on 127.0.0.1 (allowed by the development setting) verifies
//! every signature, records every request, and answers as each test tells it (500, 429 with
//! Retry-After, 410, or holding the answer until released).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use media_worker::domain::job::{JobSpec, NotifyTarget, OutputRequest};
use media_worker::domain::preset::Preset;
use media_worker::domain::status::JobState;
use media_worker::jobs::{self, Event};
use media_worker::notify::deliver::Dispatcher;
use media_worker::notify::event::{EventType, NotificationEvent};
use media_worker::notify::record;
use media_worker::notify::relay::Relay;
use media_worker::notify::sign::{Secret, Secrets};
use media_worker::outbound::{Guard, Limits, Lookup, Policy};
use media_worker::queue::Queue;
use tokio::sync::watch;

use crate::support::{Clip, Deployment, Kind, emulator, media_tools};
use crate::{on_both_backends, require};

/// How the receiver answers the `n`th request (from 1) of one webhook id at one path.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    RetryAfter(u16, u64),
    /// Holds the answer (200) until the receiver is released.
    Hold,
}

type Script = dyn Fn(&str, usize) -> Answer + Send + Sync;

#[derive(Debug, Clone)]
struct Delivery {
    path: String,
    id: String,
    body: Vec<u8>,
    valid: bool,
}

impl Delivery {
    fn event(&self) -> NotificationEvent {
        serde_json::from_slice(&self.body).expect("a notification event")
    }
}

struct Receiver {
    url: String,
    log: Arc<Mutex<Vec<Delivery>>>,
    arrivals: watch::Receiver<usize>,
    release: watch::Sender<bool>,
}

impl Receiver {
    async fn start(secrets: Secrets, script: Arc<Script>) -> Receiver {
        let log: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let (arrived, arrivals) = watch::channel(0usize);
        let (release, released) = watch::channel(false);
        let arrived = Arc::new(arrived);
        let handler = {
            let log = log.clone();
            move |uri: Uri, headers: HeaderMap, body: Bytes| {
                let (log, secrets, script, arrived, mut released) =
                    (log.clone(), secrets.clone(), script.clone(), arrived.clone(), released.clone());
                async move {
                    let header =
                        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                    let id = header("webhook-id");
                    let now = chrono::Utc::now().timestamp();
                    let valid = secrets
                        .verify(&id, &header("webhook-timestamp"), &body, &header("webhook-signature"), now, Some(300))
                        .is_ok();
                    let path = uri.path().to_string();
                    let nth = {
                        let mut log = log.lock().unwrap();
                        log.push(Delivery { path: path.clone(), id: id.clone(), body: body.to_vec(), valid });
                        log.iter().filter(|d| d.id == id && d.path == path).count()
                    };
                    arrived.send_modify(|n| *n += 1);
                    let answer: Response = match script(&path, nth) {
                        Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
                        Answer::RetryAfter(code, seconds) => {
                            (StatusCode::from_u16(code).unwrap(), [("retry-after", seconds.to_string())])
                                .into_response()
                        }
                        Answer::Hold => {
                            let _ = released.wait_for(|open| *open).await;
                            StatusCode::OK.into_response()
                        }
                    };
                    answer
                }
            }
        };
        let app = axum::Router::new().fallback(axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, log, arrivals, release }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (for a minute at most) until the deliveries satisfy `done`.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Delivery]) -> bool) {
        let mut arrivals = self.arrivals.clone();
        let waited = tokio::time::timeout(Duration::from_secs(60), async {
            while !done(&self.deliveries()) {
                arrivals.changed().await.unwrap();
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting for {what}: {:#?}", self.deliveries());
    }

    /// The event types each job received (in `sequence` order), and panics on any invalid
    /// signature or an id that is not the event's.
    fn events_by_job(&self) -> BTreeMap<String, Vec<NotificationEvent>> {
        let mut by_job: BTreeMap<String, Vec<NotificationEvent>> = BTreeMap::new();
        for delivery in self.deliveries() {
            assert!(delivery.valid, "invalid signature: {delivery:?}");
            let event = delivery.event();
            assert_eq!(event.id, delivery.id, "webhook-id is the event id");
            by_job.entry(event.data.job_id.clone()).or_default().push(event);
        }
        for events in by_job.values_mut() {
            events.sort_by_key(|e| e.sequence);
        }
        by_job
    }
}

fn kinds(events: &[NotificationEvent]) -> Vec<EventType> {
    events.iter().map(|e| e.kind).collect()
}

fn spec(job_id: &str, source_key: &str) -> JobSpec {
    JobSpec {
        job_id: job_id.into(),
        source_key: source_key.into(),
        outputs: vec![OutputRequest::new(Preset::Mp4H264)],
        output_dir: format!("outputs/notify/{job_id}/"),
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

/// Points the deployment's workers (and `d.config()`) at webhook endpoints on the receiver.
fn configure(d: &mut Deployment, secret: &str, urls: &str, extra: &[(&str, &str)]) {
    let mut vars = vec![
        ("MEDIA_WEBHOOK_URLS", urls.to_string()),
        ("MEDIA_WEBHOOK_SECRET", secret.to_string()),
        ("MEDIA_WEBHOOK_ALLOW_LOOPBACK", "true".into()),
        // No job.progress: the expected sequences stay exact however slow the machine is.
        ("MEDIA_NOTIFY_PROGRESS_INTERVAL", "1h".into()),
        ("MEDIA_WEBHOOK_RETRY_SCHEDULE", "0s,10ms,10ms,10ms,10ms".into()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    for (k, v) in vars {
        d.vars.insert(k.to_string(), v);
    }
}

fn secret() -> (String, Secrets) {
    let secret = Secret::generate();
    let secrets = Secrets::parse(&secret).unwrap();
    (secret, secrets)
}

/// Relays the outbox of `store` to the queue and hands the messages to `dispatcher` one by one,
/// until both are empty (delayed retries included).
async fn pump(store: &jobs::JobStore, d: &Deployment, dispatcher: &Dispatcher, queue: &Arc<dyn Queue>) {
    let relay = Relay::new(store.clone(), d.backend.storage.clone(), queue.clone());
    relay.relay_once().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "the notifications queue never emptied");
        let messages = queue.receive(10, Duration::from_secs(1), Duration::from_secs(60)).await.unwrap();
        for message in messages {
            dispatcher.handle(message).await;
        }
        if queue.counts().await.unwrap().total() == 0 {
            return;
        }
    }
}

on_both_backends!(every_ending_makes_its_events_in_order);

/// A completed, a failed and a cancelled job: exactly the expected events each, every
/// signature valid, through the real worker (and, on AWS, SQS on the emulator).
async fn every_ending_makes_its_events_in_order(kind: Kind) {
    require!(media_tools(), kind == Kind::Local || emulator());
    let (secret, secrets) = secret();
    let receiver = Receiver::start(secrets, Arc::new(|_: &str, _| Answer::Status(204))).await;
    let mut d = Deployment::new(kind).await;
    configure(&mut d, &secret, &format!("{}/hooks", receiver.url), &[]);
    let config = d.config();
    let store = media_worker::notify::job_store(&config, &d.backend);

    let clip = d.path("clip.mp4");
    Clip::default().make(&clip);
    d.upload("sources/notify/clip.mp4", &clip).await;
    d.storage().put_bytes("sources/notify/text.mp4", b"not media at all".to_vec(), "video/mp4").await.unwrap();
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let (done, failed, cancelled) =
        (format!("done-{suffix}"), format!("failed-{suffix}"), format!("cancelled-{suffix}"));
    let ready = d.queues().ready.clone();
    for (id, source) in [(&done, "sources/notify/clip.mp4"), (&failed, "sources/notify/text.mp4")] {
        jobs::submit(&store, ready.as_ref(), &spec(id, source), 3).await.unwrap();
    }
    jobs::submit(&store, ready.as_ref(), &spec(&cancelled, "sources/notify/clip.mp4"), 3).await.unwrap();
    store.apply(&cancelled, &Event::Cancel { note: "test".into() }).await.unwrap();

    d.drain().await;

    let by_job = receiver.events_by_job();
    use EventType::*;
    assert_eq!(kinds(&by_job[&done]), vec![Queued, Started, Completed], "{:#?}", by_job[&done]);
    assert_eq!(kinds(&by_job[&failed]), vec![Queued, Started, Failed]);
    assert_eq!(kinds(&by_job[&cancelled]), vec![Queued, Cancelled]);
    assert_eq!(receiver.deliveries().len(), 8, "each event once");

    let completed = &by_job[&done][2];
    let status = store.read(&done).await.unwrap().unwrap();
    assert_eq!(completed.data.state, JobState::Completed);
    assert_eq!(completed.data.manifest_key, status.manifest_key);
    let outputs = completed.data.outputs.as_ref().expect("outputs");
    assert_eq!(outputs.len(), 1);
    assert!(outputs[0].size > 0 && outputs[0].key.ends_with(".mp4"));
    assert_eq!((outputs[0].width, outputs[0].height), (Some(320), Some(240)));
    assert_eq!(outputs[0].video_codec.as_deref(), Some("h264"));
    let error = by_job[&failed][2].data.error.as_ref().expect("an error");
    assert_eq!((error.code.as_str(), error.retryable), ("not_media", false));

    // Every attempt is on record for GET /v1/jobs/{id}.
    let deliveries = record::read(d.ledger(), &done).await.unwrap();
    let outcomes: Vec<(&str, u32, Option<u16>)> =
        deliveries.attempts.iter().map(|a| (a.outcome.as_str(), a.attempt, a.status)).collect();
    assert_eq!(outcomes, vec![("delivered", 1, Some(204)); 3]);
    let queue = d.queues().notifications.clone().unwrap();
    assert_eq!(queue.counts().await.unwrap().total(), 0);
}

/// A worker killed after it stored a job's completion, before its relay could queue the
/// event (the queue's database held locked): the event waited in the ledger's outbox, stored
/// with the completion, and the next worker sends it, once, under the id of that revision.
#[tokio::test]
async fn an_event_outlives_the_worker_killed_before_sending_it() {
    require!(media_tools());
    let (secret, secrets) = secret();
    let receiver = Receiver::start(secrets, Arc::new(|_: &str, _| Answer::Status(204))).await;
    let mut d = Deployment::new(Kind::Local).await;
    configure(&mut d, &secret, &format!("{}/hooks", receiver.url), &[]);
    let clip = d.path("clip.mp4");
    Clip { seconds: 3.0, ..Clip::default() }.make(&clip);
    let mut doomed = d.spawn_worker("doomed", &[]);
    d.upload("uploads/outbox/clip.mp4", &clip).await;
    let running = crate::support::wait_until("the job runs", Duration::from_secs(60), async || {
        d.status_for_source("uploads/outbox/clip.mp4").await.filter(|s| s.state == JobState::Running)
    })
    .await;
    let db = rusqlite::Connection::open(std::path::Path::new(&d.vars["MEDIA_DATA_DIR"]).join("queue.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let completed = crate::support::wait_until("the job completes", Duration::from_secs(120), async || {
        d.store().read(&running.job_id).await.unwrap().filter(|s| s.state == JobState::Completed)
    })
    .await;
    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();
    db.execute_batch("ROLLBACK").unwrap();
    assert!(d.ledger().outbox_len().await.unwrap() > 0, "the completion's event waits in the outbox");

    d.drain().await;
    let by_job = receiver.events_by_job();
    let events = &by_job[&running.job_id];
    let done: Vec<_> = events.iter().filter(|e| e.kind == EventType::Completed).collect();
    assert_eq!(done.len(), 1, "sent once: {events:#?}");
    assert_eq!(done[0].id, media_worker::notify::event::event_id(&completed.job_id, completed.revision));
    assert_eq!(d.ledger().outbox_len().await.unwrap(), 0);
}

/// Retries keep the webhook id and body, Retry-After is honoured, 410 stops the endpoint for
/// the job (and only that endpoint), and the record shows it all.
#[tokio::test]
async fn retries_keep_the_id_and_gone_stops() {
    let (secret, secrets) = secret();
    let script = |path: &str, nth: usize| match (path, nth) {
        ("/flaky", 1..=3) => Answer::Status(500),
        ("/busy", 1) => Answer::RetryAfter(429, 1),
        ("/gone", _) => Answer::Status(410),
        _ => Answer::Status(200),
    };
    let receiver = Receiver::start(secrets, Arc::new(script)).await;
    let mut d = Deployment::local().await;
    let url = &receiver.url;
    configure(&mut d, &secret, &format!("{url}/flaky; {url}/busy job.queued; {url}/gone"), &[]);
    let config = d.config();
    let store = media_worker::notify::job_store(&config, &d.backend);
    let queue = d.queues().notifications.clone().unwrap();
    let dispatcher = Dispatcher::new(queue.clone(), d.backend.ledger.clone(), config.notify.clone()).unwrap();

    jobs::submit(&store, d.queues().ready.as_ref(), &spec("job-r", "sources/x.mp4"), 3).await.unwrap();
    pump(&store, &d, &dispatcher, &queue).await;
    store.apply("job-r", &Event::Cancel { note: "test".into() }).await.unwrap();
    pump(&store, &d, &dispatcher, &queue).await;

    let deliveries = receiver.deliveries();
    assert!(deliveries.iter().all(|d| d.valid), "{deliveries:#?}");
    let at = |path: &str| deliveries.iter().filter(|d| d.path == path).cloned().collect::<Vec<_>>();
    // Queued and cancelled, each failing three times then delivered: four tries, one id, one body.
    let flaky = at("/flaky");
    assert_eq!(flaky.len(), 8, "{flaky:#?}");
    let mut ids: HashMap<String, Vec<&Delivery>> = HashMap::new();
    for delivery in &flaky {
        ids.entry(delivery.id.clone()).or_default().push(delivery);
    }
    assert_eq!(ids.len(), 2);
    for tries in ids.values() {
        assert_eq!(tries.len(), 4);
        assert!(tries.iter().all(|t| t.body == tries[0].body));
    }
    // Only job.queued was wanted there: 429, then again no sooner than Retry-After said.
    let busy = at("/busy");
    assert_eq!(busy.len(), 2);
    assert_eq!(busy[0].event().kind, EventType::Queued);
    // 410 on job.queued: job.cancelled is never sent there.
    let gone = at("/gone");
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].event().kind, EventType::Queued);

    let doc = record::read(d.ledger(), "job-r").await.unwrap();
    assert_eq!(doc.stopped, vec![format!("{url}/gone")]);
    let outcomes = |endpoint: &str| -> Vec<(String, u32, Option<u16>)> {
        doc.attempts
            .iter()
            .filter(|a| a.endpoint == format!("{url}{endpoint}") && a.event_type == EventType::Queued)
            .map(|a| (a.outcome.clone(), a.attempt, a.status))
            .collect()
    };
    let retrying = |n| ("retrying".to_string(), n, Some(500));
    assert_eq!(
        outcomes("/flaky"),
        vec![retrying(1), retrying(2), retrying(3), ("delivered".to_string(), 4, Some(200))]
    );
    assert_eq!(outcomes("/busy"), vec![("retrying".into(), 1, Some(429)), ("delivered".into(), 2, Some(200))]);
    assert_eq!(outcomes("/gone"), vec![("gone".to_string(), 1, Some(410))]);
    let first_busy = doc.attempts.iter().find(|a| a.endpoint.ends_with("/busy")).unwrap();
    let due = first_busy.next_attempt_at.expect("a next attempt");
    assert!(due - first_busy.at >= chrono::Duration::seconds(1), "Retry-After: 1 honoured");
    // The job itself is untouched by any of it.
    assert_eq!(store.read("job-r").await.unwrap().unwrap().state, JobState::Cancelled);
}

/// Every webhook answer is held until the job has completed: the job never waits for them.
#[tokio::test]
async fn a_slow_receiver_never_delays_the_job() {
    require!(media_tools());
    let (secret, secrets) = secret();
    let receiver = Receiver::start(secrets, Arc::new(|_: &str, _| Answer::Hold)).await;
    let mut d = Deployment::local().await;
    configure(&mut d, &secret, &format!("{}/slow", receiver.url), &[("MEDIA_WEBHOOK_TIMEOUT", "5m")]);
    let config = d.config();
    let store = media_worker::notify::job_store(&config, &d.backend);
    let clip = d.path("clip.mp4");
    Clip::default().make(&clip);
    d.upload("sources/slow.mp4", &clip).await;
    jobs::submit(&store, d.queues().ready.as_ref(), &spec("job-slow", "sources/slow.mp4"), 3).await.unwrap();

    let watch_job = async {
        // The queued event reached the receiver, which sits on it.
        receiver.wait_for("the first request", |d| !d.is_empty()).await;
        loop {
            let state = store.read("job-slow").await.unwrap().map(|s| s.state);
            if state == Some(JobState::Completed) {
                break;
            }
            assert!(!state.is_some_and(JobState::is_terminal), "the job ended as {state:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Completed while no answer had been given yet; now let them through.
        receiver.release.send_replace(true);
    };
    let (_, ()) = tokio::join!(d.drain(), watch_job);
    let by_job = receiver.events_by_job();
    use EventType::*;
    assert_eq!(kinds(&by_job["job-slow"]), vec![Queued, Started, Completed]);
}

/// Answers from a table, each name's answers in turn (the last one repeats).
struct Rebinding(Mutex<HashMap<String, Vec<IpAddr>>>);

impl Lookup for Rebinding {
    fn lookup(&self, host: String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let mut table = self.0.lock().unwrap();
        let answer = table
            .get_mut(&host)
            .and_then(|answers| if answers.len() > 1 { Some(answers.remove(0)) } else { answers.first().copied() });
        Box::pin(async move { answer.map(|ip| vec![ip]).ok_or_else(|| std::io::Error::other("no such host")) })
    }
}

/// A name that resolved to a public address when the job was submitted and to loopback when
/// the webhook is sent (DNS rebinding) is refused at connect time; a metadata address is
/// refused at submit time. Nothing reaches the receiver.
#[tokio::test]
async fn a_rebound_name_is_refused_at_connect() {
    let (secret, secrets) = secret();
    let receiver = Receiver::start(secrets, Arc::new(|_: &str, _| Answer::Status(200))).await;
    let port = receiver.url.rsplit(':').next().unwrap().to_string();
    let lookup = Arc::new(Rebinding(Mutex::new(HashMap::from([
        ("rebind.test".to_string(), vec!["93.184.216.34".parse().unwrap(), "127.0.0.1".parse().unwrap()]),
        ("metadata.test".to_string(), vec!["169.254.169.254".parse().unwrap()]),
    ]))));
    // Production rules: no loopback.
    let guard = Guard::with_lookup(Policy { allow_loopback: false }, lookup);
    let url = format!("https://rebind.test:{port}/hook");
    guard.check_resolved(&url).await.expect("public at submit time");
    let refused = guard.check_resolved("https://metadata.test/hook").await.unwrap_err();
    assert!(refused.to_string().contains("metadata"), "{refused}");

    let mut d = Deployment::local().await;
    configure(&mut d, &secret, "", &[("MEDIA_WEBHOOK_ALLOW_LOOPBACK", "false")]);
    let config = d.config();
    let store = media_worker::notify::job_store(&config, &d.backend);
    let queue = d.queues().notifications.clone().unwrap();
    let client =
        guard.client(Limits { connect: Duration::from_secs(5), total: Duration::from_secs(10), read: None }).unwrap();
    let dispatcher =
        Dispatcher::with_client(queue.clone(), d.backend.ledger.clone(), config.notify.clone(), client).unwrap();
    let mut job = spec("job-rebind", "sources/x.mp4");
    job.notify = Some(NotifyTarget { url: url.clone() });
    jobs::submit(&store, d.queues().ready.as_ref(), &job, 3).await.unwrap();
    pump(&store, &d, &dispatcher, &queue).await;

    assert!(receiver.deliveries().is_empty(), "{:#?}", receiver.deliveries());
    let doc = record::read(d.ledger(), "job-rebind").await.unwrap();
    assert_eq!(doc.attempts.len(), 1, "refusals are not retried: {doc:#?}");
    assert_eq!(doc.attempts[0].outcome, "refused");
    assert!(doc.attempts[0].error.as_deref().is_some_and(|e| e.contains("loopback")), "{doc:#?}");
}

/// The same events on an EventBridge bus and an SNS topic, on the emulator: each lands there
/// with the very payload the webhook received.
#[tokio::test]
async fn events_land_on_eventbridge_and_sns_with_the_webhook_payload() {
    require!(emulator());
    let (secret, secrets) = secret();
    let receiver = Receiver::start(secrets, Arc::new(|_: &str, _| Answer::Status(200))).await;
    let mut d = Deployment::aws().await;
    let endpoint = crate::support::moto_endpoint();
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    let (sns, events) = (aws_sdk_sns::Client::new(&shared), aws_sdk_eventbridge::Client::new(&shared));
    let sqs = d.sqs.clone().unwrap();
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    // A queue behind each, to see what arrived.
    let mut sinks = Vec::new();
    for name in ["from-sns", "from-eventbridge"] {
        let url = sqs.create_queue().queue_name(format!("{name}-{suffix}")).send().await.unwrap().queue_url.unwrap();
        let arn = crate::support::queue_arn(&sqs, &url).await;
        sinks.push((url, arn));
    }
    let topic = sns.create_topic().name(format!("media-{suffix}")).send().await.unwrap().topic_arn.unwrap();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&sinks[0].1)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    let bus = format!("media-{suffix}");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let pattern = r#"{"source": ["media-worker-test"], "detail-type": ["Media Job State Change"]}"#;
    events.put_rule().name("media-jobs").event_bus_name(&bus).event_pattern(pattern).send().await.unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder().id("sink").arn(&sinks[1].1).build().unwrap();
    events.put_targets().rule("media-jobs").event_bus_name(&bus).targets(target).send().await.unwrap();

    configure(
        &mut d,
        &secret,
        &format!("{}/hooks", receiver.url),
        &[
            ("MEDIA_EVENTBRIDGE_BUS", bus.as_str()),
            ("MEDIA_EVENTBRIDGE_SOURCE", "media-worker-test"),
            ("MEDIA_SNS_TOPIC_ARN", topic.as_str()),
        ],
    );
    let config = d.config();
    let store = media_worker::notify::job_store(&config, &d.backend);
    let job_id = format!("job-aws-{suffix}");
    jobs::submit(&store, d.queues().ready.as_ref(), &spec(&job_id, "sources/x.mp4"), 3).await.unwrap();
    store.apply(&job_id, &Event::Cancel { note: "test".into() }).await.unwrap();
    d.drain().await;

    let webhooks: BTreeMap<String, serde_json::Value> =
        receiver.deliveries().iter().map(|d| (d.id.clone(), serde_json::from_slice(&d.body).unwrap())).collect();
    assert_eq!(webhooks.len(), 2, "job.queued and job.cancelled");
    let received = |url: &str| {
        let queue = media_worker::queue::sqs::SqsQueue::new(sqs.clone(), url);
        async move { crate::support::receive_all(&queue).await }
    };
    let from_sns: Vec<serde_json::Value> =
        received(&sinks[0].0).await.iter().map(|m| serde_json::from_str(&m.body).unwrap()).collect();
    let from_eventbridge: Vec<serde_json::Value> =
        received(&sinks[1].0).await.iter().map(|m| serde_json::from_str(&m.body).unwrap()).collect();
    assert_eq!(from_sns.len(), 2, "{from_sns:#?}");
    assert_eq!(from_eventbridge.len(), 2, "{from_eventbridge:#?}");
    for event in &from_sns {
        assert_eq!(Some(event), webhooks.get(event["id"].as_str().unwrap()), "SNS carries the webhook's payload");
    }
    for event in &from_eventbridge {
        assert_eq!(event["detail-type"], "Media Job State Change");
        assert_eq!(event["source"], "media-worker-test");
        let detail = &event["detail"];
        assert_eq!(Some(detail), webhooks.get(detail["id"].as_str().unwrap()), "EventBridge carries it as detail");
    }
}

/// `media-worker webhook verify` on a request captured as it arrived: valid with the right
/// secret (also from MEDIA_WEBHOOK_SECRET), invalid (exit 1) once the body changed, and a
/// usage error (exit 2) without a secret; `webhook secret` makes a usable secret.
#[tokio::test]
async fn the_cli_verifies_a_captured_request() {
    let d = Deployment::local().await;
    let run = |args: Vec<String>, env: Vec<(&'static str, String)>| {
        let mut cmd = d.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        cmd.envs(env).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        async move {
            let out = cmd.output().await.unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
        }
    };
    let (code, secret) = run(vec!["webhook".into(), "secret".into()], vec![]).await;
    assert_eq!(code, Some(0));
    let secret = secret.trim().to_string();
    let secrets = Secrets::parse(&secret).expect("a whsec_ secret");
    let body = r#"{"version":1,"id":"msg_1","type":"job.failed"}"#;
    let signature = secrets.sign("msg_1", 1_700_000_000, body.as_bytes());
    let request = format!(
        "POST /hook HTTP/1.1\r\nwebhook-id: msg_1\r\nwebhook-timestamp: 1700000000\r\nwebhook-signature: {signature}\r\n\r\n{body}"
    );
    let good = d.path("good.txt");
    std::fs::write(&good, &request).unwrap();
    let bad = d.path("bad.txt");
    std::fs::write(&bad, request.replace("failed", "completed")).unwrap();
    let path = |p: &std::path::Path| p.display().to_string();

    let (code, out) =
        run(vec!["webhook".into(), "verify".into(), path(&good), "--secret".into(), secret.clone()], vec![]).await;
    assert_eq!(code, Some(0), "{out}");
    let found: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((found["valid"].as_bool(), found["event_type"].as_str()), (Some(true), Some("job.failed")));
    let (code, _) =
        run(vec!["webhook".into(), "verify".into(), path(&good)], vec![("MEDIA_WEBHOOK_SECRET", secret.clone())]).await;
    assert_eq!(code, Some(0));
    // Five minutes of tolerance: a request from 2023 is too old.
    let (code, _) = run(
        vec![
            "webhook".into(),
            "verify".into(),
            path(&good),
            "--secret".into(),
            secret.clone(),
            "--max-age".into(),
            "5m".into(),
        ],
        vec![],
    )
    .await;
    assert_eq!(code, Some(1));
    let (code, out) = run(vec!["webhook".into(), "verify".into(), path(&bad), "--secret".into(), secret], vec![]).await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["valid"], false);
    let (code, _) = run(vec!["webhook".into(), "verify".into(), path(&good)], vec![]).await;
    assert_eq!(code, Some(2));
}
