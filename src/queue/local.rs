//! [`Queue`] on SQLite: SQS semantics for the embedded local backend.
//!
//! All queues of a deployment ("ready", "processing", "dead-letter") live in one database file,
//! told apart by a `queue` column, and several processes (worker daemon, CLI, API) open that file
//! at the same time. Correctness therefore rests on SQLite transactions, never on in-process
//! locks: a receive picks and hides its messages inside one `BEGIN IMMEDIATE` transaction, so two
//! receivers (in any process) can never take the same visible message.
//!
//! Nothing is held in memory between calls: a process killed at any point leaves either the state
//! before or after its last committed transaction (WAL journal), and a message it had received
//! simply becomes visible again once its visibility timeout passes, as on SQS.
//!
//! Durations are kept to the millisecond (SQS rounds down to whole seconds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, TransactionBehavior, params};
use uuid::Uuid;

use super::{Listed, MAX_BATCH, MAX_DELAY, MAX_WAIT, Queue, QueueCounts, Received, SendOptions};

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an empty long-poll looks again when nothing woke it: the doorbell wakes it at once
/// when any process makes a message visible; polling remains for delayed messages coming due,
/// and for file systems that cannot be watched.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    queue         TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    attributes    TEXT    NOT NULL,              -- JSON object of string to string
    sent_at       INTEGER NOT NULL,              -- ms since the epoch
    visible_at    INTEGER NOT NULL,              -- ms since the epoch
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT                           -- handle of the latest receive
);
CREATE INDEX IF NOT EXISTS messages_queue_visible ON messages (queue, visible_at);
CREATE UNIQUE INDEX IF NOT EXISTS messages_receipt ON messages (receipt);
";

/// One named queue in a SQLite database file.
pub struct LocalQueue {
    /// The mutex only serialises this instance's own calls on its connection (a connection is
    /// not `Sync`); other connections and processes are kept in line by SQLite's locks.
    conn: Arc<Mutex<Connection>>,
    name: String,
    /// Rung when the bell file is written, by this process or another.
    doorbell: Arc<tokio::sync::Notify>,
    /// `<database>.bell`, written after every commit that makes a message visible. Not the
    /// database's own files: a reader woken by a write to the WAL could look before the commit
    /// is published in the WAL index (shared memory, which no watch sees) and then sleep.
    bell: PathBuf,
    /// Keeps the watch behind `doorbell` alive; `None` where watching is not possible.
    _watch: Option<notify::RecommendedWatcher>,
}

impl LocalQueue {
    /// Opens the queue `name` in the database at `db_path`, creating the file, its folder and the
    /// schema when missing. Blocks briefly (file I/O); call it at start-up.
    pub fn open(db_path: &Path, name: &str) -> anyhow::Result<LocalQueue> {
        if let Some(parent) = db_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("create folder {}", parent.display()))?;
        }
        let conn = Connection::open(db_path).with_context(|| format!("open queue database {}", db_path.display()))?;
        // Set first, so that the pragmas and schema below wait for other processes opening the
        // same file instead of failing.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode = enable_wal(&conn).with_context(|| format!("set WAL mode on {}", db_path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!("queue database {}: journal_mode is `{mode}`, WAL is required", db_path.display());
        }
        // In WAL mode NORMAL is safe against process crashes (only a power loss may lose the
        // last commits), and it avoids an fsync per message.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA).with_context(|| format!("create the queue schema in {}", db_path.display()))?;
        let doorbell = Arc::new(tokio::sync::Notify::new());
        let mut bell = db_path.as_os_str().to_owned();
        bell.push(".bell");
        let bell = PathBuf::from(bell);
        let watch = watch_writes(&bell, Arc::clone(&doorbell));
        Ok(LocalQueue { conn: Arc::new(Mutex::new(conn)), name: name.to_string(), doorbell, bell, _watch: watch })
    }

    /// Runs `f` on the connection in the blocking pool, so SQLite's waits never stall the runtime.
    async fn with_conn<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(&mut Connection, &str) -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a transaction open (dropping a
            // `Transaction` rolls it back), so the connection is still usable.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn, &name)
        })
        .await
        .with_context(|| format!("queue {}: the SQLite task failed", self.name))?
    }
}

