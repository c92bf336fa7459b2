//! Reads of many jobs: the keys of a page from an index, then the records behind them.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::KeysAndAttributes;

use super::DynamoLedger;
use super::items::{self, DOC, Index, Item, PK, s, text};
use crate::domain::status::JobStatus;
use crate::ledger::{LedgerError, LedgerResult};

/// Most keys of one BatchGetItem (DynamoDB's limit).
const BATCH_KEYS: usize = 100;
/// Tries of a BatchGetItem whose keys DynamoDB left unprocessed (throttling), with backoff.
const BATCH_TRIES: u32 = 6;

/// Where a key query starts and where it ends.
#[derive(Debug, Default)]
pub(super) struct Bounds {
    /// The key to resume after (a page's cursor).
    pub start: Option<Item>,
    /// The lowest sort key returned.
    pub at_least: Option<String>,
}

impl DynamoLedger {
    /// Up to `limit` keys of `index`'s partition `partition` within `bounds`, newest (highest
    /// sort key) first.
    pub(super) async fn query_keys(
        &self,
        index: Index,
        partition: &str,
        bounds: Bounds,
        limit: u32,
    ) -> LedgerResult<Vec<Item>> {
        let mut condition = "#h = :h".to_string();
        let mut names = HashMap::from([("#h".to_string(), index.hash.to_string())]);
        let mut values = HashMap::from([(":h".to_string(), s(partition))]);
        if let Some(at_least) = bounds.at_least {
            condition.push_str(" AND #r >= :r");
            names.insert("#r".to_string(), index.range.to_string());
            values.insert(":r".to_string(), s(at_least));
        }
        let limit = limit as usize;
        let mut keys = Vec::new();
        let mut start = bounds.start;
        while keys.len() < limit {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index.name)
                .key_condition_expression(&condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .limit(i32::try_from(limit - keys.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.failed("Query", e))?;
            keys.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        keys.truncate(limit);
        Ok(keys)
    }

    /// The statuses of the jobs of `keys`, in their order. A job gone since its key was read
    /// is left out, and so is one whose attribute `check.0` is no longer `check.1` (it moved
    /// out of the index partition the keys came from).
    pub(super) async fn jobs_of(&self, keys: &[Item], check: Option<(&str, &str)>) -> LedgerResult<Vec<JobStatus>> {
        let wanted: Vec<&str> = keys.iter().filter_map(|k| text(k, PK)).collect();
        let mut found = HashMap::new();
        for chunk in wanted.chunks(BATCH_KEYS) {
            self.batch_get(chunk, check.map(|c| c.0), &mut found).await?;
        }
        let mut jobs = Vec::with_capacity(wanted.len());
        for pk in wanted {
            let Some(item) = found.get(pk) else { continue };
            if let Some((attr, value)) = check
                && text(item, attr) != Some(value)
            {
                continue;
            }
            jobs.push(items::status_of(item)?);
        }
        Ok(jobs)
    }

    /// Reads the job items `pks` (their key, status and `extra`) into `found`, by key.
    async fn batch_get(
        &self,
        pks: &[&str],
        extra: Option<&str>,
        found: &mut HashMap<String, Item>,
    ) -> LedgerResult<()> {
        let mut projection = "#k, #d".to_string();
        let mut names = HashMap::from([("#k".to_string(), PK.to_string()), ("#d".to_string(), DOC.to_string())]);
        if let Some(extra) = extra {
            projection.push_str(", #x");
            names.insert("#x".to_string(), extra.to_string());
        }
        let mut pending: Vec<Item> = pks.iter().map(|pk| HashMap::from([(PK.to_string(), s(*pk))])).collect();
        for attempt in 0..BATCH_TRIES {
            if pending.is_empty() {
                return Ok(());
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            // Strongly consistent: a record is at least as new as the index key that led to it.
            let request = KeysAndAttributes::builder()
                .set_keys(Some(pending))
                .consistent_read(true)
                .projection_expression(&projection)
                .set_expression_attribute_names(Some(names.clone()))
                .build()
                .map_err(|e| LedgerError::unavailable(anyhow::Error::new(e).context("a BatchGetItem request")))?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| self.failed("BatchGetItem", e))?;
            for item in out.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default() {
                if let Some(pk) = text(&item, PK) {
                    found.insert(pk.to_string(), item);
                }
            }
            pending = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).map(|k| k.keys).unwrap_or_default();
        }
        if pending.is_empty() {
            return Ok(());
        }
        Err(LedgerError::unavailable(anyhow::anyhow!(
            "BatchGetItem on table {}: {} keys still unprocessed after {BATCH_TRIES} tries (throttled)",
            self.table,
            pending.len()
        )))
    }
}
