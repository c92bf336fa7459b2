//! The job lifecycle: the one owner of `jobs/<id>.json`.
//!
//! - [`machine`]: the state machine, pure: `(status, event) -> status | refused`, with the table
//!   of every transition.
//! - [`store`]: [`JobStore`] applies events by compare-and-swap on the job's record in the
//!   ledger ([`crate::ledger`]), each with the notification event it makes ([`Events`]),
//!   stored together: notifications hang off this one point.
//! - [`submit`](mod@submit): [`Submitter`], the one maker of jobs from what a caller asks for ([`NewJob`]):
//!   the API, `media-worker submit` and the redrive of a failed job.
//! - [`attempt`]: [`Attempt`], the fenced handle a running attempt writes through.
//! - [`tidy`]: what an ended job leaves in its folder, cleared by whoever learns it ended.
//!
//! The worker (intake, attempts, reaper, dead-letter sweep), the API and the CLI change a job's
//! status only through these; nothing else writes status documents.

pub mod attempt;
pub mod machine;
pub mod store;
pub mod submit;
pub mod tidy;

pub use attempt::{Attempt, AttemptError};
pub use machine::{Event, Refused};
pub use store::{Applied, Events, JobStore, NoEvents, Stored, Transition};
pub use submit::{IfExists, NewJob, SubmitError, Submitted, Submitter, submit};

use crate::domain::status::JobStatus;

/// The job made from the write of `source_key` whose ETag is `etag`, once a worker has taken
/// it (the newest, should there be several).
pub async fn job_of_write(store: &JobStore, source_key: &str, etag: &str) -> anyhow::Result<Option<JobStatus>> {
    let jobs = store.ledger().of_write(source_key, etag).await?;
    Ok(jobs.into_iter().find(|s| s.job.source_key == source_key && s.job.source.etag.as_deref() == Some(etag)))
}
