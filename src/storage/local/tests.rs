use std::fs::File;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use serde_json::Value;

use super::*;
use crate::domain::event::{EventContext, decode_event_key};
use crate::domain::keys::KeyLayout;
use crate::domain::preset::Preset;
use crate::domain::ready::ReadyMessage;
use crate::queue::local::LocalQueue;
use crate::queue::{QueueCounts, Received};
use crate::storage::{CasOutcome, ObjectStore, Pin, StorageResult};

fn store(dir: &tempfile::TempDir) -> LocalStorage {
    LocalStorage::new(dir.path().join("objects"), None).unwrap()
}

fn with_events(dir: &tempfile::TempDir) -> (LocalStorage, Arc<LocalQueue>) {
    let queue = Arc::new(LocalQueue::open(&dir.path().join("queues.db"), "ready").unwrap());
    let sink = EventSink { upload_prefix: "uploads/".into(), queue: queue.clone(), bucket: "media".into() };
    (LocalStorage::new(dir.path().join("objects"), Some(sink)).unwrap(), queue)
}

async fn drain(queue: &LocalQueue) -> Vec<Received> {
    queue.receive(10, StdDuration::ZERO, StdDuration::from_secs(60)).await.unwrap()
}

#[tokio::test]
async fn bytes_and_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.put_bytes("jobs/a.json", b"{\"a\":1}".to_vec(), "application/json").await.unwrap();
    assert_eq!(s.get_bytes("jobs/a.json").await.unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
    assert!(s.root().join("jobs").join("a.json").is_file(), "same layout as the bucket");

    let src = dir.path().join("src.bin");
    fs::write(&src, b"media bytes").unwrap();
    let put = s.put_file("outputs/x/out.mp4", &src, "video/mp4").await.unwrap();
    assert_eq!(put.size, 11);
    let dst = dir.path().join("dst.bin");
    let got = s.get_to_file("outputs/x/out.mp4", &dst).await.unwrap();
    assert_eq!(fs::read(&dst).unwrap(), b"media bytes");
    assert_eq!(got, put);
    assert_eq!(s.head("outputs/x/out.mp4").await.unwrap(), Some(put));

    // An empty object is still an object.
    s.put_bytes("jobs/empty", Vec::new(), "text/plain").await.unwrap();
    assert_eq!(s.get_bytes("jobs/empty").await.unwrap(), Some(Vec::new()));
    assert_eq!(s.head("jobs/empty").await.unwrap().map(|i| i.size), Some(0));
}

#[tokio::test]
async fn a_large_file_round_trips_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut data = vec![0u8; 20 << 20];
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    let src = dir.path().join("big.mov");
    fs::write(&src, &data).unwrap();
    let put = s.put_file("uploads/big.mov", &src, "video/quicktime").await.unwrap();
    assert_eq!(put.size, 20 << 20);
    let dst = dir.path().join("back.mov");
    let got = s.get_to_file("uploads/big.mov", &dst).await.unwrap();
    assert_eq!(got, put);
    assert!(fs::read(&dst).unwrap() == data, "content differs");
    let temp_files = fs::read_dir(s.root().join(TMP_DIR)).unwrap().filter(|e| e.as_ref().unwrap().path().is_file());
    assert_eq!(temp_files.count(), 0, "no temp file left");
}

#[tokio::test]
async fn missing_objects() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let dst = dir.path().join("out");
    assert!(
        matches!(s.get_to_file("uploads/none.mp4", &dst).await, Err(StorageError::NotFound(k)) if k == "uploads/none.mp4")
    );
    assert!(!dst.exists());
    assert_eq!(s.get_bytes("uploads/none.mp4").await.unwrap(), None);
    assert_eq!(s.head("uploads/none.mp4").await.unwrap(), None);
    s.delete("uploads/none.mp4").await.unwrap();
    assert!(s.list("").await.unwrap().is_empty());

    // A folder is not an object, nor is a path through a file.
    s.put_bytes("uploads/dir/file", b"x".to_vec(), "").await.unwrap();
    assert_eq!(s.head("uploads/dir").await.unwrap(), None);
    assert_eq!(s.get_bytes("uploads/dir").await.unwrap(), None);
    assert!(matches!(s.get_to_file("uploads/dir", &dst).await, Err(StorageError::NotFound(_))));
    s.delete("uploads/dir").await.unwrap();
    assert_eq!(s.head("uploads/dir/file/deeper").await.unwrap(), None);
    assert_eq!(s.get_bytes("uploads/dir/file/deeper").await.unwrap(), None);
    assert_eq!(s.list("").await.unwrap(), ["uploads/dir/file"]);
}

