//! Test support: the S3/SQS emulator, deployments on both backends, generated clips, ffprobe.
//!
//! In CI (`CI=true`) a missing ffmpeg, ffprobe or emulator fails the test; elsewhere the test
//! says it is skipped and returns, so `cargo test` still works on a bare laptop.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter, QueueConfiguration,
    S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;
use media_worker::backend::{self, Backend};
use media_worker::config::Config;
use media_worker::domain::status::JobStatus;
use media_worker::jobs::{JobStore, NoEvents};
use media_worker::ledger::dynamo::DynamoLedger;
use media_worker::ledger::{JobQuery, Ledger, Listed, MAX_PAGE};
use media_worker::queue::sqs::SqsQueue;
use media_worker::queue::{Queue, Queues, Received};
use media_worker::storage::ObjectStore;
use media_worker::storage::s3::S3Storage;
use serde_json::Value;
use tempfile::TempDir;

/// The ARN of the queue at `url`.
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue arn")
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Whether ffmpeg and ffprobe are installed; in CI their absence is a failure.
pub fn media_tools() -> bool {
    let ok = runs("ffmpeg", &["-version"]) && runs("ffprobe", &["-version"]);
    assert!(ok || !in_ci(), "ffmpeg/ffprobe are not installed, and CI=true forbids skipping");
    if !ok {
        eprintln!("skipped: ffmpeg/ffprobe are not installed");
    }
    ok
}

/// Whether the emulator can run; in CI its absence is a failure.
pub fn emulator() -> bool {
    let ok = runs("python3", &["-c", "import moto.server"]);
    assert!(ok || !in_ci(), "moto[server] is not installed, and CI=true forbids skipping");
    if !ok {
        eprintln!("skipped: moto[server] is not installed (pip install 'moto[server]')");
    }
    ok
}

/// Returns from the test (skipping) when a tool is missing outside CI.
#[macro_export]
macro_rules! require {
    ($($check:expr),+) => {
        if !($($check)&&+) {
            return;
        }
    };
}

/// Declares, for each `async fn case(kind: Kind)`, a module `case` with the tests `aws` and
/// `local`, so every case runs on both backends under one name (`worker::end_to_end::aws`).
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),+ $(,)?) => {
        $(
            mod $case {
                #[tokio::test]
                async fn aws() {
                    super::$case($crate::support::Kind::Aws).await;
                }

                #[tokio::test]
                async fn local() {
                    super::$case($crate::support::Kind::Local).await;
                }
            }
        )+
    };
}

/// moto's server, shared by every test of this binary, on 127.0.0.1 and a free port. It exits
/// by itself when this test process is gone (it watches its parent), so nothing is left behind.
pub fn moto_endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            let port =
                TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
            // The emulator names ListParts' answer `ListPartsResponse` where S3 (and the SDK's
            // parser) say `ListPartsResult`; renamed here, as the only gap the tests meet.
            let script = format!(
                "import os, time\n\
                 from moto.core import serialize\n\
                 answer = serialize.S3Serializer._serialized_result_to_response\n\
                 def renamed(self, resp, *args):\n    \
                     resp = answer(self, resp, *args)\n    \
                     if self.operation_model.name == 'ListParts' and isinstance(resp.get('body'), str):\n        \
                         resp['body'] = resp['body'].replace('ListPartsResponse>', 'ListPartsResult>').replace('<ListPartsResponse ', '<ListPartsResult ')\n    \
                     return resp\n\
                 serialize.S3Serializer._serialized_result_to_response = renamed\n\
                 from moto.server import ThreadedMotoServer\n\
                 parent = os.getppid()\n\
                 server = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False)\n\
                 server.start()\n\
                 while os.getppid() == parent:\n    time.sleep(0.5)\n"
            );
            let mut server = Command::new("python3")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto");
            // Reaped when it exits (after this process), so it never lingers as a zombie.
            std::thread::spawn(move || server.wait());
            let deadline = Instant::now() + Duration::from_secs(60);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "moto did not start on port {port}");
                std::thread::sleep(Duration::from_millis(100));
            }
            format!("http://127.0.0.1:{port}")
        })
        .clone()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Aws,
    Local,
}

/// A deployment under test: one backend, its queues and storage, and the environment that points
/// a `media-worker` process at it.
pub struct Deployment {
    pub kind: Kind,
    pub backend: Backend,
    pub vars: BTreeMap<String, String>,
    pub dir: TempDir,
    /// Raw SDK clients, on the AWS backend only.
    pub s3: Option<aws_sdk_s3::Client>,
    pub sqs: Option<aws_sdk_sqs::Client>,
}

