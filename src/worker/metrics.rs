//! The worker's own small HTTP endpoint, on `MEDIA_METRICS_ADDR` when it is set:
//! - `GET /healthz`: the process is up;
//! - `GET /readyz`: storage and the ready queue answer, and the worker is not shutting down;
//! - `GET /metrics`: Prometheus text, read from the worker's counters at each scrape.
//!
//! It has no authentication: bind it to an address only the platform's scrapers and health
//! checks reach (the task's own network, not a public load balancer).

use std::fmt;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::health;

/// The Prometheus text format's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves until `stop` is cancelled.
pub(super) async fn serve(listener: TcpListener, worker: Worker, stop: CancellationToken) {
    let mut registry = Registry::with_prefix("media_worker");
    registry.register_collector(Box::new(WorkerCollector { worker: worker.clone() }));
    let state = std::sync::Arc::new(Endpoint { worker, registry, readiness: Default::default() });
    let app = Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let result = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    if let Err(err) = result {
        tracing::warn!(error = %err, "The metrics endpoint stopped with an error.");
    }
}

struct Endpoint {
    worker: Worker,
    registry: Registry,
    readiness: health::Cached,
}

async fn readyz(State(endpoint): State<std::sync::Arc<Endpoint>>) -> Response {
    let inner = &endpoint.worker.inner;
    let deps = health::Deps {
        storage: inner.storage.as_ref(),
        ready: inner.queues.ready.as_ref(),
        ledger: inner.store.ledger().as_ref(),
        layout: &inner.config.layout,
    };
    let mut readiness = health::Readiness::cached(&endpoint.readiness, deps).await;
    // A worker that is shutting down takes no new work: let health checks see it.
    if inner.stop_receiving.is_cancelled() {
        readiness.ready = false;
    }
    // A poll loop stuck on a call that stopped answering takes no work either.
    if !endpoint.worker.poll_loop_is_live() {
        tracing::warn!("Readiness: the poll loop has not completed a cycle within MEDIA_POLL_STALL_TIMEOUT.");
        readiness.ready = false;
    }
    let code = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(readiness)).into_response()
}

async fn metrics(State(endpoint): State<std::sync::Arc<Endpoint>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &endpoint.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "Encoding metrics failed.");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Reads the worker's counters and gauges at scrape time, so the hot path stays plain atomics.
struct WorkerCollector {
    worker: Worker,
}

impl fmt::Debug for WorkerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkerCollector")
    }
}

impl Collector for WorkerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let inner = &self.worker.inner;
        let c = &inner.counters;
        let counters = [
            ("jobs_started", "Job attempts started by this worker", &c.started),
            ("jobs_completed", "Jobs completed by this worker", &c.completed),
            ("jobs_failed", "Jobs failed for good by this worker", &c.failed),
            ("jobs_retried", "Failed attempts handed to a later attempt", &c.retried),
            ("dead_lettered", "Messages and jobs sent to the dead-letter queue", &c.dead_lettered),
            ("duplicates_skipped", "Duplicate deliveries recognised and dropped", &c.skipped),
            ("receive_calls", "Receive calls on the ready queue, long polls included", &c.receives),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let gauge_of = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let gauges = [
            ("jobs_running", "Jobs running in this worker now", gauge_of(self.worker.running())),
            (
                "permits_free",
                "Jobs this worker may still take (MEDIA_CONCURRENCY + MEDIA_PREFETCH in all)",
                gauge_of(inner.permits.available_permits()),
            ),
            ("transcode_slots_free", "ffmpeg slots free", gauge_of(inner.transcode_slots.available_permits())),
            ("concurrency", "ffmpeg slots in total (MEDIA_CONCURRENCY)", gauge_of(inner.config.concurrency)),
            ("shutting_down", "1 once the worker stopped taking work", i64::from(inner.stop_receiving.is_cancelled())),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
