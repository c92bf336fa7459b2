//! [`Ledger`] on DynamoDB: the AWS backend's job ledger, one table (`MEDIA_JOBS_TABLE`).
//!
//! The table's only key is `pk`; the questions asked of many jobs are answered by global
//! secondary indexes ([`items`] describes the layout). A page is one Query of an index, newest
//! first, for the keys, then one BatchGetItem for the records: every request is O(page),
//! never a Scan.
//!
//! Writes are conditional on the revision the writer read, with the transition's events in
//! the same transaction. A write whose first try landed but whose answer was lost is retried by
//! the SDK and then fails its own condition: each write call stores a token of its own
//! (`write_id`), the stored item comes back with the failure, and finding its own token there
//! the write reports success, as it did succeed.
//!
//! Indexes are eventually consistent: a record changed a moment ago may be missing from a
//! page, or still listed under its previous state; a job whose record no longer matches the
//! page's partition (its state changed) is left out rather than shown under the wrong state.

mod items;
mod reads;
mod table;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, Select, TransactWriteItem,
};
use chrono::{DateTime, Utc};

use self::items::{BY_CHANGED, BY_SOURCE, EVERYONE_VALUE, Item, LEASE, OUTBOX_INDEX, PENDING, PK, REV, n, s, text};
use self::reads::Bounds;
use super::{
    Doc, DocKind, JobPage, JobQuery, Ledger, LedgerError, LedgerResult, OutboxEntry, OutboxEvent, Row, source_write,
};
use crate::domain::status::JobStatus;

/// Most jobs of one write of a source returned (as the SQLite engine).
const OF_WRITE_LIMIT: u32 = 100;
/// Pages of the outbox index read by one take before it settles for what it has.
const OUTBOX_PAGES: usize = 5;

/// The AWS engine.
pub struct DynamoLedger {
    client: Client,
    table: String,
}

impl DynamoLedger {
    /// The ledger in `table`. A client without an operation timeout gets the shared ones
    /// ([`crate::aws::timeouts`]), so no ledger call can hang on a silent connection.
    pub fn new(client: Client, table: &str) -> Self {
        let bounded = client.config().timeout_config().is_some_and(|t| t.operation_timeout().is_some());
        let client = if bounded {
            client
        } else {
            Client::from_conf(client.config().to_builder().timeout_config(crate::aws::timeouts()).build())
        };
        Self { client, table: table.to_string() }
    }

    /// An SDK failure as [`LedgerError::Unavailable`], naming the operation and the table.
    fn failed(&self, operation: &str, err: impl std::error::Error + 'static) -> LedgerError {
        LedgerError::Unavailable(anyhow::anyhow!("{operation} on table {}: {}", self.table, DisplayErrorContext(err)))
    }

