//! Router tests on the local backend in a temp folder, one request at a time through
//! `tower::ServiceExt::oneshot`: no sockets, no worker.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::Utc;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

use super::config::ApiConfig;
use super::{ApiState, router};
use crate::backend;
use crate::config::Config;
use crate::domain::job::JobSpec;
use crate::domain::status::{JobState, JobStatus, Stage};
use crate::jobs::{Attempt, Event};

mod hardening;

const TOKEN: &str = "test-token-0123456789";
const OTHER_TOKEN: &str = "other-token-0123456789";

struct Api {
    app: Router,
    state: ApiState,
    _dir: TempDir,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts an error answer in the API's shape, with this status and code.
    fn assert_error(&self, status: StatusCode, code: &str) {
        let body = self.json();
        assert_eq!(self.status, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json");
    }
}

async fn api_with(extra: &[(&str, &str)]) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = vec![
        ("MEDIA_BACKEND".to_string(), "local".to_string()),
        ("MEDIA_DATA_DIR".to_string(), dir.path().join("data").display().to_string()),
        ("MEDIA_WORK_DIR".to_string(), dir.path().join("work").display().to_string()),
        ("MEDIA_API_TOKENS".to_string(), format!("{TOKEN},{OTHER_TOKEN}")),
        ("MEDIA_API_MAX_UPLOAD".to_string(), "64KiB".to_string()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let lookup = |name: &str| vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let config = Config::from_lookup(lookup).unwrap();
    let api = ApiConfig::from_lookup(lookup).unwrap();
    let backend = backend::connect(&config).await.unwrap();
    let state = ApiState::new(config, api, backend, "127.0.0.1:8080".parse().unwrap()).unwrap();
    Api { app: router(state.clone()), state, _dir: dir }
}

async fn api() -> Api {
    api_with(&[]).await
}

impl Api {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        Answer { status: parts.status, headers: parts.headers, body }
    }

    /// A request with the token and, when given, a JSON body.
    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Answer {
        self.call_as(Some(TOKEN), method, uri, body, &[]).await
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        uri: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match body {
            Some(body) => {
                request.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())).unwrap()
            }
            None => request.body(Body::empty()).unwrap(),
        };
        self.send(request).await
    }

    /// Stores a source under the upload prefix and takes its upload event off the queue.
    async fn source(&self, key: &str) {
        self.state.backend.storage.put_bytes(key, b"not really a video".to_vec(), "video/mp4").await.unwrap();
        self.drain_ready().await;
    }

    async fn drain_ready(&self) -> Vec<String> {
        let ready = &self.state.backend.queues.ready;
        let mut bodies = Vec::new();
        loop {
            let batch = ready.receive(10, Duration::ZERO, Duration::from_secs(60)).await.unwrap();
            if batch.is_empty() {
                return bodies;
            }
            for message in batch {
                ready.delete(&message.receipt).await.unwrap();
                bodies.push(message.body);
            }
        }
    }

    async fn status(&self, id: &str) -> JobStatus {
        self.state.store.read(id).await.unwrap().expect("a status")
    }
}

fn job_request(key: &str) -> Value {
    json!({"input": {"key": key}, "outputs": [{"preset": "mp4-h264"}]})
}

