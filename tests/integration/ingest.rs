//! Ingest as browsers and other slow, distant clients use it: real sockets on 127.0.0.1 in front
//! of the API, on the local backend where upload bodies stream through the API; resumable
//! multipart uploads; sources imported from a URL, served by a web server on 127.0.0.1.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use axum::response::IntoResponse;
use media_worker::domain::job::{ImportSource, JobSpec, OutputRequest};
use media_worker::domain::preset::Preset;
use media_worker::domain::status::{JobState, Stage};

use crate::api::{ApiServer, TOKEN};
use crate::require;
use crate::support::{Clip, Deployment, Kind, duration, emulator, ffprobe, media_tools, stream};

/// Asks the API for a local upload URL; returns the request line's target and content type.
async fn upload_target(api: &ApiServer) -> String {
    let request = json!({"filename": "slow.mp4", "content_type": "video/mp4", "size": 1000});
    let (status, ticket) = api.json(reqwest::Method::POST, "/v1/uploads", Some(request)).await;
    assert_eq!(status, 201, "{ticket}");
    let url = ticket["url"].as_str().expect("an upload URL");
    url.strip_prefix(&api.base).expect("the API's own URL").to_string()
}

/// Opens an upload whose body announces 1000 bytes and sends its first byte.
async fn start_slow_upload(api: &ApiServer, target: &str) -> TcpStream {
    let addr = api.base.strip_prefix("http://").expect("http base");
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let head =
        format!("PUT {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: video/mp4\r\nContent-Length: 1000\r\n\r\nx");
    socket.write_all(head.as_bytes()).await.expect("send the head");
    socket
}

/// The status code and JSON body of the answer on a raw socket (the server closes it).
async fn read_answer(socket: &mut TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await.expect("read the answer");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn slow_uploads_never_hold_up_health_checks_or_calls() {
    let d = Deployment::local().await;
    let api =
        ApiServer::start_with(&d, &[("MEDIA_API_CONCURRENCY", "4"), ("MEDIA_API_UPLOAD_IDLE_TIMEOUT", "3s")]).await;
    let mut trickling = Vec::new();
    for _ in 0..4 {
        let target = upload_target(&api).await;
        trickling.push(start_slow_upload(&api, &target).await);
    }
    let stalled_target = upload_target(&api).await;
    let mut stalled = start_slow_upload(&api, &stalled_target).await;

    // Four bodies at one byte a second hold as many permits as the API has for calls: health
    // checks and calls still answer at once, since upload bodies have permits of their own.
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    for _ in 0..3 {
        ticks.tick().await;
        for socket in &mut trickling {
            socket.write_all(b"x").await.expect("trickle a byte");
        }
        let asked = Instant::now();
        let health = api.client.get(api.url("/healthz")).send().await.expect("healthz");
        assert_eq!(health.status(), 200);
        assert!(asked.elapsed() < Duration::from_secs(1), "/healthz took {:?}", asked.elapsed());
        let (status, body) = api.json(reqwest::Method::GET, "/v1/jobs/job-none", None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("job_not_found")), "{body}");
        let ready = api.client.get(api.url("/readyz")).send().await.expect("readyz");
        assert_eq!(ready.status(), 200);
    }

    // The body that went silent is refused once the idle timeout passed.
    let (status, body) = read_answer(&mut stalled).await;
    assert_eq!((status, body["error"]["code"].as_str()), (408, Some("upload_too_slow")), "{body}");
    let bearer = api.client.get(api.url("/v1/jobs/job-none")).bearer_auth(TOKEN).send().await.expect("call");
    assert_eq!(bearer.status(), 404);
}

/// `/v1/multipart-uploads...` with the key in the query, both percent-encoded.
fn multipart_path(upload_id: &str, rest: &str, key: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let id = utf8_percent_encode(upload_id, NON_ALPHANUMERIC);
    format!("/v1/multipart-uploads/{id}{rest}?key={}", utf8_percent_encode(key, NON_ALPHANUMERIC))
}

/// A client of the multipart routes, as Uppy's `@uppy/aws-s3` drives them.
struct Multipart<'a> {
    api: &'a ApiServer,
    key: String,
    upload_id: String,
}

