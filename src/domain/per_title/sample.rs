//! Which parts of a title the per-title analysis samples: a few short windows spread over its
//! middle (`docs/per-title.md`, "Sample windows").

use serde::{Deserialize, Serialize};

use crate::domain::per_title::probe::LEAD_IN_SECONDS;

/// Sample windows stay out of the title's first and last 5 %, where credits and fades sit.
const EDGE_FRACTION: f64 = 0.05;
/// A stretch whose pictures take at least this many times the bytes of the title's median
/// window of the same length takes its share's window. On the test set the 20 s clips' hardest
/// stretches were 1.0 to 1.9 times their median (no cap binding, windows centred), the 120 s
/// title's grain 6.3 times (the 720p rung's cap binding, 88 VMAF where the rest scored 93+).
pub const HARD_STRETCH: f64 = 3.0;

/// How much of a title the analysis samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleBudget {
    /// Share of the title to sample, in total (0.04: 4 %).
    pub fraction: f64,
    /// Seconds of each window, at most.
    pub window_seconds: f64,
    /// Seconds of each window, at least: on a short title the windows shrink toward this
    /// floor before the sample grows past `fraction`.
    pub min_window_seconds: f64,
    pub min_windows: usize,
    pub max_windows: usize,
}

impl Default for SampleBudget {
    /// 4 % of the title in 3 to 8 windows of 1 to 2 s: three windows of 2 s (one keyframe
    /// interval of the outputs) at 150 s, more of them from 175 s on (1.75 to 2 s each), 8
    /// from 375 s on, of 2 s from 400 s on; on titles under 150 s three windows shortened to 4 % of the title,
    /// down to 1 s each. Under 75 s the floor holds: 3 s in all, 15 % of a 20 s title. Three windows at least, because one window is
    /// one scene; 1 s at least, so that a window is a scene's worth of frames and not its first
    /// keyframe. The probes encode the sample once per rung, the top rung up to three times;
    /// what that costs against the ladder's encode, by title length and content, is measured in
    /// `docs/quality.md` ("Cost on titles of two minutes") and `docs/per-title.md` ("Cost").
    fn default() -> Self {
        Self { fraction: 0.04, window_seconds: 2.0, min_window_seconds: 1.0, min_windows: 3, max_windows: 8 }
    }
}

/// A stretch of the source the probes encode: seconds from the start, and length.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Window {
    pub start: f64,
    pub duration: f64,
}

/// How hard each stretch of the source is to encode, as the source's own encoder found it: the
/// bytes of its inter-coded pictures, by time. Where that encoder held a quality rather than a
/// rate (a camera's VBR, a CRF mezzanine), a stretch that took several times the title's
/// typical bytes is where a rung's rate cap binds first (grain, noise, confetti), and x264
/// then scores it well under the rest: a window goes there ([`HARD_STRETCH`]). Short of that,
/// more bytes mostly mean more motion, which VMAF masks (the test set's animation scored
/// *higher* on its largest pictures), so the window stays centred (`docs/per-title.md`,
/// "Sample windows"). Keyframes are left out, their size follows the source's keyframe
/// interval more than its content, unless most pictures are keyframes (an intra-only source).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Complexity {
    /// The counted pictures' times, ascending.
    times: Vec<f64>,
    /// `bytes_before[i]`: the bytes of the pictures before `times[i]`; one longer than `times`.
    bytes_before: Vec<u64>,
    /// The keyframes' times, ascending: where a decode of the source can start.
    keyframes: Vec<f64>,
}