#[tokio::test]
async fn tokens_are_required_except_on_health_endpoints() {
    let api = api().await;
    for (token, what) in [(None, "missing"), (Some("wrong-token-0123456789"), "wrong")] {
        for (method, uri) in [
            (Method::GET, "/v1/jobs/job-1"),
            (Method::POST, "/v1/jobs"),
            (Method::DELETE, "/v1/jobs/job-1"),
            (Method::POST, "/v1/uploads"),
            (Method::GET, "/v1/uploads/uploads/a/b.mp4"),
            (Method::GET, "/v1/jobs/job-1/events"),
            (Method::GET, "/v1/files/outputs/a/b.mp4"),
        ] {
            let answer = api.call_as(token, method.clone(), uri, Some(job_request("uploads/a.mp4")), &[]).await;
            answer.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer", "{what} token, {method} {uri}");
        }
    }
    // Unknown routes are unknown to everyone: the OpenAPI document lists the known ones anyway.
    api.call_as(None, Method::GET, "/v1/nothing-here", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    for uri in ["/healthz", "/readyz", "/openapi.json"] {
        let answer = api.call_as(None, Method::GET, uri, None, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        answer.json();
    }
    assert_eq!(api.call_as(None, Method::GET, "/readyz", None, &[]).await.json()["ready"], true);
    api.call(Method::GET, "/v1/jobs/job-1", None).await.assert_error(StatusCode::NOT_FOUND, "job_not_found");
    api.call_as(Some(OTHER_TOKEN), Method::GET, "/v1/jobs/job-1", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "job_not_found");
}

#[tokio::test]
async fn bad_requests_are_json_4xx_errors() {
    let api = api().await;
    api.source("uploads/a/clip.mp4").await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "priority": 9}),
            unprocessable,
            "invalid_request",
            "priority",
        ),
        (
            json!({"input": {"key": "uploads/a/clip.mp4", "bucket": "x"}, "outputs": [{"preset": "mp4-h264"}]}),
            unprocessable,
            "invalid_request",
            "bucket",
        ),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264", "ffmpeg_args": "-i /etc/passwd"}]}),
            unprocessable,
            "invalid_request",
            "ffmpeg_args",
        ),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": "mp4-h264"}),
            unprocessable,
            "invalid_request",
            "outputs",
        ),
        (
            json!({"input": {"key": 42}, "outputs": [{"preset": "mp4-h264"}]}),
            unprocessable,
            "invalid_request",
            "input.key",
        ),
        (json!({"input": {"key": "uploads/a/clip.mp4"}}), unprocessable, "invalid_request", "outputs"),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "gif; rm -rf /"}]}),
            unprocessable,
            "invalid_request",
            "mp4-h264",
        ),
        (json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": []}), unprocessable, "invalid_job", "outputs"),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}, {"preset": "mp4-h264"}]}),
            unprocessable,
            "invalid_job",
            "distinct",
        ),
        (job_request("../x"), unprocessable, "invalid_key", ".."),
        (job_request("uploads/../../etc/passwd"), unprocessable, "invalid_key", ".."),
        (job_request("/etc/passwd"), unprocessable, "invalid_key", "'/'"),
        (job_request("uploads/a\u{0}b"), unprocessable, "invalid_key", "control"),
        (job_request("outputs/x/mp4-h264.mp4"), unprocessable, "invalid_key", "uploads/"),
        (job_request("jobs/x.json"), unprocessable, "invalid_key", "uploads/"),
        (job_request("uploads/"), unprocessable, "invalid_key", ""),
        (job_request("uploads/a/missing.mp4"), unprocessable, "source_not_found", "missing.mp4"),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "output_prefix": "outputs/"}),
            unprocessable,
            "invalid_output_prefix",
            "outputs/",
        ),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "output_prefix": "jobs/x/"}),
            unprocessable,
            "invalid_output_prefix",
            "",
        ),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "output_prefix": "outputs/../jobs/"}),
            unprocessable,
            "invalid_output_prefix",
            "..",
        ),
        (
            json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "output_prefix": "outputs/x"}),
            unprocessable,
            "invalid_output_prefix",
            "",
        ),
    ];
    for (body, status, code, mention) in cases {
        let answer = api.call(Method::POST, "/v1/jobs", Some(body.clone())).await;
        answer.assert_error(status, code);
        let message = answer.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(mention), "{body}: `{message}` does not mention `{mention}`");
    }

    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = Request::post("/v1/jobs").header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body)).unwrap()
    };
    api.send(raw("{\"input\": ", Some("application/json"))).await.assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    api.send(raw("{}", None)).await.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    api.send(raw("{}", Some("text/plain")))
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let huge = Box::leak(format!("{{\"input\": {{\"key\": \"{}\"}}}}", "a".repeat(100 << 10)).into_boxed_str());
    api.send(raw(huge, Some("application/json")))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    for (uri, code) in [("/v1/jobs/a.b", "invalid_job_id"), ("/v1/jobs/..%2Fetc", "invalid_job_id")] {
        api.call(Method::GET, uri, None).await.assert_error(StatusCode::BAD_REQUEST, code);
        api.call(Method::DELETE, uri, None).await.assert_error(StatusCode::BAD_REQUEST, code);
    }
    api.call(Method::GET, &format!("/v1/jobs/{}", "x".repeat(65)), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_job_id");
    api.call(Method::GET, "/v1/nothing-here", None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    let answer = api.call(Method::PUT, "/v1/jobs", None).await;
    answer.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    for (body, code) in [
        (json!({"filename": "a.mp4", "content_type": "video/mp4", "size": 1 << 20}), "too_large"),
        (json!({"filename": "a.mp4", "content_type": "video/mp4\r\nx: y"}), "invalid_content_type"),
        (json!({"filename": "", "content_type": "video/mp4"}), "invalid_filename"),
        (json!({"filename": "a.mp4", "content_type": "video/mp4", "key": "uploads/mine.mp4"}), "invalid_request"),
        (json!({"filename": "a.mp4", "content_type": "video/mp4", "size": -1}), "invalid_request"),
    ] {
        api.call(Method::POST, "/v1/uploads", Some(body)).await.assert_error(unprocessable, code);
    }
    for key in ["uploads/..%2F..%2Fetc/passwd", "outputs/a/b.mp4", "jobs/x.json", "uploads/a%5Cb"] {
        let uri = format!("/v1/uploads/{key}");
        let answer = api.call(Method::GET, &uri, None).await;
        answer.assert_error(unprocessable, "invalid_key");
        let answer = api.call_as(None, Method::PUT, &format!("{uri}?expires=1&signature=00"), None, &[]).await;
        answer.assert_error(unprocessable, "invalid_key");
    }
    // Nothing was published by any of these.
    assert!(api.drain_ready().await.is_empty());
    assert!(api.state.backend.storage.list("jobs/").await.unwrap().is_empty());
}

#[tokio::test]
async fn local_uploads_stream_through_signed_urls_and_name_their_job() {
    let api = api().await;
    let answer = api
        .call(
            Method::POST,
            "/v1/uploads",
            Some(json!({"filename": "../../My Clip (1).mov", "content_type": "video/quicktime"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.json());
    let ticket = answer.json();
    let key = ticket["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("uploads/") && key.ends_with("/My Clip _1_.mov"), "{key}");
    assert_eq!(ticket["method"], "PUT");
    assert_eq!(ticket["headers"]["content-type"], "video/quicktime");
    let url = ticket["url"].as_str().unwrap();
    let path = url.strip_prefix("http://127.0.0.1:8080").expect("an absolute URL of the API");
    assert!(path.starts_with("/v1/uploads/uploads/") && path.contains("My%20Clip%20_1_.mov?expires="), "{path}");

    let put = |path: String, content_type: &'static str, body: Vec<u8>| {
        Request::put(path).header(header::CONTENT_TYPE, content_type).body(Body::from(body)).unwrap()
    };
    // Another content type, a tampered signature, no signature, or too much data: refused.
    api.send(put(path.to_string(), "text/html", b"x".to_vec()))
        .await
        .assert_error(StatusCode::FORBIDDEN, "bad_signature");
    let tampered = format!("{}0", &path[..path.len() - 1]);
    let tampered = if tampered == path { format!("{}1", &path[..path.len() - 1]) } else { tampered };
    api.send(put(tampered, "video/quicktime", b"x".to_vec()))
        .await
        .assert_error(StatusCode::FORBIDDEN, "bad_signature");
    let unsigned = path.split('?').next().unwrap().to_string();
    api.send(put(unsigned, "video/quicktime", b"x".to_vec()))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    api.send(put(path.to_string(), "video/quicktime", vec![0; 65 << 10]))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(api.state.backend.storage.head(&key).await.unwrap(), None);
    assert!(api.drain_ready().await.is_empty(), "no event for refused uploads");

    let answer = api.send(put(path.to_string(), "video/quicktime", b"0123456789".to_vec())).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let stored = answer.json();
    assert_eq!(stored["key"], key.as_str());
    assert_eq!(stored["size"], 10);
    let job_id = stored["job_id"].as_str().unwrap().to_string();
    assert_eq!(stored["status_url"], format!("/v1/jobs/{job_id}"));
    // The upload event is what the worker turns into that very job.
    let events = api.drain_ready().await;
    assert_eq!(events.len(), 1);
    let layout = &api.state.config.layout;
    let ctx = crate::domain::event::EventContext { layout, default_presets: &api.state.config.default_presets };
    let parsed = crate::domain::event::parse_ready_message(&events[0], &ctx).unwrap();
    assert_eq!(parsed.jobs[0].job.job_id, job_id);
    // And the upload's description names it too.
    let encoded = url.split('?').next().unwrap().strip_prefix("http://127.0.0.1:8080/v1/uploads/").unwrap();
    let info = api.call(Method::GET, &format!("/v1/uploads/{encoded}"), None).await;
    assert_eq!(info.status, StatusCode::OK);
    assert_eq!(info.json()["job_id"], job_id.as_str());
    let missing = api.call(Method::GET, "/v1/uploads/uploads/none/x.mp4", None).await;
    missing.assert_error(StatusCode::NOT_FOUND, "upload_not_found");
}

#[tokio::test]
async fn idempotency_keys_return_the_same_job_per_caller() {
    let api = api().await;
    api.source("uploads/a/clip.mp4").await;
    let headers = [("idempotency-key", "order-17")];
    let first =
        api.call_as(Some(TOKEN), Method::POST, "/v1/jobs", Some(job_request("uploads/a/clip.mp4")), &headers).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.json());
    let job_id = first.json()["job_id"].as_str().unwrap().to_string();
    assert_eq!(first.headers[header::LOCATION], format!("/v1/jobs/{job_id}"));
    assert_eq!(first.json()["state"], "queued");
    assert_eq!(first.json()["output_dir"], format!("outputs/a/clip.mp4/{job_id}/"));
    assert!(first.headers.get("idempotent-replayed").is_none());
    assert_eq!(api.drain_ready().await.len(), 1, "one message published");

    let again =
        api.call_as(Some(TOKEN), Method::POST, "/v1/jobs", Some(job_request("uploads/a/clip.mp4")), &headers).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.json()["job_id"], job_id.as_str());
    assert_eq!(again.headers["idempotent-replayed"], "true");
    // Still queued: republished, in case the first request never got to publish.
    assert_eq!(api.drain_ready().await.len(), 1);

    let different = json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "output_prefix": "outputs/other/"});
    let reused = api.call_as(Some(TOKEN), Method::POST, "/v1/jobs", Some(different), &headers).await;
    reused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");

    let other = api
        .call_as(Some(OTHER_TOKEN), Method::POST, "/v1/jobs", Some(job_request("uploads/a/clip.mp4")), &headers)
        .await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    assert_ne!(other.json()["job_id"], job_id.as_str(), "keys are scoped to the caller");

    let plain = api.call(Method::POST, "/v1/jobs", Some(job_request("uploads/a/clip.mp4"))).await;
    assert_ne!(plain.json()["job_id"], job_id.as_str());
    let bad = api
        .call_as(
            Some(TOKEN),
            Method::POST,
            "/v1/jobs",
            Some(job_request("uploads/a/clip.mp4")),
            &[("idempotency-key", "")],
        )
        .await;
    bad.assert_error(StatusCode::BAD_REQUEST, "invalid_idempotency_key");
}

