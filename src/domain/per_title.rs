//! The per-title HLS ladder's decisions, without I/O: which parts of the title to analyse,
//! which CRFs to probe on each rung, which CRF each rung gets, and which rungs the ladder
//! keeps. The worker encodes and scores the probes; everything it decides from their numbers
//! is here. The method and the reasons for each choice: `docs/per-title.md`.
//!
//! One rung's search, as the worker runs it:
//!
//! ```text
//! let mut crf = first_probe();
//! loop {
//!     probes.push(encode_and_score(rung, &windows, crf));   // one Probe per CRF
//!     match next_probe(role, cap_kbps, &probes, target.vmaf) {
//!         Some(next) => crf = next,
//!         None => break,
//!     }
//! }
//! let choice = choose_crf(role, &probes, target.vmaf);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::range::OptionRange;

mod ladder;
pub mod probe;
mod sample;
pub use ladder::{DropReason, DroppedRung, LadderDecision, RungCandidate, RungDecision, hull, predicted_bytes};
pub use sample::{Complexity, SampleBudget, Window, sample_windows};

/// The VMAF targets a job may ask for. Below 70 the ladder would be visibly poor on purpose;
/// above 99 the score is in the model's saturated top, where a CRF change moves it by less
/// than its noise, so the search could not aim.
pub const TARGET_RANGE: OptionRange = OptionRange { min: 70.0, max: 99.0, integer: false };
/// The CRF of the fixed ladder: every search starts here, and lower rungs never go below it.
pub const DEFAULT_CRF: u32 = 23;
/// The CRFs a search may use. Over 17..38 x264's VMAF falls roughly linearly with CRF, which
/// the search relies on; below 17 bits grow fast for no visible gain, above 38 blocking shows.
pub const MIN_CRF: u32 = 17;
pub const MAX_CRF: u32 = 38;
/// Probe encodes per rung at most: the analysis budget (`docs/per-title.md`, "Cost").
pub const MAX_PROBES: usize = 3;
/// A probe whose worst window lands this little above the target ends the search: about the
/// quality of one CRF step, and more than VMAF's noise between runs.
pub const LANDING_BAND: f64 = 0.5;
/// VMAF per CRF step assumed before two probes measure it (x264 `-preset fast`, 1080p viewing).
const ASSUMED_SLOPE: f64 = -1.0;
/// Measured slopes are held to this range: a flat or rising pair of noisy probes must not send
/// the next probe to infinity, nor a steep pair make it crawl.
const SLOPE_LIMITS: (f64, f64) = (-3.0, -0.3);
/// Two probes under the target that gained less than this per CRF step say the rung's quality
/// no longer follows its CRF: its rate cap binds (grain, high motion) or the source is the
/// limit. Half the flattest slope the search assumes, so the noise of two probes (about ±0.3
/// each, three or more steps apart) does not read a real slope of -0.5 as flat.
const FLAT_SLOPE: f64 = -0.15;
/// A lower rung is kept only if its predicted VMAF is at least this far above the next lower
/// kept rung's: about one just-noticeable difference.
pub const MIN_QUALITY_STEP: f64 = 1.0;
/// ... and its predicted rate at least this many times the next lower kept rung's.
pub const MIN_RATE_STEP: f64 = 1.25;
/// The top rung goes only when it is no better than the rung below by more than this (VMAF's
/// noise between near-identical pictures): then it costs bits and shows nothing.
pub const SAME_QUALITY: f64 = 0.25;

/// The job's `quality` object: the ladder is made per title to reach this VMAF.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QualityTarget {
    /// VMAF (model v0.6.1, 0 to 100) that every rung's worst sampled window should reach,
    /// scored at the viewing size (the source's size capped to 1080 lines on the short side).
    #[schema(minimum = 70, maximum = 99, example = 95)]
    pub vmaf: f64,
}

/// Why a quality target is refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TargetError {
    /// `quality.vmaf` is outside [`TARGET_RANGE`] (or not a number).
    Vmaf(f64),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Vmaf(v) => {
                write!(f, "`quality.vmaf` must be between {} and {}, got {v}", TARGET_RANGE.min, TARGET_RANGE.max)
            }
        }
    }
}

impl std::error::Error for TargetError {}

impl QualityTarget {
    pub fn validate(&self) -> Result<(), TargetError> {
        let v = self.vmaf;
        if v.is_finite() && (TARGET_RANGE.min..=TARGET_RANGE.max).contains(&v) {
            Ok(())
        } else {
            Err(TargetError::Vmaf(v))
        }
    }
}

