//! The range a number of a request may take: output options, QC thresholds, quality targets.
//! Its own leaf, so that each owner of such a table can name it without importing the others.

/// The values one option may take: the table a request is validated with, which
/// `GET /v1/presets` publishes so that clients need no copy of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptionRange {
    pub min: f64,
    pub max: f64,
    /// Whole numbers only (pixels).
    pub integer: bool,
}
