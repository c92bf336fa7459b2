//! The same events on AWS: an EventBridge bus (`detail-type` "Media Job State Change", the
//! event as `detail`) and/or an SNS topic (the event as the message, its type as the `type`
//! message attribute, for subscription filter policies).
//!
//! Published by the dispatcher with the fan-out message, before any webhook is tried: a failed
//! publish leaves the message to be redelivered, so AWS targets get every event at least once.

use anyhow::Context;
use aws_config::BehaviorVersion;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_sns::types::MessageAttributeValue;

use super::config::NotifySettings;
use super::deliver::Envelope;

/// EventBridge's `detail-type` of every event.
pub const DETAIL_TYPE: &str = "Media Job State Change";

pub struct AwsFanOut {
    eventbridge: Option<(aws_sdk_eventbridge::Client, String, String)>,
    sns: Option<(aws_sdk_sns::Client, String)>,
}

impl AwsFanOut {
    /// Clients for what the settings name (region, credentials and endpoint from the standard
    /// chain, with the same timeouts as every other AWS call); `None` when they name nothing.
    pub async fn connect(settings: &NotifySettings) -> Option<AwsFanOut> {
        if settings.eventbridge_bus.is_none() && settings.sns_topic_arn.is_none() {
            return None;
        }
        let shared =
            aws_config::defaults(BehaviorVersion::latest()).timeout_config(crate::backend::timeouts()).load().await;
        Some(AwsFanOut {
            eventbridge: settings
                .eventbridge_bus
                .clone()
                .map(|bus| (aws_sdk_eventbridge::Client::new(&shared), bus, settings.eventbridge_source.clone())),
            sns: settings.sns_topic_arn.clone().map(|topic| (aws_sdk_sns::Client::new(&shared), topic)),
        })
    }

    pub async fn publish(&self, envelope: &Envelope) -> anyhow::Result<()> {
        if let Some((client, bus, source)) = &self.eventbridge {
            let entry = PutEventsRequestEntry::builder()
                .event_bus_name(bus)
                .source(source)
                .detail_type(DETAIL_TYPE)
                .detail(&envelope.body)
                .resources(format!("job/{}", envelope.job_id))
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
                .string_value(envelope.event_type.as_str())
                .build()
                .context("SNS message attribute")?;
            client
                .publish()
                .topic_arn(topic)
                .message(&envelope.body)
                .message_attributes("type", kind)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sns::error::DisplayErrorContext(e)))
                .context("SNS Publish")?;
        }
        Ok(())
    }
}
