//! Quality of a rendition against its source: the per-frame scores libvmaf gives
//! (`media::quality`), and the block a manifest carries for each video rendition.
//!
//! Conventions, so that numbers from different renditions and jobs compare:
//! - **Scoring size**: both pictures are scaled (bicubic) to the source's display size, capped
//!   to 1080 lines on the short side ([`scoring_size`]). The VMAF v0.6.1 model predicts the
//!   opinion of a viewer of a 1080p screen at three times its height, so a 360p rung is judged
//!   upscaled, as a player shows it, and a 4K source is judged at the size the model knows.
//! - **Pooling**: the mean and the harmonic mean as libvmaf pools them
//!   (`1 / mean(1 / (1 + x)) - 1`, which weighs bad frames more), the minimum, and the 5th
//!   percentile by nearest rank: what the worst moments look like, steadier than the minimum.
//! - **Bitrate**: the average over the whole rendition, and the peak over any window of
//!   [`BITRATE_WINDOW_SECONDS`] (a player's buffer sees bursts, not the average).
//!
//! Everything here is pure: no I/O, table tests.

use serde::{Deserialize, Serialize};

/// The VMAF model every score is made with (compiled into libvmaf).
pub const VMAF_MODEL: &str = "vmaf_v0.6.1";

/// The window of the peak bitrate, in seconds.
pub const BITRATE_WINDOW_SECONDS: f64 = 2.0;

/// The lines on the short side that a scoring size is capped to: the model's 1080p screen.
pub const MAX_SCORING_LINES: u32 = 1080;

/// The scores of each scored frame of a rendition against its reference, by frame index.
///
/// The vectors are parallel: entry `i` is the `i`-th scored frame (every `subsample`-th frame
/// of the common prefix of both inputs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FrameScores {
    /// The VMAF model the scores come from ([`VMAF_MODEL`]).
    pub model: String,
    /// The size both pictures were scaled to before scoring.
    pub width: u32,
    pub height: u32,
    pub vmaf: Vec<f64>,
    /// PSNR of the luma plane, in dB (libvmaf caps it at 60 dB for 8-bit pictures).
    pub psnr_y: Vec<f64>,
    /// SSIM of the luma plane, 0 to 1.
    pub ssim: Vec<f64>,
    /// Seconds of each scored frame from the first frame of the reference's window.
    pub times: Vec<f64>,
    /// Frames each input gave. They differ by a few when an encoder adds or drops frames at the
    /// ends; only the common prefix is scored.
    pub frames_reference: u32,
    pub frames_distorted: u32,
    /// Every how many frames one is scored (1: every frame).
    pub subsample: u32,
}

