//! `DELETE /v1/jobs/{id}`: the lifecycle's cancel transition (a compare-and-swap: it cannot
//! overwrite a completion) for a job that has not ended; for one that has, deleting its folder.
//! A running attempt sees a cancellation at its next heartbeat, and a queued message is
//! dropped when it is delivered, its job having ended.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;

use super::stored_status;
use crate::api::ApiState;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ApiPath, ApiResult, ErrorResponse};
use crate::api::model::DeleteOutcome;
use crate::domain::status::{JobState, JobStatus};
use crate::jobs::{self, Applied, Refused};

/// The note a cancellation leaves in the job's timeline.
const CANCEL_NOTE: &str = "cancel requested through the API";

/// Cancels a queued or running job; for a job that ended, deletes its outputs.
///
/// A cancellation answers 202: the status says `cancelled` at once (a compare-and-swap, so it
/// never overwrites an ending that came first), and a running attempt stops at its worker's
/// next heartbeat, uploading nothing more. A job already committing its outputs, or that ended
/// in between, answers 409. Deleting outputs removes the job's folder, which holds only its own
/// files, and marks the job's status.
#[utoipa::path(delete, operation_id = "delete_job", path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")),
    responses(
        (status = 200, description = "The job had ended: its outputs were deleted", body = DeleteOutcome),
        (status = 202, description = "The job is cancelled; a running attempt stops shortly", body = DeleteOutcome),
        (status = 400, description = "Not a job id", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 404, description = "No such job", body = ErrorResponse),
        (status = 409, description = "Too late to cancel: the job is committing its outputs, or ended meanwhile", body = ErrorResponse),
    ))]
pub async fn delete(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<DeleteOutcome>)> {
    let status = stored_status(&state, &caller, &id).await?;
    if !status.state.is_terminal() {
        let cancel = jobs::Event::Cancel { note: CANCEL_NOTE.into() };
        return match state.store.apply(&id, &cancel).await? {
            Applied::Done { status: cancelled, .. } => {
                // A running attempt clears its job's folder when it stops; a job waiting for its
                // next attempt has no run to do it (a split job's pieces, an earlier manifest).
                if status.state != JobState::Running {
                    jobs::tidy::after_end(state.backend.storage.as_ref(), &cancelled).await;
                }
                let status = cancelled;
                tracing::info!(job_id = %id, "Job cancelled.");
                let outcome =
                    DeleteOutcome { job_id: id, action: "cancelled".into(), state: status.state, deleted: Vec::new() };
                Ok((StatusCode::ACCEPTED, Json(outcome)))
            }
            Applied::Refused { reason: Refused::Finishing, .. } => Err(ApiError::new(
                StatusCode::CONFLICT,
                "job_finishing",
                "the job is committing its outputs and can no longer be cancelled",
            )),
            // It ended between our read and the cancellation: say so rather than delete the
            // outputs the caller did not ask to delete.
            Applied::Refused { current, .. } => Err(ApiError::new(
                StatusCode::CONFLICT,
                "job_ended",
                format!(
                    "the job ended ({}) before it could be cancelled; DELETE again to delete its outputs",
                    current.map(|s| s.state.as_str().to_string()).unwrap_or_default()
                ),
            )),
        };
    }
    let deleted = delete_outputs(&state, &status).await?;
    let outcome = DeleteOutcome { job_id: id, action: "outputs_deleted".into(), state: status.state, deleted };
    Ok((StatusCode::OK, Json(outcome)))
}

/// Deletes everything in the job's folder, which holds this job's files only (every attempt's),
/// the manifest first: while it exists, readers take the folder for complete.
async fn delete_outputs(state: &ApiState, status: &JobStatus) -> ApiResult<Vec<String>> {
    let storage = state.backend.storage.as_ref();
    let folder = &status.job.output_dir;
    let mut keys = storage.list(folder).await?;
    let manifest = crate::domain::keys::manifest_key(folder);
    keys.sort_by_key(|key| *key != manifest);
    for key in &keys {
        storage.delete(key).await?;
    }
    if !keys.is_empty() {
        state.store.apply(&status.job_id, &jobs::Event::OutputsDeleted { files: keys.len() }).await?;
        tracing::info!(job_id = %status.job_id, deleted = keys.len(), "Job outputs deleted.");
    }
    Ok(keys)
}
