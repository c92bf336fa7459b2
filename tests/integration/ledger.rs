//! One suite of job ledger behaviour, run against both engines: DynamoDB on the emulator and
//! the embedded SQLite file. The lifecycle relies on exactly these semantics: a write lands
//! only on the revision its writer read, with its events or not at all; queries come back
//! newest first, a page at a time, each job once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use media_worker::domain::job::{JobSpec, OutputRequest, SourcePin};
use media_worker::domain::keys::KeyLayout;
use media_worker::domain::preset::Preset;
use media_worker::domain::status::{JobState, JobStatus};
use media_worker::ledger::dynamo::DynamoLedger;
use media_worker::ledger::sqlite::SqliteLedger;
use media_worker::ledger::{Cursor, DocKind, JobQuery, Ledger, Listed, OutboxEvent, Row};
use tempfile::TempDir;

use crate::support::{Kind, emulator, moto_endpoint};

const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// A ledger of the engine `kind` with nothing in it (and what keeps it alive).
pub async fn fresh_ledger(kind: Kind) -> Option<(Arc<dyn Ledger>, Option<TempDir>)> {
    match kind {
        Kind::Local => {
            let dir = TempDir::new().expect("temp dir");
            let ledger = SqliteLedger::open(&dir.path().join("ledger.db")).expect("open the ledger");
            Some((Arc::new(ledger), Some(dir)))
        }
        Kind::Aws => {
            if !emulator() {
                return None;
            }
            let client = dynamo_client();
            let table = format!("jobs-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            DynamoLedger::create_table(&client, &table).await.expect("create the table");
            Some((Arc::new(DynamoLedger::new(client, &table)), None))
        }
    }
}

/// A DynamoDB client of the emulator.
pub fn dynamo_client() -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .endpoint_url(moto_endpoint())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests"))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn layout() -> KeyLayout {
    KeyLayout::new("uploads/", "outputs/").unwrap()
}

/// A job of `scope` (`shared`, or a tenant's name) created `minute` minutes into 2026.
fn status(id: &str, tenant: Option<&str>, minute: i64) -> JobStatus {
    let folder = tenant.map(|t| format!("tenants/{t}/")).unwrap_or_default();
    let job = JobSpec {
        job_id: id.into(),
        source_key: format!("uploads/{folder}clip.mp4"),
        outputs: vec![OutputRequest::new(Preset::Mp4H264)],
        output_dir: format!("outputs/{folder}clip.mp4/{id}/"),
        source: SourcePin { etag: Some("etag-1".into()), version_id: None, size: Some(10) },
        notify: None,
        split: None,
        import: None,
        qc: None,
        loudness: None,
        repackage: None,
        watermark: None,
    };
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(minute);
    JobStatus::queued(&job, 1, 3, at)
}

fn row(status: &JobStatus) -> Row {
    Row::new(status.clone(), &layout(), RETENTION)
}

/// The next revision of `status`, in `state`, a minute later.
fn moved(status: &JobStatus, state: JobState) -> JobStatus {
    let mut next = status.clone();
    let at = status.updated_at + chrono::Duration::minutes(1);
    next.revision += 1;
    next.transition(state, status.stage, at, None);
    next.updated_at = at;
    next
}

fn event(kind: &str, status: &JobStatus) -> OutboxEvent {
    OutboxEvent { kind: kind.into(), status: status.clone() }
}

