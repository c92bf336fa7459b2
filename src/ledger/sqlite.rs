//! [`Ledger`] on SQLite: the local backend's job ledger, `<MEDIA_DATA_DIR>/ledger.db`.
//!
//! Several processes (worker daemon, CLI, API) open the file at once, as they do the local
//! queue's: correctness rests on SQLite transactions (WAL journal, `BEGIN IMMEDIATE` for every
//! write), never on in-process locks. A record is one row of `jobs`: the status document as
//! JSON, and the columns the indexes use; a write is a guarded `UPDATE ... WHERE revision = ?`
//! (or an `INSERT` that fails on an existing id), in the same transaction as its outbox rows.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};

use super::{
    Cursor, Doc, DocKind, JobPage, JobQuery, Ledger, LedgerError, LedgerResult, Listed, OutboxEntry, OutboxEvent, Row,
    source_write,
};
use crate::domain::status::{JobState, JobStatus};

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    job_id       TEXT    PRIMARY KEY,
    revision     INTEGER NOT NULL,
    doc          TEXT    NOT NULL,             -- the status document (JSON)
    scope        TEXT    NOT NULL,             -- shared, tenant:<name>, none
    state        TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    changed_ms   INTEGER NOT NULL,             -- the last state or stage change
    source_write TEXT    NOT NULL,
    expires_ms   INTEGER                       -- retention: removed after this, once ended
);
CREATE INDEX IF NOT EXISTS jobs_scope_created ON jobs (scope, created_ms DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_scope_state_created ON jobs (scope, state, created_ms DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_ms DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs (state, created_ms DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_source_write ON jobs (source_write, created_ms DESC);
CREATE INDEX IF NOT EXISTS jobs_changed ON jobs (changed_ms DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_expires ON jobs (expires_ms) WHERE expires_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT    NOT NULL,
    revision     INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    status       TEXT    NOT NULL,             -- the status the transition stored (JSON)
    leased_until INTEGER NOT NULL DEFAULT 0,   -- ms since the epoch
    UNIQUE (job_id, revision, kind)
);
CREATE TABLE IF NOT EXISTS docs (
    kind         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    body         BLOB    NOT NULL,
    version      INTEGER NOT NULL,
    expires_ms   INTEGER,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS docs_expires ON docs (expires_ms) WHERE expires_ms IS NOT NULL;
";

/// The local engine: one connection per instance (a connection is not `Sync`), used from the
/// blocking pool.
pub struct SqliteLedger {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteLedger {
    /// Opens (creating when missing) the ledger at `path`. Blocks briefly: call it at start-up.
    pub fn open(path: &Path) -> anyhow::Result<SqliteLedger> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("create folder {}", parent.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("open the job ledger {}", path.display()))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode = crate::queue::local::enable_wal(&conn).with_context(|| format!("WAL on {}", path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!("job ledger {}: journal_mode is `{mode}`, WAL is required", path.display());
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA).with_context(|| format!("create the ledger schema in {}", path.display()))?;
        Ok(SqliteLedger { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` on the connection in the blocking pool, so SQLite's waits never stall the runtime.
    async fn with_conn<T, F>(&self, f: F) -> LedgerResult<T>
    where
        F: FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(LedgerError::unavailable)?
        .map_err(LedgerError::Unavailable)
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn state_name(state: JobState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn parse(doc: &str) -> anyhow::Result<JobStatus> {
    serde_json::from_str(doc).map_err(|e| anyhow::Error::new(e).context("an unreadable job record"))
}

/// Statuses of a query's rows (`doc` columns), and the cursor after the last when the page is
/// full.
fn page(docs: Vec<String>, limit: u32) -> anyhow::Result<JobPage> {
    let jobs = docs.iter().map(|d| parse(d)).collect::<anyhow::Result<Vec<JobStatus>>>()?;
    let next = (jobs.len() == limit as usize).then(|| jobs.last().map(Cursor::of)).flatten();
    Ok(JobPage { jobs, next })
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn get(&self, job_id: &str) -> LedgerResult<Option<JobStatus>> {
        let job_id = job_id.to_string();
        let doc: Option<String> = self
            .with_conn(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT doc FROM jobs WHERE job_id = ?1")?
                    .query_row(params![job_id], |row| row.get(0))
                    .optional()?)
            })
            .await?;
        doc.map(|d| parse(&d).map_err(|e| LedgerError::Corrupt(format!("{e:#}")))).transpose()
    }

    async fn put(&self, row: &Row, expected: Option<u64>, events: &[OutboxEvent]) -> LedgerResult<bool> {
        let doc = serde_json::to_string(&row.status).map_err(LedgerError::unavailable)?;
        let row = row.clone();
        let events: Vec<(String, String)> = events
            .iter()
            .map(|e| Ok((e.kind.clone(), serde_json::to_string(&e.status)?)))
            .collect::<serde_json::Result<_>>()
            .map_err(LedgerError::unavailable)?;
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let status = &row.status;
            let (revision, state, created, changed) =
                (status.revision as i64, state_name(status.state), millis(status.created_at), millis(row.changed_at));
            let expires = row.expires_at.map(millis);
            let expected = expected.map(|r| r as i64);
            let mut values: Vec<&dyn rusqlite::ToSql> = vec![
                &status.job_id,
                &revision,
                &doc,
                &row.scope,
                &state,
                &created,
                &changed,
                &row.source_write,
                &expires,
            ];
            let sql = match &expected {
                None => {
                    "INSERT INTO jobs (job_id, revision, doc, scope, state, created_ms, changed_ms, source_write, \
                     expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (job_id) DO NOTHING"
                }
                Some(expected) => {
                    values.push(expected);
                    "UPDATE jobs SET revision = ?2, doc = ?3, scope = ?4, state = ?5, created_ms = ?6, \
                     changed_ms = ?7, source_write = ?8, expires_ms = ?9 WHERE job_id = ?1 AND revision = ?10"
                }
            };
            let written = tx.prepare_cached(sql)?.execute(values.as_slice())?;
            if written == 0 {
                return Ok(false);
            }
            for (kind, body) in &events {
                tx.prepare_cached(
                    "INSERT INTO outbox (job_id, revision, kind, status) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (job_id, revision, kind) DO NOTHING",
                )?
                .execute(params![status.job_id, status.revision as i64, kind, body])?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn list(&self, query: &JobQuery) -> LedgerResult<JobPage> {
        let query = query.clone();
        self.with_conn(move |conn| {
            let mut clauses: Vec<&str> = Vec::new();
            let mut values: Vec<rusqlite::types::Value> = Vec::new();
            if let Listed::Scope(scope) = &query.listed {
                clauses.push("scope = ?");
                values.push(scope.clone().into());
            }
            if let Some(state) = query.state {
                clauses.push("state = ?");
                values.push(state_name(state).into());
            }
            if let Some(after) = &query.after {
                clauses.push("(created_ms < ? OR (created_ms = ? AND job_id < ?))");
                values.extend([after.millis.into(), after.millis.into(), after.job_id.clone().into()]);
            }
            let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
            let sql = format!("SELECT doc FROM jobs {filter} ORDER BY created_ms DESC, job_id DESC LIMIT ?");
            values.push(i64::from(query.limit).into());
            let docs = conn
                .prepare_cached(&sql)?
                .query_map(params_from_iter(values), |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            page(docs, query.limit)
        })
        .await
    }

    async fn changed_since(&self, since: DateTime<Utc>, limit: u32) -> LedgerResult<Vec<JobStatus>> {
        self.with_conn(move |conn| {
            let docs = conn
                .prepare_cached(
                    "SELECT doc FROM jobs WHERE changed_ms >= ?1 ORDER BY changed_ms DESC, job_id DESC LIMIT ?2",
                )?
                .query_map(params![millis(since), i64::from(limit)], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            docs.iter().map(|d| parse(d)).collect()
        })
        .await
    }

    async fn of_write(&self, source_key: &str, etag: &str) -> LedgerResult<Vec<JobStatus>> {
        let key = source_write(source_key, Some(etag));
        self.with_conn(move |conn| {
            let docs = conn
                .prepare_cached("SELECT doc FROM jobs WHERE source_write = ?1 ORDER BY created_ms DESC LIMIT 100")?
                .query_map(params![key], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            docs.iter().map(|d| parse(d)).collect()
        })
        .await
    }

    async fn outbox_take(&self, max: usize, lease: Duration) -> LedgerResult<Vec<OutboxEntry>> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            let rows = tx
                .prepare_cached("SELECT seq, kind, status FROM outbox WHERE leased_until <= ?1 ORDER BY seq LIMIT ?2")?
                .query_map(params![now, max as i64], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut taken = Vec::new();
            for (seq, kind, status) in rows {
                tx.prepare_cached("UPDATE outbox SET leased_until = ?1 WHERE seq = ?2")?
                    .execute(params![now.saturating_add(lease_ms), seq])?;
                taken.push(OutboxEntry {
                    handle: seq.to_string(),
                    event: OutboxEvent { kind, status: parse(&status)? },
                });
            }
            tx.commit()?;
            Ok(taken)
        })
        .await
    }

    async fn outbox_done(&self, entry: &OutboxEntry) -> LedgerResult<()> {
        let seq: i64 =
            entry.handle.parse().map_err(|_| LedgerError::Corrupt(format!("outbox handle {}", entry.handle)))?;
        self.with_conn(move |conn| {
            conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?.execute(params![seq])?;
            Ok(())
        })
        .await
    }

    async fn outbox_len(&self) -> LedgerResult<u64> {
        self.with_conn(|conn| {
            let n: i64 = conn.prepare_cached("SELECT COUNT(*) FROM outbox")?.query_row([], |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or_default())
        })
        .await
    }

    async fn doc_get(&self, kind: DocKind, id: &str) -> LedgerResult<Option<Doc>> {
        let id = id.to_string();
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached("SELECT body, version FROM docs WHERE kind = ?1 AND id = ?2")?
                .query_row(params![kind.name(), id], |row| {
                    Ok(Doc { body: row.get(0)?, version: u64::try_from(row.get::<_, i64>(1)?).unwrap_or_default() })
                })
                .optional()?)
        })
        .await
    }

    async fn doc_put(
        &self,
        kind: DocKind,
        id: &str,
        body: &[u8],
        expected: Option<u64>,
        expires_at: Option<DateTime<Utc>>,
    ) -> LedgerResult<bool> {
        let (id, body) = (id.to_string(), body.to_vec());
        self.with_conn(move |conn| {
            let expires = expires_at.map(millis);
            let written = match expected {
                None => conn
                    .prepare_cached(
                        "INSERT INTO docs (kind, id, body, version, expires_ms) VALUES (?1, ?2, ?3, 1, ?4) \
                         ON CONFLICT (kind, id) DO NOTHING",
                    )?
                    .execute(params![kind.name(), id, body, expires])?,
                Some(version) => conn
                    .prepare_cached(
                        "UPDATE docs SET body = ?3, version = version + 1, expires_ms = ?4 \
                         WHERE kind = ?1 AND id = ?2 AND version = ?5",
                    )?
                    .execute(params![kind.name(), id, body, expires, version as i64])?,
            };
            Ok(written == 1)
        })
        .await
    }

    async fn doc_delete(&self, kind: DocKind, id: &str) -> LedgerResult<()> {
        let id = id.to_string();
        self.with_conn(move |conn| {
            conn.prepare_cached("DELETE FROM docs WHERE kind = ?1 AND id = ?2")?.execute(params![kind.name(), id])?;
            Ok(())
        })
        .await
    }

    async fn sweep(&self, now: DateTime<Utc>) -> LedgerResult<usize> {
        self.with_conn(move |conn| {
            let now = millis(now);
            let jobs = conn.prepare_cached("DELETE FROM jobs WHERE expires_ms < ?1")?.execute(params![now])?;
            let docs = conn.prepare_cached("DELETE FROM docs WHERE expires_ms < ?1")?.execute(params![now])?;
            Ok(jobs + docs)
        })
        .await
    }

    async fn ping(&self) -> LedgerResult<()> {
        self.with_conn(|conn| {
            conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    fn name(&self) -> &str {
        "sqlite"
    }
}
