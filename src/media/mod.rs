//! The media tools as subprocesses: ffprobe to inspect, ffmpeg (through ffmpeg-sidecar) to
//! transcode, ffmpeg again to measure a source for its quality checks, and libvmaf in process
//! to score renditions against their source. Every run has a
//! timeout, is killed when dropped, and fails with a typed error.

pub mod ffmpeg;
pub mod fragmented;
pub mod loudness;
pub mod probe;
pub mod qc;
pub mod quality;
pub mod ssim;
pub mod vmaf;
