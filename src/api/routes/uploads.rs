//! Uploads: a client asks where to put a file, PUTs it there, and the upload's event makes a
//! job with the deployment's default presets, exactly as for any other upload.
//!
//! The job id of an upload derives from its write (see
//! [`crate::domain::job::job_id_for_object`]). On the local backend the PUT goes through this
//! API, and the write's ETag names it, so the answer carries the job id. On S3 the id derives
//! from the event's sequencer, which only the event carries: the client asks
//! `GET /v1/uploads/{key}`, which finds the job through the source index the worker writes
//! when it takes the upload (null until then).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use chrono::Utc;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{SignatureQuery, key_under, status_path, upload_path};
use crate::api::ApiState;
use crate::api::auth::{Caller, Signed, unix_now};
use crate::api::config::UPLOAD_RATE_GRACE;
use crate::api::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorResponse, clip};
use crate::api::model::{CreateUploadRequest, MAX_CONTENT_TYPE, MAX_FILE_NAME, UploadInfo, UploadTicket};
use crate::domain::event::makes_default_job;
use crate::domain::job::job_id_for_object;
use crate::domain::keys::validate_key;
use crate::jobs;
use crate::storage::ObjectInfo;

/// S3 takes at most this much in one PUT.
const S3_MAX_PUT: u64 = 5 << 30;
/// Upload bodies are written to the temp file in chunks about this large.
const WRITE_BUFFER: usize = 1 << 20;

/// `type/subtype` made of RFC 9110 token characters, optionally with parameters.
fn valid_content_type(value: &str) -> bool {
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b));
    let essence = value.split(';').next().unwrap_or("");
    value.len() <= MAX_CONTENT_TYPE
        && HeaderValue::from_str(value).is_ok()
        && !value.contains(';')
        && essence.split_once('/').is_some_and(|(t, s)| token(t) && token(s))
}

/// Where to upload one file: a fresh key under the upload prefix, and a URL valid for
/// `MEDIA_PRESIGN_EXPIRY`.
#[utoipa::path(post, operation_id = "create_upload", path = "/v1/uploads", tag = "uploads", request_body = CreateUploadRequest,
    responses(
        (status = 201, description = "Upload here", body = UploadTicket),
        (status = 400, description = "Malformed JSON", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 415, description = "Not JSON", body = ErrorResponse),
        (status = 422, description = "Invalid fields, a file above the size limit, or (on S3) no size", body = ErrorResponse),
    ))]
pub async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<CreateUploadRequest>,
) -> ApiResult<(StatusCode, Json<UploadTicket>)> {
    checked_file(&request.filename, &request.content_type)?;
    let limit = max_upload(&state);
    if let Some(size) = request.size
        && size > limit
    {
        return Err(ApiError::unprocessable("too_large", format!("uploads are limited to {limit} bytes")));
    }
    // On S3 the size is what bounds an upload: it is signed into the URL, so S3 refuses any
    // other length. The local backend counts the bytes it receives itself.
    if request.size.is_none() && !state.is_local() {
        return Err(ApiError::unprocessable(
            "size_required",
            "send the file's size: it is signed into the upload URL (the store refuses any other length)",
        ));
    }
    let key = new_upload_key(&state, &caller, &request.filename)?;

    let expiry = state.api.presign_expiry;
    let expires_at = Utc::now() + chrono::Duration::from_std(expiry).unwrap_or_else(|_| chrono::Duration::minutes(15));
    let (method, url, headers) = match state
        .backend
        .uploads
        .presign_put(&key, &request.content_type, request.size, expiry)
        .await?
    {
        Some(presigned) => {
            let headers =
                presigned.headers.into_iter().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect();
            (presigned.method, presigned.url, headers)
        }
        None => {
            let expires = unix_now() + expiry.as_secs();
            let signed =
                Signed { method: "PUT", key: &key, expires, content_type: Some(&request.content_type), length: None };
            let signature = state.signer.sign(&signed)?;
            let url = format!("{}?expires={expires}&signature={signature}", state.key_url("uploads", &key));
            let headers = BTreeMap::from([("content-type".to_string(), request.content_type.clone())]);
            ("PUT".to_string(), url, headers)
        }
    };
    tracing::info!(key, "Upload URL issued.");
    let ticket = UploadTicket { upload_url: upload_path(&state, &key), key, method, url, headers, expires_at };
    Ok((StatusCode::CREATED, Json(ticket)))
}

/// The largest single-PUT upload this deployment takes.
fn max_upload(state: &ApiState) -> u64 {
    if state.is_local() { state.api.max_upload } else { state.api.max_upload.min(S3_MAX_PUT) }
}