#[tokio::test]
async fn a_queued_job_is_cancelled_and_its_message_skipped() {
    let api = api().await;
    api.source("uploads/a/clip.mp4").await;
    let submitted = api.call(Method::POST, "/v1/jobs", Some(job_request("uploads/a/clip.mp4"))).await;
    let job_id = submitted.json()["job_id"].as_str().unwrap().to_string();

    let answer = api.call(Method::DELETE, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.json());
    assert_eq!(answer.json(), json!({"job_id": job_id, "action": "cancelled", "state": "cancelled", "deleted": []}));
    let status = api.status(&job_id).await;
    assert_eq!(status.state, JobState::Cancelled);
    assert!(status.timeline.iter().any(|e| e.note.as_deref() == Some("cancel requested through the API")));

    // The worker drops the queued message: the job ended.
    let worker = crate::worker::Worker::new(api.state.config.clone(), api.state.backend.clone());
    assert_eq!(worker.poll_once().await.unwrap(), 1);
    assert_eq!(worker.summary().skipped, 1);
    assert_eq!(worker.running(), 0);
    assert_eq!(api.status(&job_id).await.state, JobState::Cancelled);

    // A second DELETE finds it ended, with nothing to delete.
    let answer = api.call(Method::DELETE, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["action"], "outputs_deleted");
    assert_eq!(answer.json()["deleted"], json!([]));
}

/// A completed job as the worker leaves it: outputs of attempt 1, manifest, status.
async fn completed_job(api: &Api, job_id: &str, output_dir: &str) -> JobStatus {
    let storage = api.state.backend.storage.as_ref();
    let job: JobSpec = serde_json::from_value(json!({
        "job_id": job_id, "source_key": "uploads/a/clip.mp4", "outputs": [{"preset": "mp4-h264"}], "output_dir": output_dir
    }))
    .unwrap();
    let output = format!("{output_dir}attempt-1/mp4-h264.mp4");
    storage.put_bytes(&output, b"fake mp4 bytes".to_vec(), "video/mp4").await.unwrap();
    let manifest = json!({
        "version": 1, "job_id": job_id, "attempt": 1, "worker": "w", "completed_at": Utc::now(),
        "source": {"key": "uploads/a/clip.mp4", "size": 10, "format": "mov,mp4"},
        "outputs": [{"preset": "mp4-h264", "key": output, "files": [output], "size": 14, "content_type": "video/mp4", "format": "mov,mp4"}],
        "timings": {"download_ms": 1, "probe_ms": 1, "transcode_ms": 1, "upload_ms": 1, "total_ms": 4}
    });
    let manifest_key = format!("{output_dir}manifest.json");
    storage.put_bytes(&manifest_key, manifest.to_string().into_bytes(), "application/json").await.unwrap();
    let store = &api.state.store;
    let attempt = Attempt::start(store, &job, 1, "run-1", "w", 3).await.unwrap().unwrap();
    attempt.stage(Stage::Finalizing).await.unwrap();
    attempt.complete(&manifest_key).await.unwrap()
}