fn invalid<T>(result: StorageResult<T>) -> bool {
    matches!(result, Err(StorageError::InvalidKey { .. }))
}

#[tokio::test]
async fn hostile_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let file = dir.path().join("f");
    fs::write(&file, b"x").unwrap();
    for key in ["../x", "/etc/passwd", "a\\b", "a\0b", "uploads//x", "", "uploads/./x", ".tmp/x", ".tmpx", ".tmp"] {
        assert!(invalid(s.put_bytes(key, b"x".to_vec(), "").await), "put_bytes {key:?}");
        assert!(invalid(s.put_file(key, &file, "").await), "put_file {key:?}");
        assert!(invalid(s.get_to_file(key, &dir.path().join("out")).await), "get_to_file {key:?}");
        assert!(invalid(s.get_bytes(key).await), "get_bytes {key:?}");
        assert!(invalid(s.head(key).await), "head {key:?}");
        assert!(invalid(s.delete(key).await), "delete {key:?}");
    }
    assert!(!dir.path().join("x").exists());
    // Dots inside a name, or a `.tmp` below the root level, are fine.
    s.put_bytes("uploads/.tmp/clip..v2.mp4", b"x".to_vec(), "").await.unwrap();
    assert_eq!(s.list("").await.unwrap(), ["uploads/.tmp/clip..v2.mp4"]);
}

#[tokio::test]
async fn listing_is_by_prefix_sorted_and_skips_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    for key in ["uploads/b.mp4", "uploads/a/2.mp4", "uploads/a.mp4", "uploads/a/1.mp4", "outputs/a/m.json", "top"] {
        s.put_bytes(key, key.as_bytes().to_vec(), "").await.unwrap();
    }
    fs::write(s.root().join(TMP_DIR).join("leftover.part"), b"half").unwrap();

    let all = ["outputs/a/m.json", "top", "uploads/a.mp4", "uploads/a/1.mp4", "uploads/a/2.mp4", "uploads/b.mp4"];
    assert_eq!(s.list("").await.unwrap(), all);
    assert_eq!(s.list("uploads/").await.unwrap(), &all[2..]);
    assert_eq!(s.list("uploads/a").await.unwrap(), &all[2..5]);
    assert_eq!(s.list("uploads/a/").await.unwrap(), &all[3..5]);
    assert_eq!(s.list("uploads/a/1").await.unwrap(), ["uploads/a/1.mp4"]);
    assert!(s.list("nothing/").await.unwrap().is_empty());
    assert!(s.list("../").await.unwrap().is_empty());
    assert!(s.list(".tmp/").await.unwrap().is_empty());
}

#[tokio::test]
async fn delete_removes_empty_folders_up_to_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.put_bytes("outputs/a/b/c.mp4", b"1".to_vec(), "").await.unwrap();
    s.put_bytes("outputs/keep.mp4", b"2".to_vec(), "").await.unwrap();
    s.delete("outputs/a/b/c.mp4").await.unwrap();
    assert!(!s.root().join("outputs").join("a").exists());
    assert!(s.root().join("outputs").is_dir());
    s.delete("outputs/keep.mp4").await.unwrap();
    assert!(!s.root().join("outputs").exists());
    assert!(s.root().is_dir());
    assert!(s.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn the_etag_changes_on_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let src = dir.path().join("src");
    fs::write(&src, b"same size").unwrap();
    let first = s.put_file("uploads/a.mp4", &src, "").await.unwrap();
    assert_eq!(s.head("uploads/a.mp4").await.unwrap(), Some(first.clone()));
    assert_eq!(s.head("uploads/a.mp4").await.unwrap(), Some(first.clone()), "stable");
    let second = s.put_file("uploads/a.mp4", &src, "").await.unwrap();
    assert_ne!(second.etag, first.etag);
    s.put_bytes("uploads/a.mp4", b"same size".to_vec(), "").await.unwrap();
    let third = s.head("uploads/a.mp4").await.unwrap().unwrap();
    assert_ne!(third.etag, second.etag);
    assert_eq!(s.get_to_file("uploads/a.mp4", &dir.path().join("o")).await.unwrap(), third);
}

