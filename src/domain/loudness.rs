//! Title-level loudness (EBU R128): the job's `loudness` setting, the measurement of the
//! source, and the one audio filter every output (and every segment of a split job) gets.
//!
//! The source is measured once, before anything is encoded, in one ffmpeg pass over its audio
//! (downmixed, or upmixed, to stereo, as every output carries it: a mono source spread over two
//! channels measures louder than the mono track) through two meters in a row:
//! - `ebur128` (the meter of the job's QC rules, and the one the outputs are checked with): the
//!   integrated loudness `I`, the loudness range and the true peak `TP` the decision uses;
//! - `loudnorm`'s first pass (`print_format=json`), run with the same targets as its second:
//!   its summary carries what the second pass needs (`measured_*`, and `target_offset`, the
//!   correction of its own dynamic mode). Its meter reads up to 0.4 LU off `ebur128`'s on the
//!   test clips, so a linear gain is computed from `ebur128`'s `I`.
//!
//! The decision, for a target `T` and a true-peak ceiling `C`:
//! - silence (`I` at or below the gate's floor, -70 LUFS, or `-inf`): no gain;
//! - `TP + (T - I) <= C - 1`: one linear gain `G = T - I` for every sample, the filter
//!   `volume=<G>dB`, the same in every output and every segment, dynamics untouched;
//! - otherwise `loudnorm`'s second pass with the first pass's values (`linear=true`: ffmpeg
//!   keeps it linear if it can, else processes dynamically and limits the true peak), then
//!   `aresample=48000`, since `loudnorm` works (and outputs) at 192 kHz; that filter's result
//!   is measured in a second pass and [`trim`]med to the target by a final `volume`
//!   (`loudnorm`'s own meter and limiter leave it up to 0.5 LU under the target, as `ebur128`
//!   reads it; `loudnorm` limits the peaks 0.5 dB lower than a linear gain may put them, the
//!   trim's room);
//! - `measure` mode: no filter, only the report.
//!
//! The 1 dB below the ceiling ([`CODEC_HEADROOM`]) is for the lossy encoders: AAC at 128 kb/s
//! puts true peaks up to 0.7 dB above those of the samples it was given on the test clips.
//! Every filter starts with `aformat=channel_layouts=stereo`, so what was measured is what is
//! scaled.

use serde::{Deserialize, Serialize};

use crate::domain::qc::Loudness;

/// Lowest and highest targets accepted (LUFS): broadcast (-23, -24) to loud streaming (-14).
pub const TARGET_RANGE: (f64, f64) = (-31.0, -5.0);
/// True-peak ceilings accepted (dBTP).
pub const TRUE_PEAK_RANGE: (f64, f64) = (-9.0, 0.0);
/// The gate's floor: a source measured at or below it is silent.
pub const SILENCE_LUFS: f64 = -70.0;
/// `loudnorm`'s loudness-range target for the dynamic pass (its largest in ffmpeg 5.1):
/// compress the dynamics as little as the filter allows.
const DYNAMIC_LRA: f64 = 20.0;
/// dB kept below the ceiling for the encoders' own overshoot (see the module's notes).
pub const CODEC_HEADROOM: f64 = 1.0;
/// dB under the encoders' headroom `loudnorm` limits the peaks to, the room for a trim.
pub const TRIM_ROOM: f64 = 0.5;
/// `loudnorm`'s lowest true-peak target.
const LOUDNORM_MIN_TP: f64 = -9.0;
/// Fixes the layout before measuring or scaling: stereo, as every output carries it.
const STEREO: &str = "aformat=channel_layouts=stereo";

/// `loudness` in a job: normalise every output's audio to `target`, or only measure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoudnessSettings {
    /// Integrated loudness to reach, in LUFS (-31 to -5), e.g. -16 (streaming) or -23 (EBU R128).
    #[schema(minimum = -31.0, maximum = -5.0, example = -16.0)]
    pub target: f64,
    /// Ceiling of the true peak, in dBTP (-9 to 0).
    #[serde(default = "default_true_peak")]
    #[schema(minimum = -9.0, maximum = 0.0, default = -1.0)]
    pub true_peak: f64,
    #[serde(default)]
    pub mode: LoudnessMode,
}

fn default_true_peak() -> f64 {
    -1.0
}

/// What the job does with the measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LoudnessMode {
    /// Apply the gain (or the dynamic pass) to every output's audio.
    #[default]
    Normalize,
    /// Report the measurement and what normalising would do; leave the audio as it is.
    Measure,
}

