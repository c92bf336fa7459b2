//! One suite of `Queue` and `Storage` behaviour, run against both implementations: SQS and S3
//! on the emulator, and the embedded SQLite queue and file store. The worker relies on exactly
//! these semantics, so both backends must agree on them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use media_worker::queue::{Queue, SendOptions};
use media_worker::storage::s3::S3Storage;
use media_worker::storage::{Storage, StorageError};

use crate::support::{Deployment, Kind, emulator, receive_all};

const SECOND: Duration = Duration::from_secs(1);

async fn deployment(kind: Kind) -> Option<Deployment> {
    if kind == Kind::Aws && !emulator() {
        return None;
    }
    Some(Deployment::new(kind).await)
}

/// The emulator's bucket notification sends an `s3:TestEvent` to the ready queue; tests of raw
/// queue behaviour use the in-processing queue, which nothing else writes to.
fn queue(d: &Deployment) -> Arc<dyn Queue> {
    d.queues().processing.clone()
}

async fn visibility_expiry_redelivers(kind: Kind) {
    let Some(d) = deployment(kind).await else { return };
    let q = queue(&d);
    q.send("hello", SendOptions::default().with_attribute("origin", "test")).await.unwrap();
    let first = q.receive(10, Duration::ZERO, SECOND).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].body.as_str(), first[0].receive_count), ("hello", 1));
    assert_eq!(first[0].attributes.get("origin").map(String::as_str), Some("test"));
    // Hidden while in flight.
    assert!(q.receive(10, Duration::ZERO, SECOND).await.unwrap().is_empty());
    let counts = q.counts().await.unwrap();
    assert_eq!((counts.visible, counts.in_flight), (0, 1));

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let second = q.receive(10, Duration::ZERO, Duration::from_secs(30)).await.unwrap();
    assert_eq!(second.len(), 1, "the message was not redelivered after its visibility timeout");
    assert_eq!(second[0].message_id, first[0].message_id);
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(second[0].receipt, first[0].receipt);

    // A stale handle is accepted without error. SQS then keeps the message (the newest handle
    // is needed) and so does the local queue; moto deletes it anyway, so the emulator cannot
    // check that half. The worker is correct either way: a late delete only ever concerns a
    // message another worker has received again and deduplicates by job status.
    q.delete(&first[0].receipt).await.unwrap();
    if kind == Kind::Local {
        assert_eq!(q.counts().await.unwrap().total(), 1, "a stale receipt deleted the message");
    }
    q.delete(&second[0].receipt).await.unwrap();
    assert_eq!(q.counts().await.unwrap().total(), 0);
}

