//! The items of the DynamoDB engine: their keys, attributes and index keys, written and read
//! here only, so the layout is in one place (and `create_table` and `infra/storage.yaml`
//! define the same indexes).
//!
//! Three kinds of item share the table's one key, `pk`:
//! - a job: `job#<job id>`, its status (`doc`), revision (`rev`) and one attribute per index
//!   key. Index keys never change on a heartbeat (only `doc` and `rev` do), and the indexes
//!   project keys only, so a heartbeat writes no index.
//! - an outbox event: `outbox#<job id>#<revision>#<kind>`, in the `outbox` index until sent.
//! - a document: `<kind name>#<id>` (no kind name starts with `job` or `outbox`).
//!
//! Times in sort keys are milliseconds zero-padded to 13 digits, so string order is time
//! order (until the year 2286), followed by `#<job id>` so that ties order by id, as the
//! SQLite engine's `ORDER BY ..., job_id DESC` does (both compare bytes).

use std::collections::HashMap;
use std::fmt::Display;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use crate::domain::status::{JobState, JobStatus};
use crate::ledger::{Cursor, Doc, DocKind, JobQuery, LedgerError, LedgerResult, Listed, OutboxEntry, OutboxEvent, Row};

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) const PK: &str = "pk";
pub(super) const REV: &str = "rev";
pub(super) const DOC: &str = "doc";
pub(super) const SCOPE: &str = "scope";
pub(super) const SCOPE_STATE: &str = "scope_state";
pub(super) const EVERYONE: &str = "everyone";
pub(super) const ALL_STATE: &str = "all_state";
pub(super) const CREATED: &str = "created";
pub(super) const CHANGED: &str = "changed";
pub(super) const SOURCE_WRITE: &str = "source_write";
/// The table's TTL attribute: epoch seconds.
pub(super) const EXPIRES: &str = "expires";
pub(super) const OUTBOX: &str = "outbox";
pub(super) const SEQ: &str = "seq";
pub(super) const KIND: &str = "kind";
pub(super) const STATUS: &str = "status";
/// Until when an outbox event is leased to a relay: epoch milliseconds, 0 when free.
pub(super) const LEASE: &str = "lease";
pub(super) const BODY: &str = "body";
/// A token unique to each write call, on job items and documents: a write that fails its
/// condition and finds its own token stored is a retry of a try that landed.
pub(super) const WRITE_ID: &str = "write_id";
pub(super) const VER: &str = "ver";

/// The value of `everyone` on every job: the one partition of the indexes over all jobs.
pub(super) const EVERYONE_VALUE: &str = "all";
/// The value of `outbox` on every event waiting to be sent.
pub(super) const PENDING: &str = "pending";
/// How long an unsent event is kept at most: a safety net, relays send within seconds.
const OUTBOX_TTL: chrono::Duration = chrono::Duration::days(7);

/// A global secondary index: its partition and sort attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Index {
    pub name: &'static str,
    pub hash: &'static str,
    pub range: &'static str,
    /// Non-key attributes it carries besides the keys (none: KEYS_ONLY).
    pub include: &'static [&'static str],
}

pub(super) const BY_SCOPE: Index = Index { name: "by-scope", hash: SCOPE, range: CREATED, include: &[] };
pub(super) const BY_SCOPE_STATE: Index =
    Index { name: "by-scope-state", hash: SCOPE_STATE, range: CREATED, include: &[] };
pub(super) const BY_ALL: Index = Index { name: "by-all", hash: EVERYONE, range: CREATED, include: &[] };
pub(super) const BY_ALL_STATE: Index = Index { name: "by-all-state", hash: ALL_STATE, range: CREATED, include: &[] };
pub(super) const BY_SOURCE: Index = Index { name: "by-source", hash: SOURCE_WRITE, range: CREATED, include: &[] };
pub(super) const BY_CHANGED: Index = Index { name: "by-changed", hash: EVERYONE, range: CHANGED, include: &[] };
/// Carries `lease` so that a relay's query skips leased events on the server: with keys only,
/// events leased at the head of the queue would fill every page and hide the free ones behind
/// them. An event's lease changes once per take, so this costs one index write per take.
pub(super) const OUTBOX_INDEX: Index = Index { name: "outbox", hash: OUTBOX, range: SEQ, include: &[LEASE] };