impl LoudnessSettings {
    pub fn validate(&self) -> Result<(), String> {
        let within = |v: f64, (lo, hi): (f64, f64)| v.is_finite() && v >= lo && v <= hi;
        if !within(self.target, TARGET_RANGE) {
            return Err(format!("`loudness.target` must be between {} and {} LUFS", TARGET_RANGE.0, TARGET_RANGE.1));
        }
        if !within(self.true_peak, TRUE_PEAK_RANGE) {
            return Err(format!(
                "`loudness.true_peak` must be between {} and {} dBTP",
                TRUE_PEAK_RANGE.0, TRUE_PEAK_RANGE.1
            ));
        }
        Ok(())
    }
}

/// The source's loudness (in stereo): `ebur128`'s measures, and `loudnorm`'s first pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoudnessMeasurement {
    /// Integrated loudness (LUFS), -70 for silence.
    pub integrated: f64,
    /// True peak (dBTP).
    pub true_peak: f64,
    /// Loudness range (LU).
    pub range: f64,
    /// `loudnorm`'s own measures, which its second pass is given.
    pub loudnorm: LoudnormPass,
}

/// `loudnorm`'s first-pass summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoudnormPass {
    /// Integrated loudness (LUFS); absent for silence (`-inf`).
    pub integrated: Option<f64>,
    /// True peak (dBTP); absent for silence (`-inf`).
    pub true_peak: Option<f64>,
    /// Loudness range (LU).
    pub range: f64,
    /// The relative gate's threshold (LUFS).
    pub threshold: f64,
    /// The correction its second pass applies (LU); absent for silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<f64>,
}

impl LoudnessMeasurement {
    fn is_silent(&self) -> bool {
        !self.integrated.is_finite() || self.integrated <= SILENCE_LUFS || self.loudnorm.integrated.is_none()
    }
}

/// What was done to the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LoudnessAction {
    /// `measure` mode: nothing.
    Measured,
    /// Silence: nothing to scale.
    Silent,
    /// One gain for every sample (`volume`).
    Linear,
    /// `loudnorm`'s second pass: the gain varies, peaks are limited.
    Dynamic,
}

/// The manifest's `loudness`: the setting, the measurement and the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoudnessReport {
    pub target: f64,
    pub true_peak_ceiling: f64,
    pub mode: LoudnessMode,
    pub measured: LoudnessMeasurement,
    pub action: LoudnessAction,
    /// The linear gain (dB) that reaches the target: applied when `action` is `linear`, what
    /// normalising would apply in `measure` mode (absent for silence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain_db: Option<f64>,
    /// After `loudnorm`'s dynamic pass: the linear gain (dB) that brings its result, as
    /// `ebur128` measured it, to the target (within the room under the ceiling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trim_db: Option<f64>,
    /// The exact audio filter every output that encodes audio got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

impl LoudnessReport {
    /// The filter for `-af` (none: the audio is left as it is).
    pub fn audio_filter(&self) -> Option<&str> {
        self.filter.as_deref()
    }
}

/// The decision for `settings` on a source measured as `measured`.
pub fn decide(settings: &LoudnessSettings, measured: &LoudnessMeasurement) -> LoudnessReport {
    let mut report = LoudnessReport {
        target: settings.target,
        true_peak_ceiling: settings.true_peak,
        mode: settings.mode,
        measured: *measured,
        action: LoudnessAction::Silent,
        gain_db: None,
        trim_db: None,
        filter: None,
    };
    if measured.is_silent() {
        return report;
    }
    let gain = round2(settings.target - measured.integrated);
    report.gain_db = Some(gain);
    if settings.mode == LoudnessMode::Measure {
        report.action = LoudnessAction::Measured;
        return report;
    }
    if measured.true_peak + gain <= settings.true_peak - CODEC_HEADROOM {
        report.action = LoudnessAction::Linear;
        report.filter = Some(format!("{STEREO},volume={gain:.2}dB"));
    } else {
        report.action = LoudnessAction::Dynamic;
        report.filter = Some(dynamic_filter(settings, &measured.loudnorm));
    }
    report
}

