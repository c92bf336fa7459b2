//! Integration tests: one binary, so the AWS SDK is linked once.
//!
//! They drive real ffmpeg and, for the AWS backend, the real SDK clients against moto's server
//! on 127.0.0.1. With `CI=true` a missing tool fails the run instead of skipping.

mod api;
mod browser;
mod captions;
mod cli;
mod conformance;
mod console;
mod console_cmaf;
mod console_extras;
mod delivery;
mod faults;
mod faults_support;
mod hardening;
mod ingest;
mod ledger;
mod lifecycle;
mod loudness;
mod media;
mod notifications;
mod packaging;
mod playback;
mod quality;
mod recaption;
mod split;
mod support;
mod watermark;
mod worker;
