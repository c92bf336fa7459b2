//! The ladder from each rung's choice: which rungs stay (the hull), and the decision the
//! manifest records.

use serde::{Deserialize, Serialize};

use crate::domain::per_title::{
    ChoiceReason, MIN_QUALITY_STEP, MIN_RATE_STEP, Probe, QualityTarget, RungChoice, SAME_QUALITY, Window,
};

/// A rung's search result, before the ladder is pruned.
#[derive(Debug, Clone, PartialEq)]
pub struct RungCandidate {
    /// As in the master playlist and the folder under `hls/` (e.g. `720p`).
    pub name: String,
    /// Short side, in lines.
    pub height: u32,
    /// The rung's `-maxrate`, in kb/s.
    pub cap_kbps: u32,
    pub choice: RungChoice,
    pub probes: Vec<Probe>,
}

/// A rung the ladder keeps, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RungDecision {
    pub name: String,
    pub height: u32,
    pub crf: u32,
    /// Worst-window VMAF at the viewing size.
    pub predicted_vmaf: f64,
    pub predicted_kbps: f64,
    /// Highest rate over 2 s of a window.
    pub predicted_peak_kbps: f64,
    /// The rung's `-maxrate` (kb/s), which holds whatever the CRF.
    pub cap_kbps: u32,
    /// The predicted peak is over the cap: the rate control, not the CRF, bounds this rung's
    /// hardest parts (the probes were encoded under the same cap, so the prediction includes it).
    pub capped: bool,
    pub reason: ChoiceReason,
    /// Every probe of the rung, in the order made.
    pub probes: Vec<Probe>,
}

/// Why a rung left the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Less than [`MIN_QUALITY_STEP`] VMAF above the next lower kept rung.
    QualityStep,
    /// Less than [`MIN_RATE_STEP`] times the next lower kept rung's rate.
    RateStep,
    /// The top rung, no better than the rung below it (within [`SAME_QUALITY`]).
    SameQuality,
}

/// A rung the ladder left out, and the kept rung it was compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DroppedRung {
    pub name: String,
    pub height: u32,
    pub crf: u32,
    pub predicted_vmaf: f64,
    pub predicted_kbps: f64,
    pub reason: DropReason,
    /// The next lower kept rung's name.
    pub compared_with: String,
    pub probes: Vec<Probe>,
}

/// The ladder's rungs worth keeping, largest first, and the ones dropped, largest first. From
/// the smallest rung up, each rung is compared with the next lower rung kept so far:
/// - less than [`MIN_QUALITY_STEP`] more VMAF (the largest rung: no better, within
///   [`SAME_QUALITY`]): the rung costs bits and shows nothing, and it is dropped;
/// - more quality, but less than [`MIN_RATE_STEP`] times the rate: the two ask the same of the
///   network, so the lower one is dropped and its viewers get the better picture, unless the
///   lower one is the smallest rung (what a slow network gets), which stays; then the upper
///   one goes, unless it is the largest, which stays too (large screens on fast networks).
pub fn hull(mut rungs: Vec<RungCandidate>) -> (Vec<RungDecision>, Vec<DroppedRung>) {
    rungs.sort_by_key(|r| r.height);
    let top = rungs.len().saturating_sub(1);
    let mut kept: Vec<RungDecision> = Vec::new();
    let mut dropped = Vec::new();
    for (i, rung) in rungs.into_iter().enumerate() {
        let rung = decision(rung);
        loop {
            let Some(below) = kept.last() else {
                kept.push(rung);
                break;
            };
            let gain = rung.predicted_vmaf - below.predicted_vmaf;
            let close_rate = rung.predicted_kbps < MIN_RATE_STEP * below.predicted_kbps;
            let same = if i == top { gain <= SAME_QUALITY } else { gain < MIN_QUALITY_STEP };
            if same {
                let reason = if i == top { DropReason::SameQuality } else { DropReason::QualityStep };
                dropped.push(dropped_rung(rung, reason, &below.name));
                break;
            }
            if !close_rate {
                kept.push(rung);
                break;
            }
            if kept.len() > 1 {
                // The lower rung gives way: compare this one with the rung below it next.
                if let Some(lower) = kept.pop() {
                    dropped.push(dropped_rung(lower, DropReason::RateStep, &rung.name));
                }
                continue;
            }
            if i == top {
                kept.push(rung);
            } else {
                dropped.push(dropped_rung(rung, DropReason::RateStep, &below.name));
            }
            break;
        }
    }
    kept.reverse();
    dropped.sort_by_key(|d: &DroppedRung| std::cmp::Reverse(d.height));
    (kept, dropped)
}

