//! Notifications: every job state change, told to webhooks (signed to Standard Webhooks 1.0),
//! durably and without ever slowing a job or changing its state.
//!
//! - [`event`]: the event contract (types, payload), and which transition makes which event.
//! - [`Notifier`]: the lifecycle's observer. Told only about transitions that won their
//!   compare-and-swap, it hands one message per event to a task of its own, which puts it on
//!   the notifications queue (SQS, or the local queue), and returns at once: neither the send
//!   nor a delivery is on the job's path, so a slow queue never holds a fenced commit open
//!   (where a timeout or shutdown could cut it off). [`settle`] waits for the sends still in
//!   flight; every binary calls it before it exits.
//! - [`deliver`]: the worker's dispatcher, which takes those messages and makes the signed
//!   requests ([`sign`]) through the SSRF-guarded client ([`crate::outbound`]), retrying on
//!   the configured schedule and recording every attempt ([`record`]).
//! - [`aws`]: the same events on an EventBridge bus and/or an SNS topic.
//! - [`config`]: the settings.

pub mod aws;
pub mod config;
pub mod deliver;
pub mod event;
pub mod record;
pub mod sign;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::task::TaskTracker;

pub use config::{NOTIFY_VARIABLES, NotifySettings};
use deliver::{ENVELOPE_VERSION, Envelope, Target};
use event::{EventType, build, event_type};

use crate::config::Config;
use crate::domain::status::{JobStatus, Manifest, Stage};
use crate::jobs::store::{LogObserver, Transition};
use crate::jobs::{JobStore, Observer};
use crate::queue::{Queue, Queues, SendOptions};
use crate::storage::Storage;

/// Bound on the one queue send (and the manifest read, on completion) a transition costs.
const EMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The event sends in flight in this process, whichever store started them.
static SENDS: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Waits (at most `within`) for the events still being put on the notifications queue. A
/// process that exits without it may lose the events of its last transitions.
pub async fn settle(within: Duration) {
    if SENDS.is_empty() {
        return;
    }
    SENDS.close();
    if tokio::time::timeout(within, SENDS.wait()).await.is_err() {
        tracing::warn!(pending = SENDS.len(), "Events were still being queued at exit; they are lost.");
    }
    SENDS.reopen();
}

/// The job store every binary uses: with a [`Notifier`] when notifications are configured
/// and the deployment has a notifications queue, else logging final states only.
pub fn job_store(config: &Config, storage: Arc<dyn Storage>, queues: &Queues) -> JobStore {
    let store = JobStore::new(storage.clone());
    match &queues.notifications {
        Some(queue) if config.notify.enabled() => {
            store.with_observer(Arc::new(Notifier::new(queue.clone(), storage, config.notify.clone())))
        }
        _ => store,
    }
}

/// Puts an event on the notifications queue for every transition that makes one.
pub struct Notifier {
    queue: Arc<dyn Queue>,
    storage: Arc<dyn Storage>,
    settings: NotifySettings,
    /// Per running job in this process: when its last progress-like event went out, and what
    /// it said. A job runs in one process at a time, so this is where its throttle belongs.
    progress: Mutex<HashMap<String, (Instant, f64, Stage)>>,
}

impl Notifier {
    pub fn new(queue: Arc<dyn Queue>, storage: Arc<dyn Storage>, settings: NotifySettings) -> Self {
        Self { queue, storage, settings, progress: Mutex::new(HashMap::new()) }
    }

    /// Whether anyone would receive an event of this type for this job.
    fn wanted(&self, kind: EventType, status: &JobStatus) -> bool {
        self.settings.aws_fan_out()
            || status.job.notify.is_some()
            || self.settings.endpoints.iter().any(|e| e.wants(kind))
    }

    /// Throttles `job.progress` to one per interval per job, and only on change; the start
    /// counts as the first.
    fn admit(&self, kind: EventType, status: &JobStatus) -> bool {
        let Ok(mut last) = self.progress.lock() else { return true };
        let now = Instant::now();
        match kind {
            EventType::Started => {
                last.insert(status.job_id.clone(), (now, status.progress, status.stage));
                true
            }
            EventType::Progress => {
                let entry = last.get(&status.job_id);
                let changed = entry.is_none_or(|(_, p, s)| *p != status.progress || *s != status.stage);
                let due = entry.is_none_or(|(at, ..)| now.duration_since(*at) >= self.settings.progress_interval);
                if changed && due {
                    last.insert(status.job_id.clone(), (now, status.progress, status.stage));
                }
                changed && due
            }
            _ => {
                last.remove(&status.job_id);
                true
            }
        }
    }
}

/// Reads the manifest a completed status names, for the `job.completed` event.
async fn manifest(storage: &dyn Storage, status: &JobStatus) -> Option<Manifest> {
    let key = status.manifest_key.as_deref()?;
    let bytes = storage.get_bytes(key).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Builds the event and puts it on the queue.
async fn emit(queue: &dyn Queue, storage: &dyn Storage, kind: EventType, status: &JobStatus) -> anyhow::Result<()> {
    let manifest = if kind == EventType::Completed { manifest(storage, status).await } else { None };
    let event = build(kind, status, manifest.as_ref());
    let envelope = Envelope {
        v: ENVELOPE_VERSION,
        job_id: status.job_id.clone(),
        event_id: event.id.clone(),
        event_type: kind,
        body: serde_json::to_string(&event)?,
        target: Target::FanOut { job_url: status.job.notify.as_ref().map(|n| n.url.clone()) },
    };
    queue.send(&envelope.to_json(), SendOptions::default()).await
}

#[async_trait]
impl Observer for Notifier {
    async fn on_transition(&self, transition: &Transition<'_>) {
        if transition.ended() {
            LogObserver.on_terminal(transition.after);
        }
        let status = transition.after;
        let Some(kind) = event_type(transition.event, transition.before, status) else { return };
        if !self.admit(kind, status) || !self.wanted(kind, status) {
            return;
        }
        // The transition is stored whatever happens here: a lost event is logged, never an
        // error of the job. (A process killed before the send loses the event.)
        let (queue, storage, status) = (self.queue.clone(), self.storage.clone(), status.clone());
        SENDS.spawn(async move {
            let job_id = status.job_id.as_str();
            match tokio::time::timeout(EMIT_TIMEOUT, emit(queue.as_ref(), storage.as_ref(), kind, &status)).await {
                Ok(Ok(())) => tracing::debug!(job_id, event = %kind, "Notification queued."),
                Ok(Err(err)) => {
                    tracing::warn!(job_id, event = %kind, error = format!("{err:#}"), "Could not queue a notification.")
                }
                Err(_) => tracing::warn!(job_id, event = %kind, "Queueing a notification timed out."),
            }
        });
    }

    fn on_terminal(&self, status: &JobStatus) {
        LogObserver.on_terminal(status);
    }
}