/// Which rung a search is for: the largest rung may spend more bits than the fixed ladder to
/// reach the target; the lower rungs may not (`docs/per-title.md`, "Top and lower rungs").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RungRole {
    Top,
    Lower,
    /// The smallest rung: what slow networks get, and the rung that scores lowest at the
    /// viewing size. It keeps the fixed ladder's CRF, so no title's worst rung is worse than the
    /// fixed ladder's (a one-rung ladder is its own smallest rung).
    Bottom,
}

/// Whether a ladder of `rungs` rungs is worth probing. A one-rung ladder (a source of 360 lines
/// or less, or a cap on the ladder) is its own smallest rung, at CRF 23 whatever its probes
/// say ([`RungRole::Bottom`]), with no neighbour for the [`hull`] to weigh it against: probes
/// would decide nothing, for 31 % of a 2-minute title's encode on the test set's smallest clip.
pub fn worth_probing(rungs: usize) -> bool {
    rungs > 1
}

impl RungRole {
    /// The CRFs this rung may use, lowest first.
    pub fn crf_bounds(self) -> (u32, u32) {
        match self {
            RungRole::Top => (MIN_CRF, MAX_CRF),
            RungRole::Lower => (DEFAULT_CRF, MAX_CRF),
            RungRole::Bottom => (DEFAULT_CRF, DEFAULT_CRF),
        }
    }
}

/// One probe: the sample windows encoded at one CRF with the rung's final settings (scale,
/// preset, rate cap), and scored per frame at the viewing size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Probe {
    pub crf: u32,
    /// The lowest of the windows' mean VMAFs: what the decisions use.
    pub worst_window_vmaf: f64,
    /// Mean VMAF over every scored frame of every window.
    pub mean_vmaf: f64,
    /// Average video rate over the windows.
    pub kbps: f64,
    /// Highest rate over any 2 s of a window.
    pub peak_kbps: f64,
    /// Average video rate of the window that scored lowest: at or over the rung's rate cap,
    /// the cap binds where the decision is made, and no lower CRF buys that window bits
    /// (0 in decisions recorded before it was kept: unknown).
    #[serde(default)]
    pub worst_window_kbps: f64,
}

/// Why a rung has its CRF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChoiceReason {
    /// The highest CRF predicted to reach the target.
    Target,
    /// A lower rung under the target at CRF 23: its size limits it, so it keeps CRF 23.
    ResolutionLimited,
    /// The top rung under the target at every CRF probed: it gets the best one probed.
    OutOfReach,
    /// The smallest rung ([`RungRole::Bottom`]) keeps the fixed ladder's CRF 23, over the
    /// target or under it: it aims at no target.
    SmallestRung,
    /// No usable probe: the fixed ladder's CRF 23.
    Unmeasured,
}

/// A rung's CRF and what the probes predict for it (interpolated between them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RungChoice {
    pub crf: u32,
    /// Worst-window VMAF.
    pub predicted_vmaf: f64,
    pub predicted_kbps: f64,
    pub predicted_peak_kbps: f64,
    pub reason: ChoiceReason,
}

/// The first CRF to probe on every rung: the fixed ladder's, so the analysis measures today's
/// ladder first and every decision is relative to it.
pub fn first_probe() -> u32 {
    DEFAULT_CRF
}

