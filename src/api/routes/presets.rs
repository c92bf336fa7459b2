//! The preset catalogue: what jobs may ask for on this deployment, with the options each takes.

use axum::Json;
use axum::extract::State;

use crate::api::ApiState;
use crate::api::error::ErrorResponse;
use crate::api::model::{PresetInfo, PresetList};
use crate::domain::preset::Preset;

/// Every preset, built-in and the operator's own (`MEDIA_PRESETS_FILE`).
#[utoipa::path(get, operation_id = "list_presets", path = "/v1/presets", tag = "jobs",
    responses(
        (status = 200, description = "The catalogue", body = PresetList),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
    ))]
pub async fn list(State(_state): State<ApiState>) -> Json<PresetList> {
    let presets = Preset::all()
        .into_iter()
        .map(|preset| {
            let accepted = preset.accepted_options();
            let options = [
                ("start", accepted.start),
                ("duration", accepted.duration),
                ("max_height", accepted.max_height),
                ("time", accepted.time),
            ];
            PresetInfo {
                name: preset.name().to_string(),
                description: preset.description().to_string(),
                options: options.iter().filter(|(_, yes)| *yes).map(|(name, _)| name.to_string()).collect(),
                file: preset.file_name().to_string(),
                needs_video: preset.needs_video(),
                needs_audio: preset.needs_audio(),
            }
        })
        .collect();
    Json(PresetList { presets })
}
