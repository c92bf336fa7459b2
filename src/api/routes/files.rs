//! Local backend downloads: the objects under the output prefix, streamed from the store. On S3
//! the API hands out presigned GETs instead and this route answers 404.

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;

use super::{SignatureQuery, key_under};
use crate::api::ApiState;
use crate::api::auth::{Caller, Signed};
use crate::api::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorResponse, clip};
use crate::domain::preset::content_type_of;

/// Objects are read in chunks this large.
const READ_CHUNK: usize = 256 << 10;

/// Downloads an output (local backend): with the `expires` and `signature` of the URL the job
/// gave, or with a token.
#[utoipa::path(get, operation_id = "get_file", path = "/v1/files/{key}", tag = "files",
    params(("key" = String, Path, description = "A key under the output prefix"), SignatureQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The file", content_type = "*/*", body = Vec<u8>),
        (status = 400, description = "Malformed path or query", body = ErrorResponse),
        (status = 401, description = "Neither a signature nor a token", body = ErrorResponse),
        (status = 403, description = "Wrong or expired signature", body = ErrorResponse),
        (status = 404, description = "No such file, or not the local backend", body = ErrorResponse),
        (status = 422, description = "A key outside the output prefix or failing the key checks", body = ErrorResponse),
    ))]
pub async fn get(
    State(state): State<ApiState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<SignatureQuery>,
    caller: Option<Extension<Caller>>,
) -> ApiResult<Response> {
    if !state.is_local() {
        return Err(ApiError::not_found("not_found", "on this deployment downloads come straight from S3"));
    }
    key_under(&key, state.config.layout.output_prefix())?;
    match (query.expires, query.signature.as_deref()) {
        (Some(expires), Some(signature)) => {
            state
                .signer
                .verify(&Signed { method: "GET", key: &key, expires, content_type: None, length: None }, signature)?;
        }
        // A token sees its own scope's outputs only; another's are as absent as missing ones.
        _ if let Some(Extension(caller)) = &caller => {
            if !caller.scope.owns(&state.config.layout, &key) {
                return Err(ApiError::not_found("file_not_found", format!("nothing is stored at `{}`", clip(&key))));
            }
        }
        _ => {
            return Err(ApiError::unauthorized(
                "send `Authorization: Bearer <token>`, or use a signed URL from GET /v1/jobs/{id}",
            ));
        }
    }
    let missing = || ApiError::not_found("file_not_found", format!("nothing is stored at `{}`", clip(&key)));
    let download = state.backend.uploads.open_download(&key).await?.ok_or_else(missing)?;
    let body = Body::from_stream(ReaderStream::with_capacity(download.body, READ_CHUNK));
    let headers = [
        (header::CONTENT_TYPE, content_type_of(&key).to_string()),
        (header::CONTENT_LENGTH, download.size.to_string()),
        (header::CACHE_CONTROL, "private, max-age=0".to_string()),
        // Served on the console's origin: a file is never taken for a page or a script.
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
    ];
    Ok((StatusCode::OK, headers, body).into_response())
}

#[cfg(test)]
mod tests {
    use crate::domain::preset::content_type_of;

    #[test]
    fn content_types_follow_extensions() {
        assert_eq!(content_type_of("outputs/a/mp4-h264.mp4"), "video/mp4");
        assert_eq!(content_type_of("outputs/a/manifest.json"), "application/json");
        assert_eq!(content_type_of("outputs/a/clip.WEBM"), "video/webm");
        assert_eq!(content_type_of("outputs/a/noext"), "application/octet-stream");
        assert_eq!(content_type_of("outputs/a.b/noext"), "application/octet-stream");
        assert_eq!(content_type_of("outputs/a/animation.gif"), "image/gif");
    }
}
