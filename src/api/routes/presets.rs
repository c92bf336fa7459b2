//! The preset catalogue: what jobs may ask for on this deployment, with the options each takes,
//! the values each option may take, and which job states are still moving.
//!
//! Clients (the console among them) read these rules here rather than keeping copies: the ranges
//! come from the table jobs are validated with ([`option_range`]), the choices from the types jobs
//! are read into ([`VideoCodec::ALL`], [`Packaging::ALL`]), the states from the job state
//! machine's own type ([`JobState::is_terminal`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::ApiState;
use crate::api::error::ErrorResponse;
use crate::domain::delivery::{DEFAULT_CODECS, Packaging, VideoCodec};
use crate::domain::job::{OptionRange, option_range};
use crate::domain::preset::{AcceptedOptions, Preset};
use crate::domain::status::JobState;

/// The presets jobs may ask for on this deployment.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresetList {
    pub presets: Vec<PresetInfo>,
    /// The job states, as clients need them to know whether a job may still change.
    pub states: JobStates,
}

/// One preset of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresetInfo {
    pub name: String,
    pub description: String,
    /// The per-output numeric options it takes: `start`, `duration`, `max_height`, `time`.
    pub options: Vec<String>,
    /// The values each of `options` may take, by option: a job outside them is refused (422).
    pub ranges: BTreeMap<String, OptionBounds>,
    /// The options it takes whose values come from a list (`codecs`, `packaging`), by option;
    /// empty for most presets. Kept apart from `options`, whose every entry has a range.
    pub choices: BTreeMap<String, OptionChoices>,
    /// Its main file, relative to the attempt's folder (`hls/master.m3u8`).
    pub file: String,
    pub needs_video: bool,
    pub needs_audio: bool,
}

/// The values one option may take, bounds included.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct OptionBounds {
    pub min: f64,
    pub max: f64,
    /// Whole numbers only (pixels); otherwise any number (seconds).
    pub integer: bool,
}

impl From<OptionRange> for OptionBounds {
    fn from(range: OptionRange) -> Self {
        OptionBounds { min: range.min, max: range.max, integer: range.integer }
    }
}

/// The values an option that takes names from a list may take.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OptionChoices {
    /// Every accepted value, in the order a form offers them.
    pub values: Vec<String>,
    /// What a job that leaves the option out gets: one value, or several when `multiple`.
    pub default: Vec<String>,
    /// A list of one or more distinct values (`["h264", "av1"]`); otherwise a single value.
    pub multiple: bool,
}

/// The list options a preset takes, with their values and defaults.
fn choices(accepted: AcceptedOptions) -> BTreeMap<String, OptionChoices> {
    let names = |values: &mut dyn Iterator<Item = &'static str>| values.map(str::to_string).collect::<Vec<_>>();
    let mut choices = BTreeMap::new();
    if accepted.codecs {
        let values = names(&mut VideoCodec::ALL.iter().map(|c| c.name()));
        let default = names(&mut DEFAULT_CODECS.iter().map(|c| c.name()));
        choices.insert("codecs".to_string(), OptionChoices { values, default, multiple: true });
    }
    if accepted.packaging {
        let values = names(&mut Packaging::ALL.iter().map(|p| p.name()));
        let default = vec![Packaging::default().name().to_string()];
        choices.insert("packaging".to_string(), OptionChoices { values, default, multiple: false });
    }
    choices
}

/// Every job state, split by whether a job in it may still change.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobStates {
    /// A job in one of these may still run, progress and be cancelled.
    pub active: Vec<JobState>,
    /// A job in one of these has ended for good.
    pub terminal: Vec<JobState>,
}

/// Every preset, built-in and the operator's own (`MEDIA_PRESETS_FILE`).
#[utoipa::path(get, operation_id = "list_presets", path = "/v1/presets", tag = "jobs",
    responses(
        (status = 200, description = "The catalogue", body = PresetList),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
    ))]
pub async fn list(State(_state): State<ApiState>) -> Json<PresetList> {
    Json(catalogue())
}

