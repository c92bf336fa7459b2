//! What the quality checks' pass measures: stretches, field counts, the picture's box and
//! loudness.

use serde::{Deserialize, Serialize};

/// A stretch of the source, in seconds from its start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Span {
    pub start: f64,
    pub end: f64,
}

impl Span {
    /// Its length, to the millisecond (ffmpeg's timestamps carry no more, and limits compare
    /// exactly: a 2.0 s stretch meets a 2.0 s limit).
    pub fn seconds(&self) -> f64 {
        ((self.end - self.start).max(0.0) * 1000.0).round() / 1000.0
    }
}

/// Frames `idet` classified, over the whole source (its multi-frame detection, which looks at
/// neighbouring frames and is steadier than the single-frame one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldCounts {
    /// Interlaced, top field first.
    pub tff: u64,
    /// Interlaced, bottom field first.
    pub bff: u64,
    pub progressive: u64,
    /// Frames `idet` could not decide (still pictures look the same either way).
    pub undetermined: u64,
}

impl FieldCounts {
    /// The share of interlaced frames among the frames `idet` decided; `None` when it decided
    /// none.
    pub fn interlaced_ratio(&self) -> Option<f64> {
        let interlaced = self.tff + self.bff;
        let decided = interlaced + self.progressive;
        (decided > 0).then(|| interlaced as f64 / decided as f64)
    }
}

/// The part of the frame that is picture, in every frame of the source (outside it, black
/// bars), in pixels of the analysed picture (at most
/// [`ANALYSIS_HEIGHT`](crate::domain::qc::args::ANALYSIS_HEIGHT) lines high).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CropArea {
    pub width: u32,
    pub height: u32,
    pub x: u32,
    pub y: u32,
    pub frame_width: u32,
    pub frame_height: u32,
}

impl CropArea {
    /// The share of the frame's area under bars, from 0 to 1.
    pub fn bars_ratio(&self) -> f64 {
        let frame = f64::from(self.frame_width) * f64::from(self.frame_height);
        if frame <= 0.0 {
            return 0.0;
        }
        (1.0 - f64::from(self.width) * f64::from(self.height) / frame).clamp(0.0, 1.0)
    }
}

/// The true peak recorded for digital silence (ffmpeg reads `-inf`, which JSON cannot carry):
/// the floor of 24-bit audio.
pub const SILENT_PEAK_DBTP: f64 = -144.0;

/// The source's loudness over its whole length (EBU R 128).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Loudness {
    /// Integrated loudness, in LUFS (-70 for sound too quiet to measure).
    pub integrated_lufs: f64,
    /// Loudness range, in LU.
    pub lra: f64,
    /// The highest true (inter-sample) peak, in dBTP.
    pub true_peak_dbtp: f64,
}

/// What the pass measured. Stretches are kept up to
/// [`MAX_SPANS`](crate::domain::qc::parse::MAX_SPANS) of each kind (the longest), each at least
/// as long as its rule's limit: shorter ones are not reported by ffmpeg, as no rule can break
/// on them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QcMeasurements {
    /// Seconds of source read.
    pub duration: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub black: Vec<Span>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<Span>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silence: Vec<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interlace: Option<FieldCounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<CropArea>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loudness: Option<Loudness>,
}
