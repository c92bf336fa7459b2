//! Quality checks of a source (`qc` in a job): how long a stretch of black picture, frozen
//! picture or silence may last, how much of the picture may be interlaced or lie under black
//! bars, and which loudness the sound must have; each rule either warns or fails the job.
//!
//! Pure, in four parts: the settings, their ranges and the measured values here; the argv of
//! the one ffmpeg pass that measures them in [`args`]; the reading of that pass's log in
//! [`parse`]; the verdict in [`evaluate`]. `media::qc` runs the pass. docs/qc.md explains the
//! rules and why they measure what they do.

pub mod args;
pub mod evaluate;
mod measurements;
pub mod parse;

use serde::{Deserialize, Serialize};

pub use args::analysis_args;
pub use evaluate::{Finding, QcReport, QcRule, Verdict, evaluate};
pub use measurements::{CropArea, FieldCounts, Loudness, QcMeasurements, SILENT_PEAK_DBTP, Span};
pub use parse::QcLogParser;

use crate::domain::probe::MediaInfo;
use crate::domain::range::OptionRange;

/// What a broken rule does to the job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QcAction {
    /// The job completes; the finding is recorded in its manifest and its `job.completed` event.
    #[default]
    Warn,
    /// The job fails with `qc_failed`, the findings in its status.
    Fail,
}

/// A job's quality checks (`qc` in its spec). Every rule is optional; a rule given as `{}` (or
/// with only its `action`) checks its defaults and warns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QcSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub black: Option<BlackRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<FreezeRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<SilenceRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interlace: Option<InterlaceRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub letterbox: Option<LetterboxRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loudness: Option<LoudnessRule>,
}

/// Black picture (ffmpeg's `blackdetect`: at least 98 % of the pixels darker than 10 % of the
/// luma range).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BlackRule {
    /// The longest single stretch of black accepted, in seconds (default 2). Shorter stretches
    /// (fades, cuts through black) are never findings, however many there are.
    #[schema(minimum = 0.1, maximum = 86400, example = 2.0)]
    pub max_seconds: f64,
    pub action: QcAction,
}

impl Default for BlackRule {
    fn default() -> Self {
        BlackRule { max_seconds: 2.0, action: QcAction::Warn }
    }
}

/// Frozen picture (ffmpeg's `freezedetect`): frames that differ from each other by less than
/// the noise level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FreezeRule {
    /// The longest single still stretch accepted, in seconds (default 5).
    #[schema(minimum = 0.1, maximum = 86400, example = 5.0)]
    pub max_seconds: f64,
    /// Frames closer than this (mean difference, in dB) count as the same picture (default
    /// -50: the noise a lossy encoder leaves on a held frame is below it).
    #[schema(minimum = -90, maximum = -20, example = -50.0)]
    pub noise_db: f64,
    pub action: QcAction,
}

impl Default for FreezeRule {
    fn default() -> Self {
        FreezeRule { max_seconds: 5.0, noise_db: -50.0, action: QcAction::Warn }
    }
}

/// Silence (ffmpeg's `silencedetect`): every channel below the threshold at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SilenceRule {
    /// The longest single silent stretch accepted, in seconds (default 5).
    #[schema(minimum = 0.1, maximum = 86400, example = 5.0)]
    pub max_seconds: f64,
    /// Sound below this level, in dBFS, is silence (default -60: room tone stays above it,
    /// muted or missing sound does not).
    #[schema(minimum = -90, maximum = -10, example = -60.0)]
    pub threshold_db: f64,
    pub action: QcAction,
}

impl Default for SilenceRule {
    fn default() -> Self {
        SilenceRule { max_seconds: 5.0, threshold_db: -60.0, action: QcAction::Warn }
    }
}

/// Interlaced picture (ffmpeg's `idet`, on the decoded fields before any scaling).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct InterlaceRule {
    /// The largest share of interlaced frames accepted, from 0 to 1 (default 0.2), among the
    /// frames `idet` could decide.
    #[schema(minimum = 0, maximum = 1, example = 0.2)]
    pub max_ratio: f64,
    pub action: QcAction,
}

impl Default for InterlaceRule {
    fn default() -> Self {
        InterlaceRule { max_ratio: 0.2, action: QcAction::Warn }
    }
}