/// A rendition's quality, as its manifest shows it. Values are rounded to 2 decimals (SSIM,
/// which lives between 0.9 and 1 for most renditions, to 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QualityBlock {
    /// The VMAF model ([`VMAF_MODEL`]).
    pub model: String,
    /// The size the pictures were scored at, `WxH` ([`scoring_size`]).
    pub scored_at: String,
    pub frames_scored: u32,
    /// Every how many frames one was scored.
    pub subsample: u32,
    pub vmaf: VmafSummary,
    pub psnr: PsnrSummary,
    pub ssim: SsimSummary,
    pub bitrate: BitrateSummary,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmafSummary {
    pub mean: f64,
    /// libvmaf's harmonic mean, `1 / mean(1 / (1 + x)) - 1`: low frames weigh more.
    pub harmonic_mean: f64,
    pub min: f64,
    /// The 5th percentile, by nearest rank.
    pub p5: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PsnrSummary {
    /// Mean of the frames' luma PSNR, in dB.
    pub y_mean: f64,
    pub y_min: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SsimSummary {
    pub mean: f64,
    pub min: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BitrateSummary {
    /// All video packets' bits over the duration, in kbit/s.
    pub average_kbps: f64,
    /// The most bits in any window of `window_seconds`, over the window, in kbit/s.
    pub peak_kbps: f64,
    pub window_seconds: f64,
}

/// The size to score a rendition of a source displayed at `width`x`height` at: that size,
/// scaled down (keeping its shape) so that its short side has at most [`MAX_SCORING_LINES`],
/// and rounded to even numbers (4:2:0 pictures).
pub fn scoring_size(width: u32, height: u32) -> (u32, u32) {
    let short = width.min(height);
    let (w, h) = if short > MAX_SCORING_LINES {
        let scale = f64::from(MAX_SCORING_LINES) / f64::from(short);
        ((f64::from(width) * scale).round(), (f64::from(height) * scale).round())
    } else {
        (f64::from(width), f64::from(height))
    };
    (even(w), even(h))
}

/// `value` rounded to the nearest even number, at least 2.
fn even(value: f64) -> u32 {
    // A display size is far below u32::MAX; the cast saturates anyway.
    let rounded = ((value / 2.0).round() * 2.0) as u32;
    rounded.max(2)
}

/// The manifest's block for `scores` and the rendition's `bitrate`.
pub fn summarise(scores: &FrameScores, bitrate: BitrateSummary) -> QualityBlock {
    QualityBlock {
        model: scores.model.clone(),
        scored_at: format!("{}x{}", scores.width, scores.height),
        frames_scored: u32::try_from(scores.vmaf.len()).unwrap_or(u32::MAX),
        subsample: scores.subsample,
        vmaf: VmafSummary {
            mean: round(mean(&scores.vmaf), 2),
            harmonic_mean: round(harmonic_mean(&scores.vmaf), 2),
            min: round(min(&scores.vmaf), 2),
            p5: round(percentile(&scores.vmaf, 5.0), 2),
        },
        psnr: PsnrSummary { y_mean: round(mean(&scores.psnr_y), 2), y_min: round(min(&scores.psnr_y), 2) },
        ssim: SsimSummary { mean: round(mean(&scores.ssim), 4), min: round(min(&scores.ssim), 4) },
        bitrate,
    }
}

/// The average and peak bitrate of a stream's `packets` (each its time in seconds and its size
/// in bytes, in any order) over `duration` seconds; the peak over any `window` seconds.
///
/// The peak's window starts at a packet and holds every packet up to `window` seconds later.
/// A stream shorter than the window has its average as its peak (the window is cut to the
/// duration). Packets without a finite time are counted in the average only.
pub fn bitrate(packets: &[(f64, u64)], duration: f64, window: f64) -> BitrateSummary {
    let total_bits: f64 = packets.iter().map(|&(_, size)| size as f64 * 8.0).sum();
    let average = if duration > 0.0 { total_bits / duration } else { 0.0 };
    let mut timed: Vec<(f64, u64)> = packets.iter().copied().filter(|(time, _)| time.is_finite()).collect();
    timed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let span = if duration > 0.0 { window.min(duration) } else { window };
    let mut peak_bits = 0.0f64;
    let mut bits = 0.0f64;
    let mut end = 0;
    for start in 0..timed.len() {
        while end < timed.len() && timed[end].0 < timed[start].0 + span {
            bits += timed[end].1 as f64 * 8.0;
            end += 1;
        }
        peak_bits = peak_bits.max(bits);
        bits -= timed[start].1 as f64 * 8.0;
    }
    let peak = if span > 0.0 { peak_bits / span } else { 0.0 };
    BitrateSummary {
        average_kbps: round(average / 1000.0, 2),
        peak_kbps: round(peak.max(average) / 1000.0, 2),
        window_seconds: window,
    }
}

/// The mean VMAF of each whole second of `scores` (second `s` holds the frames at
/// `s <= time < s + 1`), for the sidecar's plot. A second without a scored frame (a long
/// still frame) repeats the second before it: the player still shows that picture.
pub fn per_second(scores: &FrameScores) -> Vec<f64> {
    let mut sums: Vec<(f64, u32)> = Vec::new();
    for (&time, &vmaf) in scores.times.iter().zip(&scores.vmaf) {
        if !time.is_finite() || time < 0.0 {
            continue;
        }
        // A time is seconds into a rendition: far below usize::MAX.
        let second = time.floor() as usize;
        if sums.len() <= second {
            sums.resize(second + 1, (0.0, 0));
        }
        sums[second].0 += vmaf;
        sums[second].1 += 1;
    }
    let mut out = Vec::with_capacity(sums.len());
    let mut last = None;
    for (sum, count) in sums {
        let value = if count > 0 { Some(round(sum / f64::from(count), 2)) } else { last };
        last = value;
        // Seconds before the first scored frame take its value.
        out.push(value);
    }
    let first = out.iter().flatten().next().copied().unwrap_or(0.0);
    out.into_iter().map(|value| value.unwrap_or(first)).collect()
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 }
}

/// libvmaf's harmonic mean: `n / sum(1 / (1 + x)) - 1`, defined for scores of 0 too.
fn harmonic_mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let inverse: f64 = values.iter().map(|x| 1.0 / (1.0 + x)).sum();
    values.len() as f64 / inverse - 1.0
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().reduce(f64::min).unwrap_or(0.0)
}

/// The `p`-th percentile by nearest rank: the smallest value with at least `p` % of the values
/// at or below it.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(vmaf: &[f64], times: &[f64]) -> FrameScores {
        FrameScores {
            model: VMAF_MODEL.into(),
            width: 1280,
            height: 720,
            vmaf: vmaf.to_vec(),
            psnr_y: vmaf.iter().map(|v| v / 2.0).collect(),
            ssim: vmaf.iter().map(|v| v / 100.0).collect(),
            times: times.to_vec(),
            frames_reference: vmaf.len() as u32,
            frames_distorted: vmaf.len() as u32,
            subsample: 1,
        }
    }

    #[test]
    fn scoring_sizes_keep_the_display_size_up_to_1080_lines() {
        let cases = [
            ((1920, 1080), (1920, 1080)),
            ((1280, 720), (1280, 720)),
            ((640, 272), (640, 272)),
            ((3840, 2160), (1920, 1080)),
            ((4096, 2160), (2048, 1080)),
            ((2160, 3840), (1080, 1920)),
            ((1080, 1920), (1080, 1920)),
            ((2560, 1081), (2558, 1080)),
            ((853, 480), (854, 480)),
            ((1, 1), (2, 2)),
        ];
        for ((w, h), expected) in cases {
            assert_eq!(scoring_size(w, h), expected, "{w}x{h}");
        }
    }

    #[test]
    fn pooling_follows_libvmaf() {
        // (values, mean, harmonic mean, min, p5)
        let cases: [(&[f64], f64, f64, f64, f64); 5] = [
            (&[90.0], 90.0, 90.0, 90.0, 90.0),
            (&[100.0, 0.0], 50.0, 0.98, 0.0, 0.0),
            (&[80.0, 90.0, 100.0, 70.0], 85.0, 83.53, 70.0, 70.0),
            (&[0.0, 0.0], 0.0, 0.0, 0.0, 0.0),
            (&[], 0.0, 0.0, 0.0, 0.0),
        ];
        for (values, mean, harmonic, min, p5) in cases {
            let block = summarise(&scores(values, &vec![0.0; values.len()]), bitrate(&[], 1.0, 2.0));
            assert_eq!(block.vmaf, VmafSummary { mean, harmonic_mean: harmonic, min, p5 }, "{values:?}");
            assert_eq!(block.frames_scored, values.len() as u32);
        }
    }

    #[test]
    fn the_5th_percentile_is_by_nearest_rank() {
        // 1..=100: rank ceil(5) = 5 -> 5; 1..=10: rank ceil(0.5) = 1 -> 1; 1..=21: rank 2 -> 2.
        let cases: [(u32, f64); 4] = [(100, 5.0), (10, 1.0), (21, 2.0), (40, 2.0)];
        for (n, expected) in cases {
            let mut values: Vec<f64> = (1..=n).map(f64::from).collect();
            values.reverse();
            assert_eq!(percentile(&values, 5.0), expected, "1..={n}");
        }
    }

    #[test]
    fn the_block_rounds_and_names_the_scoring_size() {
        let mut s = scores(&[95.123, 95.127, 90.0], &[0.0, 0.04, 0.08]);
        s.ssim = vec![0.991_23, 0.987_65, 0.95];
        s.subsample = 3;
        let block = summarise(&s, bitrate(&[(0.0, 1000)], 1.0, 2.0));
        assert_eq!(block.model, "vmaf_v0.6.1");
        assert_eq!(block.scored_at, "1280x720");
        assert_eq!(block.subsample, 3);
        assert_eq!(block.vmaf.mean, 93.42);
        assert_eq!(block.vmaf.min, 90.0);
        assert_eq!(block.psnr, PsnrSummary { y_mean: 46.71, y_min: 45.0 });
        assert_eq!(block.ssim, SsimSummary { mean: 0.9763, min: 0.95 });
        let json = serde_json::to_value(&block).unwrap();
        assert_eq!(json["vmaf"]["harmonic_mean"], 93.35);
        assert_eq!(json["bitrate"]["window_seconds"], 2.0);
    }

    #[test]
    fn bitrate_average_and_peak_over_a_sliding_window() {
        // (packets (seconds, bytes), duration, window, average kbps, peak kbps)
        type Case<'a> = (&'a [(f64, u64)], f64, f64, f64, f64);
        let cases: [Case; 6] = [
            // Steady: 1000 bytes every 0.5 s over 4 s: 16 kbit/s everywhere.
            (
                &[
                    (0.0, 1000),
                    (0.5, 1000),
                    (1.0, 1000),
                    (1.5, 1000),
                    (2.0, 1000),
                    (2.5, 1000),
                    (3.0, 1000),
                    (3.5, 1000),
                ],
                4.0,
                2.0,
                16.0,
                16.0,
            ),
            // A burst at 2 s: the window [2, 4) holds 10000 + 1000 bytes.
            (&[(0.0, 1000), (1.0, 1000), (2.0, 10_000), (3.0, 1000), (4.0, 1000), (5.0, 1000)], 6.0, 2.0, 20.0, 44.0),
            // Out of order (B-frames) reads the same.
            (&[(3.0, 1000), (2.0, 10_000), (5.0, 1000), (0.0, 1000), (4.0, 1000), (1.0, 1000)], 6.0, 2.0, 20.0, 44.0),
            // A packet exactly `window` after the start is in the next window.
            (&[(0.0, 5000), (2.0, 5000)], 4.0, 2.0, 20.0, 20.0),
            // Shorter than the window: the peak is the average.
            (&[(0.0, 1000), (0.5, 1000)], 1.0, 2.0, 16.0, 16.0),
            // No packets, no duration.
            (&[], 0.0, 2.0, 0.0, 0.0),
        ];
        for (packets, duration, window, average, peak) in cases {
            let summary = bitrate(packets, duration, window);
            assert_eq!(
                summary,
                BitrateSummary { average_kbps: average, peak_kbps: peak, window_seconds: window },
                "{packets:?}"
            );
        }
    }

    #[test]
    fn packets_without_a_time_count_in_the_average_only() {
        let summary = bitrate(&[(f64::NAN, 10_000), (0.0, 1000), (1.0, 1000)], 2.0, 2.0);
        assert_eq!(summary.average_kbps, 48.0);
        assert_eq!(summary.peak_kbps, 48.0, "the peak is never below the average");
    }

    #[test]
    fn per_second_means_by_whole_second() {
        // (times, vmaf, per second)
        let cases: [(&[f64], &[f64], &[f64]); 4] = [
            (&[0.0, 0.5, 1.0, 1.5, 2.2], &[90.0, 80.0, 70.0, 71.0, 60.0], &[85.0, 70.5, 60.0]),
            // A still frame from 1 s to 3.5 s: second 2 repeats second 1.
            (&[0.0, 1.0, 3.5], &[90.0, 80.0, 70.0], &[90.0, 80.0, 80.0, 70.0]),
            // The first scored frame late: earlier seconds take its value.
            (&[1.2, 1.6], &[50.0, 51.0], &[50.5, 50.5]),
            (&[], &[], &[]),
        ];
        for (times, vmaf, expected) in cases {
            assert_eq!(per_second(&scores(vmaf, times)), expected, "{times:?}");
        }
    }
}
