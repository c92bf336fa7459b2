//! The verdict: each rule of a job's `qc` settings against what the pass measured.
//!
//! A rule breaks when its measure passes its limit strictly (a 2.0 s stretch meets a 2.0 s
//! limit). Each broken rule is one finding, with the rule's action; the verdict is `fail` when
//! any finding fails, `warn` when there are only warnings. Messages speak of the source in
//! seconds, percentages and loudness units, never of files or filters.

use serde::{Deserialize, Serialize};

use crate::domain::qc::{
    CropArea, FieldCounts, InterlaceRule, LetterboxRule, Loudness, LoudnessRule, QcAction, QcMeasurements, QcSettings,
    Span,
};

/// The outcome of a job's quality checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No rule broke.
    Pass,
    /// Only `warn` rules broke: the job completes with the findings.
    Warn,
    /// A `fail` rule broke: the job fails with `qc_failed`.
    Fail,
}

/// What a finding is about: a rule of the settings, or for loudness, which of its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QcRule {
    Black,
    Freeze,
    Silence,
    Interlace,
    Letterbox,
    /// Integrated loudness, below `min_lufs` or above `max_lufs`.
    Loudness,
    /// True peak, above `max_true_peak`.
    TruePeak,
    /// Loudness range, above `max_lra`.
    LoudnessRange,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Finding {
    pub rule: QcRule,
    pub action: QcAction,
    /// The measure that broke the limit, in the limit's unit: seconds of the longest stretch, a
    /// share from 0 to 1, LUFS, dBTP or LU.
    pub measured: f64,
    pub limit: f64,
    /// For stretches: every stretch longer than the limit, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<Span>,
    /// The finding in a sentence, e.g. "2.52 s of black from 0.0 s (limit 2.0 s)".
    pub message: String,
}

/// The quality checks' outcome: the verdict and what made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QcReport {
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

/// Judges `measured` by `settings`. A rule whose measure is missing (a picture rule on a source
/// without video, sound a rule cannot measure) has no finding.
pub fn evaluate(settings: &QcSettings, measured: &QcMeasurements) -> QcReport {
    let mut findings = Vec::new();
    if let Some(rule) = settings.black {
        findings.extend(stretches(QcRule::Black, rule.action, rule.max_seconds, &measured.black, "black"));
    }
    if let Some(rule) = settings.freeze {
        findings.extend(stretches(QcRule::Freeze, rule.action, rule.max_seconds, &measured.freeze, "frozen picture"));
    }
    if let Some(rule) = settings.silence {
        let what = format!("silence (below {} dB)", number(rule.threshold_db));
        findings.extend(stretches(QcRule::Silence, rule.action, rule.max_seconds, &measured.silence, &what));
    }
    if let (Some(rule), Some(fields)) = (settings.interlace, measured.interlace) {
        findings.extend(interlace(rule, fields));
    }
    if let (Some(rule), Some(crop)) = (settings.letterbox, measured.crop) {
        findings.extend(letterbox(rule, crop));
    }
    if let (Some(rule), Some(measured)) = (settings.loudness, measured.loudness) {
        findings.extend(loudness(rule, measured));
    }
    let verdict = if findings.iter().any(|f| f.action == QcAction::Fail) {
        Verdict::Fail
    } else if findings.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Warn
    };
    QcReport { verdict, findings }
}

/// The finding of a stretch rule: the stretches longer than `limit`, if any.
fn stretches(rule: QcRule, action: QcAction, limit: f64, spans: &[Span], what: &str) -> Option<Finding> {
    let over: Vec<Span> = spans.iter().copied().filter(|s| s.seconds() > limit).collect();
    let longest = *over.iter().max_by(|a, b| a.seconds().total_cmp(&b.seconds()))?;
    let (length, start, limit_text) = (number(longest.seconds()), number(longest.start), number(limit));
    let message = match over.len() {
        1 => format!("{length} s of {what} from {start} s (limit {limit_text} s)"),
        n => format!("{n} stretches of {what} longer than {limit_text} s; the longest, {length} s from {start} s"),
    };
    Some(Finding { rule, action, measured: longest.seconds(), limit, spans: over, message })
}

