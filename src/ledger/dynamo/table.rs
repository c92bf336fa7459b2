//! The table of the DynamoDB engine, created from code for tests and emulators. Production
//! tables come from `infra/storage.yaml` (`JobsTable`), which defines the same key, indexes,
//! billing and TTL, and adds what only operations need: point-in-time recovery, encryption
//! under the AWS-managed key, and retention on stack deletion.

use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::DynamoLedger;
use super::items::{self, INDEXES, Index};

/// How long a new table may take to become usable.
const ACTIVE_WITHIN: Duration = Duration::from_secs(120);

impl DynamoLedger {
    /// Creates the table as `infra/storage.yaml` defines it (for tests and emulators) and waits
    /// until it and its indexes are active; a table that exists already is left as it is.
    /// Turning TTL on is best effort: an emulator without it still gets a usable table.
    pub async fn create_table(client: &Client, table: &str) -> anyhow::Result<()> {
        let key_attributes = [
            items::PK,
            items::SCOPE,
            items::SCOPE_STATE,
            items::EVERYONE,
            items::ALL_STATE,
            items::SOURCE_WRITE,
            items::CREATED,
            items::CHANGED,
            items::OUTBOX,
            items::SEQ,
        ];
        let definitions = key_attributes
            .iter()
            .map(|name| {
                AttributeDefinition::builder().attribute_name(*name).attribute_type(ScalarAttributeType::S).build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let indexes = INDEXES.iter().map(index).collect::<anyhow::Result<Vec<_>>>()?;
        let created = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(definitions))
            .key_schema(key(items::PK, KeyType::Hash)?)
            .set_global_secondary_indexes(Some(indexes))
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(err) => anyhow::bail!("create table {table}: {}", DisplayErrorContext(err)),
        }
        wait_until_active(client, table).await?;
        if let Err(err) = enable_ttl(client, table).await {
            tracing::warn!(table, "TTL not enabled on `{}`: {err:#}", items::EXPIRES);
        }
        Ok(())
    }
}

fn key(name: &str, kind: KeyType) -> anyhow::Result<KeySchemaElement> {
    Ok(KeySchemaElement::builder().attribute_name(name).key_type(kind).build()?)
}

fn index(index: &Index) -> anyhow::Result<GlobalSecondaryIndex> {
    let projection = if index.include.is_empty() {
        Projection::builder().projection_type(ProjectionType::KeysOnly).build()
    } else {
        Projection::builder()
            .projection_type(ProjectionType::Include)
            .set_non_key_attributes(Some(index.include.iter().map(|a| a.to_string()).collect()))
            .build()
    };
    Ok(GlobalSecondaryIndex::builder()
        .index_name(index.name)
        .key_schema(key(index.hash, KeyType::Hash)?)
        .key_schema(key(index.range, KeyType::Range)?)
        .projection(projection)
        .build()?)
}

async fn wait_until_active(client: &Client, table: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + ACTIVE_WITHIN;
    loop {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("describe table {table}: {}", DisplayErrorContext(e)))?;
        let ready = described.table().is_some_and(|t| {
            t.table_status() == Some(&TableStatus::Active)
                && t.global_secondary_indexes().iter().all(|i| i.index_status() == Some(&IndexStatus::Active))
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("table {table} is not active after {ACTIVE_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Turns TTL on for `expires`, unless it is on already (asking again is an error on DynamoDB).
async fn enable_ttl(client: &Client, table: &str) -> anyhow::Result<()> {
    let current = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", DisplayErrorContext(e)))?;
    let on = current.time_to_live_description().is_some_and(|d| {
        matches!(d.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling))
            && d.attribute_name() == Some(items::EXPIRES)
    });
    if on {
        return Ok(());
    }
    let spec = TimeToLiveSpecification::builder().enabled(true).attribute_name(items::EXPIRES).build()?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", DisplayErrorContext(e)))
        .context("update time to live")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `create_table` and `infra/storage.yaml` must make the same table: each index the engine
    /// queries is in the template's `JobsTable` with the same keys and projection.
    #[test]
    fn the_template_defines_the_same_indexes() {
        let template = include_str!("../../../infra/storage.yaml");
        let table = template.split("  JobsTable:\n").nth(1).and_then(|rest| rest.split("\n\n").next()).unwrap();
        for index in INDEXES {
            let projection = if index.include.is_empty() {
                "          Projection: {ProjectionType: KEYS_ONLY}\n".to_string()
            } else {
                format!(
                    "          Projection:\n            ProjectionType: INCLUDE\n            NonKeyAttributes: [{}]\n",
                    index.include.join(", ")
                )
            };
            let definition = format!(
                "        - IndexName: {}\n          KeySchema:\n            - {{AttributeName: {}, KeyType: HASH}}\n            \
                 - {{AttributeName: {}, KeyType: RANGE}}\n{projection}",
                index.name, index.hash, index.range
            );
            assert!(table.contains(&definition), "infra/storage.yaml's JobsTable lacks:\n{definition}");
        }
        assert_eq!(table.matches("- IndexName:").count(), INDEXES.len(), "the template has indexes the engine lacks");
        assert!(table.contains("AttributeName: expires\n        Enabled: true"), "TTL on `expires`");
    }
}