impl<'a> Multipart<'a> {
    async fn create(api: &'a ApiServer, size: u64) -> Self {
        let request = json!({"filename": "big clip.mp4", "content_type": "video/mp4", "size": size});
        let (status, created) = api.json(reqwest::Method::POST, "/v1/multipart-uploads", Some(request)).await;
        assert_eq!(status, 201, "{created}");
        let key = created["key"].as_str().expect("key").to_string();
        let upload_id = created["upload_id"].as_str().expect("upload id").to_string();
        Multipart { api, key, upload_id }
    }

    fn path(&self, rest: &str) -> String {
        multipart_path(&self.upload_id, rest, &self.key)
    }

    async fn sign(&self, number: u32, size: u64) -> Value {
        let path = self.path(&format!("/parts/{number}"));
        let (status, signed) = self.api.json(reqwest::Method::POST, &path, Some(json!({"size": size}))).await;
        assert_eq!(status, 200, "{signed}");
        signed
    }

    /// PUTs a body to a signed part URL as a browser would; the status and the ETag header.
    async fn put(&self, signed: &Value, body: Vec<u8>) -> (u16, Option<String>) {
        let mut put = self.api.client.put(signed["url"].as_str().expect("url"));
        for (name, value) in signed["headers"].as_object().expect("headers") {
            put = put.header(name.as_str(), value.as_str().expect("header value"));
        }
        let response = put.body(body).send().await.expect("PUT a part");
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
        (response.status().as_u16(), etag)
    }

    async fn upload_part(&self, number: u32, body: Vec<u8>) -> String {
        let signed = self.sign(number, body.len() as u64).await;
        let (status, etag) = self.put(&signed, body).await;
        assert_eq!(status, 200, "part {number}");
        etag.expect("the part's ETag")
    }

    async fn list(&self) -> (u16, Value) {
        self.api.json(reqwest::Method::GET, &self.path(""), None).await
    }

    async fn complete(&self, parts: Value) -> (u16, Value) {
        self.api.json(reqwest::Method::POST, &self.path("/complete"), Some(json!({"parts": parts}))).await
    }
}

const MIB: usize = 1 << 20;