/// Black bars (letterbox, pillarbox or both; ffmpeg's `cropdetect`): the part of the frame that
/// stays black in every frame of the source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LetterboxRule {
    /// The largest share of the frame's area under bars accepted, from 0 to 1 (default 0.3:
    /// a 2.39:1 film in a 16:9 frame has 0.26, a 4:3 picture in one 0.25).
    #[schema(minimum = 0, maximum = 1, example = 0.3)]
    pub max_ratio: f64,
    pub action: QcAction,
}

impl Default for LetterboxRule {
    fn default() -> Self {
        LetterboxRule { max_ratio: 0.3, action: QcAction::Warn }
    }
}

/// Loudness (ffmpeg's `ebur128`: EBU R 128 / ITU-R BS.1770). A rule checks the limits it names;
/// one that names none checks all four defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LoudnessRule {
    /// The quietest integrated loudness accepted, in LUFS (default -28).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -70, maximum = 0, example = -28.0)]
    pub min_lufs: Option<f64>,
    /// The loudest integrated loudness accepted, in LUFS (default -14).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -70, maximum = 0, example = -14.0)]
    pub max_lufs: Option<f64>,
    /// The highest true peak accepted, in dBTP (default -1).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -20, maximum = 3, example = -1.0)]
    pub max_true_peak: Option<f64>,
    /// The widest loudness range (LRA) accepted, in LU (default 20).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 50, example = 20.0)]
    pub max_lra: Option<f64>,
    pub action: QcAction,
}

/// The limits a [`LoudnessRule`] checks, its defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoudnessLimits {
    pub min_lufs: Option<f64>,
    pub max_lufs: Option<f64>,
    pub max_true_peak: Option<f64>,
    pub max_lra: Option<f64>,
}

impl LoudnessRule {
    /// The limits checked: those named, or all four defaults when none is.
    pub fn limits(&self) -> LoudnessLimits {
        let named = LoudnessLimits {
            min_lufs: self.min_lufs,
            max_lufs: self.max_lufs,
            max_true_peak: self.max_true_peak,
            max_lra: self.max_lra,
        };
        if named == (LoudnessLimits { min_lufs: None, max_lufs: None, max_true_peak: None, max_lra: None }) {
            return LoudnessLimits {
                min_lufs: Some(-28.0),
                max_lufs: Some(-14.0),
                max_true_peak: Some(-1.0),
                max_lra: Some(20.0),
            };
        }
        named
    }
}

/// Every ranged field of [`QcSettings`], as `rule.field`, in the order of docs/qc.md.
pub const QC_FIELDS: &[&str] = &[
    "black.max_seconds",
    "freeze.max_seconds",
    "freeze.noise_db",
    "silence.max_seconds",
    "silence.threshold_db",
    "interlace.max_ratio",
    "letterbox.max_ratio",
    "loudness.min_lufs",
    "loudness.max_lufs",
    "loudness.max_true_peak",
    "loudness.max_lra",
];

/// The longest stretch a rule may name: a day, as for output options.
const MAX_STRETCH: f64 = 86_400.0;

/// The values a field of [`QcSettings`] (`black.max_seconds`, ...) may take: the table
/// [`QcSettings::validate`] checks, published like the presets' [`option_range`](crate::domain::job::option_range).
pub fn qc_range(field: &str) -> Option<OptionRange> {
    let range = |min, max| Some(OptionRange { min, max, integer: false });
    match field {
        "black.max_seconds" | "freeze.max_seconds" | "silence.max_seconds" => range(0.1, MAX_STRETCH),
        "freeze.noise_db" => range(-90.0, -20.0),
        "silence.threshold_db" => range(-90.0, -10.0),
        "interlace.max_ratio" | "letterbox.max_ratio" => range(0.0, 1.0),
        "loudness.min_lufs" | "loudness.max_lufs" => range(-70.0, 0.0),
        "loudness.max_true_peak" => range(-20.0, 3.0),
        "loudness.max_lra" => range(0.0, 50.0),
        _ => None,
    }
}

/// Why a job's `qc` settings cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QcSettingsError {
    #[error("`qc.{field}` must be between {min} and {max}, got {value}")]
    OutOfRange { field: &'static str, min: f64, max: f64, value: f64 },
    #[error("`qc.loudness.min_lufs` ({min}) must not be above `qc.loudness.max_lufs` ({max})")]
    LoudnessOrder { min: f64, max: f64 },
}

