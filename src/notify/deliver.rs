//! Delivering notifications from the notifications queue, in the worker's own task.
//!
//! Two kinds of messages travel on the queue ([`Envelope`]):
//! - a *fan-out*, one per event, sent by whoever won the transition: the dispatcher makes the
//!   first attempt at every endpoint that wants the event (the deployment's, and the job's own);
//! - a *retry*, one per endpoint whose attempt failed, carrying the attempt number and when it
//!   is due. SQS delays a message by 15 minutes at most, so a retry due later is sent on again
//!   (with the remaining delay) each time it arrives early.
//!
//! A message is deleted only after its work is done and any retry it needs is sent, so a worker
//! dying in between means a repeat, never a loss: delivery is at least once, and receivers
//! dedupe by `webhook-id` (the event id, the same on every attempt). The body is serialised
//! once, at the transition, and travels as text, so every attempt sends the same bytes.
//! Nothing here ever touches the job's status.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::aws::AwsFanOut;
use super::config::NotifySettings;
use super::event::EventType;
use super::record::{self, Audience, DeliveryAttempt, endpoint_label};
use crate::ledger::Ledger;
use crate::outbound::{Limits, SafeClient, SendError, read_capped};
use crate::queue::{MAX_BATCH, MAX_DELAY, MAX_WAIT, Queue, Received, SendOptions};

/// Bytes of a receiver's answer read at most (it is only logged).
const ANSWER_CAP: usize = 1024;
/// How long delivery records are kept unless told (the default `MEDIA_JOB_RETENTION`).
const RECORDS_KEPT: Duration = Duration::from_secs(90 * 24 * 3600);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub job_id: String,
    pub event_id: String,
    pub event_type: EventType,
    /// The event as JSON text: the exact bytes every attempt sends and signs.
    pub body: String,
    #[serde(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "target", rename_all = "snake_case")]
pub enum Target {
    /// First attempts everywhere; `job_url` is the job's own endpoint, if any.
    FanOut { job_url: Option<String> },
    /// Attempt `attempt` (2, 3, ...) at `url`, due at `due`; `audience` says whose URL it is.
    Retry {
        url: String,
        attempt: u32,
        due: DateTime<Utc>,
        #[serde(default)]
        audience: Audience,
    },
}

impl Envelope {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(u16),
    /// 410: this endpoint wants nothing more about this job.
    Gone,
    /// A failure worth retrying: a status (with its `Retry-After`), or no answer.
    Failed {
        status: Option<u16>,
        retry_after: Option<Duration>,
        error: String,
    },
    /// The address is not allowed (never retried).
    Refused(String),
}

/// The webhook side of a worker: its own receive loop, a bounded number of requests in flight.
pub struct Dispatcher {
    queue: Arc<dyn Queue>,
    ledger: Arc<dyn Ledger>,
    settings: NotifySettings,
    /// How long a job's delivery record is kept: its job's retention.
    retention: Duration,
    client: SafeClient,
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
    /// EventBridge/SNS clients, made on first use (loading AWS settings is asynchronous).
    aws: tokio::sync::OnceCell<Option<AwsFanOut>>,
}

impl Dispatcher {
    pub fn new(queue: Arc<dyn Queue>, ledger: Arc<dyn Ledger>, settings: NotifySettings) -> anyhow::Result<Self> {
        let guard = settings.guard();
        Self::with_client(queue, ledger, settings.clone(), guard.client(limits(&settings))?)
    }

    /// With a given client (tests inject one whose resolver plays DNS tricks).
    pub fn with_client(
        queue: Arc<dyn Queue>,
        ledger: Arc<dyn Ledger>,
        settings: NotifySettings,
        client: SafeClient,
    ) -> anyhow::Result<Self> {
        let permits = Arc::new(Semaphore::new(settings.concurrency));
        let retention = RECORDS_KEPT;
        Ok(Self {
            queue,
            ledger,
            settings,
            retention,
            client,
            permits,
            tasks: TaskTracker::new(),
            aws: Default::default(),
        })
    }

    /// The worker's dispatcher, when it has webhooks to deliver and a queue to take them from.
    pub fn for_worker(config: &crate::config::Config, backend: &crate::backend::Backend) -> Option<Arc<Self>> {
        let queue = backend.queues.notifications.clone().filter(|_| config.notify.enabled())?;
        match Self::new(queue, backend.ledger.clone(), config.notify.clone()) {
            Ok(dispatcher) => Some(Arc::new(Self { retention: config.job_retention, ..dispatcher })),
            Err(err) => {
                tracing::error!(
                    error = format!("{err:#}"),
                    "Webhooks cannot be delivered: the HTTP client failed to start."
                );
                None
            }
        }
    }

    /// Deliveries in flight here.
    pub fn busy(&self) -> usize {
        self.tasks.len()
    }