/// Trims a dynamic decision by what its filter was measured to reach (`after`: `ebur128` on
/// the source through the filter): a final `volume` of `target - I`, as far as the peaks stay
/// the encoders' headroom under the ceiling, like a linear gain's (`loudnorm` limits them
/// [`TRIM_ROOM`] lower to leave room for it). `loudnorm`'s own meter and its limiter leave its
/// result up to 0.5 LU under the target as `ebur128` measures it. Other decisions, and trims
/// under 0.05 dB, are left alone.
pub fn trim(report: &mut LoudnessReport, after: &Loudness) {
    let Some(filter) = report.filter.as_mut().filter(|_| report.action == LoudnessAction::Dynamic) else { return };
    if !after.integrated_lufs.is_finite() || after.integrated_lufs <= SILENCE_LUFS {
        return;
    }
    let room = report.true_peak_ceiling - CODEC_HEADROOM - after.true_peak_dbtp;
    let gain = round2((report.target - after.integrated_lufs).min(room));
    if gain.abs() >= 0.05 {
        filter.push_str(&format!(",volume={gain:.2}dB"));
        report.trim_db = Some(gain);
    }
}

/// The true peak `loudnorm` is asked for: the ceiling less the encoders' headroom and the
/// trim's room.
fn limiter_ceiling(settings: &LoudnessSettings) -> f64 {
    (settings.true_peak - CODEC_HEADROOM - TRIM_ROOM).max(LOUDNORM_MIN_TP)
}

