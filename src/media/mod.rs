//! The media tools as subprocesses: ffprobe to inspect, ffmpeg (through ffmpeg-sidecar) to
//! transcode. Every run has a timeout, is killed when dropped, and fails with a typed error.

pub mod ffmpeg;
pub mod probe;
pub mod quality;
pub mod vmaf;
