//! One suite of `Queue` and `ObjectStore` behaviour, run against both implementations: SQS and S3
//! on the emulator, and the embedded SQLite queue and file store. The worker relies on exactly
//! these semantics, so both backends must agree on them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use media_worker::queue::{Queue, SendOptions};
use media_worker::storage::s3::S3Storage;
use media_worker::storage::{CasOutcome, ObjectStore, Pin, Precondition, StorageError, Versioned};
use serde_json::{Value, json};

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
    let storage: Arc<dyn ObjectStore> = match (&d.s3, kind) {
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

fn written(outcome: CasOutcome) -> String {
    match outcome {
        CasOutcome::Written { etag } => etag,
        CasOutcome::Conflict => panic!("the conditional write conflicted"),
    }
}

/// Conditional writes: create-if-absent, replace-if-unchanged, and a lost race changes nothing.
async fn compare_and_swap(kind: Kind) {
    let Some(d) = deployment(kind).await else { return };
    let s = d.storage();
    let key = "jobs/cas.json";
    let json = "application/json";
    let first = written(s.put_if(key, b"{\"v\":1}".to_vec(), json, Precondition::Absent).await.unwrap());
    let again = s.put_if(key, b"{\"v\":9}".to_vec(), json, Precondition::Absent).await.unwrap();
    assert_eq!(again, CasOutcome::Conflict, "a second create-if-absent took effect");
    let read = s.get_versioned(key).await.unwrap().expect("stored");
    assert_eq!(read, Versioned { bytes: b"{\"v\":1}".to_vec(), etag: first.clone() });

    let second = written(s.put_if(key, b"{\"v\":2}".to_vec(), json, Precondition::Matches(&first)).await.unwrap());
    assert_ne!(second, first, "a replacement kept the old version tag");
    let stale = s.put_if(key, b"{\"v\":3}".to_vec(), json, Precondition::Matches(&first)).await.unwrap();
    assert_eq!(stale, CasOutcome::Conflict, "a write against a stale version took effect");
    let read = s.get_versioned(key).await.unwrap().expect("stored");
    assert_eq!(read, Versioned { bytes: b"{\"v\":2}".to_vec(), etag: second.clone() });
    assert_eq!(s.head(key).await.unwrap().and_then(|i| i.etag), Some(second.clone()));

    // Replacing a version that was deleted conflicts too, and creates nothing.
    s.delete(key).await.unwrap();
    let gone = s.put_if(key, b"{\"v\":4}".to_vec(), json, Precondition::Matches(&second)).await.unwrap();
    assert_eq!(gone, CasOutcome::Conflict);
    assert_eq!(s.get_versioned(key).await.unwrap(), None);
    written(s.put_if(key, b"{\"v\":5}".to_vec(), json, Precondition::Absent).await.unwrap());
}

/// Concurrent read-modify-write loops over one document lose no update.
async fn contended_updates_are_not_lost(kind: Kind) {
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 10;
    let Some(d) = deployment(kind).await else { return };
    let key = "jobs/counter.json";
    let zero = serde_json::to_vec(&json!({ "n": 0 })).unwrap();
    written(d.storage().put_if(key, zero, "application/json", Precondition::Absent).await.unwrap());
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let s = d.backend.storage.clone();
            tokio::spawn(async move {
                let mut conflicts = 0u64;
                for _ in 0..INCREMENTS {
                    loop {
                        let current = s.get_versioned(key).await.unwrap().expect("counter");
                        let n = serde_json::from_slice::<Value>(&current.bytes).unwrap()["n"].as_u64().unwrap();
                        let next = serde_json::to_vec(&json!({ "n": n + 1 })).unwrap();
                        let condition = Precondition::Matches(&current.etag);
                        match s.put_if(key, next, "application/json", condition).await.unwrap() {
                            CasOutcome::Written { .. } => break,
                            CasOutcome::Conflict => conflicts += 1,
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let stored = d.json(key).await;
    assert_eq!(stored["n"], TASKS * INCREMENTS, "updates were lost ({conflicts} conflicts retried)");
}

/// A pinned download sees exactly its version or fails with `Changed`.
async fn pinned_downloads(kind: Kind) {
    let Some(d) = deployment(kind).await else { return };
    let s = d.storage();
    let key = "uploads/pinned.mp4";
    let path = d.path("pinned");
    s.put_bytes(key, b"first version".to_vec(), "video/mp4").await.unwrap();
    let first = Pin { etag: s.head(key).await.unwrap().expect("head").etag, version_id: None };
    assert!(first.etag.is_some());
    let got = s.get_pinned_to_file(key, &path, &first).await.unwrap();
    assert_eq!((got.size, &got.etag), (13, &first.etag));
    assert_eq!(std::fs::read(&path).unwrap(), b"first version");

    s.put_bytes(key, b"second version".to_vec(), "video/mp4").await.unwrap();
    let replaced = s.get_pinned_to_file(key, &path, &first).await;
    assert!(matches!(&replaced, Err(StorageError::Changed(k)) if k == key), "{replaced:?}");
    // Unpinned reads see the new version.
    let got = s.get_to_file(key, &path).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second version");
    let second = Pin { etag: got.etag, version_id: None };
    assert_ne!(second.etag, first.etag);

    s.delete(key).await.unwrap();
    let deleted = s.get_pinned_to_file(key, &path, &second).await;
    assert!(matches!(&deleted, Err(StorageError::Changed(k)) if k == key), "{deleted:?}");
    let missing = s.get_to_file(key, &path).await;
    assert!(matches!(&missing, Err(StorageError::NotFound(k)) if k == key), "{missing:?}");
}

/// A copy inside the store: the same bytes under the new key, the original left, a key with
/// spaces and non-ASCII characters copied as it is, a missing source told apart.
async fn copies(kind: Kind) {
    let Some(d) = deployment(kind).await else { return };
    let s = d.storage();
    let from = "outputs/copy/a b/ünï+code.m4s";
    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
    s.put_bytes(from, bytes.clone(), "video/iso.segment").await.unwrap();
    let copied = s.copy(from, "outputs/copy-2/a b/ünï+code.m4s").await.unwrap();
    assert_eq!(copied.size, 70_000);
    assert_eq!(s.get_bytes("outputs/copy-2/a b/ünï+code.m4s").await.unwrap(), Some(bytes.clone()));
    assert_eq!(s.get_bytes(from).await.unwrap(), Some(bytes));
    let missing = s.copy("outputs/copy/none.m4s", "outputs/copy-2/none.m4s").await;
    assert!(matches!(&missing, Err(StorageError::NotFound(k)) if k == "outputs/copy/none.m4s"), "{missing:?}");
    assert!(s.head("outputs/copy-2/none.m4s").await.unwrap().is_none());
    let hostile = s.copy(from, "outputs/../../x").await;
    assert!(matches!(hostile, Err(StorageError::InvalidKey { .. })), "{hostile:?}");
}

crate::on_both_backends!(
    copies,
    visibility_expiry_redelivers,
    delays_and_visibility_changes,
    long_poll_wakes_on_send,
    storage_round_trips,
    large_objects,
    compare_and_swap,
    contended_updates_are_not_lost,
    pinned_downloads
);

/// A multipart upload given up half-way (its future dropped: a cancelled job, a timeout) is
/// aborted, so no parts are left billed. S3 only: the local store has no multipart uploads.
mod multipart_upload_dropped_midway {
    use super::*;

    #[tokio::test]
    async fn aws() {
        let Some(d) = deployment(Kind::Aws).await else { return };
        let s3 = d.s3.clone().expect("raw S3 client");
        let bucket = d.backend.bucket.clone();
        // The smallest threshold the type allows (16 MiB parts): 40 MiB is three parts.
        let storage = S3Storage::new(s3.clone(), &bucket, 0);
        let source = d.path("dropped.bin");
        let bytes: Vec<u8> = (0..40u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        std::fs::write(&source, &bytes).unwrap();
        let key = "outputs/dropped/dropped.bin";
        let pending = || async {
            let out = s3.list_multipart_uploads().bucket(&bucket).send().await.expect("list multipart uploads");
            out.uploads().iter().filter(|u| u.key() == Some(key)).count()
        };

        // Dropped once the upload exists on the server, so mid-way; the timeout bounds the wait.
        let started = async {
            while pending().await == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let upload = storage.put_file(key, &source, "application/octet-stream");
        let raced = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::select! {
                put = upload => Some(put),
                () = started => None,
            }
        })
        .await
        .expect("the multipart upload never started");
        assert!(raced.is_none(), "the upload finished before it could be dropped: {raced:?}");

        let deadline = Instant::now() + Duration::from_secs(30);
        while pending().await > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(pending().await, 0, "the dropped multipart upload was not aborted");
        assert!(d.storage().head(key).await.unwrap().is_none(), "the dropped upload left an object");
    }
}