impl Complexity {
    /// From the source's video packets: (time in seconds, bytes, keyframe), in any order; a
    /// packet of no known time is left out. Times count from the earliest packet, as the
    /// windows do from the title's start (an MPEG-TS source's clock may start at any value).
    pub fn from_packets(packets: impl IntoIterator<Item = (f64, u64, bool)>) -> Self {
        let mut all: Vec<(f64, u64, bool)> = packets.into_iter().filter(|p| p.0.is_finite()).collect();
        let zero = all.iter().map(|p| p.0).reduce(f64::min).unwrap_or(0.0);
        all.iter_mut().for_each(|p| p.0 -= zero);
        let mut keyframes: Vec<f64> = all.iter().filter(|p| p.2).map(|p| p.0).collect();
        keyframes.sort_by(f64::total_cmp);
        if keyframes.len() * 2 <= all.len() {
            all.retain(|p| !p.2);
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut bytes_before = Vec::with_capacity(all.len() + 1);
        bytes_before.push(0u64);
        for p in &all {
            bytes_before.push(bytes_before[bytes_before.len() - 1].saturating_add(p.1));
        }
        Self { times: all.iter().map(|p| p.0).collect(), bytes_before, keyframes }
    }

    /// Seconds of the source decoded and thrown away before `time` when a decode starts at
    /// the keyframe before it (`None`: the keyframes are unknown).
    pub fn decoded_before(&self, time: f64) -> Option<f64> {
        let i = self.keyframes.partition_point(|k| *k <= time);
        i.checked_sub(1).and_then(|i| self.keyframes.get(i)).map(|k| time - k)
    }

    /// The window start in `[from, latest]` nearest to `even` whose probe's lead-in starts on a
    /// keyframe, if any: a millisecond after it, so the start read back to the millisecond is
    /// never before the keyframe (a seek would then decode from the keyframe before).
    fn on_keyframe(&self, from: f64, latest: f64, even: f64) -> Option<f64> {
        self.keyframes
            .iter()
            .map(|k| k + LEAD_IN_SECONDS + 0.001)
            .filter(|start| (from..=latest).contains(start))
            .min_by(|a, b| (a - even).abs().total_cmp(&(b - even).abs()))
    }

    /// The bytes of the counted pictures in `[from, to)`, and how many they are.
    fn bytes_between(&self, from: f64, to: f64) -> (u64, usize) {
        let (a, b) = (self.times.partition_point(|t| *t < from), self.times.partition_point(|t| *t < to));
        match (self.bytes_before.get(b), self.bytes_before.get(a)) {
            (Some(upto), Some(before)) if b > a => (upto - before, b - a),
            _ => (0, 0),
        }
    }

    /// The mean bytes of a counted picture in `[from, to)` (0 for none): a mean, not a sum, so
    /// a window is not preferred for holding one picture more or a keyframe's gap less.
    fn density(&self, from: f64, to: f64) -> f64 {
        let (bytes, pictures) = self.bytes_between(from, to);
        if pictures == 0 { 0.0 } else { bytes as f64 / pictures as f64 }
    }

    /// The median density of the windows of `length` that start at a counted picture (0 for
    /// none).
    fn typical(&self, length: f64) -> f64 {
        let mut all: Vec<f64> = self.times.iter().map(|&t| self.density(t, t + length)).collect();
        let middle = all.len() / 2;
        if all.is_empty() {
            return 0.0;
        }
        all.select_nth_unstable_by(middle, f64::total_cmp);
        all[middle]
    }

    /// Where a window of `length` in `[from, to]` has the densest pictures, and that density: it
    /// starts at `even` or at a counted picture, and of equal candidates the nearest to `even`
    /// wins.
    fn hardest(&self, from: f64, to: f64, length: f64, even: f64) -> (f64, f64) {
        let latest = to - length;
        let (first, last) = (self.times.partition_point(|t| *t < from), self.times.partition_point(|t| *t <= latest));
        let candidates = self.times.get(first..last).unwrap_or_default();
        let mut best = (self.density(even, even + length), even);
        for &start in candidates {
            let density = self.density(start, start + length);
            if density > best.0 || (density == best.0 && (start - even).abs() < (best.1 - even).abs()) {
                best = (density, start);
            }
        }
        (best.1, best.0)
    }
}

/// The windows to analyse a title of `duration` seconds with: one in each of equal shares of
/// the title's middle 90 %, on its hardest stretch where `complexity` finds one
/// [`HARD_STRETCH`] times the title's typical, else where the probe's lead-in starts on a
/// keyframe of the share (the nearest to its centre), else centred in it. On a keyframe, the
/// probes read the window from the source with nothing decoded before it, and need no copy. A title too short to hold the windows in
/// its middle is sampled whole, as one window; a title of no known length gets none.
pub fn sample_windows(duration: f64, complexity: &Complexity, budget: &SampleBudget) -> Vec<Window> {
    if !(duration.is_finite() && duration > 0.0) {
        return Vec::new();
    }
    let length = budget.window_seconds;
    let whole = vec![Window { start: 0.0, duration: millis(duration) }];
    if !(length.is_finite() && length > 0.0) {
        return whole;
    }
    let least = budget.min_windows.max(1);
    // A float-to-int cast saturates (and maps NaN to 0): the clamp decides.
    let wanted = (budget.fraction * duration / length).round() as usize;
    let count = wanted.clamp(least, budget.max_windows.max(least));
    // Shorter windows on short titles, down to the floor (`f64::min`/`max` pass over a NaN).
    let length = (budget.fraction * duration / count as f64).min(length).max(budget.min_window_seconds.min(length));
    let (from, to) = (duration * EDGE_FRACTION, duration * (1.0 - EDGE_FRACTION));
    let share = (to - from) / count as f64;
    if share < length {
        return whole;
    }
    let typical = complexity.typical(length);
    (0..count)
        .map(|i| {
            let part = from + share * i as f64;
            let even = part + (share - length) / 2.0;
            let (hardest, density) = complexity.hardest(part, part + share, length, even);
            let start = if typical > 0.0 && density >= HARD_STRETCH * typical {
                hardest
            } else {
                complexity.on_keyframe(part, part + share - length, even).unwrap_or(even)
            };
            Window { start: millis(start), duration: millis(length) }
        })
        .collect()
}

/// Seconds to the millisecond (what ffmpeg is given), so a decision reads back as written.
fn millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(windows: &[Window]) -> Vec<f64> {
        windows.iter().map(|w| w.start).collect()
    }

