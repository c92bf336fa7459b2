//! media-worker: turns sources landing in S3 (or a local folder) into transcoded outputs.
//!
//! # Layout
//! - [`config`]: settings from the environment; one table of variables also feeds `--help`.
//! - [`domain`]: pure logic with no I/O: message parsing, job ids, key layout, presets and the
//!   ffmpeg argv they produce, job status and manifest documents.
//! - [`queue`] and [`storage`]: the narrow interfaces the worker needs, each with an AWS
//!   implementation (SQS, S3) and an embedded local one (SQLite, files on disk).
pub mod config;
pub mod domain;
pub mod queue;
pub mod storage;