/// The catalogue as this process knows it.
fn catalogue() -> PresetList {
    let (terminal, active) = JobState::ALL.into_iter().partition(|state| state.is_terminal());
    PresetList { presets: Preset::all().into_iter().map(info).collect(), states: JobStates { active, terminal } }
}

fn info(preset: Preset) -> PresetInfo {
    let accepted = preset.accepted_options();
    let options = [
        ("start", accepted.start),
        ("duration", accepted.duration),
        ("max_height", accepted.max_height),
        ("time", accepted.time),
    ];
    let options: Vec<String> = options.iter().filter(|(_, yes)| *yes).map(|(name, _)| name.to_string()).collect();
    let ranges = options
        .iter()
        .filter_map(|option| option_range(preset, option).map(|range| (option.clone(), range.into())))
        .collect();
    PresetInfo {
        name: preset.name().to_string(),
        description: preset.description().to_string(),
        options,
        ranges,
        choices: choices(accepted),
        file: preset.file_name().to_string(),
        needs_video: preset.needs_video(),
        needs_audio: preset.needs_audio(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ranges_are_the_validation_table() {
        let list = catalogue();
        assert_eq!(list.presets.len(), Preset::all().len());
        for (preset, info) in Preset::all().into_iter().zip(&list.presets) {
            assert_eq!(info.name, preset.name());
            let named: Vec<&String> = info.ranges.keys().collect();
            let mut options: Vec<&String> = info.options.iter().collect();
            options.sort();
            assert_eq!(named, options, "{preset}: a range for every option");
            for (option, bounds) in &info.ranges {
                let range = option_range(preset, option).expect("a range");
                assert_eq!(*bounds, OptionBounds::from(range), "{preset} {option}");
            }
        }
        assert!(list.presets.iter().any(|p| !p.ranges.is_empty()));
    }

    #[test]
    fn only_cmaf_offers_codecs_and_packaging_from_the_types_jobs_are_read_into() {
        let list = catalogue();
        for info in &list.presets {
            let expected: Vec<&str> = if info.name == "cmaf" { vec!["codecs", "packaging"] } else { vec![] };
            assert_eq!(info.choices.keys().map(String::as_str).collect::<Vec<_>>(), expected, "{}", info.name);
            assert!(
                !info.options.iter().any(|o| info.choices.contains_key(o)),
                "{}: a choice is no ranged option",
                info.name
            );
        }
        let cmaf = list.presets.iter().find(|p| p.name == "cmaf").expect("cmaf");
        let codecs = &cmaf.choices["codecs"];
        assert_eq!(
            (codecs.values.clone(), codecs.default.clone(), codecs.multiple),
            (vec!["h264".into(), "hevc".into(), "av1".into()], vec!["h264".into()], true)
        );
        // Every offered value is one a job is read and validated with.
        for value in &codecs.values {
            let codec: VideoCodec = serde_json::from_value(serde_json::json!(value)).expect("a codec");
            assert!(crate::domain::delivery::validate_codecs(&[codec]).is_ok());
        }
        let packaging = &cmaf.choices["packaging"];
        assert_eq!(
            (packaging.values.clone(), packaging.default.clone(), packaging.multiple),
            (vec!["segments".into(), "single_file".into()], vec!["segments".into()], false)
        );
        for value in &packaging.values {
            let _: Packaging = serde_json::from_value(serde_json::json!(value)).expect("a packaging");
        }
    }

    #[test]
    fn the_states_are_the_state_machine_s() {
        let states = catalogue().states;
        assert_eq!(states.active.len() + states.terminal.len(), JobState::ALL.len());
        assert!(states.active.iter().all(|s| !s.is_terminal()));
        assert!(states.terminal.iter().all(|s| s.is_terminal()));
        let json = serde_json::to_value(&states).expect("json");
        assert_eq!(json["active"], serde_json::json!(["queued", "running", "retrying"]));
        assert_eq!(json["terminal"], serde_json::json!(["completed", "failed", "cancelled"]));
    }
}
