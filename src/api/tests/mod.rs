//! Router tests on the local backend in a temp folder, one request at a time through
//! `tower::ServiceExt::oneshot`: no sockets, no worker. This module holds what the tests share
//! (an API on a temp folder, requests, sources, a completed job, tenants); the tests are by
//! resource: [`auth`], [`requests`], [`uploads`], [`jobs`], [`tenants`], [`service`], and the
//! limits at the edge in [`hardening`].

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

mod auth;
mod hardening;
mod jobs;
mod requests;
mod service;
mod tenants;
mod uploads;

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
        crate::queue::take_all(self.state.backend.queues.ready.as_ref()).await
    }

    async fn status(&self, id: &str) -> JobStatus {
        self.state.store.read(id).await.unwrap().expect("a status")
    }
}

fn job_request(key: &str) -> Value {
    json!({"input": {"key": key}, "outputs": [{"preset": "mp4-h264"}]})
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
