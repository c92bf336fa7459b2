//! Applying [`Event`]s to a job's record in the ledger by compare-and-swap.
//!
//! Each write is conditional on the revision that was read ([`Ledger::put`]), so two writers
//! can never both act on the same version: the loser re-reads, asks the state machine again,
//! and either applies its event to the newer status or learns that it is refused. The event a
//! transition makes for the outside world (a notification) is asked of the store's [`Events`]
//! before the write and stored with it, in the same transaction: a transition and its event
//! are kept together or not at all, and the worker's relay sends it later. Nothing else
//! writes job records.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::machine::{Event, Refused, apply};
use crate::domain::keys::KeyLayout;
use crate::domain::status::JobStatus;
use crate::ledger::{Ledger, LedgerError, LedgerResult, OutboxEvent, Row};

/// A busy job sees a handful of writers at most (its run, a canceller, a reaper); this many
/// lost races in a row means something is wrong.
const MAX_CONFLICTS: u32 = 20;

/// A status as stored, with the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// `None` when there is no record.
    pub status: Option<JobStatus>,
}

impl Stored {
    pub const ABSENT: Stored = Stored { status: None };

    /// The revision a write made from this must find (`None`: no record yet).
    pub fn revision(&self) -> Option<u64> {
        self.status.as_ref().map(|s| s.revision)
    }
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Stored; the new status.
    Done { status: JobStatus },
    /// The state machine refused it against `current` (a lost race, or not allowed).
    Refused { reason: Refused, current: Option<JobStatus> },
}

impl Applied {
    pub fn status(&self) -> Option<&JobStatus> {
        match self {
            Applied::Done { status } => Some(status),
            Applied::Refused { current, .. } => current.as_ref(),
        }
    }
}

/// A transition about to be written.
pub struct Transition<'a> {
    pub event: &'a Event,
    /// The status it is applied to (`None` when it creates the record).
    pub before: Option<&'a JobStatus>,
    /// The status it stores.
    pub after: &'a JobStatus,
}

impl Transition<'_> {
    /// Whether this transition ends the job.
    pub fn ended(&self) -> bool {
        self.after.state.is_terminal() && self.before.is_none_or(|s| !s.state.is_terminal())
    }
}

/// Which event, if any, a transition makes for the outside world; asked before it is written,
/// and stored with it (the outbox). Pure: no I/O here, the relay sends later.
pub trait Events: Send + Sync + 'static {
    /// The event's wire name (`job.completed`), or `None`.
    fn event_of(&self, transition: &Transition<'_>) -> Option<String>;
}

/// No events: a deployment without notifications.
pub struct NoEvents;

impl Events for NoEvents {
    fn event_of(&self, _transition: &Transition<'_>) -> Option<String> {
        None
    }
}

/// The one writer of job records.
#[derive(Clone)]
pub struct JobStore {
    ledger: Arc<dyn Ledger>,
    events: Arc<dyn Events>,
    /// Which scope lists a job follows from its keys under this layout.
    layout: KeyLayout,
    /// How long a record stays after its job ended.
    retention: Duration,
    /// Rung after a write that stored an event, so this process's relay sends it at once.
    wrote_event: Arc<tokio::sync::Notify>,
}

impl JobStore {
    /// The store, storing the events `events` picks with their transitions. There is no store
    /// without an [`Events`]: one that makes none says so ([`NoEvents`]), so a writer can never
    /// skip notifications by the way it was built. The deployment's choice is
    /// [`crate::notify::job_store`].
    pub fn new(ledger: Arc<dyn Ledger>, layout: KeyLayout, retention: Duration, events: Arc<dyn Events>) -> Self {
        Self { ledger, events, layout, retention, wrote_event: Default::default() }
    }

    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// Resolves when this process stored an event since the last call (the relay's wake-up).
    pub async fn event_written(&self) {
        self.wrote_event.notified().await;
    }

    /// The stored status of a job, if it has one.
    pub async fn read(&self, job_id: &str) -> LedgerResult<Option<JobStatus>> {
        self.ledger.get(job_id).await
    }

