//! media-worker: turns sources landing in S3 (or a local folder) into transcoded outputs.
//!
//! # Layout
//! - [`config`]: settings from the environment; one table of variables also feeds `--help`.
//! - [`domain`]: pure logic with no I/O: message parsing, job ids, key layout, presets and the
//!   ffmpeg argv they produce, job status and manifest documents.
//! - [`jobs`]: the job lifecycle: the state machine, and the only writer of job status
//!   records (compare-and-swap on the job ledger), used by worker, API and CLI alike.
//! - [`queue`] and [`storage`]: the narrow interfaces the worker needs, each with an AWS
//!   implementation (SQS, S3) and an embedded local one (SQLite, files on disk).
//! - [`ledger`]: the job ledger, every job's status record and the events of its transitions,
//!   on DynamoDB or SQLite, queried in O(page).
//! - [`backend`]: picks and connects those implementations once, at start-up; [`aws`]: the
//!   timeouts and the one SDK configuration every AWS client is made from.
//! - [`media`]: ffprobe and ffmpeg as subprocesses, with timeouts and typed errors.
//! - [`worker`]: the poll loop, job execution, split jobs' segments, heartbeat, reaper and
//!   graceful shutdown.
//! - [`cli`] and [`telemetry`]: the command line, logging and signals; `src/main.rs` only
//!   calls [`cli::main`].
//! - [`api`]: the HTTP API (`media-api`, `src/bin/media-api.rs`), stateless, on either backend.
//! - [`notify`]: job events as signed webhooks, queued and delivered by the worker;
//!   [`outbound`]: the SSRF-guarded HTTP client for URLs users supply.
//! - [`health`]: the readiness check the API and the worker's metrics endpoint share.
pub mod api;
pub mod aws;
pub mod backend;
pub mod cli;
pub mod config;
pub mod domain;
pub mod health;
pub mod jobs;
pub mod ledger;
pub mod media;
pub mod notify;
pub mod outbound;
pub mod queue;
pub mod storage;
pub mod telemetry;
pub mod worker;
