//! Handlers, one file per resource (a folder with a file per handler group for jobs), each
//! annotated for `/openapi.json`.

pub mod console;
pub mod events;
pub mod files;
pub mod health;
pub mod jobs;
pub mod multipart;
pub mod presets;
pub mod uploads;
pub mod view;

use crate::api::ApiState;
use crate::api::error::{ApiError, ApiResult, clip};
use crate::domain::keys::validate_key;

/// A key under `prefix` (strictly: the prefix alone is a folder, not an object) that passes
/// the shared key checks.
pub(crate) fn key_under(key: &str, prefix: &str) -> ApiResult<()> {
    validate_key(key)
        .map_err(|e| ApiError::unprocessable("invalid_key", format!("key `{}` refused: {e}", clip(key))))?;
    if !key.starts_with(prefix) || key.len() == prefix.len() {
        return Err(ApiError::unprocessable("invalid_key", format!("the key must be under `{prefix}`")));
    }
    Ok(())
}

/// Path of a job, relative to the API.
pub(crate) fn status_path(job_id: &str) -> String {
    format!("/v1/jobs/{job_id}")
}

/// Path of an upload's description, relative to the API.
pub(crate) fn upload_path(state: &ApiState, key: &str) -> String {
    state.key_url("uploads", key).trim_start_matches(state.public_url.as_str()).to_string()
}

/// The `expires` and `signature` of a signed URL.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignatureQuery {
    /// Unix seconds after which the URL is refused.
    pub expires: Option<u64>,
    /// Hex HMAC-SHA256 made by the API.
    pub signature: Option<String>,
}
