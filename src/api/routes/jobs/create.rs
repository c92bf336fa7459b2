//! `POST /v1/jobs`: what the client asks for, checked against its scope and the deployment,
//! made into a [`NewJob`] and handed to the [`Submitter`], as `media-worker submit` does.
//!
//! What is the API's own stays here: the `input` shape, the caller's scope (another tenant's
//! upload or folder is as absent as a missing one), the URL guards on imports and webhooks, and
//! the `Idempotency-Key` claim. The job's rules (its folder, its pin, replays) are
//! [`crate::jobs::submit`](mod@crate::jobs::submit)'s.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::ApiState;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ApiJson, ApiResult, ErrorResponse, clip};
use crate::api::idempotency::{self, Claim, REPLAYED};
use crate::api::model::{CreateJobRequest, JobInput, JobView};
use crate::api::routes::view::job_view;
use crate::api::routes::{key_under, status_path};
use crate::domain::delivery::CaptionTrack;
use crate::domain::job::{ImportSource, MAX_URL_LENGTH, NotifyTarget, OutputRequest, new_job_id};
use crate::domain::keys::{IMPORTS_FOLDER, sanitize_file_name};
use crate::domain::status::JobStatus;
use crate::jobs::{IfExists, NewJob, SubmitError, Submitter};

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
    let submitter = Submitter::new(&state.store, &state.backend, state.config.max_attempts);
    let job = new_job(&state, &caller, &submitter, job_id, request).await?;
    if idempotency.is_some() {
        let asked = idempotency::Request {
            source_key: &job.source_key,
            outputs: &job.outputs,
            output_dir: &job.output_dir,
            notify: job.notify.as_ref(),
            import: job.import.as_ref(),
            split: job.split.as_ref(),
            repackage: None,
        };
        // Claimed before anything is sent: a racing request with another body is refused here.
        let claimed =
            idempotency::claim(state.store.ledger().as_ref(), &job.job_id, &asked, state.config.job_retention);
        if claimed.await? == Claim::Other {
            return Err(idempotency::reused());
        }
    }
    // An existing job under an idempotent id is the same request again (compared here too for
    // jobs made before claims were recorded): the same job. A fresh id names no job yet.
    let if_exists = if idempotency.is_some() { IfExists::Replay } else { IfExists::FreshId };
    let submitted = submitter.submit(job, if_exists).await.map_err(refusal)?;
    let mut response = accepted(&state, submitted.status).await?;
    if !submitted.created {
        response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The job the request asks for, in the caller's scope, every URL it names checked now.
async fn new_job(
    state: &ApiState,
    caller: &Caller,
    submitter: &Submitter<'_>,
    job_id: String,
    request: CreateJobRequest,
) -> ApiResult<NewJob> {
    let layout = &state.config.layout;
    let (source_key, import) = source(state, caller, &job_id, request.input).await?;
    key_under(&source_key, layout.upload_prefix())?;
    // Another tenant's upload is as absent as a missing one.
    if !caller.scope.owns(layout, &source_key) {
        return Err(refusal(SubmitError::SourceMissing(source_key)));
    }
    caption_files(state, caller, &request.outputs).await?;
    if let Some(watermark) = &request.watermark {
        own_upload(state, caller, &watermark.key, "watermark_not_found", "watermark image").await?;
    }
    let notify = match request.notify {
        Some(target) => Some(notify_target(state, target).await?),
        None => None,
    };
    // The job's own folder, under the folder the client named, or beside the source's other
    // jobs: never shared with another job.
    let mut job = NewJob::new(layout, job_id, source_key, request.outputs);
    if let Some(prefix) = request.output_prefix.as_deref() {
        output_folder(state, caller, submitter, prefix).await?;
        job = job.in_folder(prefix);
    }
    Ok(NewJob {
        notify,
        split: request.split,
        import,
        qc: request.qc,
        loudness: request.loudness,
        watermark: request.watermark,
        ..job
    })
}

/// The source key the `input` names, and what to fetch into it when it names a URL: a folder
/// of the job's own under the caller's uploads.
async fn source(
    state: &ApiState,
    caller: &Caller,
    job_id: &str,
    input: JobInput,
) -> ApiResult<(String, Option<ImportSource>)> {
    match (input.key, input.url) {
        (Some(key), None) => Ok((key, None)),
        (None, Some(url)) => {
            let url = import_url(state, url).await?;
            let folder = format!("{IMPORTS_FOLDER}{job_id}");
            Ok((
                caller.scope.upload_key(&state.config.layout, &folder, &file_name_of(&url)),
                Some(ImportSource { url }),
            ))
        }
        _ => Err(ApiError::unprocessable(
            "invalid_input",
            "`input` takes exactly one of `key` (an upload) and `url` (a source to fetch)",
        )),
    }
}

/// An output folder a client asked for: a folder strictly under the caller's output root, and
/// inside no job's folder ([`Submitter::check_folder`]). The job's own folder is
/// `<prefix><new job id>/`, so it can neither hold another job's files nor be deleted with
/// another job's.
async fn output_folder(state: &ApiState, caller: &Caller, submitter: &Submitter<'_>, prefix: &str) -> ApiResult<()> {
    let layout = &state.config.layout;
    let root = caller.scope.output_root(layout);
    let under_root = prefix.starts_with(&root) && prefix.len() > root.len() && caller.scope.owns(layout, prefix);
    if !prefix.ends_with('/') || !under_root {
        return Err(ApiError::unprocessable(
            "invalid_output_prefix",
            format!("output_prefix must be a folder under `{root}`, ending in `/`"),
        ));
    }
    submitter.check_folder(prefix, layout.output_prefix()).await.map_err(refusal)
}

/// Every caption file an output names: among the uploads, the caller's own, and stored (another
/// tenant's file is as absent as a missing one).
async fn caption_files(state: &ApiState, caller: &Caller, outputs: &[OutputRequest]) -> ApiResult<()> {
    for output in outputs {
        caption_tracks(state, caller, output.captions.as_deref().unwrap_or_default()).await?;
    }
    Ok(())
}

/// [`caption_files`] for a list of tracks.
pub(super) async fn caption_tracks(state: &ApiState, caller: &Caller, tracks: &[CaptionTrack]) -> ApiResult<()> {
    for track in tracks {
        own_upload(state, caller, &track.key, "captions_not_found", "caption file").await?;
    }
    Ok(())
}

/// A file a job reads from the caller's uploads besides its source (a caption file, a
/// watermark image): under the upload prefix, in the caller's scope, and stored. Another
/// tenant's file is as absent as a missing one: 422 with `code`.
async fn own_upload(state: &ApiState, caller: &Caller, key: &str, code: &'static str, what: &str) -> ApiResult<()> {
    let layout = &state.config.layout;
    key_under(key, layout.upload_prefix())?;
    let stored = caller.scope.owns(layout, key) && state.backend.storage.head(key).await?.is_some();
    if !stored {
        let message = format!("no {what} is stored at `{}`; upload it first", clip(key));
        return Err(ApiError::unprocessable(code, message));
    }
    Ok(())
}

/// A job not made, as the API says it.
pub(super) fn refusal(err: SubmitError) -> ApiError {
    let unprocessable = ApiError::unprocessable;
    match err {
        SubmitError::SourceMissing(key) => {
            unprocessable("source_not_found", format!("nothing is stored at `{}`; upload it first", clip(&key)))
        }
        SubmitError::Invalid(e) => unprocessable("invalid_job", e.to_string()),
        SubmitError::NotAFolder { folder, reason } => {
            unprocessable("invalid_output_prefix", format!("output_prefix `{}` refused: {reason}", clip(&folder)))
        }
        SubmitError::InsideJob { folder, job_id } => unprocessable(
            "invalid_output_prefix",
            format!(
                "output_prefix `{}` is inside the folder of job `{job_id}`; choose a folder of your own",
                clip(&folder)
            ),
        ),
        SubmitError::Reused(_) => idempotency::reused(),
        SubmitError::Storage(e) => e.into(),
        SubmitError::Ledger(e) => e.into(),
        SubmitError::Unavailable(e) => ApiError::Unavailable(e),
    }
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

pub(super) async fn accepted(state: &ApiState, status: JobStatus) -> ApiResult<Response> {
    let location = HeaderValue::from_str(&status_path(&status.job_id))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("job path as a header: {e}")))?;
    let view = job_view(state, status).await?;
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(view)).into_response())
}
