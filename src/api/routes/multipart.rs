//! Multipart, resumable uploads: create, a signed URL per part, list the parts stored (to
//! resume after a dropped connection or a reloaded page), complete, abort. The calls map one
//! to one onto the custom functions of Uppy's `@uppy/aws-s3` plugin (docs/api.md).
//!
//! On S3 the parts go straight to the bucket: each part's URL signs its length, so S3 refuses
//! a body of any other length. On the local backend the URLs are the API's own, signed the
//! same way, and the API receives the parts. Completion lists the stored parts, checks the
//! client's list against them and the total against `MEDIA_API_MAX_UPLOAD`, then assembles
//! the object, whose arrival makes the job as any upload does. Every part is counted as it is
//! signed ([`signed_parts`]), so no upload is signed past `MEDIA_API_MAX_UPLOAD` in all.
//! Abandoned uploads are removed by the bucket's lifecycle rule (S3) or swept when a new upload
//! starts (local).

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::key_under;
use super::uploads::{checked_file, describe_upload, headers_to_send, new_upload_key, receive_to_temp_file};
use crate::api::auth::{Caller, Signed, unix_now};
use crate::api::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorResponse};
use crate::api::model::{
    CompleteMultipartRequest, CreateMultipartRequest, MultipartUpload, PartList, SignPartRequest, SignedPart,
    UploadInfo, UploadedPart,
};
use crate::api::{ApiState, signed_parts};
use crate::storage::multipart::{MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE};
use crate::storage::{PartInfo, StorageError};

/// Uploads started longer ago than this are abandoned: the bucket's lifecycle rule aborts them
/// after two days on S3, and the local sweep does the same.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(2 * 24 * 3600);

/// Largest body of a completion: 10 000 parts with their ETags fit.
pub const COMPLETE_LIMIT: usize = 4 << 20;

/// The upload a call is about: `?key=` as `POST /v1/multipart-uploads` returned it.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadKey {
    /// The upload's key.
    #[param(min_length = 1, max_length = 1024)]
    pub key: String,
}

/// A part's signed URL on the local backend.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PartQuery {
    /// The upload's key.
    #[param(min_length = 1, max_length = 1024)]
    pub key: String,
    /// The part's signed length.
    pub size: Option<u64>,
    /// Unix seconds after which the URL is refused.
    pub expires: Option<u64>,
    /// Hex HMAC-SHA256 made by the API.
    pub signature: Option<String>,
}

/// The largest file a multipart upload takes here.
fn max_size(state: &ApiState) -> u64 {
    state.api.max_upload.min(MAX_OBJECT_SIZE)
}

/// The caller's upload key: under the upload prefix and in the caller's scope (another
/// tenant's upload is as absent as a missing one).
fn owned_key(state: &ApiState, caller: &Caller, key: &str) -> ApiResult<()> {
    key_under(key, state.config.layout.upload_prefix())?;
    if !caller.scope.owns(&state.config.layout, key) {
        return Err(no_upload());
    }
    Ok(())
}

fn no_upload() -> ApiError {
    ApiError::not_found("upload_not_found", "there is no such multipart upload (completed, aborted or expired?)")
}

/// Upload ids are the store's own (S3's are opaque); one outside the documented shape names no
/// upload, whatever the store would make of it.
fn checked_upload_id(upload_id: &str) -> ApiResult<()> {
    if (1..=1024).contains(&upload_id.len()) && !upload_id.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(no_upload())
    }
}

fn checked_part_number(number: u32) -> ApiResult<()> {
    if (1..=MAX_PARTS).contains(&number) {
        Ok(())
    } else {
        Err(ApiError::unprocessable("invalid_part_number", format!("part numbers go from 1 to {MAX_PARTS}")))
    }
}

/// A storage answer for one upload: a missing upload is 404.
fn upload_error(err: StorageError) -> ApiError {
    match err {
        StorageError::NotFound(_) => no_upload(),
        StorageError::Changed(_) => {
            ApiError::new(StatusCode::CONFLICT, "parts_changed", "a part changed while the upload was completed")
        }
        other => ApiError::from(other),
    }
}

