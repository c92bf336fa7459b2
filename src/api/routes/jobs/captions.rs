//! `POST /v1/jobs/{id}/captions`: caption tracks added to a completed job's `cmaf` output by a
//! new job that only packages (the renditions are copied, not encoded; the completed job is
//! left as it is). The caller's scope, the caption files and the `Idempotency-Key` are checked
//! as job creation checks them; the job is made by the [`Submitter`].

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::create::{accepted, caption_tracks, refusal};
use super::stored_status;
use crate::api::ApiState;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorResponse};
use crate::api::idempotency::{self, Claim, REPLAYED};
use crate::api::model::{AddCaptionsRequest, JobView};
use crate::domain::job::{RepackageError, new_job_id};
use crate::domain::status::JobState;
use crate::jobs::{IfExists, NewJob, Submitter};

/// Adds caption tracks to a completed job's `cmaf` output, without encoding anything.
///
/// A new job copies the completed job's package into a folder of its own, converts the caption
/// files to WebVTT and writes new `master.m3u8` and `manifest.mpd` announcing the old tracks
/// and the new ones. It is followed like any job (`GET /v1/jobs/{id}`, its events, its
/// webhooks); its manifest lists the new `cmaf` output.
#[utoipa::path(post, operation_id = "add_captions", path = "/v1/jobs/{id}/captions", tag = "jobs",
    request_body = AddCaptionsRequest,
    params(("id" = String, Path, description = "The completed job", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries return the same job (1 to 255 printable ASCII characters)",
        max_length = 255, pattern = r"^[ -~]+$")),
    responses(
        (status = 202, description = "The packaging job, queued (or, for a retried Idempotency-Key, the job it made)", body = JobView,
            headers(("location" = String, description = "The new job's path"))),
        (status = 400, description = "Malformed JSON, job id or Idempotency-Key", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 404, description = "No such job", body = ErrorResponse),
        (status = 409, description = "`job_not_completed`: the job has not completed", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 415, description = "Not JSON", body = ErrorResponse),
        (status = 422, description = "`no_cmaf_output`, `captions_not_found`, `caption_language_exists`, invalid tracks, an Idempotency-Key reused for another request", body = ErrorResponse),
    ))]
pub async fn add_captions(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<AddCaptionsRequest>,
) -> ApiResult<Response> {
    let idempotency = idempotency::key_of(&headers)?;
    let old = stored_status(&state, &caller, &id).await?;
    if old.state != JobState::Completed {
        let message = format!("job `{id}` is {}; captions are added to a completed job", old.state.as_str());
        return Err(ApiError::new(StatusCode::CONFLICT, "job_not_completed", message));
    }
    caption_tracks(&state, &caller, &request.captions).await?;
    let job_id = match &idempotency {
        Some(key) => idempotency::job_id(&caller, key),
        None => new_job_id(),
    };
    let layout = &state.config.layout;
    let job = NewJob::repackage(&old.job, job_id, request.captions, request.replace, layout).map_err(|e| match e {
        RepackageError::NoCmafOutput => {
            ApiError::unprocessable("no_cmaf_output", format!("job `{id}` has no cmaf output"))
        }
        RepackageError::LanguageTaken(_) => ApiError::unprocessable("caption_language_exists", e.to_string()),
        RepackageError::Invalid(message) => ApiError::unprocessable("invalid_job", message),
    })?;
    if idempotency.is_some() {
        let asked = idempotency::Request {
            source_key: &job.source_key,
            outputs: &job.outputs,
            output_dir: &job.output_dir,
            notify: None,
            import: None,
            split: None,
            repackage: job.repackage.as_ref(),
        };
        let claimed =
            idempotency::claim(state.store.ledger().as_ref(), &job.job_id, &asked, state.config.job_retention);
        if claimed.await? == Claim::Other {
            return Err(idempotency::reused());
        }
    }
    let if_exists = if idempotency.is_some() { IfExists::Replay } else { IfExists::FreshId };
    let submitter = Submitter::new(&state.store, &state.backend, state.config.max_attempts);
    let submitted = submitter.submit(job, if_exists).await.map_err(refusal)?;
    let mut response = accepted(&state, submitted.status).await?;
    if !submitted.created {
        response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}
