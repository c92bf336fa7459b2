use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::storage::{ObjectInfo, ObjectStore};

#[test]
fn transfer_timeouts_scale_with_the_bytes_sent() {
    let small = transfer_timeouts(0);
    assert_eq!(small.operation_attempt_timeout(), Some(Duration::from_secs(30)));
    assert_eq!(small.operation_timeout(), Some(Duration::from_secs(90)));
    // 64 MiB at 256 KiB/s is 256 s.
    let part = transfer_timeouts(64 << 20);
    assert_eq!(part.operation_attempt_timeout(), Some(Duration::from_secs(30 + 256)));
    assert_eq!(part.operation_timeout(), Some(Duration::from_secs(3 * (30 + 256))));
    // A partial second still counts, and the connect timeout is left to the client.
    assert_eq!(transfer_timeouts(1).operation_attempt_timeout(), Some(Duration::from_secs(31)));
    assert_eq!(part.connect_timeout(), None);
}

/// Each request's `(range, if-match)` headers.
type Requests = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

/// A fake S3 serving one object (ETag `v<generation>`). The first `breaks` responses send half
/// of what they announce and hang up; after `replace_after` requests the object is replaced.
struct FlakyServer {
    endpoint: String,
    requests: Requests,
}

async fn flaky_server(data: Vec<u8>, breaks: usize, replace_after: usize) -> FlakyServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let header = |name: &str| {
                head.lines().find_map(|line| {
                    let (n, v) = line.split_once(':')?;
                    n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
            };
            let (range, if_match) = (header("range"), header("if-match"));
            let count = {
                let mut log = log.lock().unwrap();
                log.push((range.clone(), if_match.clone()));
                log.len()
            };
            let etag = if count > replace_after { "\"v2\"" } else { "\"v1\"" };
            if if_match.as_deref().is_some_and(|m| m != etag) {
                let body = "<Error><Code>PreconditionFailed</Code><Message>no</Message></Error>";
                let response = format!(
                    "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
                continue;
            }
            let from: usize = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .map_or(0, |n| n.parse().unwrap());
            let rest = &data[from..];
            let status = if range.is_some() { "206 Partial Content" } else { "200 OK" };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n\r\n",
                rest.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
            let sent = if count <= breaks { rest.len() / 2 } else { rest.len() };
            socket.write_all(&rest[..sent]).await.unwrap();
            // Dropping the socket hangs up, mid-body when `sent` is short.
        }
    });
    FlakyServer { endpoint, requests }
}

fn store(endpoint: &str) -> S3Storage {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .force_path_style(true)
        .build();
    S3Storage::new(Client::from_conf(config), "bucket", 0)
}

fn data() -> Vec<u8> {
    (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

#[tokio::test]
async fn a_broken_download_resumes_on_the_same_version() {
    let data = data();
    let server = flaky_server(data.clone(), 2, usize::MAX).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let info = store(&server.endpoint).get_to_file("uploads/a.mp4", &path).await.unwrap();
    assert_eq!(info, ObjectInfo { size: data.len() as u64, etag: Some("v1".into()) });
    assert!(std::fs::read(&path).unwrap() == data, "the resumed download differs");
    let requests = server.requests.lock().unwrap().clone();
    let (half, quarter) = (data.len() / 2, data.len() / 2 + (data.len() - data.len() / 2) / 2);
    assert_eq!(
        requests,
        [
            (None, None),
            (Some(format!("bytes={half}-")), Some("\"v1\"".into())),
            (Some(format!("bytes={quarter}-")), Some("\"v1\"".into())),
        ]
    );
}

#[tokio::test]
async fn a_download_gives_up_after_five_resumptions() {
    let server = flaky_server(data(), usize::MAX, usize::MAX).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let err = store(&server.endpoint).get_to_file("uploads/a.mp4", &path).await.unwrap_err();
    assert!(matches!(err, StorageError::Other(_)), "{err:?}");
    assert_eq!(server.requests.lock().unwrap().len(), 1 + MAX_RESUMES as usize);
    assert!(!path.exists(), "a partial download was left behind");
}

#[tokio::test]
async fn a_download_whose_object_is_replaced_mid_way_is_changed() {
    let server = flaky_server(data(), 1, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let err = store(&server.endpoint).get_to_file("uploads/a.mp4", &path).await.unwrap_err();
    assert!(matches!(&err, StorageError::Changed(k) if k == "uploads/a.mp4"), "{err:?}");
    assert!(!path.exists());
}