/// Every index, as the table is created with them.
pub(super) const INDEXES: [Index; 7] =
    [BY_SCOPE, BY_SCOPE_STATE, BY_ALL, BY_ALL_STATE, BY_SOURCE, BY_CHANGED, OUTBOX_INDEX];

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

pub(super) fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// `<millis, 13 digits>#<job id>`: a sort key in time order, ties by id.
pub(super) fn time_key(millis: i64, job_id: &str) -> String {
    format!("{}#{job_id}", padded(millis))
}

/// Milliseconds as 13 digits: the prefix of [`time_key`] (so `>= padded(t)` is "at or after t").
pub(super) fn padded(millis: i64) -> String {
    format!("{:013}", millis.max(0))
}

pub(super) fn job_key(job_id: &str) -> String {
    format!("job#{job_id}")
}

pub(super) fn doc_key(kind: DocKind, id: &str) -> String {
    format!("{}#{id}", kind.name())
}

/// Whether `stored`, the item that failed a write's condition, is that very write: an earlier
/// try of it landed, and its answer was lost.
pub(super) fn written_by(stored: Option<&Item>, write_id: &str) -> bool {
    stored.is_some_and(|item| text(item, WRITE_ID) == Some(write_id))
}

/// Whether `handle` names an outbox event (so a bad handle can never delete anything else).
pub(super) fn is_outbox_key(handle: &str) -> bool {
    handle.starts_with("outbox#")
}