    async fn get_item(&self, pk: String, consistent: bool) -> LedgerResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| self.failed("GetItem", e))?;
        Ok(out.item)
    }

    /// Stores one item (a job's record alone, or a document) on its condition; `Ok(false)` when
    /// it does not hold (unless the item found is this very write's, its answer lost).
    async fn put_guarded(&self, item: Item, guard: Guard, write_id: &str) -> LedgerResult<bool> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(guard.condition)
            .set_expression_attribute_names(Some(guard.names))
            .set_expression_attribute_values(guard.values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(err) => match err.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(e)) => {
                    Ok(items::written_by(e.item.as_ref(), write_id))
                }
                _ => Err(self.failed("PutItem", err)),
            },
        }
    }

    /// Stores the job item on its condition and the events with it, in one transaction.
    async fn put_job_with_events(
        &self,
        item: Item,
        guard: Guard,
        write_id: &str,
        events: &[OutboxEvent],
    ) -> LedgerResult<bool> {
        let build = |e| LedgerError::unavailable(anyhow::Error::new(e).context("a TransactWriteItems request"));
        let job = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(guard.condition)
            .set_expression_attribute_names(Some(guard.names))
            .set_expression_attribute_values(guard.values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build)?;
        let mut writes = vec![TransactWriteItem::builder().put(job).build()];
        let now = Utc::now();
        for (index, event) in events.iter().enumerate() {
            let item = items::outbox_item(event, index, now).map_err(LedgerError::unavailable)?;
            let put = Put::builder().table_name(&self.table).set_item(Some(item)).build().map_err(build)?;
            writes.push(TransactWriteItem::builder().put(put).build());
        }
        // With the token, DynamoDB itself answers a retried try that landed with a success.
        let written = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .client_request_token(write_id)
            .send()
            .await;
        let Err(err) = written else { return Ok(true) };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err.as_service_error() {
            // The reasons come in the order of the writes: the job's first.
            if let Some(reason) = cancelled.cancellation_reasons().first()
                && reason.code() == Some("ConditionalCheckFailed")
            {
                return Ok(items::written_by(reason.item.as_ref(), write_id));
            }
        }
        Err(self.failed("TransactWriteItems", err))
    }

    /// Leases the outbox event `pk` until `until` if it is free at `now`; `None` when another
    /// relay holds it, or it was sent meanwhile.
    async fn lease(&self, pk: &str, now: i64, until: i64) -> LedgerResult<Option<OutboxEntry>> {
        let leased = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .update_expression("SET #l = :until")
            // `attribute_exists`: an event sent (deleted) meanwhile is not made again.
            .condition_expression("attribute_exists(#k) AND #l <= :now")
            .expression_attribute_names("#k", PK)
            .expression_attribute_names("#l", LEASE)
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match leased {
            Ok(out) => out.attributes.as_ref().map(items::entry_of).transpose(),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(None),
            Err(err) => Err(self.failed("UpdateItem", err)),
        }
    }
}

/// A write's condition: the stored item is at the revision (or version) the writer read.
struct Guard {
    condition: &'static str,
    names: HashMap<String, String>,
    values: Option<HashMap<String, AttributeValue>>,
}

impl Guard {
    /// `attr = expected`, or no item at all when `expected` is `None`.
    fn new(attr: &str, expected: Option<u64>) -> Guard {
        match expected {
            None => Guard {
                condition: "attribute_not_exists(#k)",
                names: HashMap::from([("#k".to_string(), PK.to_string())]),
                values: None,
            },
            Some(expected) => Guard {
                condition: "#v = :expected",
                names: HashMap::from([("#v".to_string(), attr.to_string())]),
                values: Some(HashMap::from([(":expected".to_string(), n(expected))])),
            },
        }
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn get(&self, job_id: &str) -> LedgerResult<Option<JobStatus>> {
        // Strongly consistent: the lifecycle's compare-and-swap starts from this read.
        let item = self.get_item(items::job_key(job_id), true).await?;
        item.as_ref().map(items::status_of).transpose()
    }

    async fn put(&self, row: &Row, expected: Option<u64>, events: &[OutboxEvent]) -> LedgerResult<bool> {
        let doc = serde_json::to_string(&row.status).map_err(LedgerError::unavailable)?;
        let write_id = uuid::Uuid::new_v4().to_string();
        let item = items::job_item(row, doc, &write_id);
        let guard = Guard::new(REV, expected);
        if events.is_empty() {
            // A plain conditional put: half the cost of a transaction (heartbeats come here).
            return self.put_guarded(item, guard, &write_id).await;
        }
        self.put_job_with_events(item, guard, &write_id, events).await
    }

    async fn list(&self, query: &JobQuery) -> LedgerResult<JobPage> {
        if query.limit == 0 {
            return Ok(JobPage::default());
        }
        let (index, partition) = items::listing(query);
        let start = query.after.as_ref().map(|cursor| items::start_key(index, &partition, cursor));
        let keys = self.query_keys(index, &partition, Bounds { start, ..Bounds::default() }, query.limit).await?;
        // The cursor comes from the index, so a job left out of the page below still moves it.
        let next =
            (keys.len() == query.limit as usize).then(|| keys.last().and_then(|k| items::cursor_after(k, index)));
        let jobs = self.jobs_of(&keys, Some((index.hash, &partition))).await?;
        Ok(JobPage { jobs, next: next.flatten() })
    }

    async fn changed_since(&self, since: DateTime<Utc>, limit: u32) -> LedgerResult<Vec<JobStatus>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let bounds = Bounds { at_least: Some(items::padded(since.timestamp_millis())), ..Bounds::default() };
        let keys = self.query_keys(BY_CHANGED, EVERYONE_VALUE, bounds, limit).await?;
        self.jobs_of(&keys, None).await
    }

