//! Jobs: submit, list, read, cancel, and delete outputs; following a job is [`super::events`],
//! what a job looks like to its caller [`super::view`].
//!
//! Submission is [`jobs::submit`], as for `media-worker submit`: the message on the ready queue,
//! then the `queued` status. Cancellation is the lifecycle's cancel transition (a
//! compare-and-swap: it cannot overwrite a completion); the worker sees it at its next
//! heartbeat, and a queued message is dropped when it is delivered, its job having ended.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::view::{job_view, summary};
use super::{key_under, status_path};
use crate::api::ApiState;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorResponse, clip};
use crate::api::idempotency::{self, Claim, REPLAYED};
use crate::api::model::{CreateJobRequest, DeleteOutcome, JobList, JobView, ListJobsQuery};
use crate::domain::job::{ImportSource, JobMessage, JobSpec, MAX_URL_LENGTH, NotifyTarget, SourcePin, new_job_id};
use crate::domain::keys::{IMPORTS_FOLDER, sanitize_file_name, validate_job_id, validate_prefix};
use crate::domain::status::{JobState, JobStatus};
use crate::jobs::{self, Applied, Refused};
use crate::ledger::{Cursor, JobQuery, Listed};
use crate::queue::SendOptions;

/// The note a cancellation leaves in the job's timeline.
const CANCEL_NOTE: &str = "cancel requested through the API";

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

/// An output folder a client asked for: a folder strictly under the caller's output root, and
/// inside no job's folder. The job's own folder is `<prefix><new job id>/`, so it can neither
/// hold another job's files nor be deleted with another job's: a job's folder always ends in
/// its id, so any folder inside one has a job id among its segments, and each segment that
/// could be a job id is looked up.
async fn output_folder(state: &ApiState, caller: &Caller, prefix: &str) -> ApiResult<String> {
    let layout = &state.config.layout;
    let root = caller.scope.output_root(layout);
    let refuse = |why: String| ApiError::unprocessable("invalid_output_prefix", why);
    let under_root = prefix.starts_with(&root) && prefix.len() > root.len() && caller.scope.owns(layout, prefix);
    if !prefix.ends_with('/') || !under_root {
        return Err(refuse(format!("output_prefix must be a folder under `{root}`, ending in `/`")));
    }
    validate_prefix(prefix).map_err(|e| refuse(format!("output_prefix `{}` refused: {e}", clip(prefix))))?;
    let relative = prefix.strip_prefix(layout.output_prefix()).unwrap_or(prefix);
    for segment in relative.split('/').filter(|s| validate_job_id(s).is_ok()) {
        if state.store.read(segment).await?.is_some() {
            return Err(refuse(format!(
                "output_prefix `{}` is inside the folder of job `{segment}`; choose a folder of your own",
                clip(prefix)
            )));
        }
    }
    Ok(prefix.to_string())
}

/// Submits a job for an uploaded file, or for a file a worker fetches from a URL.
///
/// With an `Idempotency-Key`, a retry of the same request returns the same job (and
/// republishes it if it is still waiting, in case the first attempt never got that far); the
/// same key with a different request is refused.
#[utoipa::path(post, operation_id = "create_job", path = "/v1/jobs", tag = "jobs", request_body = CreateJobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries return the same job (1 to 255 printable ASCII characters)",
        max_length = 255, pattern = r"^[ -~]+$")),
    responses(
        (status = 202, description = "Queued (or, for a retried Idempotency-Key, the job it made)", body = JobView,
            headers(("location" = String, description = "The job's path"))),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 415, description = "Not JSON", body = ErrorResponse),
        (status = 422, description = "Unknown fields or presets, an invalid or missing input, an Idempotency-Key reused for another request", body = ErrorResponse),
    ))]
