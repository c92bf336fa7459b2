//! What jobs are made of and may be: the key layout, the presets, which sources are split and
//! how, the limits checked before transcoding, and how sources named by URL are fetched.

use std::time::Duration;

use super::table::{ConfigError, Env, parse_bool, parse_duration, parse_size};
use crate::domain::keys::KeyLayout;
use crate::domain::per_title::QualityTarget;
use crate::domain::preset::{Preset, install_custom_presets, parse_presets_file};
use crate::domain::split::{SEGMENT_DURATION_RANGE, SplitSettings};

/// What a source may be at most; anything larger fails permanently before transcoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    pub max_size: u64,
    pub max_duration: Duration,
    pub max_pixels: u64,
}

/// How sources named by URL are fetched: through the SSRF guard of [`crate::outbound`], with at
/// most [`MEDIA_MAX_SOURCE_SIZE`](SourceLimits::max_size) bytes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSettings {
    pub policy: crate::outbound::Policy,
    /// The whole fetch, body included.
    pub total_timeout: Duration,
    /// Longest silence of the server while the body streams.
    pub idle_timeout: Duration,
}

impl ImportSettings {
    /// Connecting gets at most this much of the fetch's time.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn guard(&self) -> crate::outbound::Guard {
        crate::outbound::Guard::new(self.policy)
    }

    pub fn limits(&self) -> crate::outbound::Limits {
        crate::outbound::Limits {
            connect: self.total_timeout.min(Self::CONNECT_TIMEOUT),
            total: self.total_timeout,
            read: Some(self.idle_timeout),
        }
    }
}

/// The key layout, and the presets plain uploads get. Operator presets are installed first, so
/// defaults (and messages) may name them.
pub(super) fn layout_and_presets(env: &Env) -> Result<(KeyLayout, Vec<Preset>), ConfigError> {
    let upload_prefix = env.or_default("MEDIA_UPLOAD_PREFIX");
    let output_prefix = env.or_default("MEDIA_OUTPUT_PREFIX");
    let layout = KeyLayout::new(&upload_prefix, &output_prefix)
        .map_err(|e| ConfigError::new("MEDIA_UPLOAD_PREFIX / MEDIA_OUTPUT_PREFIX", e))?;
    if let Some(path) = env.get("MEDIA_PRESETS_FILE") {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::new("MEDIA_PRESETS_FILE", format!("cannot read `{path}`: {e}")))?;
        let presets =
            parse_presets_file(&text).map_err(|e| ConfigError::new("MEDIA_PRESETS_FILE", format!("`{path}`: {e}")))?;
        install_custom_presets(presets).map_err(|e| ConfigError::new("MEDIA_PRESETS_FILE", e))?;
    }
    let default_presets = env.parse_with("MEDIA_DEFAULT_PRESETS", |raw| {
        let presets = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| name.parse::<Preset>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if presets.is_empty() { Err("at least one preset is required".to_string()) } else { Ok(presets) }
    })?;
    Ok((layout, default_presets))
}

/// The limits checked before any transcoding.
pub(super) fn limits(env: &Env) -> Result<SourceLimits, ConfigError> {
    Ok(SourceLimits {
        max_size: env.parse_with("MEDIA_MAX_SOURCE_SIZE", parse_size)?,
        max_duration: env.parse_with("MEDIA_MAX_DURATION", parse_duration)?,
        max_pixels: env.parse_with("MEDIA_MAX_PIXELS", |raw| {
            raw.parse::<u64>().map_err(|_| format!("expected a whole number of pixels, got `{raw}`"))
        })?,
    })
}

/// Which jobs are split into segments, and how long those are.
pub(super) fn split(env: &Env) -> Result<SplitSettings, ConfigError> {
    let segment_duration = env.parse_with("MEDIA_SEGMENT_DURATION", parse_duration)?.as_secs_f64();
    let (min, max) = SEGMENT_DURATION_RANGE;
    if !(min..=max).contains(&segment_duration) {
        return Err(ConfigError::new("MEDIA_SEGMENT_DURATION", "must be between 2s and 10m"));
    }
    Ok(SplitSettings {
        min_duration: env.parse_with("MEDIA_SPLIT_MIN_DURATION", parse_duration)?.as_secs_f64(),
        segment_duration,
    })
}

/// The VMAF the HLS ladder is made per title to reach when a job names none (none: the fixed
/// ladder).
pub(super) fn quality_target(env: &Env) -> Result<Option<QualityTarget>, ConfigError> {
    let Some(raw) = env.get("MEDIA_QUALITY_TARGET").filter(|raw| !raw.trim().is_empty()) else { return Ok(None) };
    let vmaf = raw
        .trim()
        .parse::<f64>()
        .map_err(|_| ConfigError::new("MEDIA_QUALITY_TARGET", format!("expected a VMAF, got `{raw}`")))?;
    let target = QualityTarget { vmaf };
    target.validate().map_err(|e| ConfigError::new("MEDIA_QUALITY_TARGET", e.to_string()))?;
    Ok(Some(target))
}

/// Sources fetched from a URL.
pub(super) fn import(env: &Env) -> Result<ImportSettings, ConfigError> {
    let import = ImportSettings {
        policy: crate::outbound::Policy { allow_loopback: env.parse_with("MEDIA_IMPORT_ALLOW_LOOPBACK", parse_bool)? },
        total_timeout: env.parse_with("MEDIA_IMPORT_TIMEOUT", parse_duration)?,
        idle_timeout: env.parse_with("MEDIA_IMPORT_IDLE_TIMEOUT", parse_duration)?,
    };
    for (var, value) in
        [("MEDIA_IMPORT_TIMEOUT", import.total_timeout), ("MEDIA_IMPORT_IDLE_TIMEOUT", import.idle_timeout)]
    {
        if value.is_zero() {
            return Err(ConfigError::new(var, "must be longer than 0s"));
        }
    }
    Ok(import)
}