    /// Nothing in flight here, and nothing waiting on the queue that is due (retries delayed
    /// for later do not count: a drain does not wait hours for them).
    pub async fn is_idle(&self) -> anyhow::Result<bool> {
        if self.busy() > 0 {
            return Ok(false);
        }
        let counts = self.queue.counts().await?;
        Ok(counts.visible + counts.in_flight == 0)
    }

    /// Receives and delivers until `stop`; then waits (at most one request timeout) for the
    /// deliveries in flight. Messages not finished by then reappear on the queue.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        tracing::info!(
            queue = self.queue.name(),
            endpoints = self.settings.endpoints.len(),
            "Delivering notifications."
        );
        loop {
            let permit = tokio::select! {
                permit = self.permits.clone().acquire_owned() => permit,
                () = stop.cancelled() => break,
            };
            let Ok(permit) = permit else { break };
            drop(permit);
            let free = self.permits.available_permits().clamp(1, MAX_BATCH);
            let received = tokio::select! {
                received = self.queue.receive(free, MAX_WAIT, self.visibility()) => received,
                () = stop.cancelled() => break,
            };
            match received {
                Ok(messages) => {
                    for message in messages {
                        let Ok(permit) = self.permits.clone().acquire_owned().await else { break };
                        let this = self.clone();
                        self.tasks.spawn(async move {
                            let _permit = permit;
                            this.handle(message).await;
                        });
                    }
                }
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "Receiving notifications failed.");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = stop.cancelled() => break,
                    }
                }
            }
        }
        self.tasks.close();
        let _ = tokio::time::timeout(self.settings.timeout + Duration::from_secs(1), self.tasks.wait()).await;
    }

    /// Long enough for every endpoint of a fan-out to be tried (they are tried at once).
    fn visibility(&self) -> Duration {
        self.settings.timeout * 2 + Duration::from_secs(30)
    }

    /// Does the work of one message, then deletes it; a failure leaves it for redelivery.
    pub async fn handle(&self, message: Received) {
        let envelope: Envelope = match serde_json::from_str(&message.body) {
            Ok(e) => e,
            Err(err) => {
                tracing::warn!(error = %err, "Dropping an unreadable notification message.");
                let _ = self.queue.delete(&message.receipt).await;
                return;
            }
        };
        let result = match &envelope.target {
            Target::FanOut { job_url } => {
                // AWS first: if it fails, the whole fan-out is redelivered, and webhooks are
                // not tried twice for it.
                if let Some(aws) = self.aws.get_or_init(|| AwsFanOut::connect(&self.settings)).await
                    && let Err(err) = aws.publish(envelope.event_type, &envelope.job_id, &envelope.body).await
                {
                    tracing::warn!(
                        event_id = %envelope.event_id,
                        error = format!("{err:#}"),
                        "Publishing a notification to AWS failed; it will be redelivered."
                    );
                    return;
                }
                let urls: Vec<(String, Audience)> = self
                    .settings
                    .endpoints
                    .iter()
                    .filter(|e| e.wants(envelope.event_type))
                    .map(|e| (e.url.clone(), Audience::Deployment))
                    .chain(job_url.clone().map(|url| (url, Audience::Job)))
                    .collect();
                let attempts = urls.iter().map(|(url, audience)| self.attempt(&envelope, url, *audience, 1));
                futures_util::future::join_all(attempts)
                    .await
                    .into_iter()
                    .collect::<anyhow::Result<Vec<()>>>()
                    .map(|_| ())
            }
            Target::Retry { url, attempt, due, audience } => {
                let early = (*due - Utc::now()).to_std().unwrap_or_default();
                if early > Duration::from_millis(5) {
                    // Not due yet: on again with what remains (SQS delays 15 minutes at most).
                    self.queue.send(&message.body, SendOptions::delayed(early.min(MAX_DELAY))).await
                } else {
                    self.attempt(&envelope, url, *audience, *attempt).await
                }
            }
        };
        match result {
            Ok(()) => {
                if let Err(err) = self.queue.delete(&message.receipt).await {
                    tracing::warn!(error = format!("{err:#}"), "Could not delete a handled notification message.");
                }
            }
            Err(err) => tracing::warn!(
                event_id = %envelope.event_id,
                error = format!("{err:#}"),
                "A notification could not be handled; it will be redelivered."
            ),
        }
    }

    /// One attempt at one endpoint, its retry scheduled and its record written. `Err` only
    /// when the retry could not be queued (the message is then redelivered).
    async fn attempt(&self, envelope: &Envelope, url: &str, audience: Audience, attempt: u32) -> anyhow::Result<()> {
        let endpoint = endpoint_label(url);
        let job_id = envelope.job_id.as_str();
        match record::read(self.ledger.as_ref(), job_id).await {
            Ok(doc) if doc.stopped.contains(&endpoint) => {
                tracing::debug!(job_id, endpoint, "Endpoint answered 410 for this job; not sending.");
                return Ok(());
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(job_id, error = format!("{err:#}"), "Could not read the delivery record."),
        }
        let at = Utc::now();
        let outcome = send(&self.client, &self.settings, envelope, url).await;
        let mut next_attempt_at = None;
        let (status, label, error) = match &outcome {
            Outcome::Delivered(status) => (Some(*status), "delivered", None),
            Outcome::Gone => (Some(410), "gone", None),
            Outcome::Refused(why) => (None, "refused", Some(why.clone())),
            Outcome::Failed { status, retry_after, error } => {
                match next_delay(&self.settings.schedule, attempt, *retry_after) {
                    Some(delay) => {
                        let due = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                        let retry = Envelope {
                            target: Target::Retry { url: url.to_string(), attempt: attempt + 1, due, audience },
                            ..envelope.clone()
                        };
                        self.queue.send(&retry.to_json(), SendOptions::delayed(delay.min(MAX_DELAY))).await?;
                        next_attempt_at = Some(due);
                        (*status, "retrying", Some(error.clone()))
                    }
                    None => (*status, "failed", Some(error.clone())),
                }
            }
        };
        tracing::info!(
            job_id,
            event_id = %envelope.event_id,
            event = %envelope.event_type,
            endpoint,
            attempt,
            status,
            outcome = label,
            "Webhook attempt."
        );
        let entry = DeliveryAttempt {
            event_id: envelope.event_id.clone(),
            event_type: envelope.event_type,
            endpoint,
            audience,
            attempt,
            at,
            status,
            outcome: label.to_string(),
            error,
            next_attempt_at,
        };
        // The record is for people; a failure to write it never repeats a delivery.
        if let Err(err) = record::append(self.ledger.as_ref(), job_id, entry, self.retention).await {
            tracing::warn!(job_id, error = format!("{err:#}"), "Could not record a delivery attempt.");
        }
        Ok(())
    }
}