/// `loudnorm`'s second pass with the first pass's values, back at 48 kHz.
fn dynamic_filter(settings: &LoudnessSettings, m: &LoudnormPass) -> String {
    let mut filter = format!(
        "{STEREO},loudnorm=I={:.1}:TP={:.1}:LRA={DYNAMIC_LRA:.1}:measured_I={:.2}:measured_TP={:.2}:\
         measured_LRA={:.2}:measured_thresh={:.2}",
        settings.target,
        limiter_ceiling(settings),
        m.integrated.unwrap_or(SILENCE_LUFS),
        m.true_peak.unwrap_or(-99.0),
        m.range,
        m.threshold
    );
    if let Some(offset) = m.offset {
        filter.push_str(&format!(":offset={offset:.2}"));
    }
    filter.push_str(":linear=true:print_format=none,aresample=48000");
    filter
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The measuring pass's filter: stereo as the outputs carry it, `ebur128` (which passes the
/// samples on untouched), then `loudnorm`'s first pass with the second pass's targets (they
/// shape its `target_offset`).
pub fn measure_filter(settings: &LoudnessSettings) -> String {
    format!(
        "{STEREO},ebur128=peak=true:framelog=verbose,loudnorm=I={:.1}:TP={:.1}:LRA={DYNAMIC_LRA:.1}:print_format=json",
        settings.target,
        limiter_ceiling(settings)
    )
}

/// The measurement from `ebur128`'s summary (as the QC parser reads it) and `loudnorm`'s.
pub fn measurement(ebur128: &Loudness, loudnorm: LoudnormPass) -> LoudnessMeasurement {
    LoudnessMeasurement {
        integrated: ebur128.integrated_lufs,
        true_peak: ebur128.true_peak_dbtp,
        range: ebur128.lra,
        loudnorm,
    }
}

/// Reads the summary `loudnorm` prints at the end of its first pass (the last one in `log`):
/// a line tagged `[Parsed_loudnorm_<n> @ ...]` followed by a JSON object of strings.
pub fn parse_loudnorm(log: &str) -> Result<LoudnormPass, String> {
    let start = log.rfind("[Parsed_loudnorm_").ok_or("no loudnorm summary in ffmpeg's log")?;
    let rest = &log[start..];
    let open = rest.find('{').ok_or("the loudnorm summary has no JSON object")?;
    let close = rest[open..].find('}').ok_or("the loudnorm summary's JSON object is not closed")? + open;
    let fields: std::collections::HashMap<String, String> =
        serde_json::from_str(&rest[open..=close]).map_err(|e| format!("the loudnorm summary is not JSON: {e}"))?;
    let number = |name: &str| -> Result<f64, String> {
        let text = fields.get(name).ok_or_else(|| format!("the loudnorm summary lacks `{name}`"))?;
        text.trim().parse::<f64>().map_err(|_| format!("`{name}` in the loudnorm summary is not a number"))
    };
    let finite = |v: f64| v.is_finite().then_some(v);
    Ok(LoudnormPass {
        integrated: finite(number("input_i")?),
        true_peak: finite(number("input_tp")?),
        range: finite(number("input_lra")?).unwrap_or(0.0),
        threshold: finite(number("input_thresh")?).unwrap_or(SILENCE_LUFS),
        offset: number("target_offset").ok().and_then(finite),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::qc::QcLogParser;

    /// The end of ffmpeg 5.1's log of the measuring pass (`measure_filter` for -16 LUFS, -1
    /// dBTP) over 12 s of Big Buck Bunny's opening (5.1 AAC downmixed to stereo).
    const REAL: &str = r#"size=N/A time=00:00:12.01 bitrate=N/A speed=8.02x    
video:0kB audio:9008kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
[Parsed_loudnorm_2 @ 0x55f4a3b2d780] 
{
	"input_i" : "-34.79",
	"input_tp" : "-13.53",
	"input_lra" : "5.00",
	"input_thresh" : "-45.20",
	"output_i" : "-16.76",
	"output_tp" : "-1.00",
	"output_lra" : "4.50",
	"output_thresh" : "-26.97",
	"normalization_type" : "dynamic",
	"target_offset" : "0.76"
}
[Parsed_ebur128_1 @ 0x55f4a3b2d900] Summary:

  Integrated loudness:
    I:         -34.5 LUFS
    Threshold: -45.0 LUFS

  Loudness range:
    LRA:         5.2 LU
    Threshold: -54.4 LUFS
    LRA low:   -38.2 LUFS
    LRA high:  -33.0 LUFS

  True peak:
    Peak:      -13.5 dBFS
"#;

    const SILENT: &str = "[Parsed_loudnorm_0 @ 0x55836152da40] \n{\n\t\"input_i\" : \"-inf\",\n\t\"input_tp\" : \"-inf\",\n\t\
\"input_lra\" : \"0.00\",\n\t\"input_thresh\" : \"-70.00\",\n\t\"output_i\" : \"-inf\",\n\t\"output_tp\" : \"-inf\",\n\t\
\"output_lra\" : \"0.00\",\n\t\"output_thresh\" : \"-70.00\",\n\t\"normalization_type\" : \"linear\",\n\t\
\"target_offset\" : \"inf\"\n}\n";

    fn settings(target: f64, mode: LoudnessMode) -> LoudnessSettings {
        LoudnessSettings { target, true_peak: -1.0, mode }
    }

    fn measured(i: f64, tp: f64) -> LoudnessMeasurement {
        let loudnorm = LoudnormPass {
            integrated: Some(i - 0.3),
            true_peak: Some(tp),
            range: 5.0,
            threshold: i - 10.7,
            offset: Some(0.76),
        };
        LoudnessMeasurement { integrated: i, true_peak: tp, range: 5.2, loudnorm }
    }

    #[test]
    fn parses_a_real_measuring_pass() {
        let pass = parse_loudnorm(REAL).unwrap();
        assert_eq!(
            pass,
            LoudnormPass {
                integrated: Some(-34.79),
                true_peak: Some(-13.53),
                range: 5.0,
                threshold: -45.2,
                offset: Some(0.76)
            }
        );
        // The same log through the QC parser gives ebur128's summary.
        let mut parser = QcLogParser::new();
        parser.line("Stream mapping:");
        REAL.lines().for_each(|line| parser.line(line));
        let ebur128 = parser.finish().loudness.unwrap();
        let m = measurement(&ebur128, pass);
        assert_eq!((m.integrated, m.true_peak, m.range), (-34.5, -13.5, 5.2));

        let silent = parse_loudnorm(SILENT).unwrap();
        assert_eq!((silent.integrated, silent.true_peak, silent.offset), (None, None, None));
        assert_eq!(silent.threshold, -70.0);
        assert!(parse_loudnorm("[Parsed_ebur128_0 @ 0x1] Summary:").is_err());
        assert!(parse_loudnorm("[Parsed_loudnorm_0 @ 0x1] \n{\n\"input_i\" : \"-20\"\n}").is_err(), "fields missing");
        assert!(parse_loudnorm("[Parsed_loudnorm_0 @ 0x1] \n{\n\"input_i\" : \"loud\",").is_err());
    }

    #[test]
    fn decision_table() {
        let normalize = settings(-16.0, LoudnessMode::Normalize);
        // Quiet with headroom: one gain, the exact filter.
        let linear = decide(&normalize, &measured(-34.5, -25.0));
        assert_eq!((linear.action, linear.gain_db), (LoudnessAction::Linear, Some(18.5)));
        assert_eq!(linear.audio_filter(), Some("aformat=channel_layouts=stereo,volume=18.50dB"));
        // Attenuation fits unless the peaks stay within the encoders' headroom of the ceiling;
        // peaks landing exactly 1 dB under it still fit.
        let loud = decide(&normalize, &measured(-6.0, -1.0));
        assert_eq!(loud.audio_filter(), Some("aformat=channel_layouts=stereo,volume=-10.00dB"));
        assert_eq!(decide(&normalize, &measured(-20.0, -6.0)).action, LoudnessAction::Linear);
        assert_eq!(decide(&normalize, &measured(-14.9, -0.7)).action, LoudnessAction::Dynamic, "clipped");
        // The gain would push the peaks over the ceiling: loudnorm's second pass, limited 1 dB
        // under the ceiling.
        let dynamic = decide(&normalize, &measured(-34.5, -13.53));
        assert_eq!((dynamic.action, dynamic.gain_db), (LoudnessAction::Dynamic, Some(18.5)));
        assert_eq!(
            dynamic.audio_filter(),
            Some(
                "aformat=channel_layouts=stereo,loudnorm=I=-16.0:TP=-2.5:LRA=20.0:measured_I=-34.80:measured_TP=-13.53:\
                 measured_LRA=5.00:measured_thresh=-45.20:offset=0.76:linear=true:print_format=none,aresample=48000"
            )
        );
        let low = LoudnessSettings { true_peak: -8.5, ..normalize };
        assert!(decide(&low, &measured(-34.5, -13.53)).audio_filter().unwrap().contains(":TP=-9.0:"));
        // Its result measured: trimmed to the target, the peaks kept 1 dB under the ceiling.
        let mut trimmed = dynamic.clone();
        trim(&mut trimmed, &Loudness { integrated_lufs: -16.3, lra: 4.0, true_peak_dbtp: -2.5 });
        assert_eq!(trimmed.trim_db, Some(0.3));
        assert!(trimmed.audio_filter().unwrap().ends_with("aresample=48000,volume=0.30dB"));
        let mut capped = dynamic.clone();
        trim(&mut capped, &Loudness { integrated_lufs: -17.0, lra: 4.0, true_peak_dbtp: -2.3 });
        assert_eq!(capped.trim_db, Some(0.3), "capped by the peaks");
        let mut close = dynamic.clone();
        trim(&mut close, &Loudness { integrated_lufs: -16.02, lra: 4.0, true_peak_dbtp: -2.5 });
        assert_eq!((close.trim_db, close.filter), (None, dynamic.filter.clone()));
        let mut linear_kept = linear.clone();
        trim(&mut linear_kept, &Loudness { integrated_lufs: -17.0, lra: 4.0, true_peak_dbtp: -9.0 });
        assert_eq!(linear_kept, linear);
        // Silence: no gain at all, whatever the mode.
        let floor = LoudnessMeasurement { integrated: -70.0, true_peak: -144.0, ..measured(-70.0, -60.0) };
        let inf = LoudnessMeasurement {
            loudnorm: LoudnormPass { integrated: None, true_peak: None, offset: None, ..floor.loudnorm },
            ..floor
        };
        for silent in [floor, inf] {
            let report = decide(&normalize, &silent);
            assert_eq!((report.action, report.gain_db, report.audio_filter()), (LoudnessAction::Silent, None, None));
        }
        // Measure mode: reports what normalising would do, filters nothing.
        let measure = decide(&settings(-23.0, LoudnessMode::Measure), &measured(-34.5, -13.5));
        assert_eq!(
            (measure.action, measure.gain_db, measure.audio_filter()),
            (LoudnessAction::Measured, Some(11.5), None)
        );
    }

    #[test]
    fn settings_parse_with_defaults_and_check_ranges() {
        let s: LoudnessSettings = serde_json::from_str(r#"{"target": -16}"#).unwrap();
        assert_eq!(s, settings(-16.0, LoudnessMode::Normalize));
        let s: LoudnessSettings =
            serde_json::from_str(r#"{"target": -23, "true_peak": -2, "mode": "measure"}"#).unwrap();
        assert_eq!((s.true_peak, s.mode), (-2.0, LoudnessMode::Measure));
        assert!(serde_json::from_str::<LoudnessSettings>(r#"{"target": -16, "lra": 7}"#).is_err());
        assert!(serde_json::from_str::<LoudnessSettings>(r#"{"target": -16, "mode": "loud"}"#).is_err());
        assert!(s.validate().is_ok());
        for (target, peak) in [(-32.0, -1.0), (-4.0, -1.0), (f64::NAN, -1.0), (-16.0, 0.5), (-16.0, -9.5)] {
            assert!(LoudnessSettings { target, true_peak: peak, mode: LoudnessMode::Normalize }.validate().is_err());
        }
        assert_eq!(
            measure_filter(&s),
            "aformat=channel_layouts=stereo,ebur128=peak=true:framelog=verbose,\
             loudnorm=I=-23.0:TP=-3.5:LRA=20.0:print_format=json"
        );
    }
}