/// Tells every long poll on the database that a message became visible (best effort: a poll
/// that misses it looks again within `POLL_INTERVAL`).
fn ring(bell: &Path) {
    if let Err(err) = std::fs::write(bell, b"1") {
        tracing::debug!(error = %err, bell = %bell.display(), "Could not ring the queue's bell.");
    }
}

/// Watches the folder of `bell` and rings `doorbell` when the bell file is written. A failure
/// to watch only costs latency (the poll remains), so it is logged.
fn watch_writes(bell: &Path, doorbell: Arc<tokio::sync::Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};

    let folder = bell.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = bell.file_name()?.to_owned();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = event.paths.iter().any(|p| p.file_name() == Some(file_name.as_os_str()));
        if ours && matches!(event.kind, EventKind::Modify(_) | EventKind::Create(_)) {
            // A stored permit if nobody waits yet: a write between a look and the wait is not lost.
            doorbell.notify_one();
        }
    };
    let watch = notify::recommended_watcher(handler).and_then(|mut watcher| {
        watcher.watch(folder, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    match watch {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            tracing::warn!(error = %err, folder = %folder.display(), "Cannot watch the queue database; polling only.");
            None
        }
    }
}

/// Switches the database to WAL, returning the journal mode now in force.
///
/// While another process is creating or switching the same file, SQLite can answer BUSY here
/// at once, without consulting the busy handler, so this waits and retries by itself.
pub(crate) fn enable_wal(conn: &Connection) -> rusqlite::Result<String> {
    let started = Instant::now();
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Milliseconds since the epoch (the clock shared by every process on this machine).
fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One attempt at receiving: picks, hides and returns up to `max` visible messages.
fn try_receive(conn: &mut Connection, queue: &str, max: usize, visibility: Duration) -> anyhow::Result<Vec<Received>> {
    let now = now_ms();
    // A cheap read first: an idle poller then never takes the write lock.
    let any: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE queue = ?1 AND visible_at <= ?2)")?
        .query_row(params![queue, now], |row| row.get(0))?;
    if !any {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(max).unwrap_or(1);
    // IMMEDIATE takes the write lock up front: the rows selected cannot be taken by another
    // receiver before they are hidden (a deferred transaction could also fail with
    // SQLITE_BUSY_SNAPSHOT on upgrade, without waiting).
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Read the clock again: taking the lock may have waited for another process.
    let now = now_ms();
    let hidden_until = now.saturating_add(millis(visibility));
    let rows = {
        let mut select = tx.prepare_cached(
            "SELECT seq, id, body, attributes, receive_count FROM messages
             WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, seq LIMIT ?3",
        )?;
        let rows = select.query_map(params![queue, now, limit], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let mut received = Vec::with_capacity(rows.len());
    {
        let mut update = tx.prepare_cached(
            "UPDATE messages SET receipt = ?1, receive_count = receive_count + 1, visible_at = ?2 WHERE seq = ?3",
        )?;
        for (seq, id, body, attributes, count) in rows {
            let receipt = Uuid::new_v4().to_string();
            update.execute(params![receipt, hidden_until, seq])?;
            // Failing here would make the message block every receive forever; deliver it.
            let attributes = serde_json::from_str::<BTreeMap<String, String>>(&attributes).unwrap_or_else(|e| {
                tracing::warn!(queue, message_id = %id, error = %e, "Unreadable message attributes dropped.");
                BTreeMap::new()
            });
            received.push(Received {
                message_id: id,
                body,
                receipt,
                receive_count: u32::try_from(count.saturating_add(1)).unwrap_or(u32::MAX),
                attributes,
            });
        }
    }
    tx.commit()?;
    Ok(received)
}

#[async_trait]
impl Queue for LocalQueue {
    async fn send(&self, body: &str, options: SendOptions) -> anyhow::Result<()> {
        let body = body.to_string();
        // As the SQS queue does: SQS refuses empty attribute values, so both backends send "-".
        let attributes: BTreeMap<String, String> = options
            .attributes
            .into_iter()
            .map(|(k, v)| if v.is_empty() { (k, "-".to_string()) } else { (k, v) })
            .collect();
        let attributes = serde_json::to_string(&attributes)?;
        let delay = millis(options.delay.min(MAX_DELAY));
        let bell = self.bell.clone();
        self.with_conn(move |conn, queue| {
            let now = now_ms();
            conn.prepare_cached(
                "INSERT INTO messages (id, queue, body, attributes, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![Uuid::new_v4().to_string(), queue, body, attributes, now, now.saturating_add(delay)])
            .with_context(|| format!("send to {queue}"))?;
            if delay == 0 {
                ring(&bell);
            }
            Ok(())
        })
        .await
    }

    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Received>> {
        let max = max.clamp(1, MAX_BATCH);
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        loop {
            let received = self
                .with_conn(move |conn, queue| {
                    try_receive(conn, queue, max, visibility).with_context(|| format!("receive from {queue}"))
                })
                .await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if !received.is_empty() || remaining.is_zero() {
                return Ok(received);
            }
            tokio::select! {
                () = tokio::time::sleep(remaining.min(POLL_INTERVAL)) => {}
                () = self.doorbell.notified() => {}
            }
        }
    }

    async fn delete(&self, receipt: &str) -> anyhow::Result<()> {
        let receipt = receipt.to_string();
        self.with_conn(move |conn, queue| {
            let deleted = conn
                .prepare_cached("DELETE FROM messages WHERE queue = ?1 AND receipt = ?2")?
                .execute(params![queue, receipt])
                .with_context(|| format!("delete from {queue}"))?;
            if deleted == 0 {
                // As on SQS: the message lives on (received again since) or is already gone.
                tracing::debug!(queue, "Delete with a stale or unknown receipt handle ignored.");
            }
            Ok(())
        })
        .await
    }

    async fn change_visibility(&self, receipt: &str, visibility: Duration) -> anyhow::Result<()> {
        let receipt = receipt.to_string();
        let bell = self.bell.clone();
        self.with_conn(move |conn, queue| {
            let now = now_ms();
            let changed = conn
                .prepare_cached(
                    "UPDATE messages SET visible_at = ?1 WHERE queue = ?2 AND receipt = ?3 AND visible_at > ?4",
                )?
                .execute(params![now.saturating_add(millis(visibility)), queue, receipt, now])
                .with_context(|| format!("change visibility on {queue}"))?;
            if changed == 0 {
                anyhow::bail!(
                    "change visibility on {queue}: no in-flight message has this receipt handle \
                     (it was deleted, received again, or its visibility timeout expired)"
                );
            }
            if visibility.is_zero() {
                ring(&bell);
            }
            Ok(())
        })
        .await
    }

    async fn counts(&self) -> anyhow::Result<QueueCounts> {
        self.with_conn(|conn, queue| {
            let (visible, in_flight, delayed): (i64, i64, i64) = conn
                .prepare_cached(
                    "SELECT COALESCE(SUM(visible_at <= ?2), 0),
                            COALESCE(SUM(visible_at > ?2 AND receive_count > 0), 0),
                            COALESCE(SUM(visible_at > ?2 AND receive_count = 0), 0)
                     FROM messages WHERE queue = ?1",
                )?
                .query_row(params![queue, now_ms()], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .with_context(|| format!("count {queue}"))?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            Ok(QueueCounts { visible: count(visible), in_flight: count(in_flight), delayed: count(delayed) })
        })
        .await
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn receive_listed(&self, max: usize, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Listed>> {
        let received = self.receive(max, wait, visibility).await?;
        let ids: Vec<String> = received.iter().map(|m| m.message_id.clone()).collect();
        let sent: Vec<Option<i64>> = self
            .with_conn(move |conn, queue| {
                let mut select = conn.prepare_cached("SELECT sent_at FROM messages WHERE queue = ?1 AND id = ?2")?;
                let mut sent = Vec::with_capacity(ids.len());
                for id in &ids {
                    // A message deleted since (by another process) has no time left to tell.
                    sent.push(select.query_row(params![queue, id], |row| row.get(0)).ok());
                }
                Ok(sent)
            })
            .await?;
        Ok(received
            .into_iter()
            .zip(sent)
            .map(|(received, sent)| Listed {
                received,
                sent_at: sent.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis),
            })
            .collect())
    }

    /// One statement: in flight or not, every message of this queue goes at once.
    async fn purge(&self) -> anyhow::Result<Option<u64>> {
        self.with_conn(|conn, queue| {
            let deleted = conn
                .prepare_cached("DELETE FROM messages WHERE queue = ?1")?
                .execute(params![queue])
                .with_context(|| format!("purge {queue}"))?;
            Ok(Some(u64::try_from(deleted).unwrap_or(u64::MAX)))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;

    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    fn db(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("state").join("queues.db")
    }

    #[tokio::test]
    async fn send_receive_delete() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(&db(&dir), "ready").unwrap();
        assert_eq!(q.name(), "ready");
        assert!(q.receive(10, Duration::ZERO, LONG).await.unwrap().is_empty());

        q.send("one", SendOptions::default()).await.unwrap();
        q.send("two", SendOptions::default()).await.unwrap();
        assert_eq!(q.counts().await.unwrap(), QueueCounts { visible: 2, in_flight: 0, delayed: 0 });

        let got = q.receive(10, Duration::ZERO, LONG).await.unwrap();
        assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["one", "two"]);
        assert!(got.iter().all(|m| m.receive_count == 1));
        assert_ne!(got[0].message_id, got[1].message_id);
        assert_eq!(q.counts().await.unwrap(), QueueCounts { visible: 0, in_flight: 2, delayed: 0 });
        assert!(q.receive(10, Duration::ZERO, LONG).await.unwrap().is_empty());

        for m in &got {
            q.delete(&m.receipt).await.unwrap();
        }
        assert_eq!(q.counts().await.unwrap().total(), 0);
        // Unknown and already-used handles are not errors, as on SQS.
        q.delete(&got[0].receipt).await.unwrap();
        q.delete("no-such-handle").await.unwrap();
    }

    #[tokio::test]
    async fn receive_returns_at_most_max_batch() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(&db(&dir), "ready").unwrap();
        for i in 0..15 {
            q.send(&i.to_string(), SendOptions::default()).await.unwrap();
        }
        assert_eq!(q.receive(0, Duration::ZERO, LONG).await.unwrap().len(), 1);
        let got = q.receive(100, Duration::ZERO, LONG).await.unwrap();
        assert_eq!(got.len(), MAX_BATCH);
        assert_eq!(got[0].body, "1", "oldest first");
    }

    #[tokio::test]
    async fn expired_visibility_redelivers_with_a_new_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(&db(&dir), "ready").unwrap();
        q.send("job", SendOptions::default()).await.unwrap();

        let first = q.receive(1, Duration::ZERO, Duration::from_millis(200)).await.unwrap().remove(0);
        assert_eq!(first.receive_count, 1);
        assert!(q.receive(1, Duration::ZERO, LONG).await.unwrap().is_empty());

        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(q.counts().await.unwrap().visible, 1);
        let second = q.receive(1, Duration::ZERO, LONG).await.unwrap().remove(0);
        assert_eq!(second.message_id, first.message_id);
        assert_eq!(second.receive_count, 2);
        assert_ne!(second.receipt, first.receipt);

        // The old handle is stale: nothing is deleted, and it cannot extend the new delivery.
        q.delete(&first.receipt).await.unwrap();
        assert_eq!(q.counts().await.unwrap(), QueueCounts { visible: 0, in_flight: 1, delayed: 0 });
        assert!(q.change_visibility(&first.receipt, Duration::ZERO).await.is_err());

        q.delete(&second.receipt).await.unwrap();
        assert_eq!(q.counts().await.unwrap().total(), 0);
    }

    #[tokio::test]
    async fn delay_hides_a_message_until_it_elapses() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(&db(&dir), "ready").unwrap();
        q.send("later", SendOptions::delayed(Duration::from_millis(300))).await.unwrap();
        assert_eq!(q.counts().await.unwrap(), QueueCounts { visible: 0, in_flight: 0, delayed: 1 });
        assert!(q.receive(1, Duration::ZERO, LONG).await.unwrap().is_empty());

        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(q.counts().await.unwrap(), QueueCounts { visible: 1, in_flight: 0, delayed: 0 });
        let got = q.receive(1, Duration::ZERO, LONG).await.unwrap();
        assert_eq!(got[0].body, "later");
        assert_eq!(got[0].receive_count, 1);
    }

    #[tokio::test]
    async fn delay_is_capped_at_max_delay() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(&db(&dir), "ready").unwrap();
        q.send("far", SendOptions::delayed(Duration::from_secs(100_000))).await.unwrap();
        let hidden: i64 = q
            .with_conn(|conn, _| Ok(conn.query_row("SELECT visible_at - sent_at FROM messages", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(hidden, millis(MAX_DELAY));
    }

    #[tokio::test]
    async fn change_visibility_to_zero_reveals_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(&db(&dir), "ready").unwrap();
        q.send("retry me", SendOptions::default()).await.unwrap();
        let first = q.receive(1, Duration::ZERO, LONG).await.unwrap().remove(0);
        q.change_visibility(&first.receipt, Duration::ZERO).await.unwrap();

        let again = q.receive(1, Duration::ZERO, LONG).await.unwrap().remove(0);
        assert_eq!(again.message_id, first.message_id);
        assert_eq!(again.receive_count, 2);

        // Extending a delivery works with its own handle; an unknown one is an error.
        q.change_visibility(&again.receipt, LONG).await.unwrap();
        assert!(q.change_visibility("no-such-handle", LONG).await.is_err());
        q.delete(&again.receipt).await.unwrap();
        let err = q.change_visibility(&again.receipt, LONG).await.unwrap_err();
        assert!(err.to_string().contains("no in-flight message"), "{err}");
    }

    #[tokio::test]
    async fn a_send_by_another_connection_rings_the_doorbell() {
        let dir = tempfile::tempdir().unwrap();
        let receiver = LocalQueue::open(&db(&dir), "ready").unwrap();
        assert!(receiver._watch.is_some(), "the database folder could not be watched");
        let sender = LocalQueue::open(&db(&dir), "ready").unwrap();
        // Drain anything rung before, then expect a ring for the send.
        while tokio::time::timeout(Duration::from_millis(200), receiver.doorbell.notified()).await.is_ok() {}
        sender.send("hello", SendOptions::default()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), receiver.doorbell.notified()).await.expect("no ring for a send");
    }

    #[tokio::test]
    async fn long_poll_wakes_when_another_connection_sends() {
        let dir = tempfile::tempdir().unwrap();
        let receiver = LocalQueue::open(&db(&dir), "ready").unwrap();
        let sender = LocalQueue::open(&db(&dir), "ready").unwrap();
        let send = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sender.send("hello", SendOptions::default()).await.unwrap();
        });
        let started = Instant::now();
        let got = receiver.receive(1, Duration::from_secs(10), LONG).await.unwrap();
        let elapsed = started.elapsed();
        send.await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "hello");
        assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "woke up after {elapsed:?}");
    }

    #[tokio::test]
    async fn an_empty_long_poll_waits_then_returns_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(&db(&dir), "ready").unwrap();
        let started = Instant::now();
        assert!(q.receive(1, Duration::from_millis(300), LONG).await.unwrap().is_empty());
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2), "{elapsed:?}");
    }

    #[tokio::test]
    async fn queues_sharing_a_file_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let ready = LocalQueue::open(&db(&dir), "ready").unwrap();
        let dead = LocalQueue::open(&db(&dir), "dead-letter").unwrap();
        ready.send("for ready", SendOptions::default()).await.unwrap();
        dead.send("for dead", SendOptions::default()).await.unwrap();
        assert_eq!(ready.counts().await.unwrap().visible, 1);
        assert_eq!(dead.counts().await.unwrap().visible, 1);

        let got = dead.receive(10, Duration::ZERO, LONG).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "for dead");
        // A handle from one queue deletes nothing in another.
        ready.delete(&got[0].receipt).await.unwrap();
        assert_eq!(dead.counts().await.unwrap().in_flight, 1);
        assert!(ready.change_visibility(&got[0].receipt, Duration::ZERO).await.is_err());

        let got = ready.receive(10, Duration::ZERO, LONG).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "for ready");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_receivers_never_share_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = db(&dir);
        let sender = LocalQueue::open(&path, "ready").unwrap();
        for i in 0..200 {
            sender.send(&format!("m{i}"), SendOptions::default()).await.unwrap();
        }
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let path = path.clone();
            tasks.push(tokio::spawn(async move {
                let q = LocalQueue::open(&path, "ready").unwrap();
                let mut bodies = Vec::new();
                loop {
                    let got = q.receive(MAX_BATCH, Duration::from_millis(200), LONG).await.unwrap();
                    if got.is_empty() {
                        return bodies;
                    }
                    for m in got {
                        assert_eq!(m.receive_count, 1);
                        q.delete(&m.receipt).await.unwrap();
                        bodies.push(m.body);
                    }
                }
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let distinct: HashSet<_> = all.iter().cloned().collect();
        assert_eq!(all.len(), 200, "a message was received twice or lost");
        assert_eq!(distinct.len(), 200);
        assert_eq!(sender.counts().await.unwrap().total(), 0);
    }

    #[tokio::test]
    async fn attributes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(&db(&dir), "dead-letter").unwrap();
        let options = SendOptions::default()
            .with_attribute("reason", "invalid_job")
            .with_attribute("detail", "ünïcødé \"quoted\" {json}")
            .with_attribute("empty", "");
        q.send("{}", options).await.unwrap();
        let got = q.receive(1, Duration::ZERO, LONG).await.unwrap().remove(0);
        assert_eq!(got.attributes.get("reason").map(String::as_str), Some("invalid_job"));
        assert_eq!(got.attributes.get("detail").map(String::as_str), Some("ünïcødé \"quoted\" {json}"));
        // Empty values become "-", as on SQS (which refuses them).
        assert_eq!(got.attributes.get("empty").map(String::as_str), Some("-"));
        assert_eq!(got.attributes.len(), 3);
    }

    #[tokio::test]
    async fn messages_survive_a_dropped_connection() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Stands for a process that dies after receiving, before deleting.
            let q = LocalQueue::open(&db(&dir), "ready").unwrap();
            q.send("received", SendOptions::default()).await.unwrap();
            q.send("waiting", SendOptions::default()).await.unwrap();
            let got = q.receive(1, Duration::ZERO, Duration::from_millis(200)).await.unwrap();
            assert_eq!(got[0].body, "received");
        }
        let q = LocalQueue::open(&db(&dir), "ready").unwrap();
        assert_eq!(q.counts().await.unwrap(), QueueCounts { visible: 1, in_flight: 1, delayed: 0 });
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Ordered by the time each became visible: the redelivery comes after the waiting one.
        let got = q.receive(10, Duration::ZERO, LONG).await.unwrap();
        let got: Vec<_> = got.iter().map(|m| (m.body.as_str(), m.receive_count)).collect();
        assert_eq!(got, [("waiting", 1), ("received", 2)]);
    }

    #[test]
    fn processes_creating_the_file_at_once_all_succeed() {
        // Switching a new file to WAL can report BUSY without waiting; `open` must retry.
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let opens: Vec<_> = (0..8)
                .map(|i| {
                    let path = db(&dir);
                    std::thread::spawn(move || LocalQueue::open(&path, &format!("q{i}")).map(|_| ()))
                })
                .collect();
            for open in opens {
                open.join().unwrap().unwrap();
            }
        }
    }

    /// Not a test by itself: the body of the child processes of `survives_kill_9` (a no-op
    /// unless `LOCAL_QUEUE_CHILD_DB` is set). Receives forever, deleting even-length bodies,
    /// sending `xx` after each batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "the child process of survives_kill_9, started by it with --ignored; not a test on its own"]
    async fn kill_9_child() {
        let Ok(path) = std::env::var("LOCAL_QUEUE_CHILD_DB") else { return };
        let q = LocalQueue::open(Path::new(&path), "ready").unwrap();
        loop {
            for m in q.receive(MAX_BATCH, Duration::from_millis(100), Duration::from_millis(500)).await.unwrap() {
                if m.body.len() % 2 == 0 {
                    q.delete(&m.receipt).await.unwrap();
                }
            }
            q.send("xx", SendOptions::default()).await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_kill_9() {
        let dir = tempfile::tempdir().unwrap();
        let path = db(&dir);
        let q = LocalQueue::open(&path, "ready").unwrap();
        // 100 bodies of odd length, which the children never delete.
        for i in 0..100 {
            q.send(&"y".repeat(1 + 2 * (i % 2)), SendOptions::default()).await.unwrap();
        }
        let exe = std::env::current_exe().unwrap();
        for round in 0..4 {
            let mut children: Vec<_> = (0..3)
                .map(|_| {
                    std::process::Command::new(&exe)
                        .args(["queue::local::tests::kill_9_child", "--exact", "--ignored", "--nocapture"])
                        .env("LOCAL_QUEUE_CHILD_DB", &path)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(300 + round * 37)).await;
            for child in &mut children {
                child.kill().unwrap(); // SIGKILL on Unix
                child.wait().unwrap();
            }
        }
        // The killed children's deliveries come back once their visibility timeout passes.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(q.counts().await.unwrap().in_flight, 0);
        let (mut odd, mut redelivered) = (HashSet::new(), 0);
        loop {
            let got = q.receive(MAX_BATCH, Duration::ZERO, LONG).await.unwrap();
            if got.is_empty() {
                break;
            }
            for m in got.into_iter().filter(|m| m.body.len() % 2 == 1) {
                redelivered += usize::from(m.receive_count > 1);
                assert!(odd.insert(m.message_id), "received twice in one drain");
            }
        }
        assert_eq!(odd.len(), 100, "a message was lost");
        assert!(redelivered > 0, "the children never ran");
        let check: String =
            q.with_conn(|c, _| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(check, "ok");
    }

    #[tokio::test]
    async fn listing_tells_when_each_message_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(&db(&dir), "dead-letter").unwrap();
        let before = chrono::Utc::now() - chrono::Duration::milliseconds(5);
        q.send("one", SendOptions::default().with_attribute("reason", "not_json")).await.unwrap();
        let got = q.receive_listed(10, Duration::ZERO, LONG).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].received.body, "one");
        assert_eq!(got[0].received.attributes.get("reason").map(String::as_str), Some("not_json"));
        let sent = got[0].sent_at.expect("a sent time");
        assert!(sent >= before && sent <= chrono::Utc::now(), "{sent}");
    }

    #[tokio::test]
    async fn purge_empties_one_queue_in_flight_messages_included() {
        let dir = tempfile::tempdir().unwrap();
        let dead = LocalQueue::open(&db(&dir), "dead-letter").unwrap();
        let ready = LocalQueue::open(&db(&dir), "ready").unwrap();
        for body in ["a", "b", "c"] {
            dead.send(body, SendOptions::default()).await.unwrap();
        }
        ready.send("stays", SendOptions::default()).await.unwrap();
        dead.receive(1, Duration::ZERO, LONG).await.unwrap();
        assert_eq!(dead.purge().await.unwrap(), Some(3));
        assert_eq!(dead.counts().await.unwrap().total(), 0);
        assert_eq!(ready.counts().await.unwrap().visible, 1);
    }
}