    pub async fn read_versioned(&self, job_id: &str) -> LedgerResult<Stored> {
        Ok(Stored { status: self.ledger.get(job_id).await? })
    }

    /// Reads the job's status and applies `event` to it.
    pub async fn apply(&self, job_id: &str, event: &Event) -> LedgerResult<Applied> {
        let current = self.read_versioned(job_id).await?;
        self.apply_to(job_id, current, event).await
    }

    /// Writes `next` over exactly the revision of `before`, with the event the transition
    /// makes; `true` when stored.
    async fn write(&self, event: &Event, before: Option<&JobStatus>, next: &JobStatus) -> LedgerResult<bool> {
        let transition = Transition { event, before, after: next };
        let events: Vec<OutboxEvent> = self
            .events
            .event_of(&transition)
            .map(|kind| OutboxEvent { kind, status: next.clone() })
            .into_iter()
            .collect();
        let row = Row::new(next.clone(), &self.layout, self.retention);
        let written = self.ledger.put(&row, before.map(|s| s.revision), &events).await?;
        if written {
            tracing::debug!(job_id = %next.job_id, event = event.name(), state = ?next.state, "Job status changed.");
            if transition.ended() {
                log_ending(next);
            }
            if !events.is_empty() {
                self.wrote_event.notify_one();
            }
        }
        Ok(written)
    }

    /// Applies `event` to exactly the version `current` names, or not at all: no re-read and no
    /// second try after a lost race. For marks that only mean something against the version
    /// they follow (a handover's `Published`): applied to a newer status, they could clear a
    /// later handover's mark. `true` when written.
    pub async fn apply_once(&self, job_id: &str, current: &Stored, event: &Event) -> LedgerResult<bool> {
        let Ok(next) = apply(current.status.as_ref(), event, Utc::now()) else { return Ok(false) };
        if next.job_id != job_id {
            return Ok(false);
        }
        self.write(event, current.status.as_ref(), &next).await
    }

    /// Applies `event` to a status already read (saving a read when the caller's copy is
    /// current); on a lost race, re-reads and tries again.
    pub async fn apply_to(&self, job_id: &str, mut current: Stored, event: &Event) -> LedgerResult<Applied> {
        // What we tried to write last, in case the "conflict" was our own write: a retried
        // write whose answer was lost finds its own write in place.
        let mut attempted: Option<JobStatus> = None;
        let clock = std::time::Instant::now();
        for conflicts in 0..MAX_CONFLICTS {
            if let (Some(mine), Some(stored)) = (&attempted, &current.status)
                && mine == stored
            {
                return Ok(Applied::Done { status: mine.clone() });
            }
            let next = match apply(current.status.as_ref(), event, Utc::now()) {
                Ok(next) => next,
                Err(reason) => return Ok(Applied::Refused { reason, current: current.status }),
            };
            if self.write(event, current.status.as_ref(), &next).await? {
                tracing::debug!(
                    job_id,
                    event = event.name(),
                    write_us = clock.elapsed().as_micros() as u64,
                    "Status written."
                );
                return Ok(Applied::Done { status: next });
            }
            tracing::debug!(job_id, event = event.name(), conflicts, "Job status changed under us; re-reading.");
            attempted = Some(next);
            // Contention between a few writers clears at once; back off a little anyway.
            tokio::time::sleep(Duration::from_millis(u64::from(conflicts) * 5)).await;
            current = self.read_versioned(job_id).await?;
        }
        Err(LedgerError::unavailable(anyhow::anyhow!(
            "job {job_id}: the status kept changing under `{}` ({MAX_CONFLICTS} lost races)",
            event.name()
        )))
    }
}

/// Logs a job's final state, once: only the writer of the ending transition does.
fn log_ending(status: &JobStatus) {
    tracing::info!(
        job_id = %status.job_id,
        state = ?status.state,
        attempt = status.attempt,
        error = status.error.as_ref().map(|e| e.code.as_str()),
        "Job ended."
    );
}
