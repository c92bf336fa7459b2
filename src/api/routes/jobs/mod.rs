//! Jobs, a file per handler group: submit (`create.rs`), list and read (`read.rs`), cancel
//! and delete outputs (`cancel.rs`); following a job is [`super::events`], what a job looks
//! like to its caller [`super::view`]. The job's own rules are [`crate::jobs::submit`](mod@crate::jobs::submit)'s.
//!
//! Submission is [`crate::jobs::Submitter`], as for `media-worker submit`: the message on the
//! ready queue, then the `queued` status. Cancellation is the lifecycle's cancel transition.

mod cancel;
mod captions;
mod create;
mod read;

pub use cancel::{__path_delete, delete};
pub use captions::{__path_add_captions, add_captions};
pub use create::{__path_create, create};
pub use read::{__path_get, __path_list, get, list};

use crate::api::ApiState;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ApiResult};
use crate::domain::keys::validate_job_id;
use crate::domain::status::JobStatus;

fn checked_job_id(id: &str) -> ApiResult<()> {
    validate_job_id(id).map_err(|e| ApiError::bad_request("invalid_job_id", e.to_string()))
}

/// The caller's job: another scope's job is as absent as a missing one.
pub(super) async fn stored_status(state: &ApiState, caller: &Caller, id: &str) -> ApiResult<JobStatus> {
    checked_job_id(id)?;
    let missing = || ApiError::not_found("job_not_found", format!("there is no job `{id}`"));
    let status = state.store.read(id).await?.ok_or_else(missing)?;
    if !caller.scope.owns_job(&state.config.layout, &status.job) {
        return Err(missing());
    }
    Ok(status)
}