/// Whether a presigned S3 URL signs the body's length.
fn signs_length(url: &str) -> bool {
    url::Url::parse(url)
        .expect("presigned URL")
        .query_pairs()
        .find(|(name, _)| name == "X-Amz-SignedHeaders")
        .is_some_and(|(_, value)| value.split(';').any(|h| h == "content-length"))
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn multipart_upload_resumes_and_makes_one_job(kind: Kind) {
    require!(media_tools() && (kind == Kind::Local || emulator()));
    let d = Deployment::new(kind).await;
    let api = ApiServer::start_with(&d, &[("MEDIA_API_MAX_UPLOAD", "12MiB")]).await;
    let (first, second, last) = (bytes(5 * MIB, 1), bytes(5 * MIB, 2), bytes(MIB, 3));
    let total = (first.len() + second.len() + last.len()) as u64;

    // A declared size above the limit is refused before anything is stored.
    let request = json!({"filename": "x.mp4", "content_type": "video/mp4", "size": 13 * MIB});
    let (status, body) = api.json(reqwest::Method::POST, "/v1/multipart-uploads", Some(request)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("too_large")), "{body}");

    let upload = Multipart::create(&api, total).await;
    let etag_one = upload.upload_part(1, first.clone()).await;
    let etag_two = upload.upload_part(2, second.clone()).await;
    // The connection drops here; the page reloads and asks what arrived.
    let (status, listed) = upload.list().await;
    assert_eq!(status, 200, "{listed}");
    let parts = listed["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 2, "{listed}");
    assert_eq!((parts[0]["part_number"].as_u64(), parts[0]["size"].as_u64()), (Some(1), Some(5 * MIB as u64)));
    assert_eq!(parts[0]["etag"].as_str().map(|e| format!("\"{e}\"")), Some(etag_one.clone()));
    assert_eq!(parts[1]["etag"].as_str().map(|e| format!("\"{e}\"")), Some(etag_two.clone()));

    // A part is bound to the length it was signed for.
    let signed = upload.sign(3, last.len() as u64).await;
    let url = signed["url"].as_str().expect("url");
    match kind {
        // The API receives the part and refuses what the signature does not cover.
        Kind::Local => {
            let (status, _) = upload.put(&signed, bytes(MIB + 1, 4)).await;
            assert_eq!(status, 413);
        }
        // S3 refuses a body of another length because Content-Length is a signed header (the
        // emulator does not check signatures, so the signature itself is checked here), for
        // parts and for single-PUT uploads alike, which must therefore declare their size.
        Kind::Aws => {
            assert!(signs_length(url), "{url}");
            let single = json!({"filename": "one.mp4", "content_type": "video/mp4", "size": 1234});
            let (status, ticket) = api.json(reqwest::Method::POST, "/v1/uploads", Some(single)).await;
            assert_eq!(status, 201, "{ticket}");
            assert!(signs_length(ticket["url"].as_str().expect("url")), "{ticket}");
            let unsized_request = json!({"filename": "one.mp4", "content_type": "video/mp4"});
            let (status, body) = api.json(reqwest::Method::POST, "/v1/uploads", Some(unsized_request)).await;
            assert_eq!((status, body["error"]["code"].as_str()), (422, Some("size_required")), "{body}");
        }
    }
    let etag_three = upload.upload_part(3, last.clone()).await;
    let (status, info) = upload
        .complete(json!([
            {"part_number": 1, "etag": etag_one}, {"part_number": 2, "etag": etag_two}, {"part_number": 3, "etag": etag_three}
        ]))
        .await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["key"], upload.key.as_str());
    assert_eq!(info["size"].as_u64(), Some(total));
    let stored = d.download(&upload.key).await;
    let expected: Vec<u8> = [first, second, last].concat();
    assert!(std::fs::read(&stored).expect("stored file") == expected, "the parts were assembled in order");
    // Done: the upload no longer exists, a retried completion is 404.
    let (status, _) = upload.complete(json!([{"part_number": 1, "etag": "x"}])).await;
    assert_eq!(status, 404);

    // The upload makes exactly one job, as any upload does (a bag of bytes, so it fails as not media).
    d.drain().await;
    let jobs: Vec<_> = d.all_jobs().await.into_iter().filter(|s| s.job.source_key == upload.key).collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = d.status_for_source(&upload.key).await.expect("the upload's job");
    assert_eq!(job.error.as_ref().map(|e| e.code.as_str()), Some("not_media"));

    // Parts are counted as they are signed: one that would take the upload past the limit is
    // refused before any byte of it is sent (a part signed again replaces its own length).
    let over = Multipart::create(&api, 10 * MIB as u64).await;
    for number in 1..=2u32 {
        over.upload_part(number, bytes(5 * MIB, number as u8)).await;
    }
    let path = over.path("/parts/3");
    let (status, body) = api.json(reqwest::Method::POST, &path, Some(json!({"size": 5 * MIB}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("too_large")), "{body}");
    over.sign(2, 2 * MIB as u64).await;
    over.sign(3, 2 * MIB as u64).await;
    let response = api.client.delete(api.url(&over.path(""))).bearer_auth(TOKEN).send().await.expect("abort");
    assert_eq!(response.status(), 204);
    assert_eq!(over.list().await.0, 404);
    assert!(d.storage().head(&over.key).await.expect("head").is_none());
    assert!(d.storage().list("jobs/multipart/").await.unwrap().is_empty(), "no record of signed parts is left");

    // Abort removes everything.
    let aborted = Multipart::create(&api, 6 * MIB as u64).await;
    aborted.upload_part(1, bytes(5 * MIB, 9)).await;
    let response = api.client.delete(api.url(&aborted.path(""))).bearer_auth(TOKEN).send().await.expect("abort");
    assert_eq!(response.status(), 204);
    assert_eq!(aborted.list().await.0, 404);
    assert!(d.storage().head(&aborted.key).await.expect("head").is_none());
    match kind {
        Kind::Aws => {
            let s3 = d.s3.as_ref().expect("S3 client");
            let bucket = d.vars["MEDIA_S3_BUCKET"].as_str();
            let open = s3.list_multipart_uploads().bucket(bucket).send().await.expect("list uploads");
            assert!(open.uploads().is_empty(), "{:?}", open.uploads());
        }
        Kind::Local => {
            let folder = d.dir.path().join("data/storage/.tmp/multipart");
            let left: Vec<_> = std::fs::read_dir(&folder).map(|e| e.flatten().collect()).unwrap_or_default();
            assert!(left.is_empty(), "{left:?}");
        }
    }
}

crate::on_both_backends!(multipart_upload_resumes_and_makes_one_job);

/// A web server on 127.0.0.1 for URL imports: `/media/clip.mp4` is the clip; `/hop` redirects
/// to it; `/flaky.mp4` sends 1000 bytes and falls silent the first time, the clip after that;
/// `/stall` always falls silent; `/silent` never even answers; `/to-private` redirects to a
/// private address; `/big` streams 2 MiB without announcing a length; `/missing` is 404.
async fn origin(clip: Vec<u8>) -> String {
    use axum::body::{Body, Bytes};
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    use futures_util::StreamExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let clip = Bytes::from(clip);
    let flaky_requests = Arc::new(AtomicUsize::new(0));
    let silent_after = |head: Bytes| {
        let first = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(head)]);
        Body::from_stream(first.chain(futures_util::stream::pending()))
    };
    let video = |bytes: Bytes| ([(header::CONTENT_TYPE, "video/mp4")], bytes);
    let app = axum::Router::new()
        .route(
            "/media/clip.mp4",
            get({
                let clip = clip.clone();
                move || async move { video(clip) }
            }),
        )
        .route("/hop", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/media/clip.mp4")]) }))
        .route(
            "/flaky.mp4",
            get({
                let clip = clip.clone();
                move || async move {
                    if flaky_requests.fetch_add(1, Ordering::SeqCst) == 0 {
                        silent_after(clip.slice(..1000)).into_response()
                    } else {
                        video(clip).into_response()
                    }
                }
            }),
        )
        .route(
            "/stall",
            get({
                let clip = clip.clone();
                move || async move { silent_after(clip.slice(..1000)) }
            }),
        )
        .route("/to-private", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "http://10.0.0.1/clip.mp4")]) }))
        .route(
            "/big",
            get(|| async {
                let chunks = (0..32).map(|_| Ok::<Bytes, std::io::Error>(Bytes::from(vec![0u8; 64 * 1024])));
                Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route("/silent", get(futures_util::future::pending::<StatusCode>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn url_imports_are_fetched_by_the_worker_and_refused_when_unsafe(kind: Kind) {
    require!(media_tools() && (kind == Kind::Local || emulator()));
    let mut d = Deployment::new(kind).await;
    let clip_path = d.path("clip.mp4");
    Clip::default().make(&clip_path);
    let clip = std::fs::read(&clip_path).expect("the clip");
    let base = origin(clip.clone()).await;
    for (name, value) in [
        ("MEDIA_IMPORT_ALLOW_LOOPBACK", "true"),
        ("MEDIA_IMPORT_IDLE_TIMEOUT", "1s"),
        ("MEDIA_MAX_SOURCE_SIZE", "1MiB"),
        ("MEDIA_MAX_ATTEMPTS", "2"),
        ("MEDIA_RETRY_BASE_DELAY", "1s"),
    ] {
        d.vars.insert(name.into(), value.into());
    }
    let with_url = |url: &str| json!({"input": {"url": url}, "outputs": [{"preset": "mp4-h264"}]});

    // Refused when submitted: loopback without the development setting, metadata, private.
    let strict = ApiServer::start_with(&d, &[("MEDIA_IMPORT_ALLOW_LOOPBACK", "false")]).await;
    let refused_now = [
        format!("{base}/media/clip.mp4"),
        "https://169.254.169.254/latest/meta-data/".into(),
        "https://10.0.0.1/clip.mp4".into(),
    ];
    for url in &refused_now {
        let (status, body) = strict.json(reqwest::Method::POST, "/v1/jobs", Some(with_url(url))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (422, Some("fetch_refused")), "{url}: {body}");
    }

    let api = ApiServer::start_with(&d, &[]).await;
    let mut jobs = std::collections::BTreeMap::new();
    for path in ["/hop", "/flaky.mp4", "/stall", "/silent", "/to-private", "/big", "/missing"] {
        let (status, body) =
            api.json(reqwest::Method::POST, "/v1/jobs", Some(with_url(&format!("{base}{path}")))).await;
        assert_eq!(status, 202, "{path}: {body}");
        jobs.insert(path, body["job_id"].as_str().expect("job id").to_string());
    }
    let logs = d.drain().await;
    // A name resolving to a loopback address, straight to the queue (the API refuses it as
    // above): the worker's own check, at connect time, refuses it too.
    let port = base.rsplit(':').next().expect("port");
    let named = JobSpec {
        job_id: "job-00000000000000000000000000000001".into(),
        source_key: "uploads/imports/job-00000000000000000000000000000001/clip.mp4".into(),
        outputs: vec![OutputRequest::new(Preset::Mp4H264)],
        output_dir: "outputs/imports/job-00000000000000000000000000000001/".into(),
        source: Default::default(),
        notify: None,
        split: None,
        import: Some(ImportSource { url: format!("https://localhost:{port}/media/clip.mp4") }),
        qc: None,
        loudness: None,
        repackage: None,
        watermark: None,
    };
    media_worker::jobs::submit(&d.store(), d.queues().ready.as_ref(), &named, 2).await.expect("submit");
    let named_logs = d.drain_with(&[("MEDIA_IMPORT_ALLOW_LOOPBACK", "false")]).await;
    let status = |id: &str| {
        let store = d.store();
        let id = id.to_string();
        async move { store.read(&id).await.expect("read").expect("a status") }
    };

    // Followed the redirect, stored the source like an upload, made exactly one job of it.
    let done = status(&jobs["/hop"]).await;
    assert_eq!(done.state, JobState::Completed, "{:?}\n{logs}", done.error);
    assert!(done.job.source_key.starts_with(&format!("uploads/imports/{}/", done.job_id)), "{}", done.job.source_key);
    let stored = d.download(&done.job.source_key).await;
    assert!(std::fs::read(&stored).expect("stored source") == clip, "the stored source is the served file");
    assert!(done.timeline.iter().any(|e| e.stage == Stage::Importing), "{:?}", done.timeline);
    let same_source: Vec<String> =
        d.all_jobs().await.into_iter().filter(|s| s.job.source_key == done.job.source_key).map(|s| s.job_id).collect();
    // The stored source's upload event made no second job.
    assert_eq!(same_source, vec![done.job_id.clone()], "the stored source's upload event made a second job");
    let manifest = d.json(done.manifest_key.as_deref().expect("manifest")).await;
    let output = d.download(manifest["outputs"][0]["key"].as_str().expect("output key")).await;
    let probe = ffprobe(&output);
    assert_eq!(stream(&probe, "video").expect("video")["codec_name"], "h264");
    assert!((duration(&probe) - 2.0).abs() < 0.1, "{}", duration(&probe));

    // A server that fell silent once: retried, then imported.
    let flaky = status(&jobs["/flaky.mp4"]).await;
    assert_eq!((flaky.state, flaky.attempt), (JobState::Completed, 2), "{:?}", flaky.timeline);
    assert!(flaky.timeline.iter().any(|e| e.state == JobState::Retrying), "{:?}", flaky.timeline);

    // Failures, typed: silent for good is retried then failed; the rest are final at once.
    let expected = [
        ("/stall", "fetch_failed", true, "could not be fetched"),
        ("/silent", "fetch_failed", true, "could not be fetched"),
        ("/to-private", "fetch_refused", false, "does not resolve to public addresses"),
        ("/big", "fetch_refused", false, "larger than 1048576 bytes"),
        ("/missing", "fetch_refused", false, "404 Not Found"),
    ];
    for (path, code, retryable, words) in expected {
        let failed = status(&jobs[path]).await;
        let error = failed.error.clone().expect("an error");
        assert_eq!(
            (failed.state, error.code.as_str(), error.retryable),
            (JobState::Failed, code, retryable),
            "{path}: {error:?}"
        );
        assert!(error.message.contains(words), "{path}: {}", error.message);
        assert_eq!(failed.attempt, if retryable { 2 } else { 1 }, "{path}");
        assert!(d.storage().head(&failed.job.source_key).await.expect("head").is_none(), "{path}: nothing stored");
    }
    let by_name = status("job-00000000000000000000000000000001").await;
    let error = by_name.error.expect("an error");
    assert_eq!((by_name.state, error.code.as_str()), (JobState::Failed, "fetch_refused"), "{named_logs}");
    assert!(error.message.contains("does not resolve to public addresses"), "{}", error.message);
    // Which kind of address it was is in the worker's log only.
    assert!(named_logs.contains("loopback address"), "{named_logs}");
    assert!(logs.contains("private address"), "{logs}");
}

crate::on_both_backends!(url_imports_are_fetched_by_the_worker_and_refused_when_unsafe);
