//! What the scoring of a job's renditions records: each rendition's block in the manifest, the
//! seams of a split job (a window around every join), and the sidecar `quality.json` with the
//! per-second series for plots. The numbers themselves come from [`crate::domain::quality`].

use serde::{Deserialize, Serialize};

use crate::domain::quality::{FrameScores, QualityBlock};

/// Seconds on each side of a join that its seam window covers.
pub const SEAM_HALF_WINDOW: f64 = 1.0;

/// Version of `quality.json`.
pub const SIDECAR_VERSION: u32 = 1;

/// One scored rendition of an output, in its manifest record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RenditionQuality {
    /// The output's preset name, or the HLS rung (`720p`).
    pub rendition: String,
    /// The file scored, relative to the attempt's folder (a rung's variant playlist).
    pub file: String,
    #[serde(flatten)]
    pub quality: QualityBlock,
    /// A split job's joins: the worst seam window of this rendition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seams: Option<SeamSummary>,
}

/// The scores in the window around one join of a split job's segments.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Seam {
    /// Source seconds of the join.
    pub at: f64,
    pub vmaf_mean: f64,
    pub vmaf_min: f64,
}

/// A rendition's seams in one line: how many, and the worst (lowest minimum) of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeamSummary {
    pub count: u32,
    pub worst_at: f64,
    pub vmaf_min: f64,
}

/// One rendition's series in `quality.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RenditionSeries {
    /// The output's preset name.
    pub output: String,
    pub rendition: String,
    /// Mean VMAF of each whole second.
    pub vmaf_per_second: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seams: Vec<Seam>,
}

/// `quality.json`, beside the outputs of the attempt that made them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QualitySidecar {
    pub version: u32,
    pub job_id: String,
    pub renditions: Vec<RenditionSeries>,
}

impl QualitySidecar {
    pub fn new(job_id: &str, renditions: Vec<RenditionSeries>) -> Self {
        Self { version: SIDECAR_VERSION, job_id: job_id.to_string(), renditions }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Plain owned data: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The seam windows of `scores` around each join in `joins` (source seconds; the scores' times
/// count from the same start). A join without a scored frame in its window is left out.
pub fn seams(scores: &FrameScores, joins: &[f64]) -> Vec<Seam> {
    joins
        .iter()
        .filter_map(|&at| {
            let near: Vec<f64> = scores
                .times
                .iter()
                .zip(&scores.vmaf)
                .filter(|(t, _)| (**t - at).abs() <= SEAM_HALF_WINDOW)
                .map(|(_, v)| *v)
                .collect();
            if near.is_empty() {
                return None;
            }
            let mean = near.iter().sum::<f64>() / near.len() as f64;
            let min = near.iter().copied().fold(f64::INFINITY, f64::min);
            Some(Seam { at, vmaf_mean: round2(mean), vmaf_min: round2(min) })
        })
        .collect()
}

/// The worst of `seams` (the lowest minimum), with their count; none without seams.
pub fn worst_seam(seams: &[Seam]) -> Option<SeamSummary> {
    let worst = seams.iter().min_by(|a, b| a.vmaf_min.total_cmp(&b.vmaf_min))?;
    Some(SeamSummary {
        count: u32::try_from(seams.len()).unwrap_or(u32::MAX),
        worst_at: worst.at,
        vmaf_min: worst.vmaf_min,
    })
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(times: &[f64], vmaf: &[f64]) -> FrameScores {
        FrameScores {
            model: "vmaf_v0.6.1".into(),
            width: 640,
            height: 360,
            vmaf: vmaf.to_vec(),
            psnr_y: vec![40.0; vmaf.len()],
            ssim: vec![0.99; vmaf.len()],
            times: times.to_vec(),
            frames_reference: vmaf.len() as u32,
            frames_distorted: vmaf.len() as u32,
            subsample: 1,
        }
    }

    #[test]
    fn a_seam_is_the_window_around_its_join() {
        let s = scores(&[0.0, 4.5, 5.0, 5.5, 7.0, 9.6, 10.0], &[99.0, 90.0, 80.0, 94.0, 99.0, 95.0, 97.0]);
        let found = seams(&s, &[5.0, 10.0, 30.0]);
        assert_eq!(
            found,
            vec![Seam { at: 5.0, vmaf_mean: 88.0, vmaf_min: 80.0 }, Seam { at: 10.0, vmaf_mean: 96.0, vmaf_min: 95.0 }],
            "a join past the scores has no window"
        );
        assert_eq!(worst_seam(&found), Some(SeamSummary { count: 2, worst_at: 5.0, vmaf_min: 80.0 }));
        assert_eq!(worst_seam(&[]), None);
    }

    #[test]
    fn the_sidecar_names_its_version() {
        let sidecar = QualitySidecar::new("j1", vec![]);
        let text = String::from_utf8(sidecar.to_json()).unwrap();
        assert_eq!(text, r#"{"version":1,"job_id":"j1","renditions":[]}"#);
    }
}