/// A user's file name and content type, as uploads take them.
pub(super) fn checked_file(filename: &str, content_type: &str) -> ApiResult<()> {
    let name_chars = filename.chars().count();
    if name_chars == 0 || name_chars > MAX_FILE_NAME {
        return Err(ApiError::unprocessable(
            "invalid_filename",
            format!("filename must be 1 to {MAX_FILE_NAME} characters"),
        ));
    }
    if !valid_content_type(content_type) {
        return Err(ApiError::unprocessable(
            "invalid_content_type",
            format!("content_type must look like `video/mp4`, got `{}`", clip(content_type)),
        ));
    }
    Ok(())
}

/// A fresh key for the caller's upload of `filename`, in a folder of its own.
pub(super) fn new_upload_key(state: &ApiState, caller: &Caller, filename: &str) -> ApiResult<String> {
    let folder = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let key = caller.scope.upload_key(&state.config.layout, &folder, filename);
    validate_key(&key).map_err(|e| ApiError::unprocessable("invalid_filename", e.to_string()))?;
    Ok(key)
}

/// The headers of a presigned request a client must send itself. `Host` and `Content-Length`
/// are left out: every HTTP client sets them from the URL and the body, and browsers refuse to
/// have them set.
pub(super) fn headers_to_send(headers: Vec<(String, String)>) -> BTreeMap<String, String> {
    headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .filter(|(name, _)| name != "host" && name != "content-length")
        .collect()
}

/// Local backend: receives the file of a signed upload URL, streaming it to storage.
#[utoipa::path(put, operation_id = "put_upload", path = "/v1/uploads/{key}", tag = "uploads",
    params(("key" = String, Path, description = "The upload's key, as in the signed URL"), SignatureQuery,
        ("content-type" = String, Header, description = "The content type the URL was signed for")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file"),
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Stored; its event makes the job", body = UploadInfo),
        (status = 400, description = "Malformed path or query", body = ErrorResponse),
        (status = 401, description = "No signature", body = ErrorResponse),
        (status = 403, description = "Wrong or expired signature, or another content type", body = ErrorResponse),
        (status = 404, description = "Not the local backend (uploads go straight to S3)", body = ErrorResponse),
        (status = 408, description = "The body was silent too long, or slower than the minimum rate", body = ErrorResponse),
        (status = 413, description = "Above MEDIA_API_MAX_UPLOAD", body = ErrorResponse),
        (status = 422, description = "A key outside the upload prefix or failing the key checks", body = ErrorResponse),
        (status = 429, description = "Too many uploads are being received on this instance", body = ErrorResponse),
    ))]
pub async fn put(
    State(state): State<ApiState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<SignatureQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<UploadInfo>)> {
    if !state.is_local() {
        return Err(ApiError::not_found("not_found", "on this deployment uploads go straight to S3"));
    }
    key_under(&key, state.config.layout.upload_prefix())?;
    let (Some(expires), Some(signature)) = (query.expires, query.signature.as_deref()) else {
        return Err(ApiError::unauthorized(
            "this URL needs the `expires` and `signature` that POST /v1/uploads returns",
        ));
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    state.signer.verify(
        &Signed { method: "PUT", key: &key, expires, content_type: Some(content_type), length: None },
        signature,
    )?;

    let limit = state.api.max_upload;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(format!("uploads are limited to {limit} bytes")));
    }
    let temp = receive_to_temp_file(&state, body, limit).await?;
    let stored: ObjectInfo = state.backend.storage.put_file(&key, &temp, content_type).await?;
    drop(temp);
    let job_id = makes_default_job(&key)
        .then(|| job_id_for_object(&state.backend.bucket, &key, stored.etag.as_deref().unwrap_or_default()));
    tracing::info!(key, size = stored.size, job_id, "Upload stored.");
    let info = UploadInfo {
        status_url: job_id.as_deref().map(status_path),
        key,
        size: stored.size,
        etag: stored.etag,
        job_id,
    };
    Ok((StatusCode::CREATED, Json(info)))
}