    #[test]
    fn windows_spread_evenly_over_the_middle_of_the_title() {
        let budget = SampleBudget::default();
        // (duration, window length, expected starts): 3 windows at least, 8 at most, 4 % in
        // between; windows of 1 s on short titles, growing to 2 s at 150 s.
        let cases: &[(f64, f64, &[f64])] = &[
            (7.0, 1.0, &[0.9, 3.0, 5.1]),
            (100.0, 1.333, &[19.333, 49.333, 79.333]),
            (150.0, 2.0, &[29.0, 74.0, 119.0]),
            (300.0, 2.0, &[36.5, 81.5, 126.5, 171.5, 216.5, 261.5]),
            (3600.0, 2.0, &[381.5, 786.5, 1191.5, 1596.5, 2001.5, 2406.5, 2811.5, 3216.5]),
        ];
        for &(duration, length, expected) in cases {
            let windows = sample_windows(duration, &Complexity::default(), &budget);
            assert_eq!(starts(&windows), expected, "{duration}");
            assert!(windows.iter().all(|w| w.duration == length), "{duration}: {windows:?}");
        }
        // Under 75 s the 1 s floor holds: 3 s in all.
        let short: f64 = sample_windows(20.0, &Complexity::default(), &budget).iter().map(|w| w.duration).sum();
        assert_eq!(short, 3.0);
    }

    #[test]
    fn the_sample_is_about_four_percent_within_the_window_counts() {
        let budget = SampleBudget::default();
        for (duration, count) in [(60.0, 3), (200.0, 4), (250.0, 5), (400.0, 8), (1000.0, 8), (36_000.0, 8)] {
            let windows = sample_windows(duration, &Complexity::default(), &budget);
            assert_eq!(windows.len(), count, "{duration}");
            let share = windows.iter().map(|w| w.duration).sum::<f64>() / duration;
            if (150.0..=400.0).contains(&duration) {
                assert!((share - 0.04).abs() <= 0.004, "{duration}: {share}");
            } else {
                assert!(share <= 0.1, "{duration}: {share}");
            }
        }
    }