fn dropped_rung(rung: RungDecision, reason: DropReason, compared_with: &str) -> DroppedRung {
    DroppedRung {
        name: rung.name,
        height: rung.height,
        crf: rung.crf,
        predicted_vmaf: rung.predicted_vmaf,
        predicted_kbps: rung.predicted_kbps,
        reason,
        compared_with: compared_with.to_string(),
        probes: rung.probes,
    }
}

fn decision(rung: RungCandidate) -> RungDecision {
    let c = rung.choice;
    RungDecision {
        name: rung.name,
        height: rung.height,
        crf: c.crf,
        predicted_vmaf: c.predicted_vmaf,
        predicted_kbps: c.predicted_kbps,
        predicted_peak_kbps: c.predicted_peak_kbps,
        cap_kbps: rung.cap_kbps,
        capped: c.predicted_peak_kbps > f64::from(rung.cap_kbps),
        reason: c.reason,
        probes: rung.probes,
    }
}

/// What the per-title analysis decided for an HLS output, recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LadderDecision {
    pub target: QualityTarget,
    /// Seconds of the title the ladder covers (for `predicted_bytes`).
    pub duration_seconds: f64,
    /// The stretches of the source the probes encoded.
    pub windows: Vec<Window>,
    /// The rungs encoded, largest first.
    pub rungs: Vec<RungDecision>,
    /// The rungs left out, largest first.
    pub dropped: Vec<DroppedRung>,
    /// Video bytes of the kept rungs over the whole title, from their predicted rates.
    pub predicted_bytes: u64,
    /// Wall time of the analysis (probe encodes and scoring), set by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_ms: Option<u64>,
    /// CPU time of the analysis's ffmpeg runs and scoring, set by the worker: compare it with
    /// the ladder's encode to check the analysis's cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_cpu_ms: Option<u64>,
}

impl LadderDecision {
    /// The decision from each rung's search: the [`hull`] of the rungs, and their bytes.
    pub fn new(target: QualityTarget, duration_seconds: f64, windows: Vec<Window>, rungs: Vec<RungCandidate>) -> Self {
        let (rungs, dropped) = hull(rungs);
        let predicted_bytes = predicted_bytes(&rungs, duration_seconds);
        Self {
            target,
            duration_seconds,
            windows,
            rungs,
            dropped,
            predicted_bytes,
            analysis_ms: None,
            analysis_cpu_ms: None,
        }
    }
}

