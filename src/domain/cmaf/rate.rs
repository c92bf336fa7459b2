//! The frame rate a video track's manifests announce (HLS `FRAME-RATE`, DASH `frameRate`).
//!
//! The worker's encodes keep every source frame at its time (`args::source_frame_times`), so a
//! track's sample durations are the source's: constant for most sources, but a phone's
//! recording has timestamps a few milliseconds off a constant clock, and a camera may change
//! rate in changing light. HLS asks for the maximum rate of the rendition; a track that starts
//! at 25 fps and goes to 50 must announce 50, and a jittered 30 fps track must still announce
//! 30, not nothing.

use super::{Fragment, FragmentTiming, reduce};

/// Rates an average snaps to when it lies within [`SNAP`] of one: the cameras' and editors'
/// usual rates, the NTSC ones as their exact fractions.
const STANDARD_RATES: &[(u64, u64)] = &[
    (10, 1),
    (12, 1),
    (15, 1),
    (20, 1),
    (24000, 1001),
    (24, 1),
    (25, 1),
    (30000, 1001),
    (30, 1),
    (48, 1),
    (50, 1),
    (60000, 1001),
    (60, 1),
    (100, 1),
    (120000, 1001),
    (120, 1),
];

/// How far (relative) an average may lie from a standard rate and still be read as it: a 2 s
/// fragment at 30 fps whose first and last timestamps are each up to 4 ms off averages within
/// 0.4 % of 30.
const SNAP: f64 = 0.005;

/// The track's frame rate as an exact fraction, from its fragments (in `timescale` ticks): the
/// highest of the fragments' rates. A fragment whose samples share one duration has the exact
/// rate `timescale / duration`; any other its average (samples over length), snapped to the
/// nearest [`STANDARD_RATES`] within [`SNAP`], else rounded to a thousandth. Fragments of one
/// sample say nothing about a rate and are read only when the track has no other. `None`
/// without a fragment that gives a rate.
pub fn frame_rate(timescale: u32, fragments: &[Fragment]) -> Option<(u64, u64)> {
    let several = fragments.iter().any(|f| f.timing.sample_count >= 2);
    fragments
        .iter()
        .map(|f| &f.timing)
        .filter(|t| !several || t.sample_count >= 2)
        .filter_map(|t| fragment_rate(u64::from(timescale), t))
        .max_by(|a, b| compare(*a, *b))
}

fn fragment_rate(timescale: u64, timing: &FragmentTiming) -> Option<(u64, u64)> {
    match timing.sample_duration {
        Some(duration) if duration > 0 => reduce(timescale, u64::from(duration)),
        _ => average(u64::from(timing.sample_count).saturating_mul(timescale), timing.duration),
    }
}

/// `samples` over `ticks` (both scaled by the timescale), snapped or rounded.
fn average(samples: u64, ticks: u64) -> Option<(u64, u64)> {
    if samples == 0 || ticks == 0 {
        return None;
    }
    let rate = samples as f64 / ticks as f64;
    let nearest = STANDARD_RATES
        .iter()
        .map(|&(n, d)| ((n, d), ((rate - n as f64 / d as f64) / (n as f64 / d as f64)).abs()))
        .filter(|(_, off)| *off <= SNAP)
        .min_by(|a, b| a.1.total_cmp(&b.1));
    match nearest {
        Some((standard, _)) => Some(standard),
        // A finite positive rate; the cast saturates anyway.
        None => reduce((rate * 1000.0).round() as u64, 1000),
    }
}

/// Orders two positive fractions by value.
fn compare(a: (u64, u64), b: (u64, u64)) -> std::cmp::Ordering {
    (u128::from(a.0) * u128::from(b.1)).cmp(&(u128::from(b.0) * u128::from(a.1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cmaf::ByteRange;

    fn fragment(sample_count: u32, duration: u64, shared: Option<u32>) -> Fragment {
        Fragment {
            range: ByteRange { offset: 0, size: 1 },
            timing: FragmentTiming {
                decode_time: 0,
                duration,
                earliest_presentation_time: 0,
                sync: true,
                sample_count,
                sample_duration: shared,
            },
        }
    }

    #[test]
    fn a_constant_rate_is_exact() {
        let fragments = [fragment(60, 60 * 512, Some(512)), fragment(30, 30 * 512, Some(512))];
        assert_eq!(frame_rate(15360, &fragments), Some((30, 1)));
        let ntsc = [fragment(48, 48 * 3003, Some(3003))];
        assert_eq!(frame_rate(90000, &ntsc), Some((30000, 1001)));
    }

    #[test]
    fn a_rate_that_rises_announces_its_highest() {
        // 25 fps for 2 s, then 50 fps: HLS wants the maximum.
        let fragments = [fragment(50, 180_000, Some(3600)), fragment(100, 180_000, Some(1800))];
        assert_eq!(frame_rate(90000, &fragments), Some((50, 1)));
    }

    #[test]
    fn jittered_timestamps_snap_to_the_rate_they_keep() {
        // 60 frames of a 30 fps phone recording whose timestamps wander by a few ms: no shared
        // duration, averages of 29.95 and 30.06.
        let fragments = [fragment(60, 180_300, None), fragment(60, 179_640, None)];
        assert_eq!(frame_rate(90000, &fragments), Some((30, 1)));
        let ntsc = [fragment(60, 180_170, None)];
        assert_eq!(frame_rate(90000, &ntsc), Some((30000, 1001)));
    }

    #[test]
    fn an_unusual_average_is_kept_to_a_thousandth() {
        // 17.5 fps, no standard rate near.
        assert_eq!(frame_rate(90000, &[fragment(35, 180_000, None)]), Some((35, 2)));
    }

    #[test]
    fn one_sample_fragments_count_only_alone() {
        // A last fragment of one short frame must not claim a rate of hundreds.
        let fragments = [fragment(60, 180_000, Some(3000)), fragment(1, 100, Some(100))];
        assert_eq!(frame_rate(90000, &fragments), Some((30, 1)));
        assert_eq!(frame_rate(90000, &[fragment(1, 3000, Some(3000))]), Some((30, 1)));
        assert_eq!(frame_rate(90000, &[]), None);
        assert_eq!(frame_rate(90000, &[fragment(0, 0, None)]), None);
    }
}