/// The snake_case name of a state, as the status document spells it.
pub(super) fn state_name(state: JobState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn epoch_seconds(at: DateTime<Utc>) -> i64 {
    at.timestamp().max(0)
}

/// The item of a job's record; `doc` is its status, serialized; `write_id` names this write.
pub(super) fn job_item(row: &Row, doc: String, write_id: &str) -> Item {
    let status = &row.status;
    let state = state_name(status.state);
    let mut item = HashMap::from([
        (PK.to_string(), s(job_key(&status.job_id))),
        (REV.to_string(), n(status.revision)),
        (DOC.to_string(), s(doc)),
        (SCOPE.to_string(), s(&row.scope)),
        (SCOPE_STATE.to_string(), s(format!("{}#{state}", row.scope))),
        (EVERYONE.to_string(), s(EVERYONE_VALUE)),
        (ALL_STATE.to_string(), s(format!("{EVERYONE_VALUE}#{state}"))),
        (CREATED.to_string(), s(time_key(status.created_at.timestamp_millis(), &status.job_id))),
        (CHANGED.to_string(), s(time_key(row.changed_at.timestamp_millis(), &status.job_id))),
        (SOURCE_WRITE.to_string(), s(&row.source_write)),
        (WRITE_ID.to_string(), s(write_id)),
    ]);
    if let Some(at) = row.expires_at {
        item.insert(EXPIRES.to_string(), n(epoch_seconds(at)));
    }
    item
}

/// The item of one event of a transition written at `now`; `index` is its place among the
/// transition's events, so events of one transition keep their order too.
pub(super) fn outbox_item(event: &OutboxEvent, index: usize, now: DateTime<Utc>) -> serde_json::Result<Item> {
    let status = &event.status;
    let seq = format!("{}#{:020}#{index:03}", time_key(now.timestamp_millis(), &status.job_id), status.revision);
    Ok(HashMap::from([
        (PK.to_string(), s(format!("outbox#{}#{}#{}", status.job_id, status.revision, event.kind))),
        (OUTBOX.to_string(), s(PENDING)),
        (SEQ.to_string(), s(seq)),
        (KIND.to_string(), s(&event.kind)),
        (STATUS.to_string(), s(serde_json::to_string(status)?)),
        (LEASE.to_string(), n(0)),
        (EXPIRES.to_string(), n(epoch_seconds(now + OUTBOX_TTL))),
    ]))
}

/// A document's item, at `version`; `write_id` names this write.
pub(super) fn doc_item(kind: DocKind, id: &str, doc: &Doc, expires_at: Option<DateTime<Utc>>, write_id: &str) -> Item {
    let mut item = HashMap::from([
        (PK.to_string(), s(doc_key(kind, id))),
        (BODY.to_string(), AttributeValue::B(Blob::new(doc.body.as_slice()))),
        (VER.to_string(), n(doc.version)),
        (WRITE_ID.to_string(), s(write_id)),
    ]);
    if let Some(at) = expires_at {
        item.insert(EXPIRES.to_string(), n(epoch_seconds(at)));
    }
    item
}

fn corrupt(item: &Item, what: &str) -> LedgerError {
    LedgerError::Corrupt(format!("item {}: {what}", text(item, PK).unwrap_or("(no key)")))
}

/// The status of a job item.
pub(super) fn status_of(item: &Item) -> LedgerResult<JobStatus> {
    let doc = text(item, DOC).ok_or_else(|| corrupt(item, "no status document"))?;
    serde_json::from_str(doc).map_err(|e| corrupt(item, &format!("an unreadable status: {e}")))
}

/// The event an outbox item holds, its key as the handle.
pub(super) fn entry_of(item: &Item) -> LedgerResult<OutboxEntry> {
    let handle = text(item, PK).ok_or_else(|| corrupt(item, "no key"))?;
    let kind = text(item, KIND).ok_or_else(|| corrupt(item, "no event kind"))?;
    let status = text(item, STATUS).ok_or_else(|| corrupt(item, "no status"))?;
    let status = serde_json::from_str(status).map_err(|e| corrupt(item, &format!("an unreadable status: {e}")))?;
    Ok(OutboxEntry { handle: handle.to_string(), event: OutboxEvent { kind: kind.to_string(), status } })
}

pub(super) fn doc_of(item: &Item) -> LedgerResult<Doc> {
    let body = item.get(BODY).and_then(|v| v.as_b().ok()).ok_or_else(|| corrupt(item, "no body"))?;
    let version = number(item, VER).ok_or_else(|| corrupt(item, "no version"))?;
    Ok(Doc { body: body.as_ref().to_vec(), version })
}

/// The index answering `query`, and the value of its partition key.
pub(super) fn listing(query: &JobQuery) -> (Index, String) {
    match (&query.listed, query.state) {
        (Listed::Scope(scope), None) => (BY_SCOPE, scope.clone()),
        (Listed::Scope(scope), Some(state)) => (BY_SCOPE_STATE, format!("{scope}#{}", state_name(state))),
        (Listed::All, None) => (BY_ALL, EVERYONE_VALUE.to_string()),
        (Listed::All, Some(state)) => (BY_ALL_STATE, format!("{EVERYONE_VALUE}#{}", state_name(state))),
    }
}

/// Where a query of `index` (a job index sorted by `created`) resumes after `cursor`: an index
/// key is the table's key and the index's, all three needed, and need not exist any more.
pub(super) fn start_key(index: Index, partition: &str, cursor: &Cursor) -> Item {
    HashMap::from([
        (PK.to_string(), s(job_key(&cursor.job_id))),
        (index.hash.to_string(), s(partition)),
        (index.range.to_string(), s(time_key(cursor.millis, &cursor.job_id))),
    ])
}

/// The cursor after an index key of an index sorted by `created`.
pub(super) fn cursor_after(key: &Item, index: Index) -> Option<Cursor> {
    let (millis, job_id) = text(key, index.range)?.split_once('#')?;
    Some(Cursor { millis: millis.parse().ok()?, job_id: job_id.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::sample_job;
    use crate::domain::keys::KeyLayout;

    fn row(id: &str, state: JobState) -> Row {
        let mut job = sample_job();
        job.job_id = id.into();
        let mut status = JobStatus::queued(&job, 1, 3, Utc::now());
        status.state = state;
        let layout = KeyLayout::new("uploads/", "outputs/").unwrap();
        Row::new(status, &layout, std::time::Duration::from_secs(3600))
    }

    #[test]
    fn time_keys_sort_as_the_sqlite_engine_orders() {
        // created desc, then id desc, bytewise: the order of `ORDER BY created_ms, job_id`.
        let mut keys = [(999, "job-b"), (1_700_000_000_000, "job-a"), (1_700_000_000_000, "job-10"), (5, "z")];
        let mut strings: Vec<String> = keys.iter().map(|(m, id)| time_key(*m, id)).collect();
        keys.sort_by(|a, b| b.cmp(a));
        strings.sort_by(|a, b| b.cmp(a));
        assert_eq!(strings, keys.iter().map(|(m, id)| time_key(*m, id)).collect::<Vec<_>>());
        assert!(time_key(1_000, "job-a") >= padded(1_000), "`>= since` includes the millisecond itself");
        assert!(time_key(999, "job-z") < padded(1_000));
    }

    #[test]
    fn a_job_item_carries_every_index_key() {
        let item = job_item(&row("job-1", JobState::Running), "{}".into(), "w1");
        for index in INDEXES.iter().filter(|i| i.name != "outbox") {
            assert!(text(&item, index.hash).is_some() && text(&item, index.range).is_some(), "{}", index.name);
        }
        assert_eq!(text(&item, SCOPE_STATE), Some("shared#running"));
        assert_eq!(text(&item, ALL_STATE), Some("all#running"));
        assert!(!item.contains_key(EXPIRES), "a running job does not expire");
        let ended = job_item(&row("job-1", JobState::Completed), "{}".into(), "w1");
        assert!(number::<i64>(&ended, EXPIRES).is_some());
    }

    #[test]
    fn cursors_resume_where_the_key_was() {
        let cursor = Cursor { millis: 1_700_000_000_123, job_id: "job-7".into() };
        let key = start_key(BY_SCOPE_STATE, "shared#failed", &cursor);
        assert_eq!(text(&key, PK), Some("job#job-7"));
        assert_eq!(text(&key, SCOPE_STATE), Some("shared#failed"));
        assert_eq!(cursor_after(&key, BY_SCOPE_STATE), Some(cursor));
    }

    #[test]
    fn outbox_events_sort_oldest_first_and_read_back() {
        let status = row("job-1", JobState::Running).status;
        let event = OutboxEvent { kind: "job.started".into(), status };
        let now = Utc::now();
        let first = outbox_item(&event, 0, now).unwrap();
        let second = outbox_item(&event, 1, now).unwrap();
        let later = outbox_item(&event, 0, now + chrono::Duration::milliseconds(1)).unwrap();
        assert!(text(&first, SEQ) < text(&second, SEQ) && text(&second, SEQ) < text(&later, SEQ));
        let entry = entry_of(&first).unwrap();
        assert!(is_outbox_key(&entry.handle));
        assert_eq!(entry.event, event);
    }

    #[test]
    fn documents_round_trip_and_junk_is_corrupt() {
        let doc = Doc { body: b"body".to_vec(), version: 3 };
        let item = doc_item(DocKind::SignedParts, "u1", &doc, None, "w1");
        assert_eq!(doc_of(&item).unwrap(), doc);
        assert_eq!(text(&item, PK), Some("signed-parts#u1"));
        assert!(written_by(Some(&item), "w1") && !written_by(Some(&item), "w2") && !written_by(None, "w1"));
        let mut junk = job_item(&row("job-1", JobState::Queued), "not json".into(), "w1");
        assert!(matches!(status_of(&junk), Err(LedgerError::Corrupt(_))));
        junk.remove(DOC);
        assert!(matches!(status_of(&junk), Err(LedgerError::Corrupt(_))));
    }
}