/// The next CRF to probe on a rung capped at `cap_kbps`, after `probes`, or `None` when the
/// search is over: a probe landed within [`LANDING_BAND`] above `target`, probes bracket it,
/// the rung's CRF bound is reached or lies over a step short of where two probes under the
/// target say it would be reached, no new CRF is left to learn from, the rate cap binds on the
/// worst window under the target ([`rate_capped`]), or [`MAX_PROBES`] were made. The second
/// probe assumes VMAF falls by one per CRF step and aims a quarter point above the target; the
/// third follows the slope the two measured. Once probes lie on both sides of the target the
/// search is over: the choice
/// interpolates between them. Every estimate rounds down to the lower CRF, the side that keeps
/// quality.
pub fn next_probe(rung: RungRole, cap_kbps: u32, probes: &[Probe], target: f64) -> Option<u32> {
    if probes.len() >= MAX_PROBES {
        return None;
    }
    let points = curve(probes);
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Some(first_probe());
    };
    if points.iter().any(|p| p.vmaf >= target && p.vmaf <= target + LANDING_BAND) {
        return None;
    }
    // Off the probes, aim inside the band, so a probe lands above the target even when the
    // slope is a little off; between two probes, aim at the CRF the choice would take.
    let aim = target + LANDING_BAND / 2.0;
    let above = points.iter().rev().find(|p| p.vmaf >= target);
    let below = points.iter().find(|p| p.vmaf < target);
    let estimate = match (above, below) {
        // Probes on both sides: [`choose_crf`] interpolates between them (a probe more would
        // confirm the interpolation, for the cost of encoding the sample once more).
        (Some(_), Some(_)) => return None,
        // Every probe is above the target: follow the slope up from the highest CRF.
        (Some(_), None) => extrapolate(&points[points.len().saturating_sub(2)..], *last, aim),
        // Every probe is below: follow it down from the lowest.
        _ => extrapolate(&points[..points.len().min(2)], *first, aim),
    };
    if above.is_none() && probes.iter().any(|p| p.worst_window_vmaf.is_finite() && rate_capped(p, cap_kbps)) {
        // Under the target with the worst window already at the cap: a lower CRF asks for bits
        // the rate control will not give that window.
        return None;
    }
    let (low, high) = rung.crf_bounds();
    if above.is_none() && flat(&points) && estimate < f64::from(low) {
        // Flat under the target, and even the flattest assumed slope needs a CRF past the
        // bound: a probe there would spend the most expensive encode of the search to confirm
        // the rung out of reach.
        return None;
    }
    if above.is_none() && points.len() >= 2 && estimate < f64::from(low) - 1.0 {
        // Two probes under the target, and their line reaches it only more than a CRF step
        // past the bound. VMAF gains less per step the lower the CRF (its curve flattens
        // toward the top), so the line is the hopeful reading: the bound's probe would land
        // short, and an unreachable top rung keeps CRF 23 whatever it scored.
        return None;
    }
    let crf = clamp_crf(estimate.floor(), low, high);
    (!points.iter().any(|p| p.crf == crf)).then_some(crf)
}

/// Whether `probe`'s worst window ran at or over the rung's rate cap (`cap_kbps`, the
/// `-maxrate`). Over a window of a second or two the encoder may spend more than the cap from
/// its full buffer; a window that averaged the cap or more is one the rate control was holding
/// back, and on the test set's grain a lower CRF then bought no bits (3144 and 3208 kb/s at
/// CRF 23 against a 2800 cap, 3034 and 3038 at CRF 17).
fn rate_capped(probe: &Probe, cap_kbps: u32) -> bool {
    cap_kbps > 0 && probe.worst_window_kbps >= f64::from(cap_kbps)
}

/// Whether the two lowest CRFs probed measured a slope flatter than [`FLAT_SLOPE`] (or a rise).
fn flat(points: &[Point]) -> bool {
    match points {
        [a, b, ..] if b.crf > a.crf => (b.vmaf - a.vmaf) / f64::from(b.crf - a.crf) > FLAT_SLOPE,
        _ => false,
    }
}

/// The CRF where the line through `from` with the slope of `pair` (if two points) reaches `aim`.
fn extrapolate(pair: &[Point], from: Point, aim: f64) -> f64 {
    let slope = match pair {
        [a, b] if b.crf > a.crf => (b.vmaf - a.vmaf) / f64::from(b.crf - a.crf),
        _ => ASSUMED_SLOPE,
    };
    let slope = if slope.is_nan() { ASSUMED_SLOPE } else { slope.clamp(SLOPE_LIMITS.0, SLOPE_LIMITS.1) };
    f64::from(from.crf) + (aim - from.vmaf) / slope
}

fn clamp_crf(value: f64, low: u32, high: u32) -> u32 {
    // Saturating cast; NaN becomes 0 and then `low`.
    (value.max(0.0) as u32).clamp(low, high)
}

