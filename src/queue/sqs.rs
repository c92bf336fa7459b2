//! [`Queue`] on Amazon SQS (or anything speaking its protocol).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};

use super::{Listed, MAX_BATCH, MAX_DELAY, MAX_WAIT, Queue, QueueCounts, Received, SendOptions};

pub struct SqsQueue {
    client: Client,
    url: String,
    name: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: &str) -> Self {
        let name = url.rsplit('/').next().unwrap_or(url).to_string();
        Self { client, url: url.to_string(), name }
    }

    /// One receive; with `sent_at`, each message's sent time too (for operators' listings).
    async fn receive_messages(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
        sent_at: bool,
    ) -> anyhow::Result<Vec<Listed>> {
        let max = max.clamp(1, MAX_BATCH);
        let wait = wait.min(MAX_WAIT);
        let mut request = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::try_from(max).unwrap_or(1))
            .wait_time_seconds(seconds(wait))
            .visibility_timeout(seconds(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All");
        if sent_at {
            request = request.message_system_attribute_names(MessageSystemAttributeName::SentTimestamp);
        }
        let out = request
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(long_poll_timeouts(wait)))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("receive from {}: {}", self.name, DisplayErrorContext(e)))?;
        let mut listed = Vec::new();
        for message in out.messages.unwrap_or_default() {
            let system = |name: MessageSystemAttributeName| message.attributes().and_then(|a| a.get(&name)).cloned();
            let receive_count =
                system(MessageSystemAttributeName::ApproximateReceiveCount).and_then(|c| c.parse().ok()).unwrap_or(1);
            let sent_at = system(MessageSystemAttributeName::SentTimestamp)
                .and_then(|ms| ms.parse::<i64>().ok())
                .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis);
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
}

/// A long poll legitimately answers only after `wait`: its tries get that long more than a
/// small call's, so a dead connection is still dropped within seconds of the poll's end.
fn long_poll_timeouts(wait: Duration) -> aws_sdk_sqs::config::timeout::TimeoutConfig {
    aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
        .connect_timeout(crate::aws::CONNECT_TIMEOUT)
        .operation_attempt_timeout(wait + crate::aws::ATTEMPT_TIMEOUT)
        .operation_timeout(wait * 3 + crate::aws::OPERATION_TIMEOUT)
        .build()
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, body: &str, options: SendOptions) -> anyhow::Result<()> {
        let mut attributes = HashMap::new();
        for (name, value) in options.attributes {
            // SQS refuses empty attribute values.
            let value = if value.is_empty() { "-".to_string() } else { value };
            let attr = MessageAttributeValue::builder().data_type("String").string_value(value).build()?;
            attributes.insert(name, attr);
        }
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(seconds(options.delay.min(MAX_DELAY)))
            .set_message_attributes((!attributes.is_empty()).then_some(attributes))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("send to {}: {}", self.name, DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Received>> {
        let listed = self.receive_messages(max, wait, visibility, false).await?;
        Ok(listed.into_iter().map(|l| l.received).collect())
    }

    async fn receive_listed(&self, max: usize, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Listed>> {
        self.receive_messages(max, wait, visibility, true).await
    }

    /// SQS's `PurgeQueue`: it takes up to a minute to finish, and a queue can be purged once a
    /// minute. The number of messages it deletes is not told.
    async fn purge(&self) -> anyhow::Result<Option<u64>> {
        self.client
            .purge_queue()
            .queue_url(&self.url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("purge {}: {}", self.name, DisplayErrorContext(e)))?;
        Ok(None)
    }

    async fn delete(&self, receipt: &str) -> anyhow::Result<()> {
        match self.client.delete_message().queue_url(&self.url).receipt_handle(receipt).send().await {
            Ok(_) => Ok(()),
            // A handle from an earlier delivery: SQS may refuse it; the message lives on either way.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_receipt_handle_is_invalid()) => {
                tracing::debug!(queue = %self.name, "Delete with a stale receipt handle ignored.");
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("delete from {}: {}", self.name, DisplayErrorContext(e))),
        }
    }

    async fn change_visibility(&self, receipt: &str, visibility: Duration) -> anyhow::Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds(visibility))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("change visibility on {}: {}", self.name, DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn counts(&self) -> anyhow::Result<QueueCounts> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("count {}: {}", self.name, DisplayErrorContext(e)))?;
        let attrs = out.attributes.unwrap_or_default();
        let get = |name: QueueAttributeName| attrs.get(&name).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(QueueCounts {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }

    async fn redrive_max_receives(&self) -> anyhow::Result<Option<u32>> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("read the redrive policy of {}: {}", self.name, DisplayErrorContext(e)))?;
        let policy = out.attributes.unwrap_or_default().remove(&QueueAttributeName::RedrivePolicy);
        Ok(policy.as_deref().and_then(parse_max_receive_count))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// `maxReceiveCount` of a redrive policy document (a number or a numeric string).
fn parse_max_receive_count(policy: &str) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_str(policy).ok()?;
    match value.get("maxReceiveCount")? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_max_receive_count;

    #[test]
    fn redrive_policies_name_their_max_receive_count() {
        assert_eq!(parse_max_receive_count(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":10}"#), Some(10));
        assert_eq!(parse_max_receive_count(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":"3"}"#), Some(3));
        assert_eq!(parse_max_receive_count("{}"), None);
        assert_eq!(parse_max_receive_count("not json"), None);
    }
}