/// Writes land only on the revision they read, events with them or not at all.
async fn writes_are_fenced_by_revision(kind: Kind) {
    let Some((ledger, _keep)) = fresh_ledger(kind).await else { return };
    let first = status("job-a", None, 0);
    assert!(ledger.put(&row(&first), None, &[event("job.queued", &first)]).await.unwrap());
    assert!(!ledger.put(&row(&first), None, &[]).await.unwrap(), "created once");
    assert_eq!(ledger.get("job-a").await.unwrap(), Some(first.clone()));
    assert_eq!(ledger.get("job-none").await.unwrap(), None);

    let running = moved(&first, JobState::Running);
    let stale = moved(&first, JobState::Cancelled);
    assert!(ledger.put(&row(&running), Some(first.revision), &[event("job.started", &running)]).await.unwrap());
    // Another writer that read the same revision loses, and its event is not kept.
    assert!(!ledger.put(&row(&stale), Some(first.revision), &[event("job.cancelled", &stale)]).await.unwrap());
    assert_eq!(ledger.get("job-a").await.unwrap(), Some(running.clone()));

    let taken = ledger.outbox_take(10, Duration::from_secs(60)).await.unwrap();
    let kinds: Vec<&str> = taken.iter().map(|e| e.event.kind.as_str()).collect();
    assert_eq!(kinds, ["job.queued", "job.started"], "oldest first, the loser's event absent");
    assert_eq!(taken[1].event.status, running);
    assert!(ledger.outbox_take(10, Duration::from_secs(60)).await.unwrap().is_empty(), "leased");
    assert_eq!(ledger.outbox_len().await.unwrap(), 2);
    for entry in &taken {
        ledger.outbox_done(entry).await.unwrap();
    }
    assert_eq!(ledger.outbox_len().await.unwrap(), 0);
}