/// Starts a multipart upload of a file of `size` bytes.
#[utoipa::path(post, operation_id = "create_multipart_upload", path = "/v1/multipart-uploads", tag = "uploads",
    request_body = CreateMultipartRequest,
    responses(
        (status = 201, description = "Upload the parts", body = MultipartUpload),
        (status = 400, description = "Malformed JSON", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 415, description = "Not JSON", body = ErrorResponse),
        (status = 422, description = "Invalid fields, or a file above the size limit", body = ErrorResponse),
    ))]
pub async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<CreateMultipartRequest>,
) -> ApiResult<(StatusCode, Json<MultipartUpload>)> {
    checked_file(&request.filename, &request.content_type)?;
    let limit = max_size(&state);
    if request.size == 0 || request.size > limit {
        return Err(ApiError::unprocessable("too_large", format!("uploads are 1 to {limit} bytes")));
    }
    let key = new_upload_key(&state, &caller, &request.filename)?;
    match state.backend.uploads.sweep_multipart(ABANDONED_AFTER).await {
        Ok(0) => {}
        Ok(swept) => tracing::info!(swept, "Removed abandoned multipart uploads."),
        Err(err) => tracing::warn!(error = %err, "Sweeping abandoned multipart uploads failed."),
    }

    let upload_id = state.backend.uploads.create_multipart(&key, &request.content_type).await?;
    // The smallest whole MiB that fits the file in MAX_PARTS parts, and at least the minimum.
    let part_size = request.size.div_ceil(u64::from(MAX_PARTS)).max(MIN_PART_SIZE).next_multiple_of(1 << 20);
    tracing::info!(key, size = request.size, "Multipart upload started.");
    let upload = MultipartUpload {
        key,
        upload_id,
        part_size,
        min_part_size: MIN_PART_SIZE,
        max_part_size: MAX_PART_SIZE,
        max_parts: MAX_PARTS,
    };
    Ok((StatusCode::CREATED, Json(upload)))
}

/// A URL to PUT one part to, its length signed.
#[utoipa::path(post, operation_id = "sign_multipart_part", path = "/v1/multipart-uploads/{upload_id}/parts/{part_number}",
    tag = "uploads", request_body = SignPartRequest,
    params(("upload_id" = String, Path, description = "As the upload's creation returned it", min_length = 1, max_length = 1024),
        ("part_number" = u32, Path, description = "1 to 10000", minimum = 1, maximum = 10000), UploadKey),
    responses(
        (status = 200, description = "PUT the part here", body = SignedPart),
        (status = 400, description = "Malformed JSON, path or query", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 404, description = "No such upload", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 415, description = "Not JSON", body = ErrorResponse),
        (status = 422, description = "A bad key, part number or size", body = ErrorResponse),
    ))]