fn interlace(rule: InterlaceRule, fields: FieldCounts) -> Option<Finding> {
    let ratio = fields.interlaced_ratio().filter(|ratio| *ratio > rule.max_ratio)?;
    let interlaced = fields.tff + fields.bff;
    let message = format!(
        "{interlaced} of {} frames are interlaced ({}; limit {})",
        interlaced + fields.progressive,
        percent(ratio),
        percent(rule.max_ratio)
    );
    Some(finding(QcRule::Interlace, rule.action, ratio, rule.max_ratio, message))
}

fn letterbox(rule: LetterboxRule, crop: CropArea) -> Option<Finding> {
    let ratio = crop.bars_ratio();
    if ratio <= rule.max_ratio {
        return None;
    }
    let message = format!(
        "black bars cover {} of the frame (picture {}x{} of {}x{}; limit {})",
        percent(ratio),
        crop.width,
        crop.height,
        crop.frame_width,
        crop.frame_height,
        percent(rule.max_ratio)
    );
    Some(finding(QcRule::Letterbox, rule.action, ratio, rule.max_ratio, message))
}

/// One finding per loudness limit broken.
fn loudness(rule: LoudnessRule, measured: Loudness) -> Vec<Finding> {
    let limits = rule.limits();
    let integrated = measured.integrated_lufs;
    let checks = [
        (QcRule::Loudness, "integrated loudness", integrated, limits.min_lufs, Bound::Min, "LUFS"),
        (QcRule::Loudness, "integrated loudness", integrated, limits.max_lufs, Bound::Max, "LUFS"),
        (QcRule::TruePeak, "true peak", measured.true_peak_dbtp, limits.max_true_peak, Bound::Max, "dBTP"),
        (QcRule::LoudnessRange, "loudness range", measured.lra, limits.max_lra, Bound::Max, "LU"),
    ];
    let mut findings = Vec::new();
    for (kind, what, value, limit, bound, unit) in checks {
        let Some(limit) = limit else { continue };
        let (broken, side) = match bound {
            Bound::Min => (value < limit, "below the minimum"),
            Bound::Max => (value > limit, "above the maximum"),
        };
        if broken {
            let message = format!("{what} {value:.1} {unit} is {side} of {limit:.1} {unit}");
            findings.push(finding(kind, rule.action, value, limit, message));
        }
    }
    findings
}

/// Which side of a loudness limit breaks it.
#[derive(Clone, Copy)]
enum Bound {
    Min,
    Max,
}

fn finding(rule: QcRule, action: QcAction, measured: f64, limit: f64, message: String) -> Finding {
    Finding { rule, action, measured, limit, spans: Vec::new(), message }
}

/// Seconds or decibels for a sentence: to the millisecond, with one decimal at least (`2.0`,
/// `2.52`, `2.001`).
fn number(value: f64) -> String {
    // Adding zero turns -0 into 0.
    let text = format!("{:.3}", value + 0.0);
    let text = text.trim_end_matches('0');
    if text.ends_with('.') { format!("{text}0") } else { text.to_string() }
}