#[tokio::test]
async fn a_completed_job_has_signed_downloads_and_its_outputs_can_be_deleted() {
    let api = api().await;
    completed_job(&api, "job-done", "outputs/a/clip.mp4/job-done/").await;
    // Another job of the same source has its own folder, which is not this job's to delete.
    let nested = "outputs/a/clip.mp4/job-later/attempt-1/mp4-h264.mp4";
    api.state.backend.storage.put_bytes(nested, b"x".to_vec(), "video/mp4").await.unwrap();

    let answer = api.call(Method::GET, "/v1/jobs/job-done", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let view = answer.json();
    assert_eq!(view["state"], "completed");
    assert_eq!(view["manifest"]["outputs"][0]["key"], "outputs/a/clip.mp4/job-done/attempt-1/mp4-h264.mp4");
    let downloads = view["downloads"].as_array().unwrap();
    assert_eq!(downloads.len(), 2, "the output and the manifest");
    let url = downloads[0]["url"].as_str().unwrap();
    let path = url.strip_prefix("http://127.0.0.1:8080").unwrap().to_string();
    assert!(path.starts_with("/v1/files/outputs/a/clip.mp4/job-done/attempt-1/mp4-h264.mp4?expires="), "{path}");

    // The signed URL works without a token; a tampered one does not; a token works too.
    let file = api.call_as(None, Method::GET, &path, None, &[]).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.body, b"fake mp4 bytes");
    assert_eq!(file.headers[header::CONTENT_TYPE], "video/mp4");
    let other = path.replace("mp4-h264.mp4", "manifest.json");
    api.call_as(None, Method::GET, &other, None, &[]).await.assert_error(StatusCode::FORBIDDEN, "bad_signature");
    let unsigned = path.split('?').next().unwrap();
    api.call_as(None, Method::GET, unsigned, None, &[]).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(api.call(Method::GET, unsigned, None).await.status, StatusCode::OK);
    api.call(Method::GET, "/v1/files/uploads/a/clip.mp4", None)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_key");
    api.call(Method::GET, "/v1/files/outputs/a/..%2F..%2Fjobs/x.json", None)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_key");
    api.call(Method::GET, "/v1/files/outputs/none.mp4", None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "file_not_found");

    // The event stream of an ended job: its state, then the end.
    let events = api.call(Method::GET, "/v1/jobs/job-done/events", None).await;
    assert_eq!(events.status, StatusCode::OK);
    assert_eq!(events.headers[header::CONTENT_TYPE], "text/event-stream");
    let text = String::from_utf8(events.body).unwrap();
    assert_eq!(text.matches("event: status").count(), 1, "{text}");
    assert!(text.contains("\"state\":\"completed\""), "{text}");

    let answer = api.call(Method::DELETE, "/v1/jobs/job-done", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json());
    assert_eq!(
        answer.json(),
        json!({"job_id": "job-done", "action": "outputs_deleted", "state": "completed",
               "deleted": ["outputs/a/clip.mp4/job-done/manifest.json", "outputs/a/clip.mp4/job-done/attempt-1/mp4-h264.mp4"]})
    );
    assert_eq!(api.state.backend.storage.list("outputs/").await.unwrap(), [nested]);
    let view = api.call(Method::GET, "/v1/jobs/job-done", None).await.json();
    assert_eq!(view["state"], "completed");
    assert_eq!(view["manifest"], Value::Null);
    assert!(
        view["timeline"].as_array().unwrap().iter().any(|e| e["note"].as_str().is_some_and(|n| n.contains("deleted")))
    );
}

#[tokio::test]
async fn a_cancel_never_overwrites_an_ending() {
    let api = api().await;
    let status = completed_job(&api, "job-raced", "outputs/a/clip.mp4/job-raced/").await;
    // The API read the job while it ran; the worker completed it before the cancel was written.
    let cancel = Event::Cancel { note: "late".into() };
    let refused = api.state.store.apply("job-raced", &cancel).await.unwrap();
    assert!(matches!(refused, crate::jobs::Applied::Refused { .. }), "{refused:?}");
    assert_eq!(api.status("job-raced").await, status);
}

#[tokio::test]
async fn the_openapi_document_is_served_as_json_with_every_path() {
    let api = api().await;
    let answer = api.call_as(None, Method::GET, "/openapi.json", None, &[]).await;
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let doc = answer.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths.len(), 14, "{paths:?}");
    let operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| {
            item.as_object().unwrap().values().filter_map(|op| op["operationId"].as_str().map(String::from))
        })
        .collect();
    let mut unique = operations.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), operations.len(), "operation ids must be unique: {operations:?}");
}

#[tokio::test]
async fn anonymous_mode_accepts_requests_without_tokens() {
    let api = api_with(&[("MEDIA_API_TOKENS", ""), ("MEDIA_API_ALLOW_ANONYMOUS", "true")]).await;
    api.call_as(None, Method::GET, "/v1/jobs/job-1", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "job_not_found");
}

