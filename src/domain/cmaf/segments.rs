//! Grouping fragments (one GOP each) into segments of about a target length, cut on the same
//! times in every rendition, and measuring each rendition's bandwidth on those segments.
//!
//! Cut times come from one reference rendition ([`cut_times`]): a segment starts at the first
//! fragment starting at or after each multiple of the target. Every rendition is then cut at
//! the fragment boundary nearest each of those times ([`segments_at`]): the video rungs of a
//! codec share their keyframe clock, so they cut exactly there; audio, whose fragments are
//! not GOP-aligned, cuts at its nearest boundary.

use std::ops::Range;

use super::{ByteRange, CmafError, TrackIndex};

/// The init segment's file name in segmented mode.
pub const INIT_FILE_NAME: &str = "init.mp4";

/// The DASH `SegmentTemplate@media` naming the same files as [`segment_file_name`].
pub const SEGMENT_TEMPLATE: &str = "segment_$Number%05d$.m4s";

/// The file name of segment `number` in segmented mode: `segment_00001.m4s`.
pub fn segment_file_name(number: u32) -> String {
    format!("segment_{number:05}.m4s")
}

/// Slack for floating-point fragment starts (a millisecond).
const EPSILON: f64 = 0.001;

/// A run of consecutive fragments of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// 1-based, as in `segment_00001.m4s` and DASH's `startNumber="1"`.
    pub number: u32,
    /// Indexes into [`TrackIndex::fragments`].
    pub fragments: Range<usize>,
    /// Bytes from the first fragment's start to the last one's end.
    pub range: ByteRange,
    /// In the track's timescale.
    pub decode_time: u64,
    pub duration: u64,
    pub earliest_presentation_time: i64,
}

impl Segment {
    pub fn seconds(&self, timescale: u32) -> f64 {
        self.duration as f64 / f64::from(timescale.max(1))
    }
}

fn start_seconds(index: &TrackIndex, i: usize) -> f64 {
    index.fragments[i].timing.decode_time as f64 / f64::from(index.info.timescale.max(1))
}

/// Segment start times in seconds for the reference rendition; a target of 0 or less cuts at
/// every fragment.
pub fn cut_times(index: &TrackIndex, target_seconds: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut next = f64::NEG_INFINITY;
    for i in 0..index.fragments.len() {
        let start = start_seconds(index, i);
        if out.is_empty() || start >= next - EPSILON {
            out.push(start);
            next = if target_seconds > 0.0 {
                ((start + EPSILON) / target_seconds).floor().mul_add(target_seconds, target_seconds)
            } else {
                f64::NEG_INFINITY
            };
        }
    }
    out
}

/// Cuts a rendition at the fragment boundary nearest each cut time; the first segment always
/// starts at the first fragment.
pub fn segments_at(index: &TrackIndex, cuts: &[f64]) -> Result<Vec<Segment>, CmafError> {
    let count = index.fragments.len();
    if count == 0 {
        return Err(CmafError::Empty("no fragments"));
    }
    let mut starts = vec![0usize];
    for &cut in cuts {
        let nearest = (0..count)
            .min_by(|&a, &b| (start_seconds(index, a) - cut).abs().total_cmp(&(start_seconds(index, b) - cut).abs()))
            .unwrap_or(0);
        starts.push(nearest);
    }
    starts.sort_unstable();
    starts.dedup();
    starts.push(count);
    let mut out = Vec::with_capacity(starts.len());
    for (n, pair) in starts.windows(2).enumerate() {
        let fragments = &index.fragments[pair[0]..pair[1]];
        let (first, last) = (fragments[0], fragments[fragments.len() - 1]);
        out.push(Segment {
            number: u32::try_from(n + 1).map_err(|_| CmafError::Layout("too many segments".into()))?,
            fragments: pair[0]..pair[1],
            range: ByteRange { offset: first.range.offset, size: last.range.end() - first.range.offset },
            decode_time: first.timing.decode_time,
            duration: fragments.iter().map(|f| f.timing.duration).sum(),
            earliest_presentation_time: first.timing.earliest_presentation_time,
        });
    }
    Ok(out)
}

/// Bits per second of a rendition, segment bytes only (init excluded), rounded up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bandwidth {
    /// The highest of any one segment: HLS `BANDWIDTH`, DASH `@bandwidth`.
    pub peak: u64,
    /// All bytes over the whole duration: HLS `AVERAGE-BANDWIDTH`.
    pub average: u64,
}