/// Settings that make the protocol's timers fast enough for tests.
fn fast_settings(dir: &Path) -> BTreeMap<String, String> {
    let pairs = [
        ("MEDIA_POLL_SCHEDULE", "*/1 * * * * *"),
        ("MEDIA_REAPER_SCHEDULE", "*/1 * * * * *"),
        ("MEDIA_HEARTBEAT_INTERVAL", "1s"),
        ("MEDIA_HEARTBEAT_TIMEOUT", "6s"),
        ("MEDIA_RETRY_BASE_DELAY", "1s"),
        ("MEDIA_VISIBILITY_TIMEOUT", "30s"),
        ("MEDIA_SHUTDOWN_GRACE", "30s"),
        ("MEDIA_CONCURRENCY", "2"),
        ("MEDIA_MAX_ATTEMPTS", "3"),
        ("RUST_LOG", "info,media_worker=debug,tokio_cron_scheduler=warn"),
    ];
    let mut vars: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    vars.insert("MEDIA_WORK_DIR".into(), dir.join("work").display().to_string());
    vars
}

impl Deployment {
    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Aws => Self::aws().await,
            Kind::Local => Self::local().await,
        }
    }

    /// The embedded backend in a temp folder.
    pub async fn local() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let mut vars = fast_settings(dir.path());
        vars.insert("MEDIA_BACKEND".into(), "local".into());
        vars.insert("MEDIA_DATA_DIR".into(), dir.path().join("data").display().to_string());
        let config = Config::from_lookup(|name| vars.get(name).cloned()).expect("config");
        let backend = backend::connect(&config).await.expect("local backend");
        Deployment { kind: Kind::Local, backend, vars, dir, s3: None, sqs: None }
    }

    /// A bucket with an ObjectCreated notification for `uploads/` to the ready queue, and the
    /// three queues, on the emulator.
    pub async fn aws() -> Self {
        let endpoint = moto_endpoint();
        let credentials = Credentials::new("test", "test", None, None, "tests");
        let region = Region::new("us-east-1");
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .endpoint_url(&endpoint)
                .region(region.clone())
                .credentials_provider(credentials.clone())
                .force_path_style(true)
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .endpoint_url(&endpoint)
                .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests"))
                .build(),
        );
        let bucket = unique("media");
        s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
        let mut urls = Vec::new();
        for name in ["ready", "processing", "dead", "notify"] {
            let out = sqs.create_queue().queue_name(unique(name)).send().await.expect("create queue");
            urls.push(out.queue_url.expect("queue url"));
        }
        let arn = queue_arn(&sqs, &urls[0]).await;
        let filter = NotificationConfigurationFilter::builder()
            .key(
                S3KeyFilter::builder()
                    .filter_rules(FilterRule::builder().name(FilterRuleName::Prefix).value("uploads/").build())
                    .build(),
            )
            .build();
        let queue_config = QueueConfiguration::builder()
            .queue_arn(arn)
            .events(Event::S3ObjectCreated)
            .filter(filter)
            .build()
            .expect("queue configuration");
        s3.put_bucket_notification_configuration()
            .bucket(&bucket)
            .notification_configuration(NotificationConfiguration::builder().queue_configurations(queue_config).build())
            .send()
            .await
            .expect("bucket notification");

        let dir = TempDir::new().expect("temp dir");
        let mut vars = fast_settings(dir.path());
        for (k, v) in [
            ("MEDIA_BACKEND", "aws"),
            ("MEDIA_S3_BUCKET", bucket.as_str()),
            ("MEDIA_S3_FORCE_PATH_STYLE", "true"),
            ("MEDIA_READY_QUEUE_URL", urls[0].as_str()),
            ("MEDIA_PROCESSING_QUEUE_URL", urls[1].as_str()),
            ("MEDIA_DEAD_LETTER_QUEUE_URL", urls[2].as_str()),
            ("MEDIA_NOTIFY_QUEUE_URL", urls[3].as_str()),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ] {
            vars.insert(k.to_string(), v.to_string());
        }
        let dynamodb = crate::ledger::dynamo_client();
        let table = unique("jobs");
        DynamoLedger::create_table(&dynamodb, &table).await.expect("create the jobs table");
        vars.insert("MEDIA_JOBS_TABLE".into(), table.clone());
        let store = Arc::new(S3Storage::new(s3.clone(), &bucket, 64 << 20));
        let backend = Backend {
            storage: store.clone(),
            uploads: store,
            ledger: Arc::new(DynamoLedger::new(dynamodb, &table)),
            queues: Queues {
                ready: Arc::new(SqsQueue::new(sqs.clone(), &urls[0])),
                processing: Arc::new(SqsQueue::new(sqs.clone(), &urls[1])),
                dead_letter: Arc::new(SqsQueue::new(sqs.clone(), &urls[2])),
                notifications: Some(Arc::new(SqsQueue::new(sqs.clone(), &urls[3]))),
            },
            bucket,
        };
        let deployment = Deployment { kind: Kind::Aws, backend, vars, dir, s3: Some(s3), sqs: Some(sqs) };
        // The emulator sends an s3:TestEvent when the notification is set: leave it, the worker
        // must delete it.
        deployment
    }

    /// The settings a worker of this deployment runs with.
    pub fn config(&self) -> Config {
        Config::from_lookup(|name| self.vars.get(name).cloned()).expect("config")
    }

    /// A job store on this deployment's ledger (storing no events).
    pub fn store(&self) -> JobStore {
        let config = self.config();
        JobStore::new(self.backend.ledger.clone(), config.layout, config.job_retention, Arc::new(NoEvents))
    }

    pub fn ledger(&self) -> &dyn Ledger {
        self.backend.ledger.as_ref()
    }

    /// Every job's status, newest first (a test's handful: paged through the ledger).
    pub async fn all_jobs(&self) -> Vec<JobStatus> {
        let mut jobs = Vec::new();
        let mut after = None;
        loop {
            let query = JobQuery { listed: Listed::All, state: None, after, limit: MAX_PAGE };
            let page = self.ledger().list(&query).await.expect("list jobs");
            jobs.extend(page.jobs);
            match page.next {
                Some(next) => after = Some(next),
                None => return jobs,
            }
        }
    }

    pub fn storage(&self) -> &dyn ObjectStore {
        self.backend.storage.as_ref()
    }

    pub fn queues(&self) -> &Queues {
        &self.backend.queues
    }

    /// A `media-worker` command pointed at this deployment, with nothing from the caller's
    /// environment but PATH (no stray .env or AWS profile).
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_media-worker"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .envs(&self.vars)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// A `media-worker run` daemon named `name` (its worker id), with these settings besides the
    /// deployment's, logging to `<name>.log` in the deployment's folder; killed when dropped.
    pub fn spawn_worker(&self, name: &str, extra: &[(&str, &str)]) -> tokio::process::Child {
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).expect("worker log");
        let mut cmd = self.command(&["run"]);
        cmd.envs(extra.iter().copied()).env("MEDIA_WORKER_ID", name).stdout(Stdio::null()).stderr(log);
        cmd.spawn().expect("start worker")
    }

    /// What the daemon `name` has logged so far.
    pub fn worker_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// Runs `media-worker run --drain` to completion; panics with its logs if it fails or hangs.
    pub async fn drain(&self) -> String {
        self.drain_with(&[]).await
    }

    pub async fn drain_with(&self, extra: &[(&str, &str)]) -> String {
        let mut cmd = self.command(&["run", "--drain"]);
        cmd.envs(extra.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().expect("start media-worker");
        let output = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .expect("media-worker run --drain did not finish within 300 s")
            .expect("media-worker output");
        let logs = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "media-worker run --drain failed: {}\n{logs}", output.status);
        eprintln!("--- media-worker run --drain ---\n{logs}");
        logs
    }

    pub async fn upload(&self, key: &str, path: &Path) {
        self.storage().put_file(key, path, "application/octet-stream").await.expect("upload");
    }

    /// Every job made from `source_key`, oldest first.
    pub async fn jobs_for_source(&self, source_key: &str) -> Vec<JobStatus> {
        let mut found: Vec<JobStatus> =
            self.all_jobs().await.into_iter().filter(|s| s.job.source_key == source_key).collect();
        found.reverse();
        found
    }

    /// The status of the (newest) job made from `source_key`.
    pub async fn status_for_source(&self, source_key: &str) -> Option<JobStatus> {
        self.all_jobs().await.into_iter().find(|s| s.job.source_key == source_key)
    }

    /// The key of `file` among the outputs of the job made from `source_key` (in the folder of
    /// the attempt that completed it).
    pub async fn output(&self, source_key: &str, file: &str) -> String {
        let status = self.status_for_source(source_key).await.unwrap_or_else(|| panic!("no job for {source_key}"));
        format!("{}attempt-{}/{file}", status.job.output_dir, status.attempt)
    }

    /// Every message on the dead-letter queue (received and left hidden).
    pub async fn dead_letters(&self) -> Vec<Received> {
        receive_all(self.queues().dead_letter.as_ref()).await
    }

    /// Panics unless all three queues are empty.
    pub async fn assert_queues_empty(&self, include_dead_letter: bool) {
        let queues = self.queues();
        let mut list = vec![("ready", &queues.ready), ("processing", &queues.processing)];
        if include_dead_letter {
            list.push(("dead-letter", &queues.dead_letter));
        }
        for (name, queue) in list {
            let counts = queue.counts().await.expect("counts");
            assert_eq!(counts.total(), 0, "{name} queue is not empty: {counts:?}");
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Downloads an object into the temp folder.
    pub async fn download(&self, key: &str) -> PathBuf {
        let path = self.path(&format!("download-{}", uuid::Uuid::new_v4().simple()));
        self.storage().get_to_file(key, &path).await.expect("download");
        path
    }

    /// Downloads every object under the folder `prefix` (ending in `/`; its files only, flat)
    /// into a local folder named `name`.
    pub async fn download_folder(&self, prefix: &str, name: &str) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).expect("create the folder");
        for key in self.storage().list(prefix).await.expect("list") {
            let file = key.rsplit('/').next().expect("a file name");
            self.storage().get_to_file(&key, &dir.join(file)).await.expect("download");
        }
        dir
    }

    pub async fn json(&self, key: &str) -> Value {
        let bytes = self.storage().get_bytes(key).await.expect("get").unwrap_or_else(|| panic!("{key} is missing"));
        serde_json::from_slice(&bytes).expect("json")
    }
}