/// Per-job webhooks: refused unless the deployment signs webhooks and the URL is safe to call
/// (checked at submit; the worker checks every connection again).
#[tokio::test]
async fn notify_urls_are_checked_at_submit() {
    let with_notify = |url: &str| {
        let mut body = job_request("uploads/a/clip.mp4");
        body["notify"] = json!({"url": url});
        body
    };
    let plain = api().await;
    plain.source("uploads/a/clip.mp4").await;
    plain
        .call(Method::POST, "/v1/jobs", Some(with_notify("https://example.com/hook")))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "notifications_disabled");

    let secret = crate::notify::sign::Secret::generate();
    let api = api_with(&[("MEDIA_WEBHOOK_SECRET", secret.as_str()), ("MEDIA_WEBHOOK_ALLOW_LOOPBACK", "true")]).await;
    api.source("uploads/a/clip.mp4").await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/",
        "https://[fd00:ec2::254]/",
        "https://10.0.0.8/hook",
        "https://192.168.1.1/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "http://93.184.216.34/hook",
        "https://user:pass@127.0.0.1/hook",
        "ftp://127.0.0.1/hook",
        "not a url",
    ] {
        let answer = api.call(Method::POST, "/v1/jobs", Some(with_notify(url))).await;
        answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_notify_url");
        // The refusal says what is wrong without echoing internals.
        assert!(!answer.json()["error"]["message"].as_str().unwrap_or_default().contains("Error"), "{url}");
    }
    let unknown = json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}], "notify": {"url": "https://x.example/", "secret": "x"}});
    api.call(Method::POST, "/v1/jobs", Some(unknown))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");

    // Loopback, with the development setting: accepted, kept with the job and shown.
    let answer = api.call(Method::POST, "/v1/jobs", Some(with_notify("http://127.0.0.1:9/hook"))).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.json());
    let job_id = answer.json()["job_id"].as_str().unwrap().to_string();
    assert_eq!(api.status(&job_id).await.job.notify.map(|n| n.url).as_deref(), Some("http://127.0.0.1:9/hook"));
    let view = api.call(Method::GET, &format!("/v1/jobs/{job_id}"), None).await.json();
    assert_eq!(view["notify"]["url"], "http://127.0.0.1:9/hook");
    assert_eq!(view["deliveries"]["attempts"], json!([]));
    // Its queued event waits in the ledger's outbox, stored with the job, for a worker's relay.
    let outbox = api.state.backend.ledger.outbox_take(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].event.kind, "job.queued");
    assert_eq!(outbox[0].event.status.job_id, job_id);
}

#[tokio::test]
async fn a_failed_job_shows_its_code_public_sentence_not_the_cause() {
    let api = api().await;
    let job: JobSpec = serde_json::from_value(json!({
        "job_id": "job-failed", "source_key": "uploads/a/clip.mp4", "outputs": [{"preset": "mp4-h264"}],
        "output_dir": "outputs/a/clip.mp4/job-failed/"
    }))
    .unwrap();
    let attempt = Attempt::start(&api.state.store, &job, 1, "run-1", "w", 3).await.unwrap().unwrap();
    // A document written with a raw cause (as older workers did) is redacted on the way out.
    let cause =
        "dispatch failure: AccessDenied for arn:aws:iam::123456789012:role/media-worker at /var/scratch/j/in.mp4";
    let raw = crate::domain::status::ErrorInfo { code: "storage".into(), message: cause.into(), retryable: false };
    attempt.fail(raw).await.unwrap();
    let view = api.call(Method::GET, "/v1/jobs/job-failed", None).await.json();
    assert_eq!(view["state"], "failed");
    assert_eq!(view["error"]["code"], "storage");
    assert_eq!(view["error"]["message"], crate::domain::status::public_message("storage"));
    let text = view.to_string();
    assert!(!text.contains("123456789012") && !text.contains("/var/scratch"), "{text}");
}

const ACME: &str = "acme-token-0123456789abcdef";
const GLOBEX: &str = "globex-token-0123456789abcdef";
const EXPIRED: &str = "expired-token-0123456789abcdef";

/// A tokens file entry, as docs/api.md has operators write it.
fn token_entry(token: &str, tenant: &str, expires_at: Option<&str>) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let expiry = expires_at.map(|at| format!("expires_at = {at}\n")).unwrap_or_default();
    format!("[[token]]\nsha256 = \"{digest}\"\ntenant = \"{tenant}\"\n{expiry}\n")
}

/// An API with the shared tokens and a tokens file for the tenants `acme` and `globex`.
async fn tenants_api() -> (Api, TempDir, std::path::PathBuf) {
    tenants_api_with(&[]).await
}

async fn tenants_api_with(extra: &[(&str, &str)]) -> (Api, TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.toml");
    let text = token_entry(ACME, "acme", None)
        + &token_entry(GLOBEX, "globex", Some("2099-01-01T00:00:00Z"))
        + &token_entry(EXPIRED, "globex", Some("2020-01-01T00:00:00Z"));
    std::fs::write(&path, text).unwrap();
    let mut vars = vec![("MEDIA_API_TOKENS_FILE", path.to_str().unwrap())];
    vars.extend_from_slice(extra);
    let api = api_with(&vars).await;
    (api, dir, path)
}

impl Api {
    /// Uploads a file through the API as `token` and returns its key.
    async fn upload_as(&self, token: &str) -> String {
        let request = json!({"filename": "clip.mp4", "content_type": "video/mp4"});
        let ticket = self.call_as(Some(token), Method::POST, "/v1/uploads", Some(request), &[]).await.json();
        let key = ticket["key"].as_str().unwrap().to_string();
        let path = ticket["url"].as_str().unwrap().strip_prefix("http://127.0.0.1:8080").unwrap().to_string();
        let put = Request::builder()
            .method(Method::PUT)
            .uri(path)
            .header(header::CONTENT_TYPE, "video/mp4")
            .body(Body::from("not really a video"))
            .unwrap();
        assert_eq!(self.send(put).await.status, StatusCode::CREATED);
        self.drain_ready().await;
        key
    }
}

