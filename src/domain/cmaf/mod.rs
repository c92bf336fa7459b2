//! CMAF packaging: reading the fragmented MP4s ffmpeg writes (one track per file, one GOP per
//! fragment), cutting them into segments on shared times, and writing the HLS and DASH
//! manifests ourselves.
//!
//! Why our own writer: ffmpeg 5.1's DASH muxer writes a bare `hvc1` codec string for HEVC, its
//! HLS muxer omits AV1's codec, and the bitrates both put in manifests are placeholders for CRF
//! encodes. Here codec strings come from the bitstream's configuration boxes (RFC 6381 and the
//! ISO/IEC 14496-15 / AV1-ISOBMFF rules) and bandwidths are measured on the segments.
//!
//! Layout: [`boxes`] parses `moov` (track, timescale, `trex`, codec via [`codec`]) and `moof`
//! (timing) and reads top-level box headers so the I/O layer can walk a big file with seeks;
//! [`index`] turns the sequence of top-level boxes into byte ranges; [`segments`] groups
//! fragments and measures bandwidth; [`rate`] reads a video track's frame rate; [`hls`] and
//! [`dash`] write text; [`join`] joins a split job's fragmented segments into one file.
//! Everything is pure and bounds-checked: hostile bytes give a [`CmafError`], never a panic or
//! a guessed codec.

pub mod boxes;
pub mod codec;
pub mod dash;
pub mod hls;
pub mod index;
pub mod join;
pub mod package;
pub mod rate;
pub mod segments;

pub use boxes::{BoxHeader, box_header, parse_init, parse_moof};
pub use index::IndexBuilder;
pub use segments::{
    Bandwidth, INIT_FILE_NAME, SEGMENT_TEMPLATE, Segment, bandwidth, cut_times, segment_file_name, segments_at,
};

/// Why a file, box or manifest input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmafError {
    /// A box is shorter than its fields or its size runs past its parent.
    #[error("malformed or truncated `{0}` box")]
    Malformed(&'static str),
    /// A box the file needs is absent.
    #[error("missing `{0}` box")]
    Missing(&'static str),
    /// A sample entry this module has no codec-string rule for: never guessed.
    #[error("unsupported codec `{0}`")]
    UnsupportedCodec(String),
    /// A track that is neither video nor audio, or a file with other than one track.
    #[error("unsupported track: {0}")]
    UnsupportedTrack(String),
    /// The file's top-level boxes are not ftyp+moov then fragments.
    #[error("unexpected file layout: {0}")]
    Layout(String),
    /// A name, URI or language that cannot be written into a manifest safely.
    #[error("unsafe manifest text {0:?}")]
    UnsafeText(String),
    /// Part `n` of a join (a split job's segment, from 0) has another init segment than the
    /// first part's: another encoder configuration, which the first part's would misdecode.
    #[error("segment {0}'s init segment (codec configuration) differs from the first segment's")]
    InitMismatch(usize),
    /// Nothing to write (no fragments, no segments, no variants).
    #[error("empty: {0}")]
    Empty(&'static str),
}

/// A byte range in a file: `size` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ByteRange {
    pub offset: u64,
    pub size: u64,
}

impl ByteRange {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }
}

/// What kind of track a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video { width: u32, height: u32 },
    Audio { channels: u32, sample_rate: u32 },
}

/// The `trex` defaults a fragment falls back on when `tfhd`/`trun` leave a field out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrexDefaults {
    pub sample_duration: u32,
    pub sample_size: u32,
    pub sample_flags: u32,
}

/// The one track of a fragmented file, from its `moov`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub track_id: u32,
    pub kind: TrackKind,
    /// `mdhd` timescale: ticks per second of every time in the fragments.
    pub timescale: u32,
    pub trex: TrexDefaults,
    /// RFC 6381 codec string, e.g. `avc1.64001e`, `hvc1.1.6.L93.B0`, `av01.0.04M.08`, `mp4a.40.2`.
    pub codec: String,
}

/// One fragment's times, from its `moof` (in the track's timescale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentTiming {
    /// `tfdt` base media decode time.
    pub decode_time: u64,
    /// Sum of the sample durations.
    pub duration: u64,
    /// Decode time plus the first sample's composition offset (signed in `trun` version 1).
    pub earliest_presentation_time: i64,
    /// Whether the first sample is a sync sample (the fragment starts with a keyframe).
    pub sync: bool,
    pub sample_count: u32,
    /// The duration every sample shares, if they all share one (a video frame's duration).
    pub sample_duration: Option<u32>,
}

/// One fragment's bytes (any styp/prft/emsg before it, its moof and its mdat) and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub range: ByteRange,
    pub timing: FragmentTiming,
}

/// Everything a manifest needs of one fragmented file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackIndex {
    /// `ftyp` + `moov`: the initialization segment.
    pub init: ByteRange,
    /// A `sidx` covering every fragment, when the file has one (`+global_sidx`).
    pub sidx: Option<ByteRange>,
    pub info: TrackInfo,
    pub fragments: Vec<Fragment>,
}

impl TrackIndex {
    /// The frame rate of a video track as (numerator, denominator), e.g. (30000, 1001): the
    /// highest of its fragments' ([`rate::frame_rate`]).
    pub fn frame_rate(&self) -> Option<(u64, u64)> {
        rate::frame_rate(self.info.timescale, &self.fragments)
    }
}

/// A fraction in lowest terms; `None` for a zero denominator or numerator.
pub fn reduce(numerator: u64, denominator: u64) -> Option<(u64, u64)> {
    if numerator == 0 || denominator == 0 {
        return None;
    }
    let (mut a, mut b) = (numerator, denominator);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    Some((numerator / a, denominator / a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_reduce() {
        assert_eq!(reduce(30000, 1001), Some((30000, 1001)));
        assert_eq!(reduce(15360, 512), Some((30, 1)));
        assert_eq!(reduce(90000, 3000), Some((30, 1)));
        assert_eq!(reduce(0, 1), None);
        assert_eq!(reduce(1, 0), None);
    }
}