/// Waits until `check` finds something (polling every 50 ms), and returns it; panics after
/// `limit`, naming `what` it waited for.
pub async fn wait_until<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn receive_all(queue: &dyn Queue) -> Vec<Received> {
    let mut all = Vec::new();
    loop {
        let batch = queue.receive(10, Duration::ZERO, Duration::from_secs(60)).await.expect("receive");
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// A clip made by ffmpeg's lavfi sources: test pattern video and a tone.
pub struct Clip {
    pub seconds: f64,
    pub width: u32,
    pub height: u32,
    pub audio: bool,
    pub video: bool,
    /// ffmpeg muxer name: mp4, mov, matroska, ...
    pub format: &'static str,
    /// Frames between keyframes (fixed); default: the encoder's choice.
    pub keyframe_interval: Option<u32>,
    /// Drops every seventh frame, so frames are 40 or 80 ms apart: a variable frame rate.
    pub variable_frame_rate: bool,
}

impl Default for Clip {
    fn default() -> Self {
        Clip {
            seconds: 2.0,
            width: 320,
            height: 240,
            audio: true,
            video: true,
            format: "mp4",
            keyframe_interval: None,
            variable_frame_rate: false,
        }
    }
}

impl Clip {
    pub fn make(&self, path: &Path) {
        let mut args: Vec<String> = vec!["-hide_banner".into(), "-loglevel".into(), "error".into(), "-y".into()];
        if self.video {
            args.extend(["-f".into(), "lavfi".into(), "-i".into()]);
            args.push(format!("testsrc2=size={}x{}:rate=25:duration={}", self.width, self.height, self.seconds));
        }
        if self.audio {
            args.extend(["-f".into(), "lavfi".into(), "-i".into()]);
            args.push(format!("sine=frequency=440:sample_rate=48000:duration={}", self.seconds));
        }
        if self.video {
            args.extend(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"].map(String::from));
            if let Some(gop) = self.keyframe_interval {
                let gop = gop.to_string();
                args.extend(["-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0"].map(String::from));
            }
            if self.variable_frame_rate {
                args.extend(["-vf", "select='not(eq(mod(n,7),3))'", "-fps_mode", "vfr"].map(String::from));
            }
        }
        if self.audio {
            args.extend(["-c:a", "aac"].map(String::from));
        }
        args.extend(["-f".into(), self.format.into(), path.display().to_string()]);
        let status = Command::new("ffmpeg").args(&args).status().expect("run ffmpeg");
        assert!(status.success(), "ffmpeg could not make the test clip: {args:?}");
    }
}

/// What ffprobe says about a file, as raw JSON.
pub fn ffprobe(path: &Path) -> Value {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        output.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("ffprobe json")
}

/// The video frames ffprobe decodes in `file` (a playlist of local files too); 0 when it reads
/// none.
pub fn video_frames(file: &Path) -> u64 {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-protocol_whitelist", "file", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe");
    // A playlist lists its stream once per program too: the first count is the stream's.
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().find_map(|n| n.trim_end_matches(',').parse().ok()).unwrap_or(0)
}

/// The first stream of a type in ffprobe's JSON.
pub fn stream<'a>(probe: &'a Value, codec_type: &str) -> Option<&'a Value> {
    probe["streams"].as_array()?.iter().find(|s| s["codec_type"] == codec_type)
}

pub fn duration(probe: &Value) -> f64 {
    probe["format"]["duration"].as_str().and_then(|d| d.parse().ok()).expect("duration")
}