/// Streams a request body into a temp file (removed when the returned path is dropped, also
/// when the client gives up half-way), refusing more than `limit` bytes.
pub(super) async fn receive_to_temp_file(state: &ApiState, body: Body, limit: u64) -> ApiResult<tempfile::TempPath> {
    let dir = state.config.work_dir.join("media-api");
    let temp = async {
        tokio::fs::create_dir_all(&dir).await?;
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || tempfile::Builder::new().prefix("upload-").tempfile_in(dir))
            .await
            .map_err(std::io::Error::other)?
    }
    .await
    .map_err(|e| ApiError::Unavailable(anyhow::Error::new(e).context(format!("temp file in {}", dir.display()))))?;
    let (file, path) = temp.into_parts();
    let mut writer = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file));
    let mut received = 0u64;
    let mut stream = body.into_data_stream();
    let (idle, min_rate) = (state.api.upload_idle_timeout, state.api.upload_min_rate);
    let started = Instant::now();
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => return Err(too_slow(format!("the upload sent nothing for {idle:?}"))),
        };
        let chunk =
            chunk.map_err(|e| ApiError::bad_request("upload_interrupted", format!("the upload broke off: {e}")))?;
        received += chunk.len() as u64;
        if below_rate(received, started.elapsed(), min_rate) {
            return Err(too_slow(format!("the upload is slower than {min_rate} bytes per second")));
        }
        if received > limit {
            return Err(ApiError::too_large(format!("uploads are limited to {limit} bytes")));
        }
        writer
            .write_all(&chunk)
            .await
            .map_err(|e| ApiError::Unavailable(anyhow::Error::new(e).context("writing the upload")))?;
    }
    writer.flush().await.map_err(|e| ApiError::Unavailable(anyhow::Error::new(e).context("writing the upload")))?;
    Ok(path)
}

/// Whether `received` bytes after `elapsed` fall short of `min_rate` per second, counted from
/// the end of the grace period.
fn below_rate(received: u64, elapsed: Duration, min_rate: u64) -> bool {
    match elapsed.checked_sub(UPLOAD_RATE_GRACE) {
        Some(held) => (received as f64) < min_rate as f64 * held.as_secs_f64(),
        None => false,
    }
}

/// A client too slow to keep an upload permit: 408, and the connection closes.
fn too_slow(message: String) -> ApiError {
    ApiError::new(StatusCode::REQUEST_TIMEOUT, "upload_too_slow", message)
}

/// An uploaded file and the id of the job its arrival made (on S3: once a worker has taken
/// it, null before). Use this after a direct upload to S3.
#[utoipa::path(get, operation_id = "get_upload", path = "/v1/uploads/{key}", tag = "uploads",
    params(("key" = String, Path, description = "The upload's key")),
    responses(
        (status = 200, description = "The upload and its job", body = UploadInfo),
        (status = 400, description = "Malformed path", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 404, description = "Nothing was uploaded at this key", body = ErrorResponse),
        (status = 422, description = "A key outside the upload prefix or failing the key checks", body = ErrorResponse),
    ))]
pub async fn info(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<UploadInfo>> {
    key_under(&key, state.config.layout.upload_prefix())?;
    let missing = || ApiError::not_found("upload_not_found", format!("nothing is stored at `{}`", clip(&key)));
    // Another tenant's upload is as absent as a missing one.
    if !caller.scope.owns(&state.config.layout, &key) {
        return Err(missing());
    }
    let Some(object) = state.backend.storage.head(&key).await? else {
        return Err(missing());
    };
    Ok(Json(describe_upload(&state, key, object).await?))
}

/// An upload and the job its arrival made (on S3 found through the source index, so null
/// until a worker has taken it).
pub(super) async fn describe_upload(state: &ApiState, key: String, object: ObjectInfo) -> ApiResult<UploadInfo> {
    let etag = object.etag.clone().unwrap_or_default();
    let job_id = if !makes_default_job(&key) {
        None
    } else if state.is_local() {
        Some(job_id_for_object(&state.backend.bucket, &key, &etag))
    } else {
        jobs::job_of_write(&state.store, &key, &etag).await.map_err(ApiError::Unavailable)?.map(|s| s.job_id)
    };
    let status_url = job_id.as_deref().map(status_path);
    Ok(UploadInfo { status_url, key, size: object.size, etag: object.etag, job_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_held_to_the_rate_after_the_grace_period() {
        let rate = 1000;
        assert!(!below_rate(0, UPLOAD_RATE_GRACE, rate), "nothing is asked during the grace period");
        assert!(!below_rate(1, Duration::from_secs(1), rate));
        let later = UPLOAD_RATE_GRACE + Duration::from_secs(4);
        assert!(below_rate(3999, later, rate));
        assert!(!below_rate(4000, later, rate));
    }

    #[test]
    fn content_types_are_plain_media_types() {
        for ok in ["video/mp4", "video/quicktime", "application/octet-stream", "video/x-matroska"] {
            assert!(valid_content_type(ok), "{ok}");
        }
        for bad in ["", "video", "video/", "/mp4", "video/mp4\r\nx: y", "vidéo/mp4", "video/mp4; charset=x", "a b/c"] {
            assert!(!valid_content_type(bad), "{bad:?}");
        }
    }
}