pub async fn sign_part(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath((upload_id, part_number)): ApiPath<(String, u32)>,
    ApiQuery(query): ApiQuery<UploadKey>,
    ApiJson(request): ApiJson<SignPartRequest>,
) -> ApiResult<Json<SignedPart>> {
    owned_key(&state, &caller, &query.key)?;
    checked_upload_id(&upload_id)?;
    checked_part_number(part_number)?;
    let size = request.size;
    if size == 0 || size > MAX_PART_SIZE.min(max_size(&state)) {
        return Err(ApiError::unprocessable(
            "invalid_part_size",
            format!("a part is 1 to {} bytes", MAX_PART_SIZE.min(max_size(&state))),
        ));
    }
    let expiry = state.api.presign_expiry;
    let expires_at = Utc::now() + chrono::Duration::from_std(expiry).unwrap_or_else(|_| chrono::Duration::minutes(15));
    let uploads = state.backend.uploads.as_ref();
    // Counted before it is signed: no upload can be signed past the limit in all.
    let ledger = state.store.ledger().as_ref();
    signed_parts::record(ledger, &query.key, &upload_id, part_number, size, max_size(&state)).await?;
    let (method, url, headers) = match uploads.presign_part(&query.key, &upload_id, part_number, size, expiry).await? {
        Some(presigned) => (presigned.method, presigned.url, headers_to_send(presigned.headers)),
        None => {
            // The API receives the part: check the upload exists now rather than at the PUT.
            uploads.list_parts(&query.key, &upload_id).await.map_err(upload_error)?;
            let expires = unix_now() + expiry.as_secs();
            let resource = part_resource(&query.key, &upload_id, part_number);
            let signed = Signed { method: "PUT", key: &resource, expires, content_type: None, length: Some(size) };
            let signature = state.signer.sign(&signed)?;
            let url = format!(
                "{}/v1/multipart-uploads/{}/parts/{part_number}?key={}&size={size}&expires={expires}&signature={signature}",
                state.public_url,
                utf8_percent_encode(&upload_id, NON_ALPHANUMERIC),
                utf8_percent_encode(&query.key, NON_ALPHANUMERIC),
            );
            ("PUT".to_string(), url, Default::default())
        }
    };
    Ok(Json(SignedPart { part_number, method, url, headers, expires_at }))
}

/// What a local part URL's signature covers besides its length.
fn part_resource(key: &str, upload_id: &str, part_number: u32) -> String {
    format!("{key}\n{upload_id}\n{part_number}")
}

/// Local backend: receives one part of a signed part URL; answers its ETag (header and body).
#[utoipa::path(put, operation_id = "put_multipart_part", path = "/v1/multipart-uploads/{upload_id}/parts/{part_number}",
    tag = "uploads",
    params(("upload_id" = String, Path, description = "The upload", min_length = 1, max_length = 1024),
        ("part_number" = u32, Path, description = "1 to 10000", minimum = 1, maximum = 10000), PartQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The part"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Stored", body = UploadedPart, headers(("etag" = String, description = "The part's ETag, quoted"))),
        (status = 400, description = "Malformed path or query, or a body shorter than signed", body = ErrorResponse),
        (status = 401, description = "No signature", body = ErrorResponse),
        (status = 403, description = "Wrong or expired signature", body = ErrorResponse),
        (status = 404, description = "No such upload, or not the local backend", body = ErrorResponse),
        (status = 408, description = "The body was silent too long, or slower than the minimum rate", body = ErrorResponse),
        (status = 413, description = "A body longer than signed", body = ErrorResponse),
        (status = 422, description = "A bad key or part number", body = ErrorResponse),
        (status = 429, description = "Too many uploads are being received on this instance", body = ErrorResponse),
    ))]
pub async fn put_part(
    State(state): State<ApiState>,
    ApiPath((upload_id, part_number)): ApiPath<(String, u32)>,
    ApiQuery(query): ApiQuery<PartQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if !state.is_local() {
        return Err(ApiError::not_found("not_found", "on this deployment parts go straight to S3"));
    }
    key_under(&query.key, state.config.layout.upload_prefix())?;
    checked_upload_id(&upload_id)?;
    checked_part_number(part_number)?;
    let (Some(size), Some(expires), Some(signature)) = (query.size, query.expires, query.signature.as_deref()) else {
        return Err(ApiError::unauthorized(
            "this URL needs the `size`, `expires` and `signature` that POST .../parts/{n} returns",
        ));
    };
    let resource = part_resource(&query.key, &upload_id, part_number);
    let signed = Signed { method: "PUT", key: &resource, expires, content_type: None, length: Some(size) };
    state.signer.verify(&signed, signature)?;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > size) {
        return Err(ApiError::too_large(format!("this part was signed for {size} bytes")));
    }
    let temp = receive_to_temp_file(&state, body, size).await.map_err(|err| match err.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(format!("this part was signed for {size} bytes")),
        _ => err,
    })?;
    let received = tokio::fs::metadata(&temp).await.map_err(|e| ApiError::Unavailable(e.into()))?.len();
    if received != size {
        return Err(ApiError::bad_request(
            "part_size_mismatch",
            format!("this part was signed for {size} bytes; {received} arrived"),
        ));
    }
    let part =
        state.backend.uploads.put_part(&query.key, &upload_id, part_number, &temp).await.map_err(upload_error)?;
    drop(temp);
    let etag = HeaderValue::from_str(&part.etag.quoted())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("ETag as a header: {e}")))?;
    Ok(([(header::ETAG, etag)], Json(uploaded(part))).into_response())
}