/// The CRF for a rung: the highest CRF, between the probes and within the rung's bounds, whose
/// worst-window VMAF (interpolated linearly between probes) reaches `target`. A lower rung that
/// cannot reach it keeps CRF 23 ([`ChoiceReason::ResolutionLimited`]); a top rung that cannot
/// keeps CRF 23 too ([`ChoiceReason::OutOfReach`]). So the chosen CRF's predicted
/// quality is never below min(target, the prediction at CRF 23).
pub fn choose_crf(rung: RungRole, probes: &[Probe], target: f64) -> RungChoice {
    let points = curve(probes);
    if rung == RungRole::Bottom {
        // Predicted from the probes when there are some ([`worth_probing`]), else 0: unknown.
        return predicted(&points, DEFAULT_CRF, ChoiceReason::SmallestRung);
    }
    let (Some(first), Some(last)) = (points.first().copied(), points.last().copied()) else {
        let reason = ChoiceReason::Unmeasured;
        return RungChoice {
            crf: DEFAULT_CRF,
            predicted_vmaf: 0.0,
            predicted_kbps: 0.0,
            predicted_peak_kbps: 0.0,
            reason,
        };
    };
    let (low, high) = rung.crf_bounds();
    let (lowest, highest) = (first.crf.clamp(low, high), last.crf.clamp(low, high));
    if let Some(crf) = (lowest..=highest).rev().find(|c| predict(&points, *c).vmaf >= target) {
        return predicted(&points, crf, ChoiceReason::Target);
    }
    match rung {
        RungRole::Lower | RungRole::Bottom => predicted(&points, DEFAULT_CRF, ChoiceReason::ResolutionLimited),
        // No CRF down to the lowest reaches the target: the rate cap binds (grain) or the
        // source itself is the limit, and a lower CRF would spend bits (twice as many at 17 on
        // the test set's camera footage) for a point or less. The fixed ladder's CRF stays.
        RungRole::Top => predicted(&points, DEFAULT_CRF, ChoiceReason::OutOfReach),
    }
}

fn predicted(points: &[Point], crf: u32, reason: ChoiceReason) -> RungChoice {
    let p = predict(points, crf);
    RungChoice { crf, predicted_vmaf: p.vmaf, predicted_kbps: p.kbps, predicted_peak_kbps: p.peak, reason }
}

/// A probe as the decisions read it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    crf: u32,
    vmaf: f64,
    kbps: f64,
    peak: f64,
}

/// The probes as a curve over CRF: unusable probes left out (a score or rate that is not a
/// number, no bits), one point per CRF (a repeated CRF keeps its lower score and higher
/// rates), ascending, and quality made non-increasing in CRF by carrying the lowest score so
/// far forward: probes are noisy, and a higher CRF that scored a hair better than a lower one
/// must not be credited with it.
fn curve(probes: &[Probe]) -> Vec<Point> {
    let mut points: Vec<Point> = probes
        .iter()
        .filter(|p| p.worst_window_vmaf.is_finite() && p.kbps.is_finite() && p.kbps > 0.0)
        .map(|p| Point {
            crf: p.crf,
            vmaf: p.worst_window_vmaf,
            kbps: p.kbps,
            peak: if p.peak_kbps.is_finite() { p.peak_kbps.max(p.kbps) } else { p.kbps },
        })
        .collect();
    points.sort_by_key(|p| p.crf);
    points.dedup_by(|later, kept| {
        let same = later.crf == kept.crf;
        if same {
            kept.vmaf = kept.vmaf.min(later.vmaf);
            kept.kbps = kept.kbps.max(later.kbps);
            kept.peak = kept.peak.max(later.peak);
        }
        same
    });
    let mut lowest = f64::INFINITY;
    for point in &mut points {
        lowest = lowest.min(point.vmaf);
        point.vmaf = lowest;
    }
    points
}

