//! The API end to end, on both backends: served in-process on 127.0.0.1 in front of a real
//! `media-worker run` daemon. A client uploads through the URL the API hands out (moto's
//! presigned S3 URL, or the API's own signed URL), submits a job, follows its events to the end
//! and downloads an output; another job is cancelled mid-transcode.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use media_worker::api::config::ApiConfig;
use media_worker::api::{self, ApiState};
use media_worker::config::Config;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::require;
use crate::support::{Clip, Deployment, Kind, duration, emulator, ffprobe, media_tools, stream};

pub(crate) const TOKEN: &str = "e2e-token-0123456789abcdef";

fn tools(kind: Kind) -> bool {
    media_tools() && (kind == Kind::Local || emulator())
}

/// The API, serving a deployment on a free port until dropped.
pub(crate) struct ApiServer {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl ApiServer {
    async fn start(d: &Deployment) -> Self {
        Self::start_with(d, &[]).await
    }

    /// The API with `MEDIA_API_TOKENS=`[`TOKEN`] and these settings besides the deployment's.
    pub(crate) async fn start_with(d: &Deployment, extra: &[(&str, &str)]) -> Self {
        let mut vars = d.vars.clone();
        vars.insert("MEDIA_API_TOKENS".into(), TOKEN.into());
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_lookup(|name| vars.get(name).cloned()).expect("config");
        let api_config = ApiConfig::from_lookup(|name| vars.get(name).cloned()).expect("api config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        // The deployment's own clients: on AWS they point at the emulator.
        let state = ApiState::new(config, api_config, d.backend.clone(), addr).expect("api state");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(api::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        ApiServer { base: format!("http://{addr}"), client: reqwest::Client::new(), stop: Some(stop) }
    }

    /// `POST /v1/jobs` with an idempotency key.
    async fn submit(&self, request: &Value, idempotency_key: &str) -> reqwest::Response {
        self.client
            .post(self.url("/v1/jobs"))
            .bearer_auth(TOKEN)
            .header("idempotency-key", idempotency_key)
            .json(request)
            .send()
            .await
            .unwrap()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    /// Asks for an upload URL and PUTs the file there, with the headers the API said to send.
    /// Returns the key and the id of the job the upload made.
    async fn upload(&self, path: &std::path::Path, name: &str) -> (String, String) {
        let (status, ticket) = self
            .json(
                reqwest::Method::POST,
                "/v1/uploads",
                Some(json!({"filename": name, "content_type": "video/mp4", "size": std::fs::metadata(path).unwrap().len()})),
            )
            .await;
        assert_eq!(status, 201, "{ticket}");
        let key = ticket["key"].as_str().unwrap().to_string();
        let mut put = self.client.put(ticket["url"].as_str().unwrap());
        for (name, value) in ticket["headers"].as_object().unwrap() {
            put = put.header(name.as_str(), value.as_str().unwrap());
        }
        let response = put.body(std::fs::read(path).unwrap()).send().await.expect("PUT the upload");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "upload refused: {status} {text}");
        // The same job id either way: the API's own PUT answers it, and the upload's
        // description names it (on S3, once a worker has taken the upload).
        let deadline = Instant::now() + Duration::from_secs(120);
        let info = loop {
            let (status, info) = self.json(reqwest::Method::GET, ticket["upload_url"].as_str().unwrap(), None).await;
            assert_eq!(status, 200, "{info}");
            if info["job_id"].is_string() {
                break info;
            }
            assert!(Instant::now() < deadline, "no job for the upload: {info}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Ok(answer) = serde_json::from_str::<Value>(&text)
            && let Some(job_id) = answer["job_id"].as_str()
        {
            assert_eq!(info["job_id"], job_id);
        }
        (key, info["job_id"].as_str().unwrap().to_string())
    }

    /// Follows a job's event stream to its end; returns every event's data.
    async fn follow(&self, job_id: &str, limit: Duration) -> Vec<Value> {
        let response = self
            .client
            .get(self.url(&format!("/v1/jobs/{job_id}/events")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("open the event stream");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        let mut events = Vec::new();
        let deadline = Instant::now() + limit;
        loop {
            let chunk = tokio::time::timeout_at(deadline.into(), body.next())
                .await
                .unwrap_or_else(|_| panic!("the event stream did not end within {limit:?}; got {events:?}"));
            let Some(chunk) = chunk else { return events };
            buffer.push_str(&String::from_utf8_lossy(&chunk.expect("stream chunk")));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let kind = block.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("");
                let data: String = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if kind == "status" {
                    events.push(serde_json::from_str(&data).expect("event data is JSON"));
                }
            }
        }
    }

    async fn wait_for(&self, job_id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (_, job) = self.json(reqwest::Method::GET, &format!("/v1/jobs/{job_id}"), None).await;
            if done(&job) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {job_id} never became {what}: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A `media-worker run` daemon with its metrics endpoint; killed when dropped.
fn start_worker(d: &Deployment, name: &str, metrics_port: u16) -> tokio::process::Child {
    d.spawn_worker(name, &[("MEDIA_METRICS_ADDR", &format!("127.0.0.1:{metrics_port}"))])
}

async fn upload_submit_follow_download(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    let metrics_port = free_port();
    let _worker = start_worker(&d, "api-worker", metrics_port);
    let api = ApiServer::start(&d).await;

    let clip = d.path("clip.mp4");
    Clip { seconds: 2.0, ..Clip::default() }.make(&clip);
    let (key, upload_job) = api.upload(&clip, "holiday clip.mp4").await;
    assert!(key.starts_with("uploads/") && key.ends_with("/holiday clip.mp4"), "{key}");

    let request = json!({"input": {"key": key}, "outputs": [{"preset": "mp4-h264"}]});
    let submit = api.submit(&request, "e2e-1").await;
    assert_eq!(submit.status().as_u16(), 202);
    let job: Value = submit.json().await.unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_string();
    assert_ne!(job_id, upload_job);

    let events = api.follow(&job_id, Duration::from_secs(180)).await;
    let states: Vec<&str> = events.iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(states.last(), Some(&"completed"), "{states:?}\n{}", d.worker_log("api-worker"));
    assert_eq!(states.iter().filter(|s| **s == "completed").count(), 1, "{states:?}");
    let stages: Vec<&str> = events.iter().map(|e| e["stage"].as_str().unwrap()).collect();
    assert!(stages.contains(&"transcoding") || stages.len() >= 2, "changes were pushed: {stages:?}");

    // The last event already carries the downloads; GET returns them too.
    let (status, done) = api.json(reqwest::Method::GET, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(done["manifest"]["job_id"], job_id.as_str());
    let download = done["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"].as_str().unwrap().ends_with("mp4-h264.mp4"))
        .expect("a download for the output");
    assert!(download["key"].as_str().unwrap().starts_with("outputs/"), "{download}");
    // No token: the URL is its own permission (presigned S3, or signed by the API).
    let bytes = reqwest::get(download["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(bytes.status().as_u16(), 200);
    let output = d.path("downloaded.mp4");
    std::fs::write(&output, bytes.bytes().await.unwrap()).unwrap();
    let probe = ffprobe(&output);
    assert_eq!(stream(&probe, "video").expect("video")["codec_name"], "h264");
    assert!((duration(&probe) - 2.0).abs() < 0.3, "{probe}");

    // The upload's own job (default presets) completed too, in its own folder.
    let upload_done = api.wait_for(&upload_job, "completed", |j| j["state"] == "completed").await;
    assert_ne!(upload_done["output_dir"], done["output_dir"]);

    // Retrying the submission returns the same job, now completed.
    let again = api.submit(&request, "e2e-1").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["state"], "completed");

    // The worker's metrics saw both jobs.
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await.unwrap().text().await.unwrap();
    let completed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("media_worker_jobs_completed_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(completed, Some(2), "{metrics}");
    let ready = reqwest::get(format!("http://127.0.0.1:{metrics_port}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
}

async fn cancel_mid_transcode(kind: Kind) {
    require!(tools(kind));
    let d = Deployment::new(kind).await;
    let _worker = start_worker(&d, "cancel-worker", free_port());
    let api = ApiServer::start(&d).await;

    let clip = d.path("long.mp4");
    Clip { seconds: 10.0, width: 640, height: 360, ..Clip::default() }.make(&clip);
    // The upload's own job is the one cancelled.
    let (_, job_id) = api.upload(&clip, "long.mp4").await;
    let running = api.wait_for(&job_id, "transcoding", |j| j["stage"] == "transcoding").await;
    assert_eq!(running["state"], "running");

    let (status, outcome) = api.json(reqwest::Method::DELETE, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!(status, 202, "{outcome}");
    assert_eq!(outcome["action"], "cancelled");

    // The worker notices at its next heartbeat and stops ffmpeg; the cancellation is final.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.worker_log("cancel-worker").contains("Job cancelled.") {
        assert!(Instant::now() < deadline, "the worker never stopped: {}", d.worker_log("cancel-worker"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, ended) = api.json(reqwest::Method::GET, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
    let notes: Vec<&str> = ended["timeline"].as_array().unwrap().iter().filter_map(|e| e["note"].as_str()).collect();
    assert!(notes.contains(&"cancel requested through the API"), "{notes:?}");
    assert_eq!(ended["manifest"], Value::Null);
    // Give a straggling write a moment, then check nothing was written for the job.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let output_dir = ended["output_dir"].as_str().unwrap();
    let left = d.storage().list(output_dir).await.unwrap();
    assert!(left.is_empty(), "outputs of a cancelled job: {left:?}");
    let (_, after) = api.json(reqwest::Method::GET, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!(after["state"], "cancelled");
    let log = d.worker_log("cancel-worker");
    assert!(log.contains("Job cancelled."), "{log}");
}

crate::on_both_backends!(upload_submit_follow_download, cancel_mid_transcode);