impl std::ops::Add for Bandwidth {
    type Output = Bandwidth;
    fn add(self, other: Bandwidth) -> Bandwidth {
        Bandwidth { peak: self.peak + other.peak, average: self.average + other.average }
    }
}

pub fn bandwidth(segments: &[Segment], timescale: u32) -> Bandwidth {
    let rate = |bytes: u64, seconds: f64| (bytes as f64 * 8.0 / seconds).ceil() as u64;
    let mut out = Bandwidth::default();
    let (mut bytes, mut seconds) = (0u64, 0.0);
    for segment in segments {
        let s = segment.seconds(timescale);
        if s > 0.0 {
            out.peak = out.peak.max(rate(segment.range.size, s));
            bytes += segment.range.size;
            seconds += s;
        }
    }
    if seconds > 0.0 {
        out.average = rate(bytes, seconds);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::cmaf::{Fragment, FragmentTiming, TrackInfo, TrackKind, TrexDefaults};

    /// Fragments of the given durations (ticks) and sizes, timescale 1000.
    pub(crate) fn index(fragments: &[(u64, u64)]) -> TrackIndex {
        let (mut t, mut at) = (0u64, 100u64);
        let fragments = fragments
            .iter()
            .map(|&(duration, size)| {
                let f = Fragment {
                    range: ByteRange { offset: at, size },
                    timing: FragmentTiming {
                        decode_time: t,
                        duration,
                        earliest_presentation_time: t as i64,
                        sync: true,
                        sample_count: 1,
                        sample_duration: None,
                    },
                };
                (t, at) = (t + duration, at + size);
                f
            })
            .collect();
        TrackIndex {
            init: ByteRange { offset: 0, size: 100 },
            sidx: None,
            info: TrackInfo {
                track_id: 1,
                kind: TrackKind::Video { width: 2, height: 2 },
                timescale: 1000,
                trex: TrexDefaults::default(),
                codec: "avc1.64001e".into(),
            },
            fragments,
        }
    }

    #[test]
    fn cuts_at_the_first_fragment_at_or_after_each_multiple() {
        let video = index(&[(2000, 10); 7]);
        assert_eq!(cut_times(&video, 6.0), vec![0.0, 6.0, 12.0]);
        // Uneven GOPs: 0, 2.5, 5, 7.5 (>= 6), 10, 12.5 (>= 12).
        let uneven = index(&[(2500, 10); 6]);
        assert_eq!(cut_times(&uneven, 6.0), vec![0.0, 7.5, 12.5]);
        assert_eq!(cut_times(&video, 0.0).len(), 7);
        let segments = segments_at(&video, &cut_times(&video, 6.0)).unwrap();
        assert_eq!(segments.iter().map(|s| s.fragments.clone()).collect::<Vec<_>>(), vec![0..3, 3..6, 6..7]);
        assert_eq!((segments[1].decode_time, segments[1].duration), (6000, 6000));
        assert_eq!(segments[1].range, ByteRange { offset: 130, size: 30 });
        assert_eq!(segments[2].number, 3);
    }

    #[test]
    fn audio_cuts_at_its_nearest_boundary() {
        // AAC fragments of 1.984 s: starts 0, 1.984, 3.968, 5.952, 7.936, ...
        let audio = index(&[(1984, 10); 8]);
        let segments = segments_at(&audio, &[0.0, 6.0, 12.0]).unwrap();
        assert_eq!(segments.iter().map(|s| s.fragments.start).collect::<Vec<_>>(), vec![0, 3, 6]);
        assert!(segments_at(&index(&[]), &[0.0]).is_err());
    }

    #[test]
    fn bandwidth_is_peak_and_average_of_segment_bytes() {
        let video = index(&[(2000, 1000), (2000, 3000), (1000, 250)]);
        let segments = segments_at(&video, &[0.0, 2.0, 4.0]).unwrap();
        let b = bandwidth(&segments, 1000);
        // 4000, 12000 and 2000 bit/s; 4250 bytes over 5 s = 6800 bit/s.
        assert_eq!(b, Bandwidth { peak: 12000, average: 6800 });
        assert_eq!(bandwidth(&[], 1000), Bandwidth::default());
    }
}
