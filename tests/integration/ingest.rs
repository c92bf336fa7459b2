//! Ingest as browsers and other slow, distant clients use it: real sockets on 127.0.0.1 in front
//! of the API, on the local backend where upload bodies stream through the API.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::{ApiServer, TOKEN};
use crate::support::Deployment;

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