impl QcSettings {
    /// Checks every given value against [`qc_range`] (NaN and infinities never pass).
    pub fn validate(&self) -> Result<(), QcSettingsError> {
        for (field, value) in self.values() {
            let Some(OptionRange { min, max, .. }) = qc_range(field) else { continue };
            if !value.is_finite() || value < min || value > max {
                return Err(QcSettingsError::OutOfRange { field, min, max, value });
            }
        }
        if let Some(LoudnessRule { min_lufs: Some(min), max_lufs: Some(max), .. }) = self.loudness
            && min > max
        {
            return Err(QcSettingsError::LoudnessOrder { min, max });
        }
        Ok(())
    }

    /// Every value the settings give, by field name ([`QC_FIELDS`]).
    fn values(&self) -> Vec<(&'static str, f64)> {
        let mut values = Vec::new();
        if let Some(rule) = self.black {
            values.push(("black.max_seconds", rule.max_seconds));
        }
        if let Some(rule) = self.freeze {
            values.extend([("freeze.max_seconds", rule.max_seconds), ("freeze.noise_db", rule.noise_db)]);
        }
        if let Some(rule) = self.silence {
            values.extend([("silence.max_seconds", rule.max_seconds), ("silence.threshold_db", rule.threshold_db)]);
        }
        if let Some(rule) = self.interlace {
            values.push(("interlace.max_ratio", rule.max_ratio));
        }
        if let Some(rule) = self.letterbox {
            values.push(("letterbox.max_ratio", rule.max_ratio));
        }
        if let Some(rule) = self.loudness {
            let named = [
                ("loudness.min_lufs", rule.min_lufs),
                ("loudness.max_lufs", rule.max_lufs),
                ("loudness.max_true_peak", rule.max_true_peak),
                ("loudness.max_lra", rule.max_lra),
            ];
            values.extend(named.into_iter().filter_map(|(field, value)| value.map(|v| (field, v))));
        }
        values
    }

    /// Whether any rule looks at the picture.
    pub fn checks_video(&self) -> bool {
        self.black.is_some() || self.freeze.is_some() || self.interlace.is_some() || self.letterbox.is_some()
    }

    /// Whether any rule listens to the sound.
    pub fn checks_audio(&self) -> bool {
        self.silence.is_some() || self.loudness.is_some()
    }

    /// Whether a source with `streams` has anything for these rules to measure: without, no
    /// ffmpeg pass is needed and every rule passes (a picture rule has no picture to judge on a
    /// sound-only source, and the reverse).
    pub fn measures(&self, streams: SourceStreams) -> bool {
        (streams.video && self.checks_video()) || (streams.audio && self.checks_audio())
    }
}

/// Which streams of the source the pass reads: its first video stream (not cover art) and its
/// first audio stream, as the transcode does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceStreams {
    pub video: bool,
    pub audio: bool,
}