    async fn of_write(&self, source_key: &str, etag: &str) -> LedgerResult<Vec<JobStatus>> {
        let partition = source_write(source_key, Some(etag));
        let keys = self.query_keys(BY_SOURCE, &partition, Bounds::default(), OF_WRITE_LIMIT).await?;
        self.jobs_of(&keys, None).await
    }

    async fn outbox_take(&self, max: usize, lease: Duration) -> LedgerResult<Vec<OutboxEntry>> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let mut taken = Vec::new();
        let mut start = None;
        for _ in 0..OUTBOX_PAGES {
            if taken.len() >= max {
                break;
            }
            // Oldest first, leased events filtered out by the index's copy of `lease`; a few
            // more than needed, as another relay may win some of them.
            let want = max - taken.len();
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(OUTBOX_INDEX.name)
                .key_condition_expression("#h = :h")
                .filter_expression("#l <= :now")
                .expression_attribute_names("#h", OUTBOX_INDEX.hash)
                .expression_attribute_names("#l", LEASE)
                .expression_attribute_values(":h", s(PENDING))
                .expression_attribute_values(":now", n(now))
                .scan_index_forward(true)
                .limit(i32::try_from(want.saturating_add(want / 2 + 2)).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.failed("Query", e))?;
            for key in out.items.unwrap_or_default() {
                if taken.len() >= max {
                    break;
                }
                let Some(pk) = text(&key, PK) else { continue };
                if let Some(entry) = self.lease(pk, now, until).await? {
                    taken.push(entry);
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(taken)
    }

    async fn outbox_done(&self, entry: &OutboxEntry) -> LedgerResult<()> {
        if !items::is_outbox_key(&entry.handle) {
            return Err(LedgerError::Corrupt(format!("outbox handle {}", entry.handle)));
        }
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(&entry.handle))
            .send()
            .await
            .map_err(|e| self.failed("DeleteItem", e))?;
        Ok(())
    }

    async fn outbox_len(&self) -> LedgerResult<u64> {
        let mut count = 0u64;
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(OUTBOX_INDEX.name)
                .key_condition_expression("#h = :h")
                .expression_attribute_names("#h", OUTBOX_INDEX.hash)
                .expression_attribute_values(":h", s(PENDING))
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.failed("Query", e))?;
            count += u64::try_from(out.count).unwrap_or_default();
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(count);
            }
        }
    }

    async fn doc_get(&self, kind: DocKind, id: &str) -> LedgerResult<Option<Doc>> {
        // Strongly consistent: a document's compare-and-swap starts from this read.
        let item = self.get_item(items::doc_key(kind, id), true).await?;
        item.as_ref().map(items::doc_of).transpose()
    }

    async fn doc_put(
        &self,
        kind: DocKind,
        id: &str,
        body: &[u8],
        expected: Option<u64>,
        expires_at: Option<DateTime<Utc>>,
    ) -> LedgerResult<bool> {
        let doc = Doc { body: body.to_vec(), version: expected.map_or(1, |v| v.saturating_add(1)) };
        let write_id = uuid::Uuid::new_v4().to_string();
        let guard = Guard::new(items::VER, expected);
        self.put_guarded(items::doc_item(kind, id, &doc, expires_at, &write_id), guard, &write_id).await
    }

    async fn doc_delete(&self, kind: DocKind, id: &str) -> LedgerResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(items::doc_key(kind, id)))
            .send()
            .await
            .map_err(|e| self.failed("DeleteItem", e))?;
        Ok(())
    }

    async fn sweep(&self, _now: DateTime<Utc>) -> LedgerResult<usize> {
        // The table's TTL on `expires` removes ended jobs and expired documents.
        Ok(0)
    }

    async fn ping(&self) -> LedgerResult<()> {
        // A read of a key that never exists: needs no permission beyond the engine's own.
        self.get_item("ping#ledger".to_string(), false).await.map(|_| ())
    }

    fn name(&self) -> &str {
        "dynamodb"
    }
}