pub async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateJobRequest>,
) -> ApiResult<Response> {
    let idempotency = idempotency::key_of(&headers)?;
    let job_id = match &idempotency {
        Some(key) => idempotency::job_id(&caller, key),
        None => new_job_id(),
    };
    let (source_key, import) = match (request.input.key, request.input.url) {
        (Some(key), None) => (key, None),
        // Fetched by a worker into a folder of the job's own, under the caller's uploads.
        (None, Some(url)) => {
            let url = import_url(&state, url).await?;
            let folder = format!("{IMPORTS_FOLDER}{job_id}");
            (caller.scope.upload_key(&state.config.layout, &folder, &file_name_of(&url)), Some(ImportSource { url }))
        }
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_input",
                "`input` takes exactly one of `key` (an upload) and `url` (a source to fetch)",
            ));
        }
    };
    key_under(&source_key, state.config.layout.upload_prefix())?;
    let source_missing = || {
        ApiError::unprocessable(
            "source_not_found",
            format!("nothing is stored at `{}`; upload it first", clip(&source_key)),
        )
    };
    // Another tenant's upload is as absent as a missing one.
    if !caller.scope.owns(&state.config.layout, &source_key) {
        return Err(source_missing());
    }
    let notify = match request.notify {
        Some(target) => Some(notify_target(&state, target).await?),
        None => None,
    };
    // The job's own folder, under the folder the client named, or beside the source's other
    // jobs: never shared with another job.
    let output_dir = match request.output_prefix.as_deref() {
        Some(prefix) => format!("{}{job_id}/", output_folder(&state, &caller, prefix).await?),
        None => state.config.layout.job_dir(&source_key, &job_id),
    };
    let storage = state.backend.storage.as_ref();
    if idempotency.is_some() {
        let asked = idempotency::Request {
            source_key: &source_key,
            outputs: &request.outputs,
            output_dir: &output_dir,
            notify: notify.as_ref(),
            import: import.as_ref(),
            split: request.split.as_ref(),
        };
        // Claimed before anything is sent: a racing request with another body is refused here.
        let claimed = idempotency::claim(state.store.ledger().as_ref(), &job_id, &asked, state.config.job_retention);
        if claimed.await? == Claim::Other {
            return Err(idempotency::reused());
        }
        if let Some(existing) = state.store.read(&job_id).await? {
            // The same request again: the same job (the source pin is the job's, not the
            // request's). Compared here too for jobs made before claims were recorded.
            let same = existing.job.source_key == source_key
                && existing.job.outputs == request.outputs
                && existing.job.output_dir == output_dir
                && existing.job.notify == notify
                && existing.job.import == import
                && existing.job.split == request.split;
            if !same {
                return Err(idempotency::reused());
            }
            if existing.state == JobState::Queued && existing.attempt == 1 {
                // A duplicate message is refused at start; a missing one would strand the job.
                publish(&state, &existing.job).await?;
            }
            let mut response = accepted(&state, existing).await?;
            response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
            return Ok(response);
        }
    }

    // Pinned to what is stored now: a source replaced before the job runs ends it with
    // `source_changed` instead of transcoding bytes the client never submitted. An import has
    // nothing stored yet, and its folder is the job's alone.
    let pin = match &import {
        Some(_) => SourcePin::default(),
        None => {
            let Some(source) = storage.head(&source_key).await? else {
                return Err(source_missing());
            };
            SourcePin { etag: source.etag, version_id: None, size: Some(source.size) }
        }
    };
    let job = JobSpec {
        job_id,
        source_key,
        outputs: request.outputs,
        output_dir,
        source: pin,
        notify,
        split: request.split,
        import,
    };
    job.validate().map_err(|e| ApiError::unprocessable("invalid_job", e.to_string()))?;
    let status = jobs::submit(&state.store, state.backend.queues.ready.as_ref(), &job, state.config.max_attempts)
        .await
        .map_err(ApiError::Unavailable)?;
    tracing::info!(job_id = %job.job_id, source = %job.source_key, outputs = job.outputs.len(), "Job submitted.");
    accepted(&state, status).await
}

/// A source URL, checked now as a worker checks it again when it fetches: `https` (plain `http`
/// to loopback only with `MEDIA_IMPORT_ALLOW_LOOPBACK`), and every address the host resolves
/// to allowed.
async fn import_url(state: &ApiState, url: String) -> ApiResult<String> {
    if url.len() > MAX_URL_LENGTH {
        return Err(ApiError::unprocessable("fetch_refused", format!("input.url is longer than {MAX_URL_LENGTH}")));
    }
    match state.config.import.guard().check_resolved(&url).await {
        Ok(_) => Ok(url),
        Err(refusal) => {
            tracing::info!(reason = %refusal, "A source URL was refused.");
            Err(ApiError::unprocessable("fetch_refused", format!("input.url refused: {}", refusal.public())))
        }
    }
}

/// The file name an imported source is stored under: the URL's last path segment, decoded and
/// made safe, or `source` when the path has none.
fn file_name_of(url: &str) -> String {
    let last = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.path_segments().and_then(|mut s| s.rfind(|seg| !seg.is_empty()).map(str::to_string)));
    let decoded = last.map(|seg| percent_encoding::percent_decode_str(&seg).decode_utf8_lossy().into_owned());
    match decoded {
        Some(name) if !name.trim().is_empty() => sanitize_file_name(&name),
        _ => "source".to_string(),
    }
}

/// A job's own webhook: only when the deployment signs webhooks, and only to a URL whose host
/// resolves to allowed addresses now (the worker checks again at every connection).
async fn notify_target(state: &ApiState, target: NotifyTarget) -> ApiResult<NotifyTarget> {
    if !state.config.notify.webhooks() || state.backend.queues.notifications.is_none() {
        return Err(ApiError::unprocessable(
            "notifications_disabled",
            "this deployment sends no webhooks (MEDIA_WEBHOOK_SECRET is not set)",
        ));
    }
    if target.url.len() > MAX_URL_LENGTH {
        return Err(ApiError::unprocessable(
            "invalid_notify_url",
            format!("notify.url is longer than {MAX_URL_LENGTH}"),
        ));
    }
    let guard = state.config.notify.guard();
    match guard.check_resolved(&target.url).await {
        Ok(_) => Ok(target),
        Err(refusal) => {
            tracing::info!(reason = %refusal, "A webhook URL was refused.");
            Err(ApiError::unprocessable("invalid_notify_url", format!("notify.url refused: {}", refusal.public())))
        }
    }
}

async fn publish(state: &ApiState, job: &JobSpec) -> ApiResult<()> {
    let message = JobMessage::new(job.clone(), 1).to_json();
    state.backend.queues.ready.send(&message, SendOptions::default()).await.map_err(ApiError::Unavailable)
}

async fn accepted(state: &ApiState, status: JobStatus) -> ApiResult<Response> {
    let location = HeaderValue::from_str(&status_path(&status.job_id))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("job path as a header: {e}")))?;
    let view = job_view(state, status).await?;
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(view)).into_response())
}

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
                    current.map(|s| format!("{:?}", s.state).to_lowercase()).unwrap_or_default()
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