#[tokio::test]
async fn tenants_see_only_their_own_uploads_jobs_and_outputs() {
    let (api, _dir, _path) = tenants_api().await;
    let acme_key = api.upload_as(ACME).await;
    assert!(acme_key.starts_with("uploads/tenants/acme/"), "{acme_key}");
    let globex_key = api.upload_as(GLOBEX).await;
    let shared_key = api.upload_as(TOKEN).await;
    assert!(!shared_key.starts_with("uploads/tenants/"), "{shared_key}");

    let api = &api;
    let submit = |token: &'static str, body: Value| async move {
        api.call_as(Some(token), Method::POST, "/v1/jobs", Some(body), &[]).await
    };
    let acme_job = submit(ACME, job_request(&acme_key)).await;
    assert_eq!(acme_job.status, StatusCode::ACCEPTED, "{}", acme_job.json());
    let acme_job = acme_job.json();
    let acme_id = acme_job["job_id"].as_str().unwrap().to_string();
    assert!(acme_job["output_dir"].as_str().unwrap().starts_with("outputs/tenants/acme/"), "{acme_job}");

    // Another tenant's (or the shared scope's) source is as absent as a missing one.
    for (token, key) in [(GLOBEX, &acme_key), (TOKEN, &acme_key), (ACME, &globex_key), (ACME, &shared_key)] {
        submit(token, job_request(key)).await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "source_not_found");
        let info = format!("/v1/uploads/{key}");
        api.call_as(Some(token), Method::GET, &info, None, &[])
            .await
            .assert_error(StatusCode::NOT_FOUND, "upload_not_found");
    }
    // Every read, follow, cancel and delete of another tenant's job: 404, and nothing changes.
    for token in [GLOBEX, TOKEN] {
        for (method, uri) in [
            (Method::GET, format!("/v1/jobs/{acme_id}")),
            (Method::GET, format!("/v1/jobs/{acme_id}/events")),
            (Method::DELETE, format!("/v1/jobs/{acme_id}")),
        ] {
            api.call_as(Some(token), method, &uri, None, &[])
                .await
                .assert_error(StatusCode::NOT_FOUND, "job_not_found");
        }
    }
    assert_eq!(api.status(&acme_id).await.state, JobState::Queued);
    assert_eq!(
        api.call_as(Some(ACME), Method::GET, &format!("/v1/jobs/{acme_id}"), None, &[]).await.status,
        StatusCode::OK
    );

    // Output folders: only under the caller's own root, and never inside any job's folder.
    let acme_dir = acme_job["output_dir"].as_str().unwrap().to_string();
    let with_prefix = |key: &str, prefix: &str| json!({"input": {"key": key}, "outputs": [{"preset": "mp4-h264"}], "output_prefix": prefix});
    let refused = [
        (GLOBEX, with_prefix(&globex_key, "outputs/tenants/acme/campaign/")),
        (GLOBEX, with_prefix(&globex_key, "outputs/campaign/")),
        (TOKEN, with_prefix(&shared_key, "outputs/tenants/acme/campaign/")),
        (TOKEN, with_prefix(&shared_key, "outputs/tenants/")),
        (ACME, with_prefix(&acme_key, &acme_dir)),
        (ACME, with_prefix(&acme_key, &format!("{acme_dir}attempt-1/"))),
    ];
    for (token, body) in refused {
        submit(token, body.clone()).await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_output_prefix");
    }
    let own = submit(ACME, with_prefix(&acme_key, "outputs/tenants/acme/campaign/")).await;
    assert_eq!(own.status, StatusCode::ACCEPTED, "{}", own.json());
    // The shared scope cannot nest in a job's folder either.
    let shared = submit(TOKEN, job_request(&shared_key)).await.json();
    let shared_dir = shared["output_dir"].as_str().unwrap().to_string();
    submit(TOKEN, with_prefix(&shared_key, &shared_dir))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_output_prefix");

    // Downloads with a token: the caller's own outputs only.
    let acme_file = format!("{acme_dir}attempt-1/mp4-h264.mp4");
    api.state.backend.storage.put_bytes(&acme_file, b"mp4".to_vec(), "video/mp4").await.unwrap();
    let file_uri = format!("/v1/files/{acme_file}");
    assert_eq!(api.call_as(Some(ACME), Method::GET, &file_uri, None, &[]).await.status, StatusCode::OK);
    for token in [GLOBEX, TOKEN] {
        api.call_as(Some(token), Method::GET, &file_uri, None, &[])
            .await
            .assert_error(StatusCode::NOT_FOUND, "file_not_found");
    }
}

#[tokio::test]
async fn expired_tokens_are_refused_and_the_tokens_file_reloads() {
    let (api, _dir, path) = tenants_api().await;
    let expired = api.call_as(Some(EXPIRED), Method::GET, "/v1/jobs/job-1", None, &[]).await;
    expired.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(expired.json()["error"]["message"].as_str().unwrap().contains("expired"));

    // Revoke acme, move globex's token to a new tenant, give the expired token a new lease.
    let text = token_entry(GLOBEX, "initech", None) + &token_entry(EXPIRED, "globex", Some("2099-01-01T00:00:00Z"));
    std::fs::write(&path, text).unwrap();
    api.call_as(Some(ACME), Method::GET, "/v1/jobs/job-1", None, &[])
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    api.call_as(Some(EXPIRED), Method::GET, "/v1/jobs/job-1", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "job_not_found");
    let key = api.upload_as(GLOBEX).await;
    assert!(key.starts_with("uploads/tenants/initech/"), "{key}");
    // The shared tokens are unaffected.
    assert_eq!(api.call(Method::GET, "/healthz", None).await.status, StatusCode::OK);
    api.call(Method::GET, "/v1/jobs/job-1", None).await.assert_error(StatusCode::NOT_FOUND, "job_not_found");
}