/// Video bytes of `rungs` over `duration_seconds`: the sum of kb/s x seconds x 1000 / 8.
pub fn predicted_bytes(rungs: &[RungDecision], duration_seconds: f64) -> u64 {
    let seconds = if duration_seconds.is_finite() { duration_seconds.max(0.0) } else { 0.0 };
    let kbps: f64 = rungs.iter().map(|r| r.predicted_kbps).filter(|k| k.is_finite() && *k > 0.0).sum();
    // Saturating cast: a rate or duration out of range gives u64::MAX, never a wrap.
    (kbps * seconds * 1000.0 / 8.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dropped rungs as (name, reason, the rung compared with).
    type Dropped = &'static [(&'static str, DropReason, &'static str)];
    /// The four rungs' (VMAF, kb/s), largest first.
    type Numbers = [(f64, f64); 4];

    /// A rung at `height` with its predicted numbers (the peak at 1.5 x the average).
    fn rung(height: u32, cap: u32, crf: u32, vmaf: f64, kbps: f64, reason: ChoiceReason) -> RungCandidate {
        let choice =
            RungChoice { crf, predicted_vmaf: vmaf, predicted_kbps: kbps, predicted_peak_kbps: kbps * 1.5, reason };
        let probe = Probe {
            crf,
            worst_window_vmaf: vmaf,
            mean_vmaf: vmaf + 1.0,
            kbps,
            peak_kbps: kbps * 1.5,
            worst_window_kbps: kbps,
        };
        RungCandidate { name: format!("{height}p"), height, cap_kbps: cap, choice, probes: vec![probe] }
    }

    /// The fixed ladder's rungs and caps, with (vmaf, kbps) each, largest first.
    fn ladder(numbers: Numbers) -> Vec<RungCandidate> {
        let shape = [(1080, 5000), (720, 2800), (480, 1400), (360, 800)];
        shape.iter().zip(numbers).map(|(&(h, cap), (v, k))| rung(h, cap, 23, v, k, ChoiceReason::Target)).collect()
    }

    fn names<T>(rungs: &[T], name: impl Fn(&T) -> &str) -> Vec<String> {
        rungs.iter().map(|r| name(r).to_string()).collect()
    }

    #[test]
    fn rungs_that_add_too_little_leave_the_ladder() {
        use DropReason::*;
        // (the rungs' (vmaf, kb/s), kept, dropped with reason and the rung compared with)
        let cases: &[(Numbers, &[&str], Dropped)] = &[
            ([(96.0, 4200.0), (92.0, 2400.0), (85.0, 1100.0), (78.0, 600.0)], &["1080p", "720p", "480p", "360p"], &[]),
            // 720p is 0.5 above 480p; 1080p is then compared with 480p.
            (
                [(96.0, 4200.0), (85.5, 2000.0), (85.0, 1100.0), (78.0, 600.0)],
                &["1080p", "480p", "360p"],
                &[("720p", QualityStep, "480p")],
            ),
            // 720p is 3 points better at 1.1 x the rate of 480p.
            // 720p is 3 VMAF better at 1.1 x 480p's rate: 480p gives way to it.
            (
                [(96.0, 4200.0), (88.0, 1210.0), (85.0, 1100.0), (78.0, 600.0)],
                &["1080p", "720p", "360p"],
                &[("480p", RateStep, "720p")],
            ),
            // Close to the smallest rung's rate: the smallest stays, the upper one goes.
            (
                [(96.0, 4200.0), (88.0, 2000.0), (85.0, 700.0), (78.0, 600.0)],
                &["1080p", "720p", "360p"],
                &[("480p", RateStep, "360p")],
            ),
            // Exactly 1.0 above and 1.25 x: kept.
            ([(96.0, 4200.0), (86.0, 1375.0), (85.0, 1100.0), (78.0, 600.0)], &["1080p", "720p", "480p", "360p"], &[]),
            // 480p drops against 360p, and 720p is compared with 360p, not with the dropped 480p.
            (
                [(96.0, 4200.0), (80.0, 2000.0), (78.5, 900.0), (78.0, 600.0)],
                &["1080p", "720p", "360p"],
                &[("480p", QualityStep, "360p")],
            ),
            // The top rung no better than the one below (an upscaled source): it goes.
            (
                [(95.1, 4400.0), (95.0, 2500.0), (88.0, 1100.0), (80.0, 600.0)],
                &["720p", "480p", "360p"],
                &[("1080p", SameQuality, "720p")],
            ),
            (
                [(94.0, 4400.0), (95.0, 2500.0), (88.0, 1100.0), (80.0, 600.0)],
                &["720p", "480p", "360p"],
                &[("1080p", SameQuality, "720p")],
            ),
            // The top rung a little better at a close rate: it stays, and 720p gives way to it.
            (
                [(95.6, 2600.0), (95.0, 2500.0), (88.0, 1100.0), (80.0, 600.0)],
                &["1080p", "480p", "360p"],
                &[("720p", RateStep, "1080p")],
            ),
            // The lowest rung stays whatever the others are.
            (
                [(80.1, 700.0), (80.0, 650.0), (80.0, 620.0), (80.0, 600.0)],
                &["360p"],
                &[("1080p", SameQuality, "360p"), ("720p", QualityStep, "360p"), ("480p", QualityStep, "360p")],
            ),
        ];
        for (numbers, kept, dropped) in cases {
            let (k, d) = hull(ladder(*numbers));
            assert_eq!(names(&k, |r| &r.name), *kept, "{numbers:?}");
            let got: Vec<(&str, DropReason, &str)> =
                d.iter().map(|r| (r.name.as_str(), r.reason, r.compared_with.as_str())).collect();
            assert_eq!(got, *dropped, "{numbers:?}");
        }
    }

    #[test]
    fn a_hull_of_few_rungs() {
        assert_eq!(hull(Vec::new()), (Vec::new(), Vec::new()));
        // A source below 360 lines has one rung, its own size: it stays.
        let (kept, dropped) = hull(vec![rung(144, 800, 23, 70.0, 300.0, ChoiceReason::ResolutionLimited)]);
        assert_eq!((kept.len(), dropped.len()), (1, 0));
        assert_eq!((kept[0].name.as_str(), kept[0].crf, kept[0].cap_kbps), ("144p", 23, 800));
        // Given in any order, the ladder comes back largest first.
        let mut shuffled = ladder([(96.0, 4200.0), (92.0, 2400.0), (85.0, 1100.0), (78.0, 600.0)]);
        shuffled.swap(0, 2);
        shuffled.swap(1, 3);
        let (kept, _) = hull(shuffled);
        assert_eq!(kept.iter().map(|r| r.height).collect::<Vec<_>>(), [1080, 720, 480, 360]);
    }

    #[test]
    fn a_peak_over_the_cap_is_recorded() {
        // Peaks at 1.5 x the average: 800 x 1.5 = 1200 is the cap exactly, 801 x 1.5 is over it.
        for (kbps, capped) in [(800.0, false), (801.0, true), (300.0, false)] {
            let (kept, _) = hull(vec![rung(360, 1200, 23, 80.0, kbps, ChoiceReason::Target)]);
            assert_eq!(kept[0].capped, capped, "{kbps}");
        }
    }

    #[test]
    fn a_ladder_under_the_target_keeps_its_choices() {
        // Every rung under a 97 target: the top at its best probe, the others at CRF 23.
        let rungs = vec![
            rung(1080, 5000, 17, 94.0, 4900.0, ChoiceReason::OutOfReach),
            rung(720, 2800, 23, 90.0, 2200.0, ChoiceReason::ResolutionLimited),
            rung(480, 1400, 23, 82.0, 1100.0, ChoiceReason::ResolutionLimited),
            rung(360, 800, 23, 74.0, 620.0, ChoiceReason::ResolutionLimited),
        ];
        let (kept, dropped) = hull(rungs);
        assert!(dropped.is_empty());
        let got: Vec<(u32, ChoiceReason)> = kept.iter().map(|r| (r.crf, r.reason)).collect();
        use ChoiceReason::*;
        assert_eq!(got, [(17, OutOfReach), (23, ResolutionLimited), (23, ResolutionLimited), (23, ResolutionLimited)]);
        assert!(kept[0].capped, "4900 x 1.5 is over 5000");
    }

    #[test]
    fn predicted_bytes_add_the_kept_rungs_over_the_title() {
        let numbers = [(96.0, 4000.0), (92.0, 2000.0), (85.0, 1000.0), (78.0, 600.0)];
        let (kept, _) = hull(ladder(numbers));
        // (4000 + 2000 + 1000 + 600) kb/s x 60 s x 1000 / 8.
        assert_eq!(predicted_bytes(&kept, 60.0), 57_000_000);
        assert_eq!(predicted_bytes(&kept, 0.0), 0);
        assert_eq!(predicted_bytes(&kept, f64::NAN), 0);
        assert_eq!(predicted_bytes(&[], 60.0), 0);
    }

    #[test]
    fn the_decision_reads_back_from_the_manifest() {
        let target = QualityTarget { vmaf: 95.0 };
        let windows = vec![Window { start: 19.0, duration: 2.0 }, Window { start: 49.0, duration: 2.0 }];
        let rungs = ladder([(96.0, 3500.0), (85.5, 1500.0), (85.0, 800.0), (78.0, 450.0)]);
        let mut decision = LadderDecision::new(target, 100.0, windows, rungs);
        // The bytes count only the kept rungs: (3500 + 800 + 450) x 100 x 125.
        assert_eq!(decision.predicted_bytes, 59_375_000);
        let json = serde_json::to_value(&decision).unwrap();
        assert_eq!(json["target"]["vmaf"], 95.0);
        assert_eq!(json["windows"][1]["start"], 49.0);
        assert_eq!(json["rungs"][0]["name"], "1080p");
        assert_eq!(json["rungs"][0]["reason"], "target");
        assert_eq!(json["rungs"][0]["capped"], true, "a 5250 kb/s peak over the 5000 cap");
        assert_eq!(json["rungs"][1]["capped"], false);
        assert_eq!(json["rungs"][0]["probes"][0]["worst_window_vmaf"], 96.0);
        assert_eq!(json["dropped"][0]["name"], "720p");
        assert_eq!(json["dropped"][0]["reason"], "quality_step");
        assert_eq!(json["dropped"][0]["compared_with"], "480p");
        assert!(json.get("analysis_ms").is_none(), "{json}");
        decision.analysis_ms = Some(5400);
        decision.analysis_cpu_ms = Some(9100);
        let json = serde_json::to_string(&decision).unwrap();
        assert!(json.contains(r#""analysis_ms":5400"#), "{json}");
        let back: LadderDecision = serde_json::from_str(&json).unwrap();
        assert_eq!(back, decision);
    }
}
