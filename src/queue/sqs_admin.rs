//! Operator commands on an SQS queue (`media-worker dead-letters`): listings with each
//! message's sent time, and `PurgeQueue`. A wrapper around [`SqsQueue`], which does everything
//! else, so that the worker's queue code stays as it is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageSystemAttributeName;

use super::sqs::SqsQueue;
use super::{Listed, MAX_BATCH, MAX_WAIT, Queue, QueueCounts, Received, SendOptions};
use crate::config::AwsSettings;

pub struct SqsAdminQueue {
    inner: SqsQueue,
    client: Client,
    url: String,
}

impl SqsAdminQueue {
    pub fn new(client: Client, url: &str) -> Self {
        Self { inner: SqsQueue::new(client.clone(), url), client, url: url.to_string() }
    }

    /// The deployment's dead-letter queue, with the standard AWS chain (as the worker's clients).
    pub async fn dead_letter(aws: &AwsSettings) -> Arc<dyn Queue> {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(crate::backend::timeouts())
            .load()
            .await;
        Arc::new(Self::new(Client::new(&shared), &aws.dead_letter_queue_url))
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

// Every method the trait has besides the two below is the plain SQS queue's.
#[async_trait]
impl Queue for SqsAdminQueue {
    async fn send(&self, body: &str, options: SendOptions) -> anyhow::Result<()> {
        self.inner.send(body, options).await
    }

    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Received>> {
        self.inner.receive(max, wait, visibility).await
    }

    async fn delete(&self, receipt: &str) -> anyhow::Result<()> {
        self.inner.delete(receipt).await
    }

    async fn change_visibility(&self, receipt: &str, visibility: Duration) -> anyhow::Result<()> {
        self.inner.change_visibility(receipt, visibility).await
    }

    async fn counts(&self) -> anyhow::Result<QueueCounts> {
        self.inner.counts().await
    }

    async fn redrive_max_receives(&self) -> anyhow::Result<Option<u32>> {
        self.inner.redrive_max_receives().await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn receive_listed(&self, max: usize, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Listed>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::try_from(max.clamp(1, MAX_BATCH)).unwrap_or(1))
            .wait_time_seconds(seconds(wait.min(MAX_WAIT)))
            .visibility_timeout(seconds(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("receive from {}: {}", self.name(), DisplayErrorContext(e)))?;
        let mut listed = Vec::new();
        for message in out.messages.unwrap_or_default() {
            let system = message.attributes();
            let system = |name: MessageSystemAttributeName| system.and_then(|a| a.get(&name)).cloned();
            let sent_at = system(MessageSystemAttributeName::SentTimestamp)
                .and_then(|ms| ms.parse::<i64>().ok())
                .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis);
            let receive_count =
                system(MessageSystemAttributeName::ApproximateReceiveCount).and_then(|c| c.parse().ok()).unwrap_or(1);
            let attributes: BTreeMap<String, String> = message
                .message_attributes()
                .map(|attrs| {
                    attrs.iter().filter_map(|(k, v)| v.string_value().map(|s| (k.clone(), s.to_string()))).collect()
                })
                .unwrap_or_default();
            let received = Received {
                message_id: message.message_id.clone().unwrap_or_default(),
                body: message.body.clone().unwrap_or_default(),
                receipt: message.receipt_handle.clone().context("SQS returned a message without a receipt handle")?,
                receive_count,
                attributes,
            };
            listed.push(Listed { received, sent_at });
        }
        Ok(listed)
    }

    /// SQS's `PurgeQueue`: it takes up to a minute to finish, and a queue can be purged once a
    /// minute. The number of messages it deletes is not told.
    async fn purge(&self) -> anyhow::Result<Option<u64>> {
        self.client
            .purge_queue()
            .queue_url(&self.url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("purge {}: {}", self.name(), DisplayErrorContext(e)))?;
        Ok(None)
    }
}