#[tokio::test]
async fn cors_answers_the_configured_origins_only() {
    let cors = api_with(&[("MEDIA_API_CORS_ORIGINS", "https://app.example.com,http://localhost:5173")]).await;
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/jobs")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type,idempotency-key")
            .body(Body::empty())
            .unwrap()
    };
    let allowed = cors.send(preflight("https://app.example.com")).await;
    assert!(allowed.status.is_success(), "{:?}", allowed.status);
    assert_eq!(allowed.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
    let methods = allowed.headers[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().to_string();
    assert!(methods.contains("POST") && methods.contains("PUT"), "{methods}");
    let headers = allowed.headers[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().to_ascii_lowercase();
    assert!(headers.contains("authorization") && headers.contains("idempotency-key"), "{headers}");
    assert!(!allowed.headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));

    let denied = cors.send(preflight("https://evil.example.net")).await;
    assert!(!denied.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "{:?}", denied.headers);

    let actual = |origin: &str| {
        Request::builder()
            .uri("/v1/jobs/job-1")
            .header(header::ORIGIN, origin)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap()
    };
    let answer = cors.send(actual("http://localhost:5173")).await;
    answer.assert_error(StatusCode::NOT_FOUND, "job_not_found");
    assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://localhost:5173");
    let exposed = answer.headers[header::ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("etag") && exposed.contains("location"), "{exposed}");
    let other = cors.send(actual("https://evil.example.net")).await;
    assert!(!other.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));

    // Without configured origins there are no CORS headers at all.
    let plain = api().await;
    let plain = plain.send(preflight("https://app.example.com")).await;
    assert!(!plain.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[tokio::test]
async fn multipart_uploads_are_their_tenant_s_and_abandoned_ones_are_swept() {
    let (api, _dir, _path) = tenants_api().await;
    let request = json!({"filename": "big.mp4", "content_type": "video/mp4", "size": 1000});
    let created = api.call_as(Some(ACME), Method::POST, "/v1/multipart-uploads", Some(request), &[]).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json());
    let created = created.json();
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("uploads/tenants/acme/"), "{key}");
    let id = created["upload_id"].as_str().unwrap();
    let base = format!("/v1/multipart-uploads/{id}");
    let query = format!("?key={}", key.replace(' ', "%20"));
    let calls = [
        (Method::GET, format!("{base}{query}"), None),
        (Method::POST, format!("{base}/parts/1{query}"), Some(json!({"size": 10}))),
        (Method::POST, format!("{base}/complete{query}"), Some(json!({"parts": [{"part_number": 1, "etag": "x"}]}))),
        (Method::DELETE, format!("{base}{query}"), None),
    ];
    for (method, uri, body) in calls {
        let answer = api.call_as(Some(GLOBEX), method.clone(), &uri, body, &[]).await;
        answer.assert_error(StatusCode::NOT_FOUND, "upload_not_found");
    }

    // A part through the API's own signed URL: its length is the signed one, no more, no less.
    let signed =
        api.call_as(Some(ACME), Method::POST, &format!("{base}/parts/1{query}"), Some(json!({"size": 10})), &[]).await;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.json());
    let url = signed.json()["url"].as_str().unwrap().strip_prefix("http://127.0.0.1:8080").unwrap().to_string();
    let put =
        |body: &'static [u8]| Request::builder().method(Method::PUT).uri(url.clone()).body(Body::from(body)).unwrap();
    api.send(put(b"0123456789a")).await.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    api.send(put(b"012345678")).await.assert_error(StatusCode::BAD_REQUEST, "part_size_mismatch");
    let stored = api.send(put(b"0123456789")).await;
    assert_eq!(stored.status, StatusCode::OK);
    assert!(stored.headers[header::ETAG].to_str().unwrap().starts_with('"'));
    let tampered = url.replace("size=10", "size=11");
    let forged = Request::builder().method(Method::PUT).uri(tampered).body(Body::from("0123456789a")).unwrap();
    api.send(forged).await.assert_error(StatusCode::FORBIDDEN, "bad_signature");
    let listed = api.call_as(Some(ACME), Method::GET, &format!("{base}{query}"), None, &[]).await.json();
    assert_eq!(listed["parts"][0]["size"], 10);

    // An upload left alone for the abandonment age is removed by the sweep.
    let uploads = api.state.backend.uploads.as_ref();
    assert_eq!(uploads.sweep_multipart(super::routes::multipart::ABANDONED_AFTER).await.unwrap(), 0);
    assert_eq!(uploads.sweep_multipart(Duration::ZERO).await.unwrap(), 1);
    api.call_as(Some(ACME), Method::GET, &format!("{base}{query}"), None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "upload_not_found");
}

#[tokio::test]
async fn url_inputs_are_checked_at_submit_and_land_in_the_callers_imports_folder() {
    let with_url = |url: &str| json!({"input": {"url": url}, "outputs": [{"preset": "mp4-h264"}]});
    let strict = api().await;
    for url in [
        "http://127.0.0.1:9/clip.mp4",
        "https://127.0.0.1/clip.mp4",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/clip.mp4",
        "https://[::ffff:10.0.0.1]/clip.mp4",
        "http://93.184.216.34/clip.mp4",
        "file:///etc/passwd",
        "not a url",
    ] {
        let answer = strict.call(Method::POST, "/v1/jobs", Some(with_url(url))).await;
        answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "fetch_refused");
    }
    // Exactly one of key and url.
    for input in [json!({}), json!({"key": "uploads/a/clip.mp4", "url": "https://example.com/a.mp4"})] {
        let body = json!({"input": input, "outputs": [{"preset": "mp4-h264"}]});
        strict
            .call(Method::POST, "/v1/jobs", Some(body))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    }
    assert!(strict.drain_ready().await.is_empty(), "no refused job reached the queue");

    // Allowed (development setting, loopback): queued with the URL, nothing fetched yet.
    let (api, _dir, _path) = tenants_api_with(&[("MEDIA_IMPORT_ALLOW_LOOPBACK", "true")]).await;
    for (token, root) in [(TOKEN, "uploads/imports/"), (ACME, "uploads/tenants/acme/imports/")] {
        let url = "http://127.0.0.1:9/media/cat%20video.mov?sig=abc";
        let answer = api.call_as(Some(token), Method::POST, "/v1/jobs", Some(with_url(url)), &[]).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.json());
        let job_id = answer.json()["job_id"].as_str().unwrap().to_string();
        let status = api.status(&job_id).await;
        assert_eq!(status.job.source_key, format!("{root}{job_id}/cat video.mov"));
        assert_eq!(status.job.import.as_ref().map(|i| i.url.as_str()), Some(url));
        assert!(status.job.source.is_empty(), "nothing to pin before the fetch");
        assert!(api.state.backend.storage.head(&status.job.source_key).await.unwrap().is_none());
        let queued = api.drain_ready().await;
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert!(queued[0].contains(r#""import":{"url":"#), "{}", queued[0]);
    }
    // A URL without a file name is stored as `source`.
    let answer = api.call(Method::POST, "/v1/jobs", Some(with_url("http://127.0.0.1:9/"))).await;
    let job_id = answer.json()["job_id"].as_str().unwrap().to_string();
    assert!(api.status(&job_id).await.job.source_key.ends_with(&format!("/{job_id}/source")));
}