fn uploaded(part: PartInfo) -> UploadedPart {
    UploadedPart { part_number: part.number, size: part.size, etag: part.etag.into_string() }
}

/// The parts stored so far.
#[utoipa::path(get, operation_id = "list_multipart_parts", path = "/v1/multipart-uploads/{upload_id}", tag = "uploads",
    params(("upload_id" = String, Path, description = "The upload", min_length = 1, max_length = 1024), UploadKey),
    responses(
        (status = 200, description = "The parts, by number", body = PartList),
        (status = 400, description = "Malformed path or query", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 404, description = "No such upload", body = ErrorResponse),
        (status = 422, description = "A bad key", body = ErrorResponse),
    ))]
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(upload_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<UploadKey>,
) -> ApiResult<Json<PartList>> {
    owned_key(&state, &caller, &query.key)?;
    checked_upload_id(&upload_id)?;
    let parts = state.backend.uploads.list_parts(&query.key, &upload_id).await.map_err(upload_error)?;
    Ok(Json(PartList { key: query.key, upload_id, parts: parts.into_iter().map(uploaded).collect() }))
}

/// Assembles the parts into the file; its arrival makes the job, as for any upload.
#[utoipa::path(post, operation_id = "complete_multipart_upload", path = "/v1/multipart-uploads/{upload_id}/complete",
    tag = "uploads", request_body = CompleteMultipartRequest,
    params(("upload_id" = String, Path, description = "The upload", min_length = 1, max_length = 1024), UploadKey),
    responses(
        (status = 201, description = "The file is stored; its job is named as for any upload", body = UploadInfo),
        (status = 400, description = "Malformed JSON, path or query", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 404, description = "No such upload", body = ErrorResponse),
        (status = 409, description = "A part changed meanwhile", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 415, description = "Not JSON", body = ErrorResponse),
        (status = 422, description = "Parts missing, out of order, too small, or above the size limit in total", body = ErrorResponse),
    ))]