async fn delays_and_visibility_changes(kind: Kind) {
    let Some(d) = deployment(kind).await else { return };
    let q = queue(&d);
    q.send("later", SendOptions::delayed(2 * SECOND)).await.unwrap();
    assert!(q.receive(10, Duration::ZERO, SECOND).await.unwrap().is_empty(), "a delayed message was delivered early");
    assert_eq!(q.counts().await.unwrap().delayed, 1);
    let started = Instant::now();
    let got = q.receive(10, 5 * SECOND, Duration::from_secs(30)).await.unwrap();
    assert_eq!(got.len(), 1, "the delayed message never came");
    assert!(started.elapsed() < 5 * SECOND);

    // Back to visible at once.
    q.change_visibility(&got[0].receipt, Duration::ZERO).await.unwrap();
    let again = q.receive(10, Duration::ZERO, Duration::from_secs(30)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    q.delete(&again[0].receipt).await.unwrap();

    // Batches are capped at ten.
    for i in 0..12 {
        q.send(&format!("m{i}"), SendOptions::default()).await.unwrap();
    }
    let batch = q.receive(50, Duration::ZERO, Duration::from_secs(30)).await.unwrap();
    assert!(!batch.is_empty() && batch.len() <= 10);
    let rest = receive_all(q.as_ref()).await;
    assert_eq!(batch.len() + rest.len(), 12);
}

async fn long_poll_wakes_on_send(kind: Kind) {
    let Some(d) = deployment(kind).await else { return };
    let q = queue(&d);
    let sender = q.clone();
    tokio::spawn(async move {
        tokio::time::sleep(SECOND).await;
        sender.send("wake up", SendOptions::default()).await.unwrap();
    });
    let started = Instant::now();
    let got = q.receive(1, Duration::from_secs(10), Duration::from_secs(30)).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(got.len(), 1, "the long poll returned nothing");
    assert!(waited >= Duration::from_millis(800), "returned before the send: {waited:?}");
    assert!(waited < Duration::from_secs(5), "the long poll did not wake on the send: {waited:?}");
}

async fn storage_round_trips(kind: Kind) {
    let Some(d) = deployment(kind).await else { return };
    let s = d.storage();
    s.put_bytes("jobs/a.json", b"{\"a\":1}".to_vec(), "application/json").await.unwrap();
    assert_eq!(s.get_bytes("jobs/a.json").await.unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
    let head = s.head("jobs/a.json").await.unwrap().expect("head");
    assert_eq!(head.size, 7);
    assert!(head.etag.is_some());

    // Missing keys.
    assert!(s.get_bytes("jobs/missing.json").await.unwrap().is_none());
    assert!(s.head("jobs/missing.json").await.unwrap().is_none());
    let missing = s.get_to_file("uploads/missing.mp4", &d.path("missing")).await;
    assert!(matches!(missing, Err(StorageError::NotFound(_))), "{missing:?}");
    s.delete("jobs/missing.json").await.unwrap();

    // Listing by prefix, sorted, and nothing outside it.
    for key in ["outputs/b/2.mp4", "outputs/a/1.mp4", "outputs/a/manifest.json", "outputsx/no.mp4"] {
        s.put_bytes(key, vec![1, 2, 3], "video/mp4").await.unwrap();
    }
    assert_eq!(
        s.list("outputs/").await.unwrap(),
        vec!["outputs/a/1.mp4", "outputs/a/manifest.json", "outputs/b/2.mp4"]
    );
    assert_eq!(s.list("outputs/a/").await.unwrap().len(), 2);
    s.delete("outputs/a/1.mp4").await.unwrap();
    assert_eq!(s.list("outputs/a/").await.unwrap(), vec!["outputs/a/manifest.json"]);

    // Hostile keys never reach the store.
    for key in ["../escape", "/etc/passwd", "outputs/../../x", "a\\b", "a\0b", "outputs//x"] {
        let err = s.put_bytes(key, vec![1], "text/plain").await.unwrap_err();
        assert!(matches!(err, StorageError::InvalidKey { .. }), "{key:?}: {err:?}");
    }
}

/// A file larger than the multipart threshold goes up in parts and comes back byte-identical.
async fn large_objects(kind: Kind) {
    let Some(d) = deployment(kind).await else { return };
    let storage: Arc<dyn Storage> = match (&d.s3, kind) {
        // The smallest threshold the S3 store allows (16 MiB parts), so 40 MiB is three parts.
        (Some(s3), Kind::Aws) => Arc::new(S3Storage::new(s3.clone(), &d.backend.bucket, 16 << 20)),
        _ => d.backend.storage.clone(),
    };
    let source = d.path("large.bin");
    let bytes: Vec<u8> = (0..40u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&source, &bytes).unwrap();
    let put = storage.put_file("outputs/large/large.bin", &source, "application/octet-stream").await.unwrap();
    assert_eq!(put.size, bytes.len() as u64);
    if kind == Kind::Aws {
        // S3 marks multipart ETags with the part count.
        assert!(put.etag.as_deref().is_some_and(|e| e.ends_with("-3")), "not a 3-part upload: {:?}", put.etag);
    }
    let back = d.path("large.back");
    let got = storage.get_to_file("outputs/large/large.bin", &back).await.unwrap();
    assert_eq!(got.size, bytes.len() as u64);
    assert!(std::fs::read(&back).unwrap() == bytes, "the object came back different");
}

crate::on_both_backends!(
    visibility_expiry_redelivers,
    delays_and_visibility_changes,
    long_poll_wakes_on_send,
    storage_round_trips,
    large_objects
);
