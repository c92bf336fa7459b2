//! Pure domain: job specs, message parsing, key layout, presets and their argv, status
//! documents. Nothing here does I/O, so all of it is covered by table tests.

pub mod args;
pub mod cmaf;
pub mod dead_letter;
pub mod delivery;
pub mod error_code;
pub mod event;
pub mod isobmff;
pub mod job;
pub mod keys;
pub mod loudness;
pub mod per_title;
pub mod plan;
pub mod preset;
pub mod probe;
pub mod qc;
pub mod quality;
pub mod range;
pub mod ready;
pub mod scoring;
pub mod split;
pub mod status;
pub mod subtitles;
pub mod tenant;
pub mod watermark;