    #[test]
    fn a_title_too_short_for_the_windows_is_sampled_whole() {
        let budget = SampleBudget::default();
        for duration in [0.5, 2.0, 3.0, 3.3] {
            assert_eq!(
                sample_windows(duration, &Complexity::default(), &budget),
                vec![Window { start: 0.0, duration }],
                "{duration}"
            );
        }
        // The smallest title that holds three windows of 1 s in its middle 90 %.
        assert_eq!(sample_windows(3.4, &Complexity::default(), &budget).len(), 3);
        // No length, no windows; a window of no length samples the title whole.
        for duration in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            assert!(sample_windows(duration, &Complexity::default(), &budget).is_empty(), "{duration}");
        }
        let odd = SampleBudget { window_seconds: 0.0, ..budget };
        assert_eq!(sample_windows(30.0, &Complexity::default(), &odd), vec![Window { start: 0.0, duration: 30.0 }]);
    }

    /// A profile of a picture every 40 ms, `bytes(t)` each, a keyframe every 2 s of 10x that.
    fn profile(duration: f64, bytes: impl Fn(f64) -> u64) -> Complexity {
        Complexity::from_packets((0..(duration * 25.0) as u32).map(|n| {
            let t = f64::from(n) * 0.04;
            let key = n % 50 == 0;
            (t, if key { 10 * bytes(t) } else { bytes(t) }, key)
        }))
    }

    #[test]
    fn windows_go_to_the_hardest_stretch_of_each_share() {
        let budget = SampleBudget::default();
        // A 100 s title whose pictures cost 1000 bytes, but 5000 in 30..34 s, 3000 in 60..61.5 s
        // and 2900 in 80..82 s.
        let hard = profile(100.0, |t| match t {
            t if (30.0..34.0).contains(&t) => 5000,
            t if (60.0..61.5).contains(&t) => 3000,
            t if (80.0..82.0).contains(&t) => 2900,
            _ => 1000,
        });
        // Shares of 5 to 35, 35 to 65 and 65 to 95 s, windows of 1.333 s: the stretches of 3 and
        // 5 times the typical each hold one wholly, at its first picture that is not a keyframe
        // (30 and 60 s are); under 3 times, the window takes the keyframe nearest the share's
        // centre (79.333), its lead-in starting a millisecond after it.
        let windows = sample_windows(100.0, &hard, &budget);
        assert_eq!(starts(&windows), [30.04, 60.04, 80.251]);
        // Keyframes' sizes do not count (a keyframe every 2 s would otherwise pull every window
        // to one), their places do.
        let flat = profile(100.0, |_| 1000);
        assert_eq!(starts(&sample_windows(100.0, &flat, &budget)), [20.251, 50.251, 80.251]);
        // No profile: centred in each share.
        assert_eq!(starts(&sample_windows(100.0, &Complexity::default(), &budget)), [19.333, 49.333, 79.333]);
    }

    #[test]
    fn a_window_starts_where_a_decode_of_the_source_can() {
        let budget = SampleBudget::default();
        // Keyframes at 0, 12, 33 and 47 s of a 60 s title: shares of 3..21, 21..39 and 39..57 s,
        // windows of 1 s (centres 11.5, 29.5, 47.5).
        let keys = [0.0, 12.0, 33.0, 47.0];
        let gop = Complexity::from_packets((0..1500).map(|n| {
            let t = f64::from(n) * 0.04;
            (t, 1000, keys.contains(&t))
        }));
        let windows = sample_windows(60.0, &gop, &budget);
        assert_eq!(starts(&windows), [12.251, 33.251, 47.251]);
        for window in &windows {
            let wasted = gop.decoded_before(window.start - LEAD_IN_SECONDS).expect("keyframes known");
            assert!((0.0..0.002).contains(&wasted), "{window:?}: {wasted}");
        }
        // A share with no keyframe keeps its centre; one whose keyframe leaves no room for the
        // window before the share's end too.
        let sparse = Complexity::from_packets((0..1500).map(|n| {
            let t = f64::from(n) * 0.04;
            (t, 1000, t == 0.0 || t == 20.0)
        }));
        assert_eq!(starts(&sample_windows(60.0, &sparse, &budget)), [11.5, 29.5, 47.5]);
        assert_eq!(sparse.decoded_before(29.25), Some(9.25));
        assert_eq!(Complexity::default().decoded_before(29.25), None);
    }

    #[test]
    fn an_intra_only_source_counts_every_picture() {
        let intra = Complexity::from_packets((0..2500).map(|n| {
            let t = f64::from(n) * 0.04;
            (t, if (70.0..72.0).contains(&t) { 9000 } else { 1000 }, true)
        }));
        // Of the starts that keep the window in 70..72 s, the nearest to the share's centre.
        assert_eq!(starts(&sample_windows(100.0, &intra, &SampleBudget::default()))[2], 70.64);
        // Packets of no known time, and in any order, are fine; times count from the first.
        let odd = Complexity::from_packets([(f64::NAN, 500, false), (3.0, 10, false), (1.0, 20, false)]);
        assert_eq!(odd.bytes_between(0.0, 10.0), (30, 2));
        assert_eq!(odd.bytes_between(0.0, 2.0), (20, 1));
        assert_eq!(odd.bytes_between(5.0, 4.0), (0, 0));
        assert_eq!(odd.density(0.0, 10.0), 15.0);
        // A clock that starts at 1.4 s (MPEG-TS): times count from the first packet.
        let late = Complexity::from_packets([(1.4, 10, true), (1.44, 20, false), (3.4, 30, false)]);
        assert_eq!(late.bytes_between(0.0, 2.0), (20, 1));
    }

    #[test]
    fn windows_never_overlap_and_stay_out_of_the_edges() {
        let budget = SampleBudget::default();
        for step in 1..400 {
            let duration = 6.7 + f64::from(step) * 9.3;
            // Hard stretches anywhere, the shares' edges among them: a picture every 0.5 s.
            let rough = Complexity::from_packets((0..(duration * 2.0) as u32).map(|n| {
                let t = f64::from(n) * 0.5;
                (t, (100.0 + 5000.0 * ((t * 0.37).sin() * (t * 0.011).cos()).max(0.0).powi(4)) as u64, false)
            }));
            assert!(rough.typical(1.0) * HARD_STRETCH < 5000.0, "peaks that take windows");
            for profile in [&rough, &Complexity::default()] {
                let windows = sample_windows(duration, profile, &budget);
                assert!((3..=8).contains(&windows.len()), "{duration}");
                assert!(windows[0].start >= duration * 0.05 - 0.001, "{duration}: {windows:?}");
                let last = windows[windows.len() - 1];
                assert!(last.start + last.duration <= duration * 0.95 + 0.001, "{duration}: {windows:?}");
                for pair in windows.windows(2) {
                    assert!(pair[0].start + pair[0].duration <= pair[1].start + 0.001, "{duration}: {windows:?}");
                }
            }
        }
    }

    #[test]
    fn a_budget_may_ask_for_more_or_fewer_windows() {
        let wide = SampleBudget {
            fraction: 0.1,
            window_seconds: 4.0,
            min_window_seconds: 4.0,
            min_windows: 1,
            max_windows: 20,
        };
        let windows = sample_windows(200.0, &Complexity::default(), &wide);
        assert_eq!(windows.len(), 5);
        assert_eq!(windows[0], Window { start: 26.0, duration: 4.0 });
        let one = SampleBudget {
            fraction: 0.0,
            window_seconds: 2.0,
            min_window_seconds: 2.0,
            min_windows: 0,
            max_windows: 0,
        };
        assert_eq!(starts(&sample_windows(100.0, &Complexity::default(), &one)), [49.0]);
    }
}
