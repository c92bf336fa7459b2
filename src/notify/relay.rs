//! The relay: moves events from the ledger's outbox to the notifications queue.
//!
//! A transition and its event are stored together ([`crate::jobs::store`]); the relay, a task
//! of each worker, takes the oldest events (leased, so two relays do not both take one), builds
//! each as it is sent (a completion's outputs are read from its manifest then), puts it on the
//! notifications queue, and only then deletes it from the outbox. A relay killed in between
//! leaves the event leased: once the lease runs out another relay sends it again, with the same
//! id (derived from the job and its revision), which receivers dedupe by. So no event is lost,
//! and none is sent twice under different ids.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::deliver::{ENVELOPE_VERSION, Envelope, Target};
use super::event::{EventType, build};
use crate::domain::status::{JobStatus, Manifest};
use crate::jobs::JobStore;
use crate::ledger::{Ledger, OutboxEntry};
use crate::queue::{Queue, SendOptions};
use crate::storage::ObjectStore;

/// Events taken at a time.
const BATCH: usize = 10;
/// How long a taken event is this relay's alone: twice the longest a send may take.
const LEASE: Duration = Duration::from_secs(20);
/// How often an idle relay looks at the outbox when nothing in this process woke it (events
/// other processes stored: the API's, the CLI's, another worker's).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Bound on one event's send (the manifest read included).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Relay {
    store: JobStore,
    storage: Arc<dyn ObjectStore>,
    queue: Arc<dyn Queue>,
}

impl Relay {
    pub fn new(store: JobStore, storage: Arc<dyn ObjectStore>, queue: Arc<dyn Queue>) -> Self {
        Self { store, storage, queue }
    }

    fn ledger(&self) -> &Arc<dyn Ledger> {
        self.store.ledger()
    }

    /// Relays until `stop`, then once more (the last transitions' events go out before the
    /// worker exits, when the queue answers).
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let sent = self.relay_once().await;
            if stop.is_cancelled() {
                break;
            }
            if sent == 0 {
                tokio::select! {
                    () = self.store.event_written() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
        self.relay_once().await;
    }

    /// Sends what the outbox holds now, a batch at a time; how many were sent.
    pub async fn relay_once(&self) -> usize {
        let mut sent = 0;
        loop {
            let batch = match self.ledger().outbox_take(BATCH, LEASE).await {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::warn!(error = %err, "Could not read the outbox; events wait there.");
                    return sent;
                }
            };
            if batch.is_empty() {
                return sent;
            }
            for entry in batch {
                match tokio::time::timeout(SEND_TIMEOUT, self.send(&entry)).await {
                    Ok(Ok(())) => sent += 1,
                    Ok(Err(err)) => {
                        tracing::warn!(job_id = %entry.event.status.job_id, error = format!("{err:#}"), "Could not relay an event; it is sent again when its lease ends.");
                        return sent;
                    }
                    Err(_) => {
                        tracing::warn!(job_id = %entry.event.status.job_id, "Relaying an event timed out; it is sent again when its lease ends.");
                        return sent;
                    }
                }
            }
        }
    }

    /// Puts one event on the notifications queue, then deletes it from the outbox.
    async fn send(&self, entry: &OutboxEntry) -> anyhow::Result<()> {
        let status = &entry.event.status;
        let kind: EventType = serde_json::from_value(serde_json::Value::String(entry.event.kind.clone()))?;
        let manifest = if kind == EventType::Completed { self.manifest(status).await } else { None };
        let event = build(kind, status, manifest.as_ref());
        let envelope = Envelope {
            v: ENVELOPE_VERSION,
            job_id: status.job_id.clone(),
            event_id: event.id.clone(),
            event_type: kind,
            body: serde_json::to_string(&event)?,
            target: Target::FanOut { job_url: status.job.notify.as_ref().map(|n| n.url.clone()) },
        };
        self.queue.send(&envelope.to_json(), SendOptions::default()).await?;
        self.ledger().outbox_done(entry).await?;
        tracing::debug!(job_id = %status.job_id, event = %kind, "Notification relayed.");
        Ok(())
    }

    /// The manifest a completed status names, for the `job.completed` event's outputs.
    async fn manifest(&self, status: &JobStatus) -> Option<Manifest> {
        let key = status.manifest_key.as_deref()?;
        let bytes = self.storage.get_bytes(key).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }
}
