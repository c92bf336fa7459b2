//! The narrow queue interface the worker needs, with SQS and local (SQLite) implementations.
//!
//! The semantics are SQS's: at-least-once delivery, a visibility timeout after each receive,
//! deletion by the receipt handle of the latest receive, and delivery delays.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

pub mod local;
pub mod sqs;

/// One delivery of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    pub body: String,
    /// Valid until the message is received again; deleting with an older handle does nothing.
    pub receipt: String,
    /// How many times the message has been received, this delivery included.
    pub receive_count: u32,
    pub attributes: BTreeMap<String, String>,
}

/// Approximate counts, as SQS reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl QueueCounts {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// What a message is sent with besides its body.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    pub delay: Duration,
    pub attributes: BTreeMap<String, String>,
}

impl SendOptions {
    pub fn delayed(delay: Duration) -> Self {
        Self { delay, ..Self::default() }
    }

    pub fn with_attribute(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attributes.insert(name.to_string(), value.into());
        self
    }
}

/// The longest delivery delay SQS accepts.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// The most messages one receive returns.
pub const MAX_BATCH: usize = 10;
/// The longest long-poll wait SQS accepts.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Sends a message; `delay` above [`MAX_DELAY`] is capped.
    async fn send(&self, body: &str, options: SendOptions) -> anyhow::Result<()>;

    /// Receives up to `max` (at most [`MAX_BATCH`]) messages, waiting up to `wait` for the first,
    /// and hides them for `visibility`.
    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Received>>;

    /// Deletes a message by the handle of its latest receive; a stale handle deletes nothing.
    async fn delete(&self, receipt: &str) -> anyhow::Result<()>;

    /// Hides (or reveals, with zero) a received message for `visibility` from now.
    async fn change_visibility(&self, receipt: &str, visibility: Duration) -> anyhow::Result<()>;

    async fn counts(&self) -> anyhow::Result<QueueCounts>;

    /// After how many receives the queue itself moves a message to a dead-letter queue (SQS's
    /// redrive policy), if it does.
    async fn redrive_max_receives(&self) -> anyhow::Result<Option<u32>> {
        Ok(None)
    }

    /// A name for logs.
    fn name(&self) -> &str;

    /// Receives like [`Queue::receive`], also telling when each message was sent, for
    /// operators' listings (`media-worker dead-letters list`). By default the time is unknown.
    async fn receive_listed(&self, max: usize, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Listed>> {
        let received = self.receive(max, wait, visibility).await?;
        Ok(received.into_iter().map(|received| Listed { received, sent_at: None }).collect())
    }

    /// Deletes every message (`media-worker dead-letters purge`); returns how many when known.
    ///
    /// By default it receives and deletes until the queue answers empty, so messages that
    /// another receiver holds hidden at the time are left.
    async fn purge(&self) -> anyhow::Result<Option<u64>> {
        let mut deleted = 0;
        loop {
            let batch = self.receive(MAX_BATCH, Duration::ZERO, Duration::from_secs(60)).await?;
            if batch.is_empty() {
                return Ok(Some(deleted));
            }
            for message in batch {
                self.delete(&message.receipt).await?;
                deleted += 1;
            }
        }
    }
}

/// A delivery, with when its message was first sent where the queue tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub received: Received,
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The queues of a deployment.
#[derive(Clone)]
pub struct Queues {
    /// S3 events and job messages waiting for a worker.
    pub ready: std::sync::Arc<dyn Queue>,
    /// The ledger of started attempts, swept by the reaper.
    pub processing: std::sync::Arc<dyn Queue>,
    /// Messages and jobs that cannot succeed, with the reason in attributes.
    pub dead_letter: std::sync::Arc<dyn Queue>,
    /// Notifications waiting for delivery (see `notify`); `None` on an aws deployment without
    /// MEDIA_NOTIFY_QUEUE_URL.
    pub notifications: Option<std::sync::Arc<dyn Queue>>,
}

/// Takes every message waiting on `queue` off it and returns their bodies: what unit tests
/// assert a step published.
#[cfg(test)]
pub async fn take_all(queue: &dyn Queue) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let batch = queue.receive(MAX_BATCH, Duration::ZERO, Duration::from_secs(60)).await.unwrap();
        if batch.is_empty() {
            return bodies;
        }
        for message in batch {
            queue.delete(&message.receipt).await.unwrap();
            bodies.push(message.body);
        }
    }
}