pub async fn complete(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(upload_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<UploadKey>,
    ApiJson(request): ApiJson<CompleteMultipartRequest>,
) -> ApiResult<(StatusCode, Json<UploadInfo>)> {
    owned_key(&state, &caller, &query.key)?;
    checked_upload_id(&upload_id)?;
    let uploads = state.backend.uploads.as_ref();
    let stored = uploads.list_parts(&query.key, &upload_id).await.map_err(upload_error)?;
    let parts = chosen_parts(&request, &stored)?;
    let total: u64 = parts.iter().map(|p| p.size).sum();
    let limit = max_size(&state);
    if total > limit {
        // Nothing this upload holds can become a file: free it now.
        uploads.abort_multipart(&query.key, &upload_id).await?;
        signed_parts::forget(state.store.ledger().as_ref(), &upload_id).await;
        return Err(ApiError::unprocessable(
            "too_large",
            format!("the parts add up to {total} bytes; uploads are limited to {limit} (the upload was aborted)"),
        ));
    }
    let object = uploads.complete_multipart(&query.key, &upload_id, &parts).await.map_err(upload_error)?;
    signed_parts::forget(state.store.ledger().as_ref(), &upload_id).await;
    tracing::info!(key = query.key, size = object.size, parts = parts.len(), "Multipart upload completed.");
    Ok((StatusCode::CREATED, Json(describe_upload(&state, query.key, object).await?)))
}

/// The stored parts the client named, checked: ascending numbers, each stored with that ETag,
/// every part but the last at least the minimum size.
fn chosen_parts(request: &CompleteMultipartRequest, stored: &[PartInfo]) -> ApiResult<Vec<PartInfo>> {
    let refuse = |message: String| ApiError::unprocessable("invalid_parts", message);
    if request.parts.is_empty() || request.parts.len() > MAX_PARTS as usize {
        return Err(refuse(format!("name 1 to {MAX_PARTS} parts")));
    }
    let mut chosen: Vec<PartInfo> = Vec::with_capacity(request.parts.len());
    for wanted in &request.parts {
        if chosen.last().is_some_and(|previous| previous.number >= wanted.part_number) {
            return Err(refuse("list the parts in ascending order of number, each once".into()));
        }
        match stored.iter().find(|p| p.number == wanted.part_number) {
            Some(part) if part.etag.matches(&wanted.etag) => chosen.push(part.clone()),
            Some(_) => return Err(refuse(format!("part {} was stored with another ETag", wanted.part_number))),
            None => return Err(refuse(format!("part {} was not uploaded", wanted.part_number))),
        }
    }
    let all_but_last = chosen.split_last().map_or(&[][..], |(_, rest)| rest);
    if let Some(small) = all_but_last.iter().find(|p| p.size < MIN_PART_SIZE) {
        return Err(refuse(format!(
            "part {} has {} bytes; every part but the last needs at least {MIN_PART_SIZE}",
            small.number, small.size
        )));
    }
    Ok(chosen)
}

/// Aborts an upload, removing its parts.
#[utoipa::path(delete, operation_id = "abort_multipart_upload", path = "/v1/multipart-uploads/{upload_id}", tag = "uploads",
    params(("upload_id" = String, Path, description = "The upload", min_length = 1, max_length = 1024), UploadKey),
    responses(
        (status = 204, description = "Aborted (or already gone)"),
        (status = 400, description = "Malformed path or query", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 404, description = "Another tenant's upload, or an id no upload can have", body = ErrorResponse),
        (status = 422, description = "A bad key", body = ErrorResponse),
    ))]
pub async fn abort(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(upload_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<UploadKey>,
) -> ApiResult<StatusCode> {
    owned_key(&state, &caller, &query.key)?;
    checked_upload_id(&upload_id)?;
    state.backend.uploads.abort_multipart(&query.key, &upload_id).await?;
    signed_parts::forget(state.store.ledger().as_ref(), &upload_id).await;
    tracing::info!(key = query.key, "Multipart upload aborted.");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::PartRef;
    use crate::storage::ETag;

    fn part(number: u32, size: u64) -> PartInfo {
        PartInfo { number, size, etag: ETag::new(format!("e{number}")) }
    }

    fn request(parts: &[(u32, &str)]) -> CompleteMultipartRequest {
        CompleteMultipartRequest {
            parts: parts.iter().map(|(n, e)| PartRef { part_number: *n, etag: e.to_string() }).collect(),
        }
    }

    #[test]
    fn completion_takes_the_named_parts_as_stored() {
        let stored = [part(1, MIN_PART_SIZE), part(2, MIN_PART_SIZE), part(3, 10)];
        let chosen = chosen_parts(&request(&[(1, "e1"), (2, "\"e2\""), (3, "e3")]), &stored).unwrap();
        assert_eq!(chosen, stored);
        for bad in [
            request(&[(2, "e2"), (1, "e1")]),
            request(&[(1, "e1"), (1, "e1")]),
            request(&[(1, "e1"), (4, "e4")]),
            request(&[(1, "other")]),
            request(&[]),
        ] {
            assert!(chosen_parts(&bad, &stored).is_err(), "{bad:?}");
        }
        let small = [part(1, 10), part(2, 10)];
        assert!(chosen_parts(&request(&[(1, "e1"), (2, "e2")]), &small).is_err(), "a small part before the last");
        assert!(chosen_parts(&request(&[(1, "e1")]), &small).is_ok(), "a small last part");
    }
}
