//! Notifications: every job state change, told to webhooks (signed to Standard Webhooks 1.0),
//! durably and without ever slowing a job or changing its state.
//!
//! - [`event`]: the event contract (types, payload), and which transition makes which event.
//! - [`Notifier`]: the lifecycle's [`Events`]. Asked, before a transition is written, which
//!   event it makes (throttling `job.progress`), it names it; the lifecycle stores the event in
//!   the ledger's outbox in the same transaction as the transition, so a transition and its
//!   event are kept together or not at all.
//! - [`relay`]: the worker's task that moves events from the outbox to the notifications queue
//!   (SQS, or the local queue), deleting each once sent.
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
pub mod relay;
pub mod sign;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use config::{NOTIFY_VARIABLES, NotifySettings};
use event::{EventType, event_type};

use crate::backend::Backend;
use crate::config::Config;
use crate::domain::status::{JobStatus, Stage};
use crate::jobs::store::Transition;
use crate::jobs::{Events, JobStore, NoEvents};

/// The job store every binary uses: storing events with their transitions when notifications
/// are configured and the deployment has a notifications queue, else none.
pub fn job_store(config: &Config, backend: &Backend) -> JobStore {
    let events: Arc<dyn Events> = match &backend.queues.notifications {
        Some(_) if config.notify.enabled() => Arc::new(Notifier::new(config.notify.clone())),
        _ => Arc::new(NoEvents),
    };
    JobStore::new(backend.ledger.clone(), config.layout.clone(), config.job_retention, events)
}

/// Names the event each transition makes, for the outbox.
pub struct Notifier {
    settings: NotifySettings,
    /// Per running job in this process: when its last progress-like event went out, and what
    /// it said. A job runs in one process at a time, so this is where its throttle belongs.
    progress: Mutex<HashMap<String, (Instant, f64, Stage)>>,
}

impl Notifier {
    pub fn new(settings: NotifySettings) -> Self {
        Self { settings, progress: Mutex::new(HashMap::new()) }
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

impl Events for Notifier {
    fn event_of(&self, transition: &Transition<'_>) -> Option<String> {
        let status = transition.after;
        let kind = event_type(transition.event, transition.before, status)?;
        (self.wanted(kind, status) && self.admit(kind, status)).then(|| kind.to_string())
    }
}
