//! The same events on AWS: an EventBridge bus (`detail-type` "Media Job State Change", the
//! event as `detail`) and/or an SNS topic (the event as the message, its type as the `type`
//! message attribute, for subscription filter policies).
//!
//! Published by the dispatcher with the fan-out message, before any webhook is tried: a failed
//! publish leaves the message to be redelivered, so AWS targets get every event at least once.

use anyhow::Context;
use aws_config::SdkConfig;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_sns::types::MessageAttributeValue;

use super::config::NotifySettings;
use super::event::EventType;

/// EventBridge's `detail-type` of every event.
pub const DETAIL_TYPE: &str = "Media Job State Change";

pub struct AwsFanOut {
    eventbridge: Option<(aws_sdk_eventbridge::Client, String, String)>,
    sns: Option<(aws_sdk_sns::Client, String)>,
}

impl AwsFanOut {
    /// Clients for what the settings name, made from the SDK configuration every AWS client
    /// shares ([`crate::aws::load`]: the same timeouts and stalled-stream protection); `None`
    /// when they name nothing.
    pub async fn connect(settings: &NotifySettings) -> Option<AwsFanOut> {
        if !settings.aws_fan_out() {
            return None;
        }
        Some(Self::with_config(settings, &crate::aws::load().await))
    }

    /// Clients for what the settings name, made from `shared`.
    fn with_config(settings: &NotifySettings, shared: &SdkConfig) -> AwsFanOut {
        AwsFanOut {
            eventbridge: settings
                .eventbridge_bus
                .clone()
                .map(|bus| (aws_sdk_eventbridge::Client::new(shared), bus, settings.eventbridge_source.clone())),
            sns: settings.sns_topic_arn.clone().map(|topic| (aws_sdk_sns::Client::new(shared), topic)),
        }
    }

    /// Puts one event (`body`, the exact text webhooks are sent) on the bus and/or the topic.
    pub async fn publish(&self, event_type: EventType, job_id: &str, body: &str) -> anyhow::Result<()> {
        if let Some((client, bus, source)) = &self.eventbridge {
            let entry = PutEventsRequestEntry::builder()
                .event_bus_name(bus)
                .source(source)
                .detail_type(DETAIL_TYPE)
                .detail(body)
                .resources(format!("job/{job_id}"))
                .build();
            let out = client
                .put_events()
                .entries(entry)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{}", aws_sdk_eventbridge::error::DisplayErrorContext(e)))
                .context("EventBridge PutEvents")?;
            if out.failed_entry_count() > 0 {
                let why = out.entries().first().and_then(|e| e.error_message()).unwrap_or("unknown");
                anyhow::bail!("EventBridge refused the event: {why}");
            }
        }
        if let Some((client, topic)) = &self.sns {
            let kind = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(event_type.as_str())
                .build()
                .context("SNS message attribute")?;
            client
                .publish()
                .topic_arn(topic)
                .message(body)
                .message_attributes("type", kind)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sns::error::DisplayErrorContext(e)))
                .context("SNS Publish")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::tests::{assert_shared, offline};

    #[tokio::test]
    async fn the_clients_carry_the_shared_timeouts_and_stall_protection() {
        let lookup = |name: &str| match name {
            "MEDIA_EVENTBRIDGE_BUS" => Some("bus".to_string()),
            "MEDIA_SNS_TOPIC_ARN" => Some("arn:aws:sns:us-east-1:1:t".to_string()),
            "MEDIA_NOTIFY_QUEUE_URL" => Some("q".to_string()),
            _ => None,
        };
        let settings = NotifySettings::from_lookup(&lookup, true).unwrap();
        let fan_out = AwsFanOut::with_config(&settings, &offline().await);
        let (eventbridge, ..) = fan_out.eventbridge.as_ref().expect("an EventBridge client");
        assert_shared(eventbridge.config().timeout_config(), eventbridge.config().stalled_stream_protection());
        let (sns, _) = fan_out.sns.as_ref().expect("an SNS client");
        assert_shared(sns.config().timeout_config(), sns.config().stalled_stream_protection());
    }
}