/// The curve at `crf`: quality linear between the probes around it, rates linear in their
/// logarithm (x264's rate roughly halves every 6 CRF steps); outside the probes, the nearest.
fn predict(points: &[Point], crf: u32) -> Point {
    let i = points.partition_point(|p| p.crf < crf);
    let (a, b) = match (i.checked_sub(1).and_then(|j| points.get(j)), points.get(i)) {
        (Some(a), Some(b)) if b.crf > crf => (*a, *b),
        (_, Some(p)) | (Some(p), None) => return Point { crf, ..*p },
        (None, None) => return Point { crf, vmaf: 0.0, kbps: 0.0, peak: 0.0 },
    };
    let t = (f64::from(crf) - f64::from(a.crf)) / (f64::from(b.crf) - f64::from(a.crf));
    let log_lerp = |x: f64, y: f64| (x.ln() + (y.ln() - x.ln()) * t).exp();
    Point { crf, vmaf: a.vmaf + (b.vmaf - a.vmaf) * t, kbps: log_lerp(a.kbps, b.kbps), peak: log_lerp(a.peak, b.peak) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: f64 = 95.0;
    /// A rate cap no test probe reaches.
    const NO_CAP: u32 = 1_000_000;
    /// Probes as (CRF, worst-window VMAF).
    type Points = &'static [(u32, f64)];
    /// A model of a rung's quality per CRF.
    type Model = Box<dyn Fn(u32) -> f64>;

    /// A probe whose rates follow x264's rule of thumb: half the bits every 6 CRF steps.
    fn probe(crf: u32, worst: f64) -> Probe {
        let kbps = 3000.0 * 2f64.powf(-(f64::from(crf) - 23.0) / 6.0);
        Probe {
            crf,
            worst_window_vmaf: worst,
            mean_vmaf: worst + 1.5,
            kbps,
            peak_kbps: kbps * 1.8,
            worst_window_kbps: kbps,
        }
    }

    fn probes(points: &[(u32, f64)]) -> Vec<Probe> {
        points.iter().map(|&(crf, worst)| probe(crf, worst)).collect()
    }

    #[test]
    fn quality_targets_are_checked_against_their_range() {
        for (vmaf, ok) in [
            (70.0, true),
            (95.0, true),
            (99.0, true),
            (69.99, false),
            (99.01, false),
            (0.0, false),
            (-95.0, false),
            (f64::NAN, false),
            (f64::INFINITY, false),
        ] {
            let result = QualityTarget { vmaf }.validate();
            assert_eq!(result.is_ok(), ok, "{vmaf}");
            if let Err(e) = result {
                let message = e.to_string();
                assert!(message.starts_with("`quality.vmaf` must be between 70 and 99, got"), "{message}");
            }
        }
    }

    #[test]
    fn the_quality_object_takes_only_vmaf() {
        let target: QualityTarget = serde_json::from_str(r#"{"vmaf": 95}"#).unwrap();
        assert_eq!(target, QualityTarget { vmaf: 95.0 });
        for body in [r#"{"vmaf": 95, "psnr": 40}"#, r#"{}"#, r#"{"vmaf": "95"}"#] {
            assert!(serde_json::from_str::<QualityTarget>(body).is_err(), "{body}");
        }
        assert_eq!(serde_json::to_string(&target).unwrap(), r#"{"vmaf":95.0}"#);
    }

    #[test]
    fn the_search_starts_at_the_fixed_ladders_crf() {
        assert_eq!(first_probe(), 23);
        assert_eq!(next_probe(RungRole::Top, NO_CAP, &[], TARGET), Some(23));
        assert_eq!(next_probe(RungRole::Lower, NO_CAP, &[], TARGET), Some(23));
    }

    #[test]
    fn the_next_probe_follows_the_slope_until_the_target_is_bracketed() {
        use RungRole::{Lower, Top};
        let cases: &[(RungRole, Points, Option<u32>, &str)] = &[
            (Top, &[(23, 95.3)], None, "landed within 0.5 above"),
            (Top, &[(23, 95.0)], None, "landed on the target"),
            (Top, &[(23, 95.5)], None, "landed on the band's top"),
            (Top, &[(23, 95.6)], None, "one CRF step more would fall under"),
            (Top, &[(23, 98.0)], Some(25), "slope -1: 23 + 2.75"),
            (Lower, &[(23, 98.0)], Some(25), "lower rungs rise the same way"),
            (Top, &[(23, 90.0)], Some(17), "slope -1: 23 - 5.25"),
            (Top, &[(23, 80.0)], Some(17), "clamped to 17"),
            (Top, &[(23, 99.0)], Some(26), "slope -1: 23 + 3.75"),
            (Lower, &[(23, 90.0)], None, "a lower rung never goes below 23"),
            (Top, &[(23, 98.0), (25, 96.6)], Some(26), "secant -0.7 from 25: 25 + 1.93"),
            (Top, &[(23, 98.0), (27, 93.0)], None, "bracketed: the choice interpolates"),
            (Top, &[(23, 90.0), (17, 96.0)], None, "bracketed from below"),
            (Top, &[(23, 96.0), (24, 94.5)], None, "bracketed by neighbours"),
            (Top, &[(23, 90.0), (17, 93.0)], None, "the lowest CRF is reached"),
            (Top, &[(23, 91.2), (20, 91.4)], None, "a rate cap binds: flat far under the target"),
            (Lower, &[(23, 99.0), (38, 97.5)], None, "the highest CRF is reached"),
            (Top, &[(23, 99.5), (30, 99.0)], Some(38), "a flat slope is held to -0.3, clamped to 38"),
            (Top, &[(23, 91.0), (20, 93.0)], Some(17), "secant -0.67 from 20 reaches it at 16.6: the bound"),
            (Top, &[(23, 90.0), (20, 92.0)], None, "at 15.1: more than a step past the bound"),
            (Top, &[(23, 92.05), (19, 93.34)], None, "the static clip's pair: at 13.1"),
            (Top, &[(23, 98.0), (25, 97.0), (26, 96.0)], None, "three probes made"),
        ];
        for &(role, points, expected, why) in cases {
            assert_eq!(next_probe(role, NO_CAP, &probes(points), TARGET), expected, "{why}");
        }
    }

    #[test]
    fn noisy_probes_do_not_send_the_search_astray() {
        use RungRole::Top;
        let cases: &[(Points, Option<u32>, &str)] = &[
            // A higher CRF scored a hair better: read as flat, slope -0.3: 26 + 0.75 / 0.3.
            (&[(23, 96.0), (26, 96.3)], Some(28), "rising pair above the target"),
            // Under the target, a lower CRF scored lower: the rate cap binds, no probe more.
            (&[(23, 94.0), (20, 93.5)], None, "falling pair below the target"),
            // Flatter than -0.3 but not flat: held to -0.3, the bound is probed.
            (&[(23, 93.5), (20, 94.2)], Some(17), "slope -0.23 below the target"),
            // Flat, but the target is near: -0.3 from 20 reaches it at 18.
            (&[(23, 94.6), (20, 94.7)], Some(18), "flat and close below the target"),
            // A steep pair is held to -3 per step: 23 - 10.25 / 3 (at -5 it would be 20).
            (&[(23, 85.0), (25, 75.0)], Some(19), "too steep"),
            (&[(23, f64::NAN)], Some(23), "an unusable probe teaches nothing"),
        ];
        for &(points, expected, why) in cases {
            assert_eq!(next_probe(Top, NO_CAP, &probes(points), TARGET), expected, "{why}");
        }
        // Zero bits is no probe either.
        let silent = Probe { kbps: 0.0, ..probe(23, 96.0) };
        assert_eq!(next_probe(Top, NO_CAP, &[silent], TARGET), Some(23));
    }

    #[test]
    fn a_worst_window_at_the_rate_cap_ends_the_search_under_the_target() {
        use RungRole::{Lower, Top};
        // The test probes run at 3000 kb/s at CRF 23.
        let cases: &[(RungRole, u32, Points, Option<u32>, &str)] = &[
            (Top, 2800, &[(23, 90.0)], None, "over the cap under the target: no bits to buy"),
            (Top, 3000, &[(23, 90.0)], None, "at the cap"),
            (Top, 3001, &[(23, 90.0)], Some(17), "just under the cap: the slope is followed"),
            (Top, 0, &[(23, 90.0)], Some(17), "no cap known"),
            (Top, 2800, &[(23, 98.0)], Some(25), "over the target, a higher CRF spends less"),
            (Top, 2800, &[(23, 95.2)], None, "on the target"),
            (Lower, 2800, &[(23, 98.0)], Some(25), "a lower rung over the target rises too"),
            (Top, 4000, &[(23, 90.0), (19, 92.0)], None, "the CRF 19 probe reached the cap (4762 kb/s)"),
        ];
        for &(role, cap, points, expected, why) in cases {
            assert_eq!(next_probe(role, cap, &probes(points), TARGET), expected, "{why}");
        }
        // An unusable probe at the cap says nothing about the cap.
        let unusable = Probe { worst_window_vmaf: f64::NAN, ..probe(23, 90.0) };
        assert_eq!(next_probe(Top, 2800, &[unusable], TARGET), Some(23));
        // The capped rung keeps the fixed ladder's CRF.
        let chosen = choose_crf(Top, &probes(&[(23, 90.0)]), TARGET);
        assert_eq!((chosen.crf, chosen.reason), (23, ChoiceReason::OutOfReach));
    }

    fn choice(role: RungRole, points: &[(u32, f64)]) -> RungChoice {
        choose_crf(role, &probes(points), TARGET)
    }

    #[test]
    fn the_highest_crf_reaching_the_target_is_chosen() {
        use ChoiceReason::*;
        use RungRole::{Bottom, Lower, Top};
        let cases: &[(RungRole, Points, u32, f64, ChoiceReason)] = &[
            (Top, &[(23, 95.3)], 23, 95.3, Target),
            (Top, &[(23, 98.0), (25, 96.6), (26, 95.9)], 26, 95.9, Target),
            (Top, &[(23, 98.0), (27, 93.0)], 25, 95.5, Target),
            (Top, &[(23, 90.0), (17, 96.0), (18, 95.2)], 18, 95.2, Target),
            // Out of reach: the fixed ladder's CRF, not twice the bits for a point or less.
            (Top, &[(23, 90.0), (17, 93.5)], 23, 90.0, OutOfReach),
            (Top, &[(23, 92.9), (20, 93.0), (17, 93.0)], 23, 92.9, OutOfReach),
            (Lower, &[(23, 90.0)], 23, 90.0, ResolutionLimited),
            (Lower, &[(23, 98.0), (25, 96.6), (26, 95.9)], 26, 95.9, Target),
            (Lower, &[(23, 99.0), (38, 97.5)], 38, 97.5, Target),
            // A lower rung never goes below 23, whatever was probed there.
            (Lower, &[(20, 97.0), (23, 94.0)], 23, 94.0, ResolutionLimited),
            (Lower, &[(17, 97.0), (29, 91.0)], 23, 94.0, ResolutionLimited),
            // Noise: 26 scored above 23, so it is credited with 23's score only.
            (Top, &[(23, 95.2), (26, 96.5), (29, 93.0)], 26, 95.2, Target),
            // The same CRF twice: the lower score counts.
            (Top, &[(23, 96.0), (23, 95.4), (26, 93.0)], 23, 95.4, Target),
            // Probes outside the bounds: the choice is clamped to 17..38.
            (Top, &[(40, 90.0)], 23, 90.0, OutOfReach),
            (Top, &[(12, 96.0), (14, 94.0)], 23, 94.0, OutOfReach),
            // The smallest rung keeps the fixed ladder's CRF, over the target or under it.
            (Bottom, &[(23, 98.0)], 23, 98.0, SmallestRung),
            (Bottom, &[(23, 90.0)], 23, 90.0, SmallestRung),
        ];
        for &(role, points, crf, vmaf, reason) in cases {
            let chosen = choice(role, points);
            assert_eq!((chosen.crf, chosen.reason), (crf, reason), "{role:?} {points:?}");
            assert!((chosen.predicted_vmaf - vmaf).abs() < 1e-9, "{points:?}: {chosen:?}");
        }
    }

    #[test]
    fn rates_are_interpolated_in_their_logarithm() {
        // 3000 kb/s at 23 and 3000 x 2^(-4/6) at 27: at 25, their geometric mean.
        let chosen = choice(RungRole::Top, &[(23, 98.0), (27, 93.0)]);
        let expected = 3000.0 * 2f64.powf(-2.0 / 6.0);
        assert!((chosen.predicted_kbps - expected).abs() < 1e-6, "{chosen:?}");
        assert!((chosen.predicted_peak_kbps - expected * 1.8).abs() < 1e-6, "{chosen:?}");
        // A probed CRF predicts its own numbers.
        let at = choice(RungRole::Top, &[(23, 95.3)]);
        assert_eq!((at.predicted_kbps, at.predicted_peak_kbps), (3000.0, 5400.0));
    }

    #[test]
    fn no_usable_probe_keeps_the_fixed_ladder() {
        for points in [&[][..], &[(23, f64::NAN)]] {
            let chosen = choice(RungRole::Top, points);
            assert_eq!((chosen.crf, chosen.reason), (23, ChoiceReason::Unmeasured));
        }
    }

    /// A small deterministic generator for property tests.
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn a_choice_is_never_worse_than_the_target_or_the_fixed_ladder() {
        let mut seed = 7;
        for _ in 0..5000 {
            let count = 1 + (lcg(&mut seed) * 3.0) as usize;
            let points: Vec<(u32, f64)> =
                (0..count).map(|_| (17 + (lcg(&mut seed) * 22.0) as u32, 70.0 + lcg(&mut seed) * 30.0)).collect();
            let target = 80.0 + lcg(&mut seed) * 19.0;
            for role in [RungRole::Top, RungRole::Lower] {
                let probes = probes(&points);
                let chosen = choose_crf(role, &probes, target);
                let (low, high) = role.crf_bounds();
                assert!((low..=high).contains(&chosen.crf), "{role:?} {points:?}: {chosen:?}");
                let at_23 = predict(&curve(&probes), DEFAULT_CRF).vmaf;
                assert!(chosen.predicted_vmaf >= target.min(at_23) - 1e-9, "{role:?} {points:?} {target}: {chosen:?}");
            }
        }
    }

    /// One rung's whole search against a model of its quality per CRF.
    fn search(role: RungRole, target: f64, quality: impl Fn(u32) -> f64) -> (Vec<Probe>, RungChoice) {
        let mut made = Vec::new();
        let mut crf = first_probe();
        loop {
            made.push(probe(crf, quality(crf)));
            match next_probe(role, NO_CAP, &made, target) {
                Some(next) => crf = next,
                None => break,
            }
        }
        let chosen = choose_crf(role, &made, target);
        (made, chosen)
    }

    #[test]
    fn a_whole_search_lands_within_three_probes() {
        let linear = |top: f64, slope: f64| move |crf: u32| top + slope * (f64::from(crf) - 23.0);
        // (model, target, role, the CRF chosen)
        let cases: Vec<(Model, f64, RungRole, u32)> = vec![
            (Box::new(linear(97.0, -1.0)), 95.0, RungRole::Top, 24),
            (Box::new(linear(97.0, -0.6)), 95.0, RungRole::Top, 25),
            (Box::new(linear(97.0, -1.8)), 95.0, RungRole::Top, 24),
            (Box::new(linear(91.0, -1.0)), 95.0, RungRole::Top, 19),
            (Box::new(linear(91.0, -0.5)), 95.0, RungRole::Top, 23),
            (Box::new(linear(99.0, -0.8)), 93.0, RungRole::Bottom, 23),
            (Box::new(linear(91.0, -1.0)), 95.0, RungRole::Lower, 23),
            (Box::new(linear(99.0, -0.8)), 93.0, RungRole::Lower, 30),
            (Box::new(linear(99.5, -0.2)), 93.0, RungRole::Lower, 38),
            (Box::new(linear(95.2, -1.0)), 95.0, RungRole::Top, 23),
            // Bending: quality falls faster at high CRFs.
            (Box::new(|c: u32| 98.0 - 0.02 * (f64::from(c) - 17.0).powi(2)), 90.0, RungRole::Lower, 36),
        ];
        for (quality, target, role, expected) in cases {
            let (made, chosen) = search(role, target, &quality);
            assert!(made.len() <= MAX_PROBES, "{made:?}");
            assert_eq!(chosen.crf, expected, "{role:?} {target}: {made:?} -> {chosen:?}");
            // The true quality at the choice: the target when reachable, else the fixed ladder's.
            let fixed = quality(DEFAULT_CRF);
            assert!(quality(chosen.crf) >= target.min(fixed) - 1e-9, "{made:?} -> {chosen:?}");
        }
    }

    #[test]
    fn a_noisy_search_stays_within_half_a_point_of_the_target() {
        let mut seed = 11;
        let (mut probes_made, mut over, mut landed) = (0, 0.0, 0);
        for _ in 0..500 {
            let slope = -0.5 - lcg(&mut seed) * 1.5;
            let top = 90.0 + lcg(&mut seed) * 9.0;
            let noise: Vec<f64> = (0..=40).map(|_| (lcg(&mut seed) - 0.5) * 0.6).collect();
            let quality = |crf: u32| top + slope * (f64::from(crf) - 23.0) + noise[crf as usize];
            let (made, chosen) = search(RungRole::Top, 93.0, quality);
            assert!(made.len() <= 3);
            let clean = top + slope * (f64::from(chosen.crf) - 23.0);
            if chosen.reason == ChoiceReason::Target {
                assert!(clean >= 93.0 - 0.6, "{made:?} -> {chosen:?}: {clean}");
                over += clean - 93.0;
                landed += 1;
            } else {
                assert_eq!(chosen.reason, ChoiceReason::OutOfReach);
                assert!(top + slope * (17.0 - 23.0) < 93.0 + 0.6, "{made:?} -> {chosen:?}");
            }
            probes_made += made.len();
        }
        // Measured: 1.96 probes a rung, 0.73 VMAF above the target on average (a CRF step is
        // 0.5 to 2 points here), every search reaching it. Before the search stopped at two
        // probes bracketing the target it made 2.30 probes and landed 0.75 above.
        assert!(probes_made as f64 / 500.0 <= 2.0, "{probes_made}");
        assert!(over / f64::from(landed) <= 0.85, "{over}");
        assert!(landed >= 490, "{landed}");
    }
}