#[tokio::test]
async fn jobs_are_listed_newest_first_a_page_at_a_time_and_per_scope() {
    let (api, _dir, _path) = tenants_api().await;
    let shared_key = api.upload_as(TOKEN).await;
    let acme_key = api.upload_as(ACME).await;
    let submit = |token: &'static str, key: String| {
        let api = &api;
        async move {
            let answer = api.call_as(Some(token), Method::POST, "/v1/jobs", Some(job_request(&key)), &[]).await;
            assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.json());
            answer.json()["job_id"].as_str().unwrap().to_string()
        }
    };
    let mut shared = Vec::new();
    for _ in 0..5 {
        shared.push(submit(TOKEN, shared_key.clone()).await);
    }
    let acme = [submit(ACME, acme_key.clone()).await, submit(ACME, acme_key.clone()).await];

    // Pages of two, following the cursor: every job once, newest first.
    let mut seen: Vec<Value> = Vec::new();
    let mut uri = "/v1/jobs?limit=2".to_string();
    loop {
        let page = api.call(Method::GET, &uri, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.json());
        let page = page.json();
        let jobs = page["jobs"].as_array().unwrap().clone();
        assert!(jobs.len() <= 2);
        seen.extend(jobs);
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/jobs?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let ids: Vec<&str> = seen.iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = shared.iter().map(String::as_str).collect();
    expected.sort();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "the shared scope sees its five jobs, once each");
    // Newest first, to the millisecond (jobs of one millisecond by id).
    let created: Vec<i64> = seen
        .iter()
        .map(|j| j["created_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap().timestamp_millis())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first: {created:?}");
    assert_eq!(seen[0]["status_url"], format!("/v1/jobs/{}", ids[0]));
    assert_eq!(seen[0]["outputs"], json!([{"preset": "mp4-h264"}]));

    // A tenant sees its own only; a state filters.
    let mine = api.call_as(Some(ACME), Method::GET, "/v1/jobs", None, &[]).await.json();
    let mut mine: Vec<&str> = mine["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    mine.sort();
    let mut acme_ids: Vec<&str> = acme.iter().map(String::as_str).collect();
    acme_ids.sort();
    assert_eq!(mine, acme_ids);
    let queued = api.call(Method::GET, "/v1/jobs?state=queued&limit=100", None).await.json();
    assert_eq!(queued["jobs"].as_array().unwrap().len(), 5);
    let failed = api.call(Method::GET, "/v1/jobs?state=failed", None).await.json();
    assert_eq!(failed, json!({"jobs": [], "next_cursor": null}));

    for (uri, code) in [
        ("/v1/jobs?cursor=nonsense", "invalid_cursor"),
        ("/v1/jobs?cursor=12.a%2Fb", "invalid_cursor"),
        ("/v1/jobs?limit=0", "invalid_query"),
        ("/v1/jobs?limit=101", "invalid_query"),
        ("/v1/jobs?state=lost", "invalid_query"),
    ] {
        api.call(Method::GET, uri, None).await.assert_error(StatusCode::BAD_REQUEST, code);
    }
    api.call_as(None, Method::GET, "/v1/jobs", None, &[]).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn the_preset_catalogue_says_what_each_preset_takes() {
    let api = api().await;
    let catalogue = api.call(Method::GET, "/v1/presets", None).await;
    assert_eq!(catalogue.status, StatusCode::OK);
    let presets = catalogue.json()["presets"].as_array().unwrap().clone();
    let named = |name: &str| presets.iter().find(|p| p["name"] == name).cloned().unwrap();
    assert_eq!(named("gif")["options"], json!(["start", "duration"]));
    assert_eq!(named("thumbnail")["options"], json!(["time"]));
    assert_eq!(named("hls")["file"], "hls/master.m3u8");
    assert_eq!(named("mp3")["needs_audio"], true);
    assert!(presets.iter().all(|p| !p["description"].as_str().unwrap().is_empty()));
}

#[tokio::test]
async fn the_console_is_served_under_a_strict_content_security_policy() {
    let api = api().await;
    let page = api.call_as(None, Method::GET, "/", None, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let policy = page.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    for directive in
        ["default-src 'self'", "script-src 'self';", "style-src 'self';", "object-src 'none'", "frame-ancestors 'none'"]
    {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    for (path, content_type) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/app.css", "text/css; charset=utf-8"),
        ("/console/vendor/hls.min.js", "text/javascript; charset=utf-8"),
    ] {
        let asset = api.call_as(None, Method::GET, path, None, &[]).await;
        assert_eq!(
            (asset.status, asset.headers[header::CONTENT_TYPE].to_str().unwrap()),
            (StatusCode::OK, content_type)
        );
    }
    api.call_as(None, Method::GET, "/console/../Cargo.toml", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    api.call_as(None, Method::GET, "/console/nothing.js", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}
