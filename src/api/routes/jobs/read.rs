//! Reading jobs: the caller's jobs a page at a time, and one job with its downloads.

use axum::Json;
use axum::extract::{Extension, State};

use super::stored_status;
use crate::api::ApiState;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorResponse};
use crate::api::model::{JobList, JobView, ListJobsQuery};
use crate::api::routes::view::{job_view, summary};
use crate::ledger::{Cursor, JobQuery, Listed};

/// Jobs per page of `GET /v1/jobs` unless the client asks otherwise, and at most.
const PAGE: (u32, u32) = (20, 100);

/// The caller's jobs, the most recently created first (ties by id, highest first), a page at a
/// time.
///
/// One query of the job ledger's index of the caller's scope (of one state, with `state`): the
/// same time whatever the number of jobs ever run.
#[utoipa::path(get, operation_id = "list_jobs", path = "/v1/jobs", tag = "jobs", params(ListJobsQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, description = "Malformed query or cursor", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
    ))]
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ListJobsQuery>,
) -> ApiResult<Json<JobList>> {
    let limit = query.limit.unwrap_or(PAGE.0);
    if !(1..=PAGE.1).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("limit must be between 1 and {}", PAGE.1)));
    }
    let after = match query.cursor.as_deref() {
        Some(text) => Some(Cursor::parse(text).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "cursor must be the next_cursor of an earlier page")
        })?),
        None => None,
    };
    let listed = Listed::Scope(caller.scope.label());
    let page = state.store.ledger().list(&JobQuery { listed, state: query.state, after, limit }).await?;
    // The index answers by scope; the keys are checked again, as for a single job.
    let layout = &state.config.layout;
    let jobs = page.jobs.iter().filter(|s| caller.scope.owns_job(layout, &s.job)).map(summary).collect();
    Ok(Json(JobList { jobs, next_cursor: page.next.map(|c| c.to_string()) }))
}

/// A job's status, and when it completed its manifest with a download URL per output.
#[utoipa::path(get, operation_id = "get_job", path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "Not a job id", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 404, description = "No such job", body = ErrorResponse),
    ))]
pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobView>> {
    let status = stored_status(&state, &caller, &id).await?;
    let mut view = job_view(&state, status).await?;
    // Only here (not in every event of a stream): one more small read. The caller sees the
    // attempts to the job's own endpoint only: the deployment's are the operator's.
    if let Some(notify) = &view.notify {
        match crate::notify::record::read(state.store.ledger().as_ref(), &id).await {
            Ok(deliveries) => view.deliveries = Some(deliveries.of_job(Some(&notify.url))),
            Err(err) => tracing::warn!(job_id = %id, error = format!("{err:#}"), "Could not read webhook deliveries."),
        }
    }
    Ok(Json(view))
}
