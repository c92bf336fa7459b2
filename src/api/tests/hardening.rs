//! Limits and trust at the API's edge: `/readyz` under a flood, idempotency under a race, a
//! multipart upload's running total, and event streams that outlive their token.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use super::{ACME, GLOBEX, TOKEN, api, job_request, tenants_api, token_entry};
use crate::queue::{Queue, QueueCounts, Received, SendOptions};

/// A queue that counts the calls `/readyz` makes of it.
struct Counted {
    inner: Arc<dyn Queue>,
    counts: AtomicUsize,
}

#[async_trait]
impl Queue for Counted {
    async fn send(&self, body: &str, options: SendOptions) -> anyhow::Result<()> {
        self.inner.send(body, options).await
    }

    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Received>> {
        self.inner.receive(max, wait, visibility).await
    }

    async fn delete(&self, receipt: &str) -> anyhow::Result<()> {
        self.inner.delete(receipt).await
    }

    async fn change_visibility(&self, receipt: &str, visibility: Duration) -> anyhow::Result<()> {
        self.inner.change_visibility(receipt, visibility).await
    }

    async fn counts(&self) -> anyhow::Result<QueueCounts> {
        self.counts.fetch_add(1, Ordering::SeqCst);
        // As slow as a real queue: the calls that arrive meanwhile wait for this one.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.inner.counts().await
    }

    fn name(&self) -> &str {
        "counted"
    }
}

/// Fifty `/readyz` calls at once, with no token: one check of the queue (and the store)
/// answers them all, and the next check comes only once that answer is a second old.
#[tokio::test]
async fn readiness_is_checked_once_a_second_whatever_the_calls() {
    let plain = api().await;
    let counted = Arc::new(Counted { inner: plain.state.backend.queues.ready.clone(), counts: AtomicUsize::new(0) });
    let mut backend = plain.state.backend.clone();
    backend.queues.ready = counted.clone();
    let state = crate::api::ApiState::new(
        plain.state.config.clone(),
        plain.state.api.clone(),
        backend,
        "127.0.0.1:8080".parse().unwrap(),
    )
    .unwrap();
    let app = crate::api::router(state);
    let call = || {
        let app = app.clone();
        async move {
            let request = Request::builder().uri("/readyz").body(Body::empty()).unwrap();
            app.oneshot(request).await.unwrap().status()
        }
    };
    let answers = futures_util::future::join_all((0..50).map(|_| call())).await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");
    assert_eq!(counted.counts.load(Ordering::SeqCst), 1, "one check for fifty calls");
    assert_eq!(call().await, StatusCode::OK);
    assert_eq!(counted.counts.load(Ordering::SeqCst), 1, "still fresh");
    tokio::time::sleep(crate::health::FRESH_FOR + Duration::from_millis(100)).await;
    assert_eq!(call().await, StatusCode::OK);
    assert_eq!(counted.counts.load(Ordering::SeqCst), 2, "checked again once stale");
}

/// One `Idempotency-Key`, two bodies: sent at once, exactly one makes the job (the other is
/// refused, having sent nothing); sent one after the other, a different `split` is a different
/// request too.
#[tokio::test]
async fn one_idempotency_key_never_makes_two_jobs() {
    let api = api().await;
    api.source("uploads/a/clip.mp4").await;
    let whole = json!({"input": {"key": "uploads/a/clip.mp4"}, "outputs": [{"preset": "mp4-h264"}],
                       "split": {"enabled": false}});
    let key = [("idempotency-key", "race-1")];
    let (first, second) = tokio::join!(
        api.call_as(Some(TOKEN), Method::POST, "/v1/jobs", Some(job_request("uploads/a/clip.mp4")), &key),
        api.call_as(Some(TOKEN), Method::POST, "/v1/jobs", Some(whole.clone()), &key)
    );
    let mut codes = [first.status.as_u16(), second.status.as_u16()];
    codes.sort_unstable();
    assert_eq!(codes, [202, 422], "{} / {}", first.json(), second.json());
    let refused = if first.status == StatusCode::ACCEPTED { &second } else { &first };
    refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    assert_eq!(api.drain_ready().await.len(), 1, "one message: the refused request sent nothing");

    let key = [("idempotency-key", "split-1")];
    let made = api.call_as(Some(TOKEN), Method::POST, "/v1/jobs", Some(whole), &key).await;
    assert_eq!(made.status, StatusCode::ACCEPTED, "{}", made.json());
    let replayed = api.call_as(Some(TOKEN), Method::POST, "/v1/jobs", Some(job_request("uploads/a/clip.mp4")), &key);
    replayed.await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
}

/// Parts are counted as they are signed: a part that would take the upload past
/// `MEDIA_API_MAX_UPLOAD` (64 KiB here) is refused before it is signed; signing a part again
/// replaces its length.
#[tokio::test]
async fn a_multipart_upload_cannot_be_signed_past_the_limit() {
    let api = api().await;
    let request = json!({"filename": "big.mp4", "content_type": "video/mp4", "size": 64 << 10});
    let created = api.call(Method::POST, "/v1/multipart-uploads", Some(request)).await.json();
    let (id, key) = (created["upload_id"].as_str().unwrap(), created["key"].as_str().unwrap());
    let sign = async |number: u32, size: u64| {
        let path = format!("/v1/multipart-uploads/{id}/parts/{number}?key={key}");
        api.call(Method::POST, &path, Some(json!({"size": size}))).await
    };
    assert_eq!(sign(1, 40 << 10).await.status, StatusCode::OK);
    sign(2, 40 << 10).await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "too_large");
    assert_eq!(sign(1, 20 << 10).await.status, StatusCode::OK, "a part signed again replaces its length");
    assert_eq!(sign(2, 40 << 10).await.status, StatusCode::OK);
    sign(3, 5 << 10).await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "too_large");
}

/// An event stream opened with a tenant's token ends, with an `unauthorized` event, once the
/// token is taken out of the tokens file, though its job goes on.
#[tokio::test]
async fn an_event_stream_ends_when_its_token_is_revoked() {
    let (api, _dir, path) = tenants_api().await;
    let key = api.upload_as(ACME).await;
    let created = api.call_as(Some(ACME), Method::POST, "/v1/jobs", Some(job_request(&key)), &[]).await.json();
    let uri = format!("/v1/jobs/{}/events", created["job_id"].as_str().unwrap());
    let request = Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {ACME}"))
        .body(Body::empty())
        .unwrap();
    let response = api.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = String::new();
    let mut read_until = async |wanted: &str, text: &mut String| {
        while !text.contains(wanted) {
            let frame = tokio::time::timeout(Duration::from_secs(20), body.frame()).await;
            let frame = frame.unwrap_or_else(|_| panic!("no `{wanted}` within 20 s: {text}"));
            match frame {
                Some(Ok(frame)) => text.push_str(&String::from_utf8_lossy(frame.data_ref().map_or(&[][..], |d| d))),
                _ => panic!("the stream ended before `{wanted}`: {text}"),
            }
        }
    };
    read_until("event: status", &mut text).await;
    // ACME's token is revoked; the other tenant's stays.
    std::fs::write(&path, token_entry(GLOBEX, "globex", None)).unwrap();
    read_until("event: unauthorized", &mut text).await;
    let end = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("the stream ends");
    assert!(end.is_none(), "nothing after the last event");
}