pub fn limits(settings: &NotifySettings) -> Limits {
    Limits { connect: settings.timeout.min(Duration::from_secs(5)), total: settings.timeout, read: None }
}

/// The delay before attempt `attempt + 1` after attempt `attempt` failed, `None` when the
/// schedule is used up. `Retry-After` can only make it longer.
pub fn next_delay(schedule: &[Duration], attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
    let planned = *schedule.get(usize::try_from(attempt).ok()?)?;
    Some(retry_after.map_or(planned, |r| planned.max(r.min(MAX_RETRY_AFTER))))
}

/// Makes one signed request.
pub async fn send(client: &SafeClient, settings: &NotifySettings, envelope: &Envelope, url: &str) -> Outcome {
    let timestamp = Utc::now().timestamp();
    let signature = settings.secrets.sign(&envelope.event_id, timestamp, envelope.body.as_bytes());
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in [
        ("webhook-id", envelope.event_id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    match client.post(url, headers, envelope.body.clone().into_bytes()).await {
        Ok(response) => {
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            // Read (a little of) the answer so the connection can be reused.
            let _ = read_capped(response, ANSWER_CAP).await;
            if status.is_success() {
                Outcome::Delivered(status.as_u16())
            } else if status.as_u16() == 410 {
                Outcome::Gone
            } else {
                Outcome::Failed {
                    status: Some(status.as_u16()),
                    retry_after,
                    error: format!("HTTP {}", status.as_u16()),
                }
            }
        }
        Err(SendError::Refused(why)) => Outcome::Refused(why.to_string()),
        Err(err) => Outcome::Failed { status: None, retry_after: None, error: err.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_and_retry_after() {
        let s = [Duration::ZERO, Duration::from_secs(5), Duration::from_secs(300)];
        assert_eq!(next_delay(&s, 1, None), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(&s, 2, None), Some(Duration::from_secs(300)));
        assert_eq!(next_delay(&s, 3, None), None, "three attempts, then no more");
        assert_eq!(next_delay(&s, 1, Some(Duration::from_secs(60))), Some(Duration::from_secs(60)));
        assert_eq!(next_delay(&s, 2, Some(Duration::from_secs(1))), Some(Duration::from_secs(300)));
        assert_eq!(next_delay(&s, 1, Some(Duration::from_secs(10 << 20))), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn envelopes_round_trip() {
        let e = Envelope {
            v: ENVELOPE_VERSION,
            job_id: "j".into(),
            event_id: "msg_1".into(),
            event_type: EventType::Completed,
            body: "{\"a\": 1}".into(),
            target: Target::Retry {
                url: "https://a.example/".into(),
                attempt: 2,
                due: Utc::now(),
                audience: Audience::Job,
            },
        };
        let back: Envelope = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(back, e);
        let fan = Envelope { target: Target::FanOut { job_url: None }, ..e };
        assert!(fan.to_json().contains("\"target\":\"fan_out\""));
    }
}
