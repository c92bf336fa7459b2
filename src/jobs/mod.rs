//! The job lifecycle: the one owner of `jobs/<id>.json`.
//!
//! - [`machine`]: the state machine, pure: `(status, event) -> status | refused`, with the table
//!   of every transition.
//! - [`store`]: [`JobStore`] applies events by compare-and-swap on the job's record in the
//!   ledger ([`crate::ledger`]), each with the notification event it makes ([`Events`]),
//!   stored together: notifications hang off this one point.
//! - [`attempt`]: [`Attempt`], the fenced handle a running attempt writes through.
//! - [`tidy`]: what an ended job leaves in its folder, cleared by whoever learns it ended.
//!
//! The worker (intake, attempts, reaper, dead-letter sweep), the API and the CLI change a job's
//! status only through these; nothing else writes status documents.

pub mod attempt;
pub mod machine;
pub mod store;
pub mod tidy;

pub use attempt::{Attempt, AttemptError};
pub use machine::{Event, Refused};
pub use store::{Applied, Events, JobStore, NoEvents, Stored, Transition};

use crate::domain::job::{JobMessage, JobSpec};
use crate::domain::status::JobStatus;
use crate::queue::{Queue, SendOptions};

/// Publishes a new job (attempt 1), then records it as queued, and returns its status.
///
/// The message goes first so that a crash in between can never leave a queued job that no
/// message will ever start: a worker taking the message before the status exists creates it.
/// If that already happened, the stored status is returned.
pub async fn submit(
    store: &JobStore,
    ready: &dyn Queue,
    job: &JobSpec,
    max_attempts: u32,
) -> anyhow::Result<JobStatus> {
    ready.send(&JobMessage::new(job.clone(), 1).to_json(), SendOptions::default()).await?;
    let event = Event::Submit { job: job.clone(), max_attempts };
    match store.apply(&job.job_id, &event).await? {
        Applied::Done { status, .. } => Ok(status),
        Applied::Refused { current: Some(status), .. } => Ok(status),
        Applied::Refused { reason, current: None } => {
            anyhow::bail!("job {} could not be recorded: {reason}", job.job_id)
        }
    }
}

/// The job made from the write of `source_key` whose ETag is `etag`, once a worker has taken
/// it (the newest, should there be several).
pub async fn job_of_write(store: &JobStore, source_key: &str, etag: &str) -> anyhow::Result<Option<JobStatus>> {
    let jobs = store.ledger().of_write(source_key, etag).await?;
    Ok(jobs.into_iter().find(|s| s.job.source_key == source_key && s.job.source.etag.as_deref() == Some(etag)))
}
