//! A job's own split settings (`split` in its spec). Kept apart from the rest of the split so a
//! job spec can name it without depending on how a split job runs.

use serde::{Deserialize, Serialize};

/// Bounds of a job's own `segment_duration`, in seconds.
pub const SEGMENT_DURATION_RANGE: (f64, f64) = (2.0, 600.0);

/// A job's own choice (`split` in its spec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    /// `false` keeps the job on one worker, however long the source.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds of source per segment (2 to 600); default: the deployment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 2, maximum = 600, example = 30)]
    pub segment_duration: Option<f64>,
}

fn yes() -> bool {
    true
}

impl SplitRequest {
    pub fn validate(&self) -> Result<(), String> {
        let (min, max) = SEGMENT_DURATION_RANGE;
        match self.segment_duration {
            Some(d) if !d.is_finite() || !(min..=max).contains(&d) => {
                Err(format!("`split.segment_duration` must be between {min} and {max} seconds, got {d}"))
            }
            _ => Ok(()),
        }
    }
}