#[test]
fn same_size_files_stamped_alike_have_different_etags() {
    let dir = tempfile::tempdir().unwrap();
    let stamp = SystemTime::now();
    let tags: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let path = dir.path().join(name);
            fs::write(&path, b"same").unwrap();
            let file = File::options().write(true).open(&path).unwrap();
            file.set_modified(stamp).unwrap();
            object_info(&file.metadata().unwrap()).etag
        })
        .collect();
    assert_ne!(tags[0], tags[1]);
}

/// Two stores on one folder stand for two processes: each opens the lock files itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conditional_writes_are_atomic_across_stores_on_one_folder() {
    let dir = tempfile::tempdir().unwrap();
    let stores = [Arc::new(store(&dir)), Arc::new(store(&dir))];
    let key = "jobs/n";
    assert!(matches!(
        stores[0].put_if(key, b"0".to_vec(), "", Precondition::Absent).await.unwrap(),
        CasOutcome::Written { .. }
    ));
    assert_eq!(stores[1].put_if(key, b"0".to_vec(), "", Precondition::Absent).await.unwrap(), CasOutcome::Conflict);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = stores[i % 2].clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    loop {
                        let current = s.get_versioned(key).await.unwrap().unwrap();
                        let n: u32 = String::from_utf8(current.bytes).unwrap().parse().unwrap();
                        let next = (n + 1).to_string().into_bytes();
                        let outcome = s.put_if(key, next, "", Precondition::Matches(&current.etag)).await.unwrap();
                        if outcome != CasOutcome::Conflict {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(stores[0].get_bytes(key).await.unwrap().as_deref(), Some(&b"200"[..]));
    // Only committed writes leave anything: no temp file survives a lost race.
    let temp_files =
        fs::read_dir(stores[0].root().join(TMP_DIR)).unwrap().filter(|e| e.as_ref().unwrap().path().is_file());
    assert_eq!(temp_files.count(), 0);
}

#[tokio::test]
async fn pinned_reads_check_the_etag_of_the_file_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let out = dir.path().join("out");
    let pin = |etag: &str| Pin { etag: Some(etag.to_string()), version_id: None };
    let missing = s.get_pinned_to_file("uploads/a", &out, &pin("x")).await;
    assert!(matches!(missing, Err(StorageError::Changed(_))), "{missing:?}");
    s.put_bytes("uploads/a", b"one".to_vec(), "").await.unwrap();
    let read = s.get_versioned("uploads/a").await.unwrap().unwrap();
    let got = s.get_pinned_to_file("uploads/a", &out, &pin(&read.etag)).await.unwrap();
    assert_eq!(got.etag.as_deref(), Some(read.etag.as_str()));
    // Quoted, as S3 sends it, is the same tag.
    s.get_pinned_to_file("uploads/a", &out, &pin(&format!("\"{}\"", read.etag))).await.unwrap();
    let other = s.get_pinned_to_file("uploads/a", &out, &pin("1-2-3")).await;
    assert!(matches!(other, Err(StorageError::Changed(_))), "{other:?}");
    // A version id alone pins nothing here.
    let by_version = Pin { etag: None, version_id: Some("v".into()) };
    assert_eq!(s.get_pinned_to_file("uploads/a", &out, &by_version).await.unwrap(), got);
}