impl SourceStreams {
    /// The streams a probe found.
    pub fn of(media: &MediaInfo) -> Self {
        SourceStreams { video: media.video.is_some(), audio: media.audio.is_some() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<QcSettings, String> {
        let settings: QcSettings = serde_json::from_str(json).map_err(|e| e.to_string())?;
        settings.validate().map_err(|e| e.to_string())?;
        Ok(settings)
    }

    #[test]
    fn the_documented_example_parses_and_validates() {
        let settings = parse(
            r#"{"black":{"max_seconds":2.0,"action":"fail"},
                "freeze":{"max_seconds":5.0,"action":"warn"},
                "silence":{"max_seconds":5.0,"threshold_db":-50,"action":"warn"},
                "interlace":{"max_ratio":0.2,"action":"warn"},
                "letterbox":{"max_ratio":0.25,"action":"warn"},
                "loudness":{"min_lufs":-28,"max_lufs":-14,"max_true_peak":-1.0,"max_lra":20,"action":"warn"}}"#,
        )
        .unwrap();
        assert_eq!(settings.black, Some(BlackRule { max_seconds: 2.0, action: QcAction::Fail }));
        assert_eq!(settings.silence.map(|s| s.threshold_db), Some(-50.0));
        assert_eq!(settings.freeze.map(|s| s.noise_db), Some(-50.0), "the default noise level");
        let back: QcSettings = serde_json::from_str(&serde_json::to_string(&settings).unwrap()).unwrap();
        assert_eq!(back, settings);
    }

    #[test]
    fn a_rule_given_empty_or_with_only_an_action_checks_its_defaults() {
        let settings = parse(
            r#"{"black":{},"freeze":{"action":"fail"},"silence":{},"interlace":{},"letterbox":{},"loudness":{"action":"fail"}}"#,
        )
        .unwrap();
        assert_eq!(settings.black, Some(BlackRule::default()));
        assert_eq!(settings.freeze, Some(FreezeRule { action: QcAction::Fail, ..FreezeRule::default() }));
        assert_eq!(settings.silence.map(|s| (s.max_seconds, s.threshold_db)), Some((5.0, -60.0)));
        assert_eq!(settings.interlace.map(|r| r.max_ratio), Some(0.2));
        assert_eq!(settings.letterbox.map(|r| r.max_ratio), Some(0.3));
        let loudness = settings.loudness.unwrap();
        assert_eq!(loudness.action, QcAction::Fail);
        assert_eq!(
            loudness.limits(),
            LoudnessLimits {
                min_lufs: Some(-28.0),
                max_lufs: Some(-14.0),
                max_true_peak: Some(-1.0),
                max_lra: Some(20.0)
            }
        );
        // A rule naming one limit checks that one only.
        let peak_only = parse(r#"{"loudness":{"max_true_peak":-2}}"#).unwrap().loudness.unwrap();
        assert_eq!(
            peak_only.limits(),
            LoudnessLimits { min_lufs: None, max_lufs: None, max_true_peak: Some(-2.0), max_lra: None }
        );
        assert_eq!(parse("{}").unwrap(), QcSettings::default());
    }

    #[test]
    fn values_out_of_range_are_refused_naming_the_field() {
        let refused = [
            (r#"{"black":{"max_seconds":0}}"#, "`qc.black.max_seconds` must be between 0.1 and 86400, got 0"),
            (r#"{"black":{"max_seconds":86401}}"#, "`qc.black.max_seconds`"),
            (r#"{"freeze":{"max_seconds":-1}}"#, "`qc.freeze.max_seconds`"),
            (r#"{"freeze":{"noise_db":-10}}"#, "`qc.freeze.noise_db` must be between -90 and -20, got -10"),
            (r#"{"silence":{"threshold_db":0}}"#, "`qc.silence.threshold_db`"),
            (r#"{"silence":{"max_seconds":0.05}}"#, "`qc.silence.max_seconds`"),
            (r#"{"interlace":{"max_ratio":1.5}}"#, "`qc.interlace.max_ratio` must be between 0 and 1, got 1.5"),
            (r#"{"letterbox":{"max_ratio":-0.1}}"#, "`qc.letterbox.max_ratio`"),
            (r#"{"loudness":{"min_lufs":-80}}"#, "`qc.loudness.min_lufs`"),
            (r#"{"loudness":{"max_lufs":3}}"#, "`qc.loudness.max_lufs`"),
            (r#"{"loudness":{"max_true_peak":4}}"#, "`qc.loudness.max_true_peak`"),
            (r#"{"loudness":{"max_lra":51}}"#, "`qc.loudness.max_lra`"),
            (r#"{"loudness":{"min_lufs":-14,"max_lufs":-20}}"#, "`qc.loudness.min_lufs` (-14) must not be above"),
        ];
        for (json, want) in refused {
            let err = parse(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
        // The bounds themselves are accepted.
        for json in [
            r#"{"black":{"max_seconds":0.1},"freeze":{"max_seconds":86400,"noise_db":-90}}"#,
            r#"{"interlace":{"max_ratio":0},"letterbox":{"max_ratio":1}}"#,
            r#"{"loudness":{"min_lufs":-70,"max_lufs":0,"max_true_peak":3,"max_lra":0}}"#,
            r#"{"loudness":{"min_lufs":-20,"max_lufs":-20}}"#,
        ] {
            assert!(parse(json).is_ok(), "{json}");
        }
    }

    #[test]
    fn unknown_fields_and_strings_are_refused() {
        for json in [
            r#"{"blak":{}}"#,
            r#"{"black":{"max_seconds":2,"args":"-f lavfi"}}"#,
            r#"{"black":{"max_seconds":"2; rm -rf"}}"#,
            r#"{"black":{"action":"explode"}}"#,
            r#"{"loudness":{"target":-23}}"#,
        ] {
            assert!(parse(json).is_err(), "{json}");
        }
        let nan = QcSettings {
            black: Some(BlackRule { max_seconds: f64::NAN, ..BlackRule::default() }),
            ..QcSettings::default()
        };
        assert!(matches!(nan.validate(), Err(QcSettingsError::OutOfRange { field: "black.max_seconds", .. })));
    }

    #[test]
    fn every_field_has_a_range_and_every_range_a_field() {
        for field in QC_FIELDS {
            let range = qc_range(field).unwrap_or_else(|| panic!("{field} has no range"));
            assert!(range.min <= range.max && !range.integer, "{field}");
        }
        assert_eq!(qc_range("black.action"), None);
        let all = QcSettings {
            black: Some(BlackRule::default()),
            freeze: Some(FreezeRule::default()),
            silence: Some(SilenceRule::default()),
            interlace: Some(InterlaceRule::default()),
            letterbox: Some(LetterboxRule::default()),
            loudness: Some(LoudnessRule {
                min_lufs: Some(-28.0),
                max_lufs: Some(-14.0),
                max_true_peak: Some(-1.0),
                max_lra: Some(20.0),
                action: QcAction::Warn,
            }),
        };
        let named: Vec<&str> = all.values().into_iter().map(|(field, _)| field).collect();
        assert_eq!(named, QC_FIELDS, "validate checks every field, in the documented order");
        assert!(all.validate().is_ok(), "the defaults are in range");
    }

    #[test]
    fn rules_say_which_streams_they_need() {
        let video = QcSettings { black: Some(BlackRule::default()), ..QcSettings::default() };
        let audio = QcSettings { silence: Some(SilenceRule::default()), ..QcSettings::default() };
        let both = SourceStreams { video: true, audio: true };
        let sound_only = SourceStreams { video: false, audio: true };
        assert!(video.measures(both) && !video.measures(sound_only));
        assert!(audio.measures(sound_only) && audio.measures(both));
        assert!(!QcSettings::default().measures(both));
    }

    #[test]
    fn derived_measures() {
        assert_eq!(Span { start: 5.28, end: 7.24 }.seconds(), 1.96);
        assert_eq!(Span { start: 2.0, end: 1.0 }.seconds(), 0.0);
        let counts = FieldCounts { tff: 30, bff: 0, progressive: 90, undetermined: 500 };
        assert_eq!(counts.interlaced_ratio(), Some(0.25));
        assert_eq!(FieldCounts { undetermined: 9, ..FieldCounts::default() }.interlaced_ratio(), None);
        let crop = CropArea { width: 480, height: 270, x: 0, y: 45, frame_width: 480, frame_height: 360 };
        assert_eq!(crop.bars_ratio(), 0.25);
        let full = CropArea { width: 640, height: 360, x: 0, y: 0, frame_width: 640, frame_height: 360 };
        assert_eq!(full.bars_ratio(), 0.0);
    }

    #[test]
    fn docs_list_every_field_with_its_default_and_range() {
        let doc = include_str!("../../../docs/qc.md");
        let loudness = LoudnessRule::default().limits();
        let defaults = [
            BlackRule::default().max_seconds,
            FreezeRule::default().max_seconds,
            FreezeRule::default().noise_db,
            SilenceRule::default().max_seconds,
            SilenceRule::default().threshold_db,
            InterlaceRule::default().max_ratio,
            LetterboxRule::default().max_ratio,
            loudness.min_lufs.unwrap(),
            loudness.max_lufs.unwrap(),
            loudness.max_true_peak.unwrap(),
            loudness.max_lra.unwrap(),
        ];
        let rows: Vec<Vec<&str>> = doc
            .lines()
            .filter(|line| line.starts_with("| `") && line.contains(" to "))
            .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
            .collect();
        assert_eq!(rows.len(), QC_FIELDS.len(), "docs/qc.md's table has one row per field");
        for ((row, field), default) in rows.iter().zip(QC_FIELDS).zip(defaults) {
            assert_eq!(row[0], format!("`{field}`"), "docs/qc.md lists the fields in QC_FIELDS' order");
            assert_eq!(row[1].parse::<f64>().ok(), Some(default), "`{field}`'s default");
            let range = qc_range(field).unwrap();
            assert_eq!(row[2], format!("{} to {}", range.min, range.max), "`{field}`'s range");
        }
    }
}