/// A share as a percentage for a sentence (`25 %`, `20.5 %`).
fn percent(share: f64) -> String {
    let text = format!("{:.1}", share * 100.0);
    format!("{} %", text.strip_suffix(".0").unwrap_or(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::qc::{BlackRule, FreezeRule, SilenceRule};

    const WARN: QcAction = QcAction::Warn;
    const FAIL: QcAction = QcAction::Fail;

    fn span(start: f64, end: f64) -> Span {
        Span { start, end }
    }

    fn only(settings: QcSettings, measured: &QcMeasurements) -> QcReport {
        evaluate(&settings, measured)
    }

    /// (rule limit, stretches, expected (measured, stretches over the limit) or none, message).
    type StretchCase = (f64, Vec<Span>, Option<(f64, usize)>, &'static str);

    #[test]
    fn stretch_rules_break_strictly_past_their_limit() {
        let cases: Vec<StretchCase> = vec![
            (2.0, vec![span(0.0, 2.0)], None, "exactly the limit passes"),
            (2.0, vec![span(0.0, 2.001)], Some((2.001, 1)), "a millisecond past it breaks"),
            (2.0, vec![span(0.0, 1.9999)], None, "below a millisecond counts as equal"),
            (2.0, vec![span(0.0, 5.2)], Some((5.2, 1)), "5.2 s of black from 0.0 s (limit 2.0 s)"),
            (2.0, vec![span(1.0, 2.5), span(10.0, 13.5), span(20.0, 22.5)], Some((3.5, 2)), "2 stretches"),
            (2.0, vec![], None, "nothing measured"),
        ];
        for (limit, spans, want, note) in cases {
            let measured = QcMeasurements { black: spans, ..QcMeasurements::default() };
            let rule = BlackRule { max_seconds: limit, action: FAIL };
            let report = only(QcSettings { black: Some(rule), ..QcSettings::default() }, &measured);
            match want {
                None => assert_eq!(report, QcReport { verdict: Verdict::Pass, findings: vec![] }, "{note}"),
                Some((longest, over)) => {
                    assert_eq!(report.verdict, Verdict::Fail, "{note}");
                    let finding = &report.findings[0];
                    assert_eq!(
                        (finding.rule, finding.measured, finding.limit),
                        (QcRule::Black, longest, limit),
                        "{note}"
                    );
                    assert_eq!(finding.spans.len(), over, "{note}");
                }
            }
        }
        let measured = QcMeasurements { black: vec![span(0.0, 5.2)], ..QcMeasurements::default() };
        let report = only(QcSettings { black: Some(BlackRule::default()), ..QcSettings::default() }, &measured);
        assert_eq!(report.findings[0].message, "5.2 s of black from 0.0 s (limit 2.0 s)");
        let measured = QcMeasurements {
            black: vec![span(1.0, 2.5), span(10.0, 13.5), span(20.0, 22.5)],
            ..QcMeasurements::default()
        };
        let report = only(QcSettings { black: Some(BlackRule::default()), ..QcSettings::default() }, &measured);
        assert_eq!(
            report.findings[0].message,
            "2 stretches of black longer than 2.0 s; the longest, 3.5 s from 10.0 s"
        );
        assert_eq!(report.findings[0].spans, vec![span(10.0, 13.5), span(20.0, 22.5)]);
    }

    #[test]
    fn freeze_and_silence_say_what_they_found() {
        let measured = QcMeasurements {
            freeze: vec![span(2.12, 6.0)],
            silence: vec![span(1.00267, 5.01333)],
            ..QcMeasurements::default()
        };
        let settings = QcSettings {
            freeze: Some(FreezeRule { max_seconds: 3.0, ..FreezeRule::default() }),
            silence: Some(SilenceRule { max_seconds: 3.0, threshold_db: -50.0, action: FAIL }),
            ..QcSettings::default()
        };
        let report = evaluate(&settings, &measured);
        assert_eq!(report.verdict, Verdict::Fail);
        let messages: Vec<&str> = report.findings.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "3.88 s of frozen picture from 2.12 s (limit 3.0 s)",
                "4.011 s of silence (below -50.0 dB) from 1.003 s (limit 3.0 s)"
            ]
        );
        assert_eq!(report.findings[0].action, WARN);
        // The same with the limits above what was measured.
        let relaxed = QcSettings {
            freeze: Some(FreezeRule { max_seconds: 3.88, ..FreezeRule::default() }),
            silence: Some(SilenceRule { max_seconds: 4.011, ..SilenceRule::default() }),
            ..QcSettings::default()
        };
        assert_eq!(evaluate(&relaxed, &measured).verdict, Verdict::Pass);
    }

    #[test]
    fn interlacing_is_a_share_of_the_decided_frames() {
        let cases = [
            // (tff, bff, progressive, undetermined, limit, finding's measure)
            (66, 0, 0, 0, 0.2, Some(1.0)),
            (20, 0, 80, 500, 0.2, None),
            (20, 1, 79, 0, 0.2, Some(0.21)),
            (0, 0, 131, 1, 0.0, None),
            (1, 0, 130, 1, 0.0, Some(1.0 / 131.0)),
            (0, 0, 0, 40, 0.0, None),
        ];
        for (tff, bff, progressive, undetermined, limit, want) in cases {
            let measured = QcMeasurements {
                interlace: Some(FieldCounts { tff, bff, progressive, undetermined }),
                ..QcMeasurements::default()
            };
            let settings = QcSettings {
                interlace: Some(InterlaceRule { max_ratio: limit, action: WARN }),
                ..QcSettings::default()
            };
            let report = evaluate(&settings, &measured);
            assert_eq!(report.findings.first().map(|f| f.measured), want, "{tff}/{bff}/{progressive}");
            assert_eq!(report.verdict, if want.is_some() { Verdict::Warn } else { Verdict::Pass });
        }
        let measured = QcMeasurements {
            interlace: Some(FieldCounts { tff: 66, ..FieldCounts::default() }),
            ..QcMeasurements::default()
        };
        let settings = QcSettings { interlace: Some(InterlaceRule::default()), ..QcSettings::default() };
        assert_eq!(
            evaluate(&settings, &measured).findings[0].message,
            "66 of 66 frames are interlaced (100 %; limit 20 %)"
        );
    }

    #[test]
    fn bars_are_a_share_of_the_frame() {
        let crop = |width, height| CropArea { width, height, x: 0, y: 0, frame_width: 480, frame_height: 360 };
        let cases = [
            (crop(480, 270), 0.25, None),
            (crop(480, 270), 0.2, Some(0.25)),
            (crop(360, 270), 0.3, Some(0.4375)),
            (crop(480, 360), 0.0, None),
        ];
        for (area, limit, want) in cases {
            let measured = QcMeasurements { crop: Some(area), ..QcMeasurements::default() };
            let settings = QcSettings {
                letterbox: Some(LetterboxRule { max_ratio: limit, action: FAIL }),
                ..QcSettings::default()
            };
            let report = evaluate(&settings, &measured);
            assert_eq!(report.findings.first().map(|f| f.measured), want, "{area:?} {limit}");
        }
        let measured = QcMeasurements { crop: Some(crop(480, 270)), ..QcMeasurements::default() };
        let settings =
            QcSettings { letterbox: Some(LetterboxRule { max_ratio: 0.2, action: FAIL }), ..QcSettings::default() };
        let report = evaluate(&settings, &measured);
        assert_eq!(
            report.findings[0].message,
            "black bars cover 25 % of the frame (picture 480x270 of 480x360; limit 20 %)"
        );
        assert_eq!(report.verdict, Verdict::Fail);
    }

    #[test]
    fn loudness_checks_each_limit_it_names() {
        let loud = Loudness { integrated_lufs: -14.8, lra: 3.3, true_peak_dbtp: -1.3 };
        let rule = |min, max, peak, lra| LoudnessRule {
            min_lufs: min,
            max_lufs: max,
            max_true_peak: peak,
            max_lra: lra,
            action: WARN,
        };
        let cases = [
            (rule(None, None, None, None), loud, vec![]),
            (rule(None, Some(-16.0), None, None), loud, vec![(QcRule::Loudness, -14.8, -16.0)]),
            (rule(None, Some(-14.8), None, None), loud, vec![]),
            (rule(Some(-14.7), None, None, None), loud, vec![(QcRule::Loudness, -14.8, -14.7)]),
            (rule(None, None, Some(-1.3), Some(3.3)), loud, vec![]),
            (
                rule(None, None, Some(-2.0), Some(3.0)),
                loud,
                vec![(QcRule::TruePeak, -1.3, -2.0), (QcRule::LoudnessRange, 3.3, 3.0)],
            ),
            // Digital silence: below any minimum, never above a peak limit.
            (
                rule(None, None, None, None),
                Loudness { integrated_lufs: -70.0, lra: 0.0, true_peak_dbtp: crate::domain::qc::SILENT_PEAK_DBTP },
                vec![(QcRule::Loudness, -70.0, -28.0)],
            ),
            // The defaults: -28 to -14 LUFS, -1 dBTP, 20 LU.
            (
                rule(None, None, None, None),
                Loudness { integrated_lufs: -9.0, lra: 25.0, true_peak_dbtp: 0.5 },
                vec![
                    (QcRule::Loudness, -9.0, -14.0),
                    (QcRule::TruePeak, 0.5, -1.0),
                    (QcRule::LoudnessRange, 25.0, 20.0),
                ],
            ),
        ];
        for (rule, measured, want) in cases {
            let settings = QcSettings { loudness: Some(rule), ..QcSettings::default() };
            let report = evaluate(&settings, &QcMeasurements { loudness: Some(measured), ..QcMeasurements::default() });
            let got: Vec<(QcRule, f64, f64)> = report.findings.iter().map(|f| (f.rule, f.measured, f.limit)).collect();
            assert_eq!(got, want, "{rule:?} {measured:?}");
        }
        let settings =
            QcSettings { loudness: Some(rule(None, Some(-16.0), Some(-2.0), None)), ..QcSettings::default() };
        let report = evaluate(&settings, &QcMeasurements { loudness: Some(loud), ..QcMeasurements::default() });
        let messages: Vec<&str> = report.findings.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "integrated loudness -14.8 LUFS is above the maximum of -16.0 LUFS",
                "true peak -1.3 dBTP is above the maximum of -2.0 dBTP"
            ]
        );
    }

    #[test]
    fn one_failing_finding_fails_the_report_and_missing_measures_pass() {
        let measured =
            QcMeasurements { black: vec![span(0.0, 3.0)], freeze: vec![span(0.0, 3.0)], ..QcMeasurements::default() };
        let settings = QcSettings {
            black: Some(BlackRule { max_seconds: 2.0, action: WARN }),
            freeze: Some(FreezeRule { max_seconds: 2.0, action: FAIL, ..FreezeRule::default() }),
            interlace: Some(InterlaceRule::default()),
            letterbox: Some(LetterboxRule::default()),
            loudness: Some(LoudnessRule::default()),
            ..QcSettings::default()
        };
        let report = evaluate(&settings, &measured);
        assert_eq!(report.verdict, Verdict::Fail);
        assert_eq!(report.findings.iter().map(|f| f.rule).collect::<Vec<_>>(), [QcRule::Black, QcRule::Freeze]);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["verdict"], "fail");
        assert_eq!(json["findings"][1]["rule"], "freeze");
        assert_eq!(json["findings"][1]["action"], "fail");
        assert_eq!(json["findings"][1]["spans"][0]["end"], 3.0);
        assert_eq!(evaluate(&QcSettings::default(), &measured).verdict, Verdict::Pass);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(2.0), "2.0");
        assert_eq!(number(2.52), "2.52");
        assert_eq!(number(4.01067), "4.011");
        assert_eq!(number(2.001), "2.001");
        assert_eq!(number(-0.0), "0.0");
        assert_eq!(number(-50.0), "-50.0");
        assert_eq!(percent(0.25), "25 %");
        assert_eq!(percent(0.205), "20.5 %");
        assert_eq!(percent(1.0), "100 %");
    }
}