#[tokio::test]
async fn an_upload_sends_one_s3_event() {
    let dir = tempfile::tempdir().unwrap();
    let (s, queue) = with_events(&dir);
    let key = "uploads/2024/cat video+1 ünïcødé 日本.mov";
    let src = dir.path().join("clip.mov");
    fs::write(&src, b"0123456789").unwrap();
    let info = s.put_file(key, &src, "video/quicktime").await.unwrap();

    let got = drain(&queue).await;
    assert_eq!(got.len(), 1, "exactly one event");
    let event: Value = serde_json::from_str(&got[0].body).unwrap();
    let record = &event["Records"][0];
    assert_eq!(event["Records"].as_array().map(Vec::len), Some(1));
    assert_eq!(record["eventVersion"], "2.1");
    assert_eq!(record["eventSource"], "aws:s3");
    assert_eq!(record["awsRegion"], "local");
    assert_eq!(record["eventName"], "ObjectCreated:Put");
    assert!(chrono::DateTime::parse_from_rfc3339(record["eventTime"].as_str().unwrap()).is_ok());
    assert_eq!(record["s3"]["s3SchemaVersion"], "1.0");
    assert_eq!(record["s3"]["bucket"]["name"], "media");
    let object = &record["s3"]["object"];
    let raw_key = object["key"].as_str().unwrap();
    assert_eq!(raw_key, "uploads/2024/cat+video%2B1+%C3%BCn%C3%AFc%C3%B8d%C3%A9+%E6%97%A5%E6%9C%AC.mov");
    assert_eq!(decode_event_key(raw_key).as_deref(), Some(key));
    assert_eq!(object["size"], 10);
    assert_eq!(object["eTag"].as_str(), info.etag.as_deref());
    // The write's ETag names the write, so whoever wrote it can derive the job id.
    assert_eq!(object["sequencer"].as_str(), info.etag.as_deref());

    // The worker's own parser turns it into a job for this key.
    let layout = KeyLayout::new("uploads/", "outputs/").unwrap();
    let ctx = EventContext { layout: &layout, default_presets: &[Preset::Mp4H264] };
    let parsed = ReadyMessage::parse(&got[0].body, &ctx).unwrap();
    assert_eq!(parsed.jobs().len(), 1);
    assert_eq!(parsed.jobs()[0].job.source_key, key);

    // put_bytes under the prefix sends one too; writes elsewhere send none.
    s.put_bytes("uploads/b.mp4", b"x".to_vec(), "").await.unwrap();
    assert_eq!(drain(&queue).await.len(), 1);
    // So does a conditional write, when it takes effect.
    assert_eq!(s.put_if("uploads/b.mp4", b"y".to_vec(), "", Precondition::Absent).await.unwrap(), CasOutcome::Conflict);
    assert!(drain(&queue).await.is_empty(), "a write that did not happen sent an event");
    s.put_if("uploads/c.mp4", b"y".to_vec(), "", Precondition::Absent).await.unwrap();
    assert_eq!(drain(&queue).await.len(), 1);
    s.put_bytes("outputs/2024/cat/manifest.json", b"{}".to_vec(), "").await.unwrap();
    s.put_file("jobs/j.json", &src, "").await.unwrap();
    s.put_bytes("uploadsx/not-under.mp4", b"x".to_vec(), "").await.unwrap();
    assert!(drain(&queue).await.is_empty());
    assert_eq!(queue.counts().await.unwrap(), QueueCounts { visible: 0, in_flight: 3, delayed: 0 });
}

struct BrokenQueue;

#[async_trait]
impl Queue for BrokenQueue {
    async fn send(&self, _: &str, _: SendOptions) -> anyhow::Result<()> {
        anyhow::bail!("queue down")
    }
    async fn receive(&self, _: usize, _: StdDuration, _: StdDuration) -> anyhow::Result<Vec<Received>> {
        anyhow::bail!("queue down")
    }
    async fn delete(&self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!("queue down")
    }
    async fn change_visibility(&self, _: &str, _: StdDuration) -> anyhow::Result<()> {
        anyhow::bail!("queue down")
    }
    async fn counts(&self) -> anyhow::Result<QueueCounts> {
        anyhow::bail!("queue down")
    }
    fn name(&self) -> &str {
        "broken"
    }
}

#[tokio::test]
async fn an_unsent_event_fails_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let sink = EventSink { upload_prefix: "uploads/".into(), queue: Arc::new(BrokenQueue), bucket: "m".into() };
    let s = LocalStorage::new(dir.path().join("objects"), Some(sink)).unwrap();
    let err = s.put_bytes("uploads/a.mp4", b"x".to_vec(), "").await.unwrap_err();
    assert!(matches!(err, StorageError::Other(_)));
    assert!(format!("{err:#}").contains("queue down"), "{err:#}");
    // Writes outside the prefix do not need the queue.
    s.put_bytes("outputs/a.mp4", b"x".to_vec(), "").await.unwrap();
}

#[tokio::test]
async fn a_download_streams_the_stored_object() {
    use tokio::io::AsyncReadExt;

    use crate::storage::ClientUploads;

    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.put_bytes("outputs/a/clip.mp4", b"media bytes".to_vec(), "video/mp4").await.unwrap();
    let mut download = s.open_download("outputs/a/clip.mp4").await.unwrap().expect("stored");
    assert_eq!(download.size, 11);
    let mut bytes = Vec::new();
    download.body.read_to_end(&mut bytes).await.unwrap();
    assert_eq!(bytes, b"media bytes");
    // A folder, a missing key and a path through a file are all absent; a hostile key is refused.
    assert!(s.open_download("outputs/a").await.unwrap().is_none());
    assert!(s.open_download("outputs/none.mp4").await.unwrap().is_none());
    assert!(s.open_download("outputs/a/clip.mp4/x").await.unwrap().is_none());
    assert!(invalid(s.open_download("../x").await));
    assert!(invalid(s.open_download(".tmp/x").await));
}