/// An event whose relay died (its lease ran out) is taken again.
async fn an_unfinished_lease_is_taken_again(kind: Kind) {
    let Some((ledger, _keep)) = fresh_ledger(kind).await else { return };
    let job = status("job-lease", None, 0);
    ledger.put(&row(&job), None, &[event("job.queued", &job)]).await.unwrap();
    let first = ledger.outbox_take(10, Duration::from_millis(300)).await.unwrap();
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = ledger.outbox_take(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(again.len(), 1, "taken again once its lease ran out");
    assert_eq!(again[0].event, first[0].event);
    ledger.outbox_done(&again[0]).await.unwrap();
    assert_eq!(ledger.outbox_len().await.unwrap(), 0);
}

/// Pages come newest first, each job once, in one scope or all, by state; a filter that
/// matches nothing is an empty page.
async fn pages_cover_every_job_once(kind: Kind) {
    let Some((ledger, _keep)) = fresh_ledger(kind).await else { return };
    let mut all = Vec::new();
    for i in 0..25 {
        let tenant = if i % 5 == 0 { Some("acme") } else { None };
        // Two jobs share each minute: ties are ordered by id.
        let mut job = status(&format!("job-{i:02}"), tenant, i / 2);
        if i % 3 == 0 {
            job = moved(&job, JobState::Running);
            ledger.put(&row(&job), None, &[]).await.unwrap();
        } else {
            ledger.put(&row(&job), None, &[]).await.unwrap();
        }
        all.push(job);
    }
    let newest_first = |jobs: &[&JobStatus]| {
        let mut ids: Vec<(i64, String)> =
            jobs.iter().map(|s| (s.created_at.timestamp_millis(), s.job_id.clone())).collect();
        ids.sort_by(|a, b| b.cmp(a));
        ids.into_iter().map(|(_, id)| id).collect::<Vec<String>>()
    };
    let walk = async |listed: Listed, state: Option<JobState>| {
        let mut seen = Vec::new();
        let mut after: Option<Cursor> = None;
        for _ in 0..20 {
            let query = JobQuery { listed: listed.clone(), state, after: after.clone(), limit: 4 };
            let page = ledger.list(&query).await.unwrap();
            assert!(page.jobs.len() <= 4);
            seen.extend(page.jobs.iter().map(|s| s.job_id.clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => return seen,
            }
        }
        panic!("more than 20 pages");
    };
    let shared: Vec<&JobStatus> = all.iter().filter(|s| !s.job.source_key.contains("tenants/")).collect();
    assert_eq!(walk(Listed::Scope("shared".into()), None).await, newest_first(&shared));
    let acme: Vec<&JobStatus> = all.iter().filter(|s| s.job.source_key.contains("tenants/acme/")).collect();
    assert_eq!(walk(Listed::Scope("tenant:acme".into()), None).await, newest_first(&acme));
    let every: Vec<&JobStatus> = all.iter().collect();
    assert_eq!(walk(Listed::All, None).await, newest_first(&every));
    let running: Vec<&JobStatus> = shared.iter().copied().filter(|s| s.state == JobState::Running).collect();
    assert_eq!(walk(Listed::Scope("shared".into()), Some(JobState::Running)).await, newest_first(&running));
    let running_all: Vec<&JobStatus> = all.iter().filter(|s| s.state == JobState::Running).collect();
    assert_eq!(walk(Listed::All, Some(JobState::Running)).await, newest_first(&running_all));
    let nothing =
        JobQuery { listed: Listed::Scope("shared".into()), state: Some(JobState::Failed), after: None, limit: 20 };
    let page = ledger.list(&nothing).await.unwrap();
    assert!(page.jobs.is_empty() && page.next.is_none(), "{page:?}");
    let stranger = JobQuery { listed: Listed::Scope("tenant:globex".into()), state: None, after: None, limit: 20 };
    assert!(ledger.list(&stranger).await.unwrap().jobs.is_empty());

    // A state change moves a job out of one state's list and into another's.
    let job = all[1].clone();
    let failed = moved(&job, JobState::Failed);
    assert!(ledger.put(&row(&failed), Some(job.revision), &[]).await.unwrap());
    let failed_page = ledger.list(&JobQuery { state: Some(JobState::Failed), ..nothing }).await.unwrap();
    assert_eq!(failed_page.jobs, vec![failed]);
}

/// The jobs of one write of a source; the jobs changed since a time.
async fn jobs_of_a_write_and_changed_since(kind: Kind) {
    let Some((ledger, _keep)) = fresh_ledger(kind).await else { return };
    let one = status("job-one", None, 0);
    let mut two = status("job-two", None, 5);
    two.job.source.etag = Some("etag-2".into());
    let three = status("job-three", None, 10);
    for job in [&one, &two, &three] {
        ledger.put(&row(job), None, &[]).await.unwrap();
    }
    let ids = |jobs: Vec<JobStatus>| jobs.into_iter().map(|s| s.job_id).collect::<Vec<_>>();
    assert_eq!(ids(ledger.of_write("uploads/clip.mp4", "etag-1").await.unwrap()), ["job-three", "job-one"]);
    assert_eq!(ids(ledger.of_write("uploads/clip.mp4", "etag-2").await.unwrap()), ["job-two"]);
    assert!(ledger.of_write("uploads/other.mp4", "etag-1").await.unwrap().is_empty());

    let since = one.created_at + chrono::Duration::minutes(4);
    assert_eq!(ids(ledger.changed_since(since, 10).await.unwrap()), ["job-three", "job-two"]);
    // A state change counts; a write that changes no state or stage does not move it.
    let later = moved(&one, JobState::Running);
    ledger.put(&row(&later), Some(one.revision), &[]).await.unwrap();
    let mut beat = later.clone();
    beat.revision += 1;
    beat.updated_at = later.updated_at + chrono::Duration::minutes(30);
    ledger.put(&row(&beat), Some(later.revision), &[]).await.unwrap();
    let since = one.created_at + chrono::Duration::minutes(11);
    assert!(ledger.changed_since(since, 10).await.unwrap().is_empty(), "a heartbeat is no change");
    assert_eq!(ids(ledger.changed_since(one.created_at, 2).await.unwrap()), ["job-three", "job-two"], "at most 2");
}

/// Documents beside the jobs: created once, replaced on their version only, deleted.
async fn documents_are_compared_and_swapped(kind: Kind) {
    let Some((ledger, _keep)) = fresh_ledger(kind).await else { return };
    assert_eq!(ledger.doc_get(DocKind::Claim, "job-x").await.unwrap(), None);
    assert!(ledger.doc_put(DocKind::Claim, "job-x", b"one", None, None).await.unwrap());
    assert!(!ledger.doc_put(DocKind::Claim, "job-x", b"two", None, None).await.unwrap(), "create-only");
    let stored = ledger.doc_get(DocKind::Claim, "job-x").await.unwrap().unwrap();
    assert_eq!(stored.body, b"one");
    assert!(ledger.doc_put(DocKind::Claim, "job-x", b"three", Some(stored.version), None).await.unwrap());
    assert!(!ledger.doc_put(DocKind::Claim, "job-x", b"four", Some(stored.version), None).await.unwrap(), "stale");
    let now = ledger.doc_get(DocKind::Claim, "job-x").await.unwrap().unwrap();
    assert_eq!((now.body.as_slice(), now.version > stored.version), (b"three".as_slice(), true));
    assert_eq!(ledger.doc_get(DocKind::Deliveries, "job-x").await.unwrap(), None, "kinds are apart");
    ledger.doc_delete(DocKind::Claim, "job-x").await.unwrap();
    assert_eq!(ledger.doc_get(DocKind::Claim, "job-x").await.unwrap(), None);
    ledger.ping().await.unwrap();
}

crate::on_both_backends!(
    writes_are_fenced_by_revision,
    an_unfinished_lease_is_taken_again,
    pages_cover_every_job_once,
    jobs_of_a_write_and_changed_since,
    documents_are_compared_and_swapped
);

/// The local engine removes a record its retention after the job ended, and expired
/// documents (DynamoDB's TTL does this there, on the same attribute).
#[tokio::test]
async fn the_local_sweep_keeps_to_the_retention() {
    let Some((ledger, _keep)) = fresh_ledger(Kind::Local).await else { return };
    let old = moved(&status("job-old", None, 0), JobState::Completed);
    let running = status("job-running", None, 0);
    for job in [&old, &running] {
        ledger.put(&Row::new(job.clone(), &layout(), Duration::from_secs(3600)), None, &[]).await.unwrap();
    }
    let soon = Utc::now() + chrono::Duration::hours(1);
    ledger.doc_put(DocKind::SignedParts, "u1", b"x", None, Some(soon)).await.unwrap();
    assert_eq!(ledger.sweep(Utc::now()).await.unwrap(), 1, "the ended job, an hour past its end");
    assert_eq!(ledger.get("job-old").await.unwrap(), None);
    assert!(ledger.get("job-running").await.unwrap().is_some(), "a job that has not ended stays");
    assert!(ledger.doc_get(DocKind::SignedParts, "u1").await.unwrap().is_some());
    assert_eq!(ledger.sweep(soon + chrono::Duration::seconds(1)).await.unwrap(), 1);
}

/// `media-worker ledger import` copies what an earlier version kept under `jobs/` in the
/// bucket into the ledger: statuses (never over a newer record), delivery records and claims;
/// run again, it changes nothing.
async fn import_copies_the_bucket_s_job_documents_once(kind: Kind) {
    if kind == Kind::Aws && !emulator() {
        return;
    }
    let d = crate::support::Deployment::new(kind).await;
    let old = status("job-old", None, 0);
    let newer = moved(&status("job-newer", None, 1), JobState::Running);
    let storage = d.storage();
    for job in [&old, &moved(&status("job-newer", None, 1), JobState::Queued)] {
        let key = media_worker::domain::keys::status_key(&job.job_id);
        storage.put_bytes(&key, serde_json::to_vec(job).unwrap(), "application/json").await.unwrap();
    }
    // The ledger already has job-newer at a later revision: the import leaves it.
    let mut ahead = newer.clone();
    ahead.revision += 5;
    d.ledger().put(&Row::new(ahead.clone(), &layout(), RETENTION), None, &[]).await.unwrap();
    storage
        .put_bytes("jobs/notifications/job-old.json", b"{\"attempts\": []}".to_vec(), "application/json")
        .await
        .unwrap();
    storage
        .put_bytes(
            "jobs/idempotency/job-old.json",
            b"{\"version\": 1, \"request\": \"ab\"}".to_vec(),
            "application/json",
        )
        .await
        .unwrap();
    storage.put_bytes("jobs/by-source/0123/job-old", Vec::new(), "application/octet-stream").await.unwrap();

    let import = async || {
        let output =
            d.command(&["ledger", "import", "--json"]).stdout(std::process::Stdio::piped()).output().await.unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let first = import().await;
    assert_eq!(
        (
            first["jobs"].as_u64(),
            first["jobs_current"].as_u64(),
            first["deliveries"].as_u64(),
            first["claims"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1)),
        "{first}"
    );
    assert_eq!(first["failed"].as_u64(), Some(0), "{first}");
    assert_eq!(d.ledger().get("job-old").await.unwrap(), Some(old.clone()));
    assert_eq!(d.ledger().get("job-newer").await.unwrap(), Some(ahead), "a newer record is never turned back");
    assert!(d.ledger().doc_get(DocKind::Deliveries, "job-old").await.unwrap().is_some());
    assert!(d.ledger().doc_get(DocKind::Claim, "job-old").await.unwrap().is_some());
    let again = import().await;
    assert_eq!((again["jobs"].as_u64(), again["jobs_current"].as_u64()), (Some(0), Some(2)), "{again}");
    assert_eq!((again["deliveries"].as_u64(), again["claims"].as_u64()), (Some(0), Some(0)), "{again}");
}

crate::on_both_backends!(import_copies_the_bucket_s_job_documents_once);

/// Counts the DynamoDB calls a client makes.
#[derive(Debug, Default)]
struct Calls(std::sync::atomic::AtomicUsize);

#[derive(Debug)]
struct Counting(Arc<Calls>);

impl aws_sdk_dynamodb::config::Intercept for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn read_before_execution(
        &self,
        _context: &aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// A page costs DynamoDB the same calls whatever the history: one Query of an index and one
/// BatchGetItem of its records (a filter that matches nothing, the Query alone). (The emulator's
/// own Query time grows with its table, as it does not index; the number of calls is ours.)
#[tokio::test]
async fn a_page_costs_the_same_dynamodb_calls_at_any_size() {
    if !emulator() {
        return;
    }
    let calls = Arc::new(Calls::default());
    let config = dynamo_client().config().to_builder().interceptor(Counting(calls.clone())).build();
    let client = aws_sdk_dynamodb::Client::from_conf(config);
    let table = format!("jobs-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    DynamoLedger::create_table(&client, &table).await.unwrap();
    let ledger = DynamoLedger::new(client, &table);
    let count = || calls.0.load(std::sync::atomic::Ordering::SeqCst);
    let mut seeded = 0;
    let mut per_page = Vec::new();
    for size in [30, 300] {
        while seeded < size {
            let job = status(&format!("job-{seeded:04}"), None, seeded);
            ledger.put(&row(&job), None, &[]).await.unwrap();
            seeded += 1;
        }
        let mut costs = Vec::new();
        for state in [None, Some(JobState::Failed)] {
            let query = JobQuery { listed: Listed::Scope("shared".into()), state, after: None, limit: 20 };
            let before = count();
            let page = ledger.list(&query).await.unwrap();
            costs.push((count() - before, page.jobs.len()));
        }
        per_page.push(costs);
    }
    assert_eq!(per_page[0], vec![(2, 20), (1, 0)], "a Query and a BatchGetItem; the Query alone for nothing");
    assert_eq!(per_page[0], per_page[1], "the same at ten times the jobs");
}
